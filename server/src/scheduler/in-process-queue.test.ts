import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createInProcessQueue } from './in-process-queue.ts';
import { type JobContext, type JobQueue, UnknownJobError } from './queue.ts';

class Lines extends Writable {
  lines: Array<{ msg: string; [k: string]: unknown }> = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void) {
    for (const line of chunk.toString('utf8').split('\n').filter(Boolean))
      this.lines.push(JSON.parse(line));
    done();
  }
  count(msg: string) {
    return this.lines.filter((l) => l.msg === msg).length;
  }
}

const NotifyData = z.object({ userId: z.uuid(), text: z.string().min(1) }).strict();
type NotifyData = z.infer<typeof NotifyData>;
const USER = '7d3c1a52-33b4-4a0e-9a55-0c8c5e2b9f01';

let queues: JobQueue[] = [];
afterEach(async () => {
  for (const q of queues) await q.close();
  queues = [];
});

function setup() {
  const logs = new Lines();
  const queue = createInProcessQueue(pino({ level: 'info' }, logs));
  queues.push(queue);
  const calls: Array<{ data: NotifyData; ctx: JobContext; at: number }> = [];
  let failures = 0;
  const job = {
    name: 'test.notify',
    schema: NotifyData,
    attempts: 3,
    backoffMs: 40,
    async handler(data: NotifyData, ctx: JobContext) {
      calls.push({ data, ctx, at: performance.now() });
      if (failures > 0) {
        failures--;
        throw new Error('mail server said no');
      }
      return 'sent';
    },
  };
  queue.define(job);
  return {
    queue,
    logs,
    calls,
    failNext(n: number) {
      failures = n;
    },
  };
}

async function until(check: () => boolean, timeoutMs = 3_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('in-process queue', () => {
  it('runs a job with its validated data once the worker starts', async () => {
    const { queue, calls } = setup();
    const id = await queue.enqueue('test.notify', { userId: USER, text: 'hello' });
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toHaveLength(0); // no worker in this process yet
    await queue.startWorker();
    await until(() => calls.length === 1);
    expect(calls[0]!.data).toEqual({ userId: USER, text: 'hello' });
    expect(calls[0]!.ctx).toMatchObject({ attempt: 1, jobId: id });
    expect(queue.engine).toBe('in-process');
    expect(queue.status()).toBe('ok');
  });

  it('retries a failing job with doubling backoff, then succeeds', async () => {
    const { queue, calls, failNext, logs } = setup();
    await queue.startWorker();
    failNext(2);
    await queue.enqueue('test.notify', { userId: USER, text: 'retry me' });
    await until(() => calls.length === 3);
    expect(calls.map((c) => c.ctx.attempt)).toEqual([1, 2, 3]);
    const gaps = [calls[1]!.at - calls[0]!.at, calls[2]!.at - calls[1]!.at];
    expect(gaps[0]).toBeGreaterThanOrEqual(35); // backoffMs 40, timer slack
    expect(gaps[1]).toBeGreaterThanOrEqual(75); // 80
    expect(logs.count('job attempt failed; retrying')).toBe(2);
    expect(logs.count('job failed')).toBe(0);
  });

  it('gives up after the last attempt and logs the failure', async () => {
    const { queue, calls, failNext, logs } = setup();
    await queue.startWorker();
    failNext(10);
    await queue.enqueue('test.notify', { userId: USER, text: 'never' });
    await until(() => logs.count('job failed') === 1);
    expect(calls).toHaveLength(3);
  });

  it('rejects invalid data without running the handler and without retrying', async () => {
    const { queue, calls, logs } = setup();
    await queue.startWorker();
    await queue.enqueue('test.notify', { userId: 'not-a-uuid', text: '' });
    await until(() => logs.count('job failed') === 1);
    await new Promise((r) => setTimeout(r, 60)); // longer than the first backoff
    expect(calls).toHaveLength(0);
    expect(logs.count('job attempt failed; retrying')).toBe(0);
    expect(logs.lines.find((l) => l.msg === 'job failed')).toMatchObject({
      job: 'test.notify',
      reason: 'invalid_data',
    });
  });

  it('refuses unknown job names', async () => {
    const { queue } = setup();
    await expect(queue.enqueue('test.nope', {})).rejects.toBeInstanceOf(UnknownJobError);
    await expect(queue.schedule('s', '* * * * *', 'test.nope', {})).rejects.toBeInstanceOf(
      UnknownJobError,
    );
  });

  it('runs a job enqueued twice with one deterministic id once', async () => {
    const { queue, calls } = setup();
    const data = { userId: USER, text: 'digest' };
    const first = await queue.enqueue('test.notify', data, { jobId: 'digest-2025-01-01T08:00' });
    const second = await queue.enqueue('test.notify', data, { jobId: 'digest-2025-01-01T08:00' });
    expect(second).toBe(first);
    await queue.startWorker();
    await until(() => calls.length === 1);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toHaveLength(1);
    expect(calls[0]!.ctx.jobId).toBe('digest-2025-01-01T08:00');
  });

  it('runs a delayed job after its delay', async () => {
    const { queue, calls } = setup();
    await queue.startWorker();
    const at = performance.now();
    await queue.enqueue('test.notify', { userId: USER, text: 'later' }, { delayMs: 60 });
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toHaveLength(0);
    await until(() => calls.length === 1);
    expect(calls[0]!.at - at).toBeGreaterThanOrEqual(55);
  });

  it('fires a cron schedule once the scheduler starts, and stops on close', async () => {
    const { queue, calls } = setup();
    await queue.startWorker();
    await queue.schedule('every-second', '*/1 * * * * *', 'test.notify', {
      userId: USER,
      text: 'tick',
    });
    // Registering again under the same id replaces the schedule (it does not double it).
    await queue.schedule('every-second', '*/1 * * * * *', 'test.notify', {
      userId: USER,
      text: 'tick',
    });
    await new Promise((r) => setTimeout(r, 1_100));
    expect(calls).toHaveLength(0); // scheduler role not started in this process
    await queue.startScheduler();
    await until(() => calls.length >= 2, 3_500);
    const ticks = calls.map((c) => Math.round(c.at / 100));
    expect(new Set(ticks).size).toBe(ticks.length); // one run per tick, not two
    await queue.close();
    expect(queue.status()).toBe('down');
    const after = calls.length;
    await new Promise((r) => setTimeout(r, 1_100));
    expect(calls).toHaveLength(after);
  });

  it('close waits for running jobs to finish', async () => {
    const logs = new Lines();
    const queue = createInProcessQueue(pino({ level: 'info' }, logs));
    let finished = false;
    queue.define({
      name: 'test.slow',
      schema: z.object({}),
      async handler() {
        await new Promise((r) => setTimeout(r, 80));
        finished = true;
      },
    });
    await queue.startWorker();
    await queue.enqueue('test.slow', {});
    await new Promise((r) => setTimeout(r, 10));
    await queue.close();
    expect(finished).toBe(true);
  });
});
