/**
 * Chat across API processes on one PostgreSQL schema and one Redis: two app instances (A and
 * B) in this process, each with its own pub/sub connections, and one real server process for
 * SIGTERM. Proves: a turn resumed on B after an approval streams to the user's socket on A;
 * a cancel sent to A (WebSocket or REST) stops the turn running on B; two sends to one
 * session on A and B run one after the other, the second seeing the first's reply; another
 * user's session cannot be cancelled; a socket that drops mid-turn on A and reconnects to B
 * resumes its stream there, the turn still running on A; on SIGTERM the turns in flight are stored as failed,
 * the REST sender gets 503 and the socket closes with 1001.
 */
import type { AddressInfo } from 'node:net';
import { WS_CLOSE } from '@mezzofy/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { freePort, startServer, waitFor } from './helpers/processes.ts';
import { clearRedisPrefix, testKeyPrefix, testRedisUrl } from './helpers/redis.ts';
import {
  createTestApp,
  STRONG_PASSWORD,
  TEST_JWT_SECRET,
  type TestApp,
} from './helpers/test-app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';
import { Client } from './helpers/ws-client.ts';

const redisUrl = testRedisUrl();
const prefix = testKeyPrefix('chat-mp');
let fake: FakeModelServer;
let db: TestDatabase;
let A: TestApp;
let B: TestApp;
let wsA: string;
let wsB: string;
const clients: Client[] = [];

async function instance(): Promise<TestApp> {
  const t = await createTestApp({
    testDatabase: db,
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
    overrides: { redis: { url: redisUrl, key_prefix: prefix } },
  });
  return t;
}

beforeAll(async () => {
  fake = await startFakeModelServer();
  db = await createTestDatabase('postgres');
  A = await instance();
  B = await instance();
  await A.app.listen({ port: 0, host: '127.0.0.1' });
  wsA = `ws://127.0.0.1:${(A.app.server.address() as AddressInfo).port}/chat/ws`;
  await B.app.listen({ port: 0, host: '127.0.0.1' });
  wsB = `ws://127.0.0.1:${(B.app.server.address() as AddressInfo).port}/chat/ws`;
});

afterAll(async () => {
  for (const c of clients) c.ws.terminate();
  await A?.close();
  await B?.close();
  await db?.drop();
  await fake?.close();
  await clearRedisPrefix(redisUrl, prefix);
});

/** A sales rep (reaches the sales agent, may send mail) with a socket on A. */
async function userOnA() {
  const user = await A.userWithToken('sales_rep');
  const c = new Client(wsA);
  clients.push(c);
  await c.hello(user.token);
  return { user, c };
}

async function latestSession(userId: string): Promise<string> {
  const row = await db.database.db
    .selectFrom('chat_sessions')
    .select('id')
    .where('user_id', '=', userId)
    .orderBy('created_at', 'desc')
    .executeTakeFirstOrThrow();
  return row.id;
}

/** Starts a REST turn on B whose model answers after `delayMs`; its reply and session. */
async function turnOnB(user: { id: string; token: string }, text: string, delayMs: number) {
  fake.clear();
  fake.script('anthropic', { text, delayMs });
  const pending = B.inject(user.token, {
    method: 'POST',
    url: '/chat/send',
    payload: { message: 'Any new leads?', agent: 'sales' },
  });
  await waitFor(() => fake.requests.length === 1, 5_000, 'the model request');
  return { pending, sessionId: await latestSession(user.id) };
}

const cancelOnA = (token: string, sessionId: string) =>
  A.inject(token, { method: 'POST', url: `/chat/sessions/${sessionId}/cancel` });

describe('events produced on another process', () => {
  it('a turn resumed on B after an approval there streams to the socket on A', async () => {
    const { user, c } = await userOnA();
    fake.clear();
    fake.script('anthropic', {
      text: 'I will send it once you approve.',
      toolCalls: [
        {
          name: 'send_email',
          input: { to: ['buyer@customer.test'], subject: 'Quote', body: 'Here is the quote.' },
        },
      ],
    });
    await c.send({
      type: 'chat.send',
      request_id: 'r1',
      message: 'Email the quote to buyer@customer.test',
      agent: 'sales',
    });
    const requested = await c.next('approval.requested');
    const end = await c.next('message.end', (e) => e.request_id === 'r1');
    expect(end.finish).toBe('awaiting_approval');

    fake.script('anthropic', 'Sent the quote to buyer@customer.test.');
    const res = await B.inject(user.token, {
      method: 'POST',
      url: `/approvals/${requested.approval_id}/approve`,
    });
    expect(res.statusCode, res.body).toBe(200);

    const requestId = `approval:${requested.approval_id}`;
    const decided = await c.next('approval.decided');
    expect(decided.approval).toMatchObject({ id: requested.approval_id, status: 'executed' });
    const resumed = await c.next('message.end', (e) => e.request_id === requestId);
    expect(resumed).toMatchObject({
      text: 'Sent the quote to buyer@customer.test.',
      finish: 'stop',
      session_id: end.session_id,
    });
    const deltas = c.events.filter((e) => e.type === 'text.delta' && e.request_id === requestId);
    expect(deltas.map((e) => (e as { text: string }).text).join('')).toBe(resumed.text);
    // Numbered into the socket's stream like its own events, in order.
    const seqs = c.events.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    // The reply is stored once, by B.
    const rows = await db.database.db
      .selectFrom('conversations')
      .select(['role', 'content'])
      .where('session_id', '=', end.session_id)
      .orderBy('created_at')
      .execute();
    expect(rows.map((r) => r.role)).toEqual(['user', 'assistant', 'assistant']);
    expect(rows[2]!.content).toBe(resumed.text);
  });
});

