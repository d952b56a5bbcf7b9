/**
 * The job queue with real jobs: auth.purge-expired on BullMQ (worker on Redis) and on the
 * in-process queue, against PostgreSQL; then BullMQ's retries, invalid data, job-id
 * de-duplication and cron schedulers.
 */
import { type Job, Queue } from 'bullmq';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createBullmqQueue, QUEUE_NAME } from '../src/scheduler/bullmq-queue.ts';
import { createInProcessQueue } from '../src/scheduler/in-process-queue.ts';
import { PURGE_AUTH_JOB, purgeAuthJob } from '../src/scheduler/jobs/purge-auth.job.ts';
import type { JobContext, JobQueue } from '../src/scheduler/queue.ts';
import { insertUser } from '../src/users/users.repository.ts';
import { clearRedisPrefix, testKeyPrefix, testRedisUrl, waitUntil } from './helpers/redis.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';

const url = testRedisUrl();
const prefix = testKeyPrefix('queue');
const log = pino({ level: 'silent' });
const DAY = 24 * 3600 * 1000;
const RETENTION_S = 7 * 24 * 3600;

let testDb: TestDatabase;
let inspect: Queue;
const queues: JobQueue[] = [];

beforeAll(async () => {
  testDb = await createTestDatabase('postgres');
  inspect = new Queue(QUEUE_NAME, { connection: { url }, prefix: `${prefix}bull` });
});

afterAll(async () => {
  for (const q of queues) await q.close();
  await inspect?.close();
  await testDb?.drop();
  await clearRedisPrefix(url, prefix);
});

function bullmq(): JobQueue {
  const q = createBullmqQueue({ redisUrl: url, prefix, log });
  queues.push(q); // closing twice is harmless; afterAll closes whatever a failed test left
  return q;
}

async function finished(id: string, timeoutMs = 10_000): Promise<Job> {
  return waitUntil(
    async () => {
      const job = await inspect.getJob(id);
      return job?.finishedOn ? job : undefined;
    },
    { timeoutMs, intervalMs: 50, what: `job ${id} to finish` },
  );
}

