/** Embedded queue: jobs run in this process; recurring jobs use croner. */
import { randomUUID } from 'node:crypto';
import { Cron } from 'croner';
import type { Logger } from '../logging/logger.ts';
import {
  type EnqueueOptions,
  type JobDefinition,
  type JobQueue,
  UnknownJobError,
} from './queue.ts';

interface Schedule {
  id: string;
  cron: string;
  name: string;
  data: unknown;
  timezone?: string | undefined;
}

export function createInProcessQueue(log: Logger): JobQueue {
  const definitions = new Map<string, JobDefinition>();
  const pending = new Set<string>();
  const timers = new Set<NodeJS.Timeout>();
  const schedules = new Map<string, Schedule>();
  const crons = new Map<string, Cron>();
  const running = new Set<Promise<void>>();
  let workerStarted = false;
  let schedulerStarted = false;
  let closed = false;
  const backlog: Array<() => void> = [];

  async function run(definition: JobDefinition, data: unknown, jobId: string): Promise<void> {
    const attempts = definition.attempts ?? 3;
    // Invalid data fails the same way on every try: fail once, as BullMQ does.
    const parsed = definition.schema.safeParse(data);
    if (!parsed.success) {
      log.error(
        { err: parsed.error, job: definition.name, jobId, attempt: 1, reason: 'invalid_data' },
        'job failed',
      );
      return;
    }
    for (let attempt = 1; attempt <= attempts && !closed; attempt++) {
      try {
        await definition.handler(parsed.data, {
          log: log.child({ job: definition.name, jobId }),
          attempt,
          jobId,
        });
        return;
      } catch (err) {
        const last = attempt === attempts;
        log.error(
          { err, job: definition.name, jobId, attempt },
          last ? 'job failed' : 'job attempt failed; retrying',
        );
        if (last) return;
        await new Promise((r) =>
          setTimeout(r, (definition.backoffMs ?? 1_000) * 2 ** (attempt - 1)),
        );
      }
    }
  }

  function dispatch(name: string, data: unknown, jobId: string): void {
    const definition = definitions.get(name);
    if (!definition) return;
    const start = () => {
      const p = run(definition, data, jobId).finally(() => {
        pending.delete(jobId);
        running.delete(p);
      });
      running.add(p);
    };
    if (workerStarted) start();
    else backlog.push(start);
  }

  function startCron(s: Schedule) {
    crons.get(s.id)?.stop();
    crons.set(
      s.id,
      new Cron(s.cron, { protect: true, ...(s.timezone ? { timezone: s.timezone } : {}) }, () => {
        void queue.enqueue(s.name, s.data);
      }),
    );
  }

  const queue: JobQueue = {
    engine: 'in-process',
    define(definition) {
      definitions.set(definition.name, definition as JobDefinition);
    },
    async enqueue(name, data, options: EnqueueOptions = {}) {
      if (!definitions.has(name)) throw new UnknownJobError(`no job named ${name}`);
      const jobId = options.jobId ?? randomUUID();
      if (pending.has(jobId)) return jobId;
      pending.add(jobId);
      if (options.delayMs) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          dispatch(name, data, jobId);
        }, options.delayMs);
        timers.add(timer);
      } else {
        dispatch(name, data, jobId);
      }
      return jobId;
    },
    async schedule(id, cron, name, data, timezone) {
      if (!definitions.has(name)) throw new UnknownJobError(`no job named ${name}`);
      const s = { id, cron, name, data, timezone };
      schedules.set(id, s);
      if (schedulerStarted) startCron(s);
    },
    async startWorker() {
      workerStarted = true;
      for (const start of backlog.splice(0)) start();
    },
    async startScheduler() {
      schedulerStarted = true;
      for (const s of schedules.values()) startCron(s);
    },
    status: () => (closed ? 'down' : 'ok'),
    async close() {
      closed = true;
      for (const c of crons.values()) c.stop();
      for (const t of timers) clearTimeout(t);
      await Promise.allSettled([...running]);
    },
  };
  return queue;
}