describe('a reconnect to another process resumes the stream', () => {
  it('drops on A mid-turn, resumes on B: missed events replayed, the rest relayed, one numbering', async () => {
    const { user, c } = await userOnA();
    const ready = c.events.find((e) => e.type === 'ready') as { connection_id: string };
    fake.clear();
    const text = 'One. Two. Three. Four. Five. Six. Seven. Eight.';
    fake.script('anthropic', { text, chunkDelayMs: 60 });
    await c.send({ type: 'chat.send', request_id: 'r-move', message: 'Count', agent: 'sales' });
    await c.next('text.delta', (e) => e.request_id === 'r-move');
    c.ws.terminate();
    await c.closed;
    const seen = c.events.at(-1)!.seq;

    const moved = new Client(wsB);
    clients.push(moved);
    const resumed = await moved.hello(user.token, {
      resume: { connection_id: ready.connection_id, last_seq: seen },
    });
    expect(resumed).toMatchObject({ resumed: true, connection_id: ready.connection_id });
    const end = await moved.next('message.end', (e) => e.request_id === 'r-move');
    expect(end).toMatchObject({ text, finish: 'stop' });

    // Everything after `seen`, once each and in order: replayed, then relayed from A.
    const seqs = moved.events.map((e) => e.seq);
    expect(seqs[0]).toBe(seen + 1);
    expect(seqs).toEqual(seqs.map((_, i) => seen + 1 + i));
    const deltas = (events: typeof c.events) =>
      events
        .filter((e) => e.type === 'text.delta' && e.request_id === 'r-move')
        .map((e) => (e as { text: string }).text)
        .join('');
    expect(deltas(c.events) + deltas(moved.events)).toBe(text);
    // The turn ran once, on A.
    expect(fake.requests).toHaveLength(1);
  });
});

describe('cancel reaches the process running the turn', () => {
  it('chat.cancel on A stops a REST turn running on B', async () => {
    const { user, c } = await userOnA();
    const started = performance.now();
    const { pending, sessionId } = await turnOnB(user, 'This answer takes far too long.', 20_000);

    await c.send({ type: 'chat.cancel', session_id: sessionId });
    const res = await pending;
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ session_id: sessionId, finish: 'cancelled' });
    expect(performance.now() - started).toBeLessThan(5_000);
    // The upstream request was aborted, not waited for.
    await waitFor(() => fake.requests[0]!.outcome !== 'pending', 2_000, 'the fake to see it');
    expect(fake.requests[0]!.outcome).toBe('client-closed');
    expect(c.events.filter((e) => e.type === 'error')).toEqual([]);
  });

  it('POST /chat/sessions/:id/cancel on A does the same; nothing running → cancelled false', async () => {
    const user = await A.userWithToken('sales_rep');
    const { pending, sessionId } = await turnOnB(user, 'Slow.', 20_000);
    const cancel = await cancelOnA(user.token, sessionId);
    expect(cancel.statusCode, cancel.body).toBe(200);
    expect(cancel.json()).toEqual({ cancelled: true });
    expect((await pending).json()).toMatchObject({ finish: 'cancelled' });

    const again = await cancelOnA(user.token, sessionId);
    expect(again.json()).toEqual({ cancelled: false });
  });

  it("another user's session: 404, and the turn keeps running", async () => {
    const owner = await A.userWithToken('sales_rep');
    const other = await A.userWithToken('sales_rep');
    const { pending, sessionId } = await turnOnB(owner, 'Done in a moment.', 600);
    const res = await cancelOnA(other.token, sessionId);
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('not_found');
    expect((await pending).json()).toMatchObject({ finish: 'stop', text: 'Done in a moment.' });
  });
});