/** Rows purge-expired must delete, and rows it must keep. */
async function seed() {
  const { db } = testDb.database;
  const now = Date.now();
  const at = (offsetMs: number) => new Date(now + offsetMs);
  const user = await insertUser(db, {
    email: `purge-${now}-${Math.random().toString(36).slice(2)}@mezzofy.test`,
    name: 'Purge Target',
    password_hash: 'x',
    department: 'sales',
    role: 'sales_rep',
  });
  const session = (values: { expires: Date; revoked?: Date }) =>
    db
      .insertInto('auth_sessions')
      .values({
        user_id: user.id,
        expires_at: values.expires,
        revoked_at: values.revoked ?? null,
        revoke_reason: values.revoked ? 'logout' : null,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
      .then((r) => r.id);
  const token = (sessionId: string, expires: Date) =>
    db
      .insertInto('refresh_tokens')
      .values({
        session_id: sessionId,
        token_hash: `hash-${Math.random().toString(36).slice(2)}-${now}`,
        expires_at: expires,
      })
      .returning('id')
      .executeTakeFirstOrThrow()
      .then((r) => r.id);

  const live = await session({ expires: at(DAY) });
  const liveToken = await token(live, at(DAY));
  const expiredToken = await token(live, at(-3600_000));
  const endedLongAgo = await session({ expires: at(-8 * DAY) });
  const revokedLongAgo = await session({ expires: at(20 * DAY), revoked: at(-8 * DAY) });
  await token(revokedLongAgo, at(DAY)); // goes with its session
  const revokedRecently = await session({ expires: at(20 * DAY), revoked: at(-DAY) });
  const expiredRecently = await session({ expires: at(-DAY) });
  await db
    .insertInto('login_failures')
    .values([
      { key: 'account:stale@mezzofy.test', failures: 3, window_started_at: at(-8 * DAY) },
      { key: 'account:fresh@mezzofy.test', failures: 2, window_started_at: at(-60_000) },
      // Its 15-minute window has passed and it locks nothing: no longer needed.
      { key: 'account:past-window@mezzofy.test', failures: 4, window_started_at: at(-20 * 60_000) },
      {
        key: 'account:locked@mezzofy.test',
        failures: 0,
        window_started_at: at(-60_000),
        locked_until: at(600_000),
      },
    ])
    .execute();
  return {
    keep: {
      sessions: [live, revokedRecently, expiredRecently],
      tokens: [liveToken],
      failures: ['account:fresh@mezzofy.test', 'account:locked@mezzofy.test'],
    },
    gone: {
      sessions: [endedLongAgo, revokedLongAgo],
      tokens: [expiredToken],
      failures: ['account:stale@mezzofy.test', 'account:past-window@mezzofy.test'],
    },
  };
}

async function snapshot() {
  const { db } = testDb.database;
  return {
    sessions: (await db.selectFrom('auth_sessions').select('id').execute()).map((r) => r.id),
    tokens: (await db.selectFrom('refresh_tokens').select('id').execute()).map((r) => r.id),
    failures: (await db.selectFrom('login_failures').select('key').execute()).map((r) => r.key),
  };
}

/** The real purge job, with its results reported to the test. */
function purgeJob(results: unknown[], calls: { n: number }) {
  const job = purgeAuthJob({
    database: testDb.database,
    clock: () => new Date(),
    retentionSeconds: RETENTION_S,
    lockoutWindowSeconds: 900,
  });
  return {
    ...job,
    backoffMs: 50,
    async handler(data: Record<string, never>, ctx: JobContext) {
      calls.n++;
      const result = await job.handler(data, ctx);
      results.push(result);
      return result;
    },
  };
}

describe.each([
  ['BullMQ with a worker', bullmq],
  ['the in-process queue', () => createInProcessQueue(log)],
] as const)('auth.purge-expired on %s', (engine, make) => {
  let queue: JobQueue;
  beforeEach(async () => {
    // Its own queue per test: a worker that does not know a job fails it for good.
    queue = make();
    const { db } = testDb.database;
    await db.deleteFrom('refresh_tokens').execute();
    await db.deleteFrom('auth_sessions').execute();
    await db.deleteFrom('login_failures').execute();
  });
  afterEach(async () => {
    await queue.close();
  });

  it('deletes expired tokens, long-ended sessions and stale counters; keeps live ones', async () => {
    const results: unknown[] = [];
    const calls = { n: 0 };
    queue.define(purgeJob(results, calls));
    await queue.startWorker();

    const rows = await seed();
    const before = await snapshot();
    for (const kind of ['sessions', 'tokens', 'failures'] as const) {
      expect(before[kind]).toEqual(
        expect.arrayContaining([...rows.keep[kind], ...rows.gone[kind]]),
      );
    }

    const id = await queue.enqueue(PURGE_AUTH_JOB, {});
    await waitUntil(() => results.length === 1, { timeoutMs: 10_000, what: 'purge result' });
    expect(results[0]).toEqual({ refreshTokens: 1, sessions: 2, loginFailures: 2 });
    if (engine.startsWith('BullMQ')) {
      const job = await finished(id);
      expect(await job.getState()).toBe('completed');
      expect(job.returnvalue).toEqual(results[0]);
    }

    const after = await snapshot();
    expect(after.sessions.sort()).toEqual([...rows.keep.sessions].sort());
    expect(after.tokens).toEqual(rows.keep.tokens);
    expect(after.failures.sort()).toEqual([...rows.keep.failures].sort());
  });

  it('rejects invalid data without running the purge, and does not retry it', async () => {
    const results: unknown[] = [];
    const calls = { n: 0 };
    queue.define(purgeJob(results, calls));
    await queue.startWorker();
    const rows = await seed();

    const id = await queue.enqueue(PURGE_AUTH_JOB, { older_than: '1 day' });
    if (engine.startsWith('BullMQ')) {
      const job = await finished(id);
      expect(await job.getState()).toBe('failed');
      expect(job.attemptsMade).toBe(1);
      expect(job.failedReason).toMatch(/invalid data for auth\.purge-expired/);
    } else {
      await new Promise((r) => setTimeout(r, 150)); // three backoffs would take 150 ms
    }
    expect(calls.n).toBe(0);
    const after = await snapshot();
    expect(after.sessions).toEqual(expect.arrayContaining(rows.gone.sessions));
  });
});

describe('BullMQ queue', () => {
  let queue: JobQueue;
  const runs: Array<{ name: string; data: unknown; attempt: number; jobId: string; at: number }> =
    [];
  let failuresLeft = 0;

  beforeAll(async () => {
    queue = bullmq();
    const record = (name: string) => async (data: unknown, ctx: JobContext) => {
      runs.push({ name, data, attempt: ctx.attempt, jobId: ctx.jobId, at: performance.now() });
      if (name === 'test.flaky' && failuresLeft > 0) {
        failuresLeft--;
        throw new Error('upstream timed out');
      }
      return 'done';
    };
    const Data = z.object({ n: z.number().int() }).strict();
    queue.define({
      name: 'test.flaky',
      schema: Data,
      attempts: 3,
      backoffMs: 100,
      handler: record('test.flaky'),
    });
    queue.define({ name: 'test.digest', schema: Data, handler: record('test.digest') });
    queue.define({ name: 'test.tick', schema: z.object({}), handler: record('test.tick') });
    queue.define(
      purgeAuthJob({
        database: testDb.database,
        clock: () => new Date(),
        retentionSeconds: RETENTION_S,
        lockoutWindowSeconds: 900,
      }),
    );
    await queue.startWorker();
  });

  const runsOf = (name: string, jobId?: string) =>
    runs.filter((r) => r.name === name && (jobId === undefined || r.jobId === jobId));

  it('retries a failing job with exponential backoff until it succeeds', async () => {
    failuresLeft = 2;
    const id = await queue.enqueue('test.flaky', { n: 1 });
    const job = await finished(id);
    expect(await job.getState()).toBe('completed');
    const tries = runsOf('test.flaky', id);
    expect(tries.map((r) => r.attempt)).toEqual([1, 2, 3]);
    expect(tries[1]!.at - tries[0]!.at).toBeGreaterThanOrEqual(90); // backoff 100 ms
    expect(tries[2]!.at - tries[1]!.at).toBeGreaterThanOrEqual(190); // then 200 ms
  });

  it('fails a job for good after its last attempt', async () => {
    failuresLeft = 10;
    const id = await queue.enqueue('test.flaky', { n: 2 });
    const job = await finished(id);
    failuresLeft = 0;
    expect(await job.getState()).toBe('failed');
    expect(job.attemptsMade).toBe(3);
    expect(job.failedReason).toBe('upstream timed out');
    expect(runsOf('test.flaky', id)).toHaveLength(3);
  });

  it('runs a job enqueued twice under one deterministic id once', async () => {
    const jobId = `digest-2025-01-01T08:00-${prefix.split(':')[2]}`;
    const [first, second] = await Promise.all([
      queue.enqueue('test.digest', { n: 3 }, { jobId }),
      queue.enqueue('test.digest', { n: 4 }, { jobId }),
    ]);
    expect(first).toBe(jobId);
    expect(second).toBe(jobId);
    await waitUntil(() => runsOf('test.digest', jobId).length === 1, { what: 'the digest run' });
    // Still known (kept after completion): a third enqueue is a no-op too.
    expect(await queue.enqueue('test.digest', { n: 5 }, { jobId })).toBe(jobId);
    await new Promise((r) => setTimeout(r, 200));
    const done = runsOf('test.digest');
    expect(done).toHaveLength(1);
    expect(done[0]).toMatchObject({ jobId, attempt: 1 });
    expect([{ n: 3 }, { n: 4 }]).toContainEqual(done[0]!.data);
  });

  it('runs a delayed job no sooner than its delay', async () => {
    const at = performance.now();
    const id = await queue.enqueue('test.digest', { n: 6 }, { delayMs: 300 });
    const job = await finished(id);
    expect(await job.getState()).toBe('completed');
    const run = runsOf('test.digest', id)[0]!;
    expect(run.at - at).toBeGreaterThanOrEqual(290);
  });

  it('schedule() registers a job scheduler in Redis that fires on its cron', async () => {
    await queue.schedule('auth-purge', '17 * * * *', PURGE_AUTH_JOB, {}, 'Asia/Singapore');
    await queue.schedule('tick', '*/1 * * * * *', 'test.tick', {});
    // Registering again (a restarted scheduler) updates it instead of adding another.
    await queue.schedule('tick', '*/1 * * * * *', 'test.tick', {});
    const schedulers = await inspect.getJobSchedulers();
    expect(schedulers).toHaveLength(2);
    const purge = schedulers.find((s) => s.key === 'auth-purge')!;
    expect(purge).toMatchObject({
      name: PURGE_AUTH_JOB,
      pattern: '17 * * * *',
      tz: 'Asia/Singapore',
    });
    expect(new Date(purge.next!).getUTCMinutes()).toBe(17);
    expect(schedulers.find((s) => s.key === 'tick')).toMatchObject({
      name: 'test.tick',
      pattern: '*/1 * * * * *',
    });

    await waitUntil(() => runsOf('test.tick').length >= 2, {
      timeoutMs: 5_000,
      what: 'two scheduled ticks',
    });
    await inspect.removeJobScheduler('tick');
    await inspect.removeJobScheduler('auth-purge');
    expect(await inspect.getJobSchedulersCount()).toBe(0);
  });

  it('refuses a job name it does not know', async () => {
    await expect(queue.enqueue('test.nope', {})).rejects.toThrow(/no job named test\.nope/);
    await expect(queue.schedule('x', '* * * * *', 'test.nope', {})).rejects.toThrow(/no job named/);
    expect(queue.status()).toBe('ok');
    expect(queue.engine).toBe('bullmq');
  });
});
