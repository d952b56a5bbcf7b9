/** Production queue: BullMQ on Redis; workers and the scheduler run in their own processes. */
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { createRedis, type Redis } from '../infra/redis.ts';
import type { Logger } from '../logging/logger.ts';
import {
  type EnqueueOptions,
  type JobDefinition,
  type JobQueue,
  UnknownJobError,
} from './queue.ts';

export const QUEUE_NAME = 'mezzofy';

/**
 * BullMQ refuses custom job ids that contain ':' or look like integers; ours may be anything
 * (an ISO timestamp in a deterministic id is common), so they are stored escaped.
 */
const ID_PREFIX = 'id-';
const toBullId = (id: string) => ID_PREFIX + id.replaceAll('%', '%25').replaceAll(':', '%3A');
const fromBullId = (id: string) =>
  id.startsWith(ID_PREFIX) ? decodeURIComponent(id.slice(ID_PREFIX.length)) : id;

export function createBullmqQueue(options: {
  redisUrl: string;
  prefix: string;
  log: Logger;
  concurrency?: number;
}): JobQueue {
  const { log } = options;
  const definitions = new Map<string, JobDefinition>();
  const producer: Redis = createRedis(options.redisUrl, {
    maxRetriesPerRequest: 1,
    enableAutoPipelining: false,
  });
  const queue = new Queue(QUEUE_NAME, { connection: producer, prefix: `${options.prefix}bull` });
  queue.on('error', (err) => log.warn({ err }, 'queue connection error'));
  let worker: Worker | undefined;
  let workerConnection: Redis | undefined;

  return {
    engine: 'bullmq',
    define(definition) {
      definitions.set(definition.name, definition as JobDefinition);
    },
    async enqueue(name, data, opts: EnqueueOptions = {}) {
      const definition = definitions.get(name);
      if (!definition) throw new UnknownJobError(`no job named ${name}`);
      const job = await queue.add(name, data, {
        ...(opts.jobId ? { jobId: toBullId(opts.jobId) } : {}),
        ...(opts.delayMs ? { delay: opts.delayMs } : {}),
        attempts: definition.attempts ?? 3,
        backoff: { type: 'exponential', delay: definition.backoffMs ?? 1_000 },
        removeOnComplete: { age: 24 * 3600, count: 1_000 },
        removeOnFail: { age: 7 * 24 * 3600 },
      });
      return fromBullId(job.id!);
    },
    async schedule(id, cron, name, data, timezone) {
      const definition = definitions.get(name);
      if (!definition) throw new UnknownJobError(`no job named ${name}`);
      await queue.upsertJobScheduler(
        id,
        { pattern: cron, ...(timezone ? { tz: timezone } : {}) },
        {
          name,
          data,
          opts: {
            attempts: definition.attempts ?? 3,
            backoff: { type: 'exponential', delay: definition.backoffMs ?? 1_000 },
          },
        },
      );
    },
    async startWorker() {
      workerConnection = createRedis(options.redisUrl, {
        maxRetriesPerRequest: null,
        enableAutoPipelining: false,
      });
      worker = new Worker(
        QUEUE_NAME,
        async (job) => {
          const definition = definitions.get(job.name);
          // During a rolling deploy an older worker may meet a newer job: retry (with backoff) so
          // that a worker which knows it picks it up, instead of failing it for good.
          if (!definition) throw new Error(`this worker has no job named ${job.name}`);
          const parsed = definition.schema.safeParse(job.data);
          if (!parsed.success)
            throw new UnrecoverableError(`invalid data for ${job.name}: ${parsed.error.message}`);
          return definition.handler(parsed.data, {
            log: log.child({ job: job.name, jobId: job.id }),
            attempt: job.attemptsMade + 1,
            jobId: fromBullId(job.id!),
          });
        },
        {
          connection: workerConnection,
          prefix: `${options.prefix}bull`,
          concurrency: options.concurrency ?? 4,
        },
      );
      worker.on('failed', (job, err) =>
        log.error({ err, job: job?.name, jobId: job?.id }, 'job failed'),
      );
      worker.on('error', (err) => log.warn({ err }, 'worker connection error'));
    },
    async startScheduler() {
      // Schedulers live in Redis; schedule() has already registered them.
    },
    status: () => (producer.status === 'ready' ? 'ok' : 'down'),
    async close() {
      await worker?.close();
      await queue.close();
      producer.disconnect();
      workerConnection?.disconnect();
    },
  };
}