describe('one turn per session across processes', () => {
  it('sends to one session on A and on B run one after the other, in order', async () => {
    const user = await A.userWithToken('sales_rep');
    fake.clear();
    fake.script('anthropic', 'First answer.');
    const first = await A.inject(user.token, {
      method: 'POST',
      url: '/chat/send',
      payload: { message: 'one', agent: 'sales' },
    });
    const sessionId = first.json().session_id as string;

    fake.clear();
    fake.script('anthropic', { text: 'Second answer.', delayMs: 500 });
    fake.script('anthropic', 'Third answer.');
    const onA = A.inject(user.token, {
      method: 'POST',
      url: '/chat/send',
      payload: { message: 'two', session_id: sessionId },
    });
    await waitFor(() => fake.requests.length === 1, 5_000, 'the second turn to start');
    const onB = B.inject(user.token, {
      method: 'POST',
      url: '/chat/send',
      payload: { message: 'three', session_id: sessionId },
    });
    const [two, three] = await Promise.all([onA, onB]);
    expect(two.json().text).toBe('Second answer.');
    expect(three.json().text).toBe('Third answer.');
    // B's turn started only once A's was stored: its history holds A's answer.
    expect(fake.requests).toHaveLength(2);
    const sent = JSON.stringify(fake.requests[1]!.body);
    expect(sent).toContain('Second answer.');

    const rows = await db.database.db
      .selectFrom('conversations')
      .select(['role', 'content'])
      .where('session_id', '=', sessionId)
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    expect(rows.map((r) => r.content)).toEqual([
      'one',
      'First answer.',
      'two',
      'Second answer.',
      'three',
      'Third answer.',
    ]);
    const session = await db.database.db
      .selectFrom('chat_sessions')
      .select(['turn_token', 'turn_expires_at'])
      .where('id', '=', sessionId)
      .executeTakeFirstOrThrow();
    expect(session).toEqual({ turn_token: null, turn_expires_at: null });
  });
});

describe('SIGTERM', () => {
  it('stores the turns in flight as failed: the REST sender gets 503, the socket closes 1001', async () => {
    const port = await freePort();
    const proc = startServer(
      {
        DATABASE_URL: db.url!,
        DATABASE_SCHEMA: db.schema!,
        REDIS_URL: redisUrl,
        JWT_SECRET: TEST_JWT_SECRET,
        HOST: '127.0.0.1',
        PORT: String(port),
        ANTHROPIC_API_KEY: 'test-key',
        ANTHROPIC_BASE_URL: fake.url,
        MEZZOFY__redis__key_prefix: prefix,
        MEZZOFY__server__drain_delay_ms: '200',
        MEZZOFY__logging__access_log: 'false',
        LOG_LEVEL: 'warn',
      },
      ['--role=api'],
    );
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitFor(
        async () => {
          if (proc.child.exitCode !== null) throw new Error(proc.stderr());
          return fetch(`${base}/health`).then(
            (r) => r.ok,
            () => false,
          );
        },
        30_000,
        'the server process',
      );
      const user = await A.createUser('sales_rep');
      const login = await fetch(`${base}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: user.email, password: STRONG_PASSWORD }),
      });
      const token = ((await login.json()) as { access_token: string }).access_token;

      fake.clear();
      fake.script('anthropic', { text: 'Never finished.', delayMs: 30_000 });
      fake.script('anthropic', { text: 'Never finished either.', delayMs: 30_000 });
      const rest = fetch(`${base}/chat/send`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ message: 'over REST', agent: 'sales' }),
      });
      const c = new Client(`ws://127.0.0.1:${port}/chat/ws`);
      clients.push(c);
      await c.hello(token);
      await c.send({ type: 'chat.send', request_id: 'w1', message: 'over WS', agent: 'sales' });
      await waitFor(() => fake.requests.length === 2, 5_000, 'both model requests');

      proc.child.kill('SIGTERM');
      const res = await rest;
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
        'service_unavailable',
      );
      const closed = await c.closed;
      expect(closed.code).toBe(WS_CLOSE.going_away);
      expect(await proc.exited).toBe(0);

      const failed = await db.database.db
        .selectFrom('conversations')
        .select(['metadata'])
        .where('user_id', '=', user.id)
        .where('role', '=', 'assistant')
        .execute();
      expect(failed).toHaveLength(2);
      for (const row of failed)
        expect(row.metadata).toMatchObject({ status: 'failed', error: 'service_unavailable' });
      const leases = await db.database.db
        .selectFrom('chat_sessions')
        .select('turn_token')
        .where('user_id', '=', user.id)
        .execute();
      expect(leases.map((l) => l.turn_token)).toEqual([null, null]);
    } finally {
      if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
    }
  }, 60_000);
});
