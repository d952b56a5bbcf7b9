/**
 * Chat over the WebSocket `GET /chat/ws`, against the listening app and the fake model server:
 * the hello deadline, bad tokens and protocol versions close with their codes; hello → ready;
 * invalid frames are error events and the socket stays up; oversize frames close 1009 with
 * the sizes in the reason (over the hard ceiling: ws's bare 1009); an unknown agent is
 * validation_failed;
 * chat.send streams deltas in seq order then message.end; cancel ends the turn 'cancelled';
 * deactivating the user closes their socket 4003; other users' sessions and approvals are
 * not_found; a dropped connection resumes from its last seq; the per-socket message budget;
 * and the upgrade is not counted by the HTTP rate limiter.
 */
import type { AddressInfo } from 'node:net';
import { PROTOCOL_VERSION, WS_CLOSE } from '@mezzofy/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { frameCeiling } from '../src/realtime/ws-gateway.ts';
import type { ToolContext, ToolOutcome } from '../src/tools/tool.ts';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';
import { Client } from './helpers/ws-client.ts';

let fake: FakeModelServer;
let db: TestDatabase;
let t: TestApp;
let url: string;
const MAX_FRAME = 2048;
const BUDGET = 30;

async function listen(app: TestApp): Promise<string> {
  await app.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.app.server.address() as AddressInfo;
  return `ws://127.0.0.1:${port}/chat/ws`;
}

beforeAll(async () => {
  fake = await startFakeModelServer();
  db = await createTestDatabase();
  t = await createTestApp({
    testDatabase: db,
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
    overrides: {
      realtime: { hello_timeout_ms: 200, max_frame_bytes: MAX_FRAME, messages_per_window: BUDGET },
    },
  });
  url = await listen(t);
});
afterAll(async () => {
  await t?.close();
  await db?.drop();
  await fake?.close();
});

const clients: Client[] = [];
function client(target?: string) {
  const c = new Client(target ?? url);
  clients.push(c);
  return c;
}
afterAll(() => {
  for (const c of clients) c.ws.terminate();
});

async function ready(role = 'sales_rep') {
  const user = await t.userWithToken(role);
  const c = client();
  const ready = await c.hello(user.token);
  return { user, c, ready };
}

describe('connecting', () => {
  it('closes 4001 when no hello arrives within the deadline', async () => {
    const c = client();
    await c.opened();
    const started = Date.now();
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.unauthenticated);
    expect(reason).toMatch(/no hello within 200 ms/);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('closes 4001 with the reason for a bad token', async () => {
    const c = client();
    await c.send({ type: 'hello', token: 'not-a-jwt', protocol_version: PROTOCOL_VERSION });
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.unauthenticated);
    expect(reason).toMatch(/^unauthorized: /);
    expect(c.events).toEqual([]);
  });

  it('closes 4001 when the first frame is not a hello', async () => {
    const c = client();
    await c.send({ type: 'ping' });
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.unauthenticated);
    expect(reason).toMatch(/hello/);
  });

  it('closes 4009 on a protocol version mismatch', async () => {
    const user = await t.userWithToken();
    const c = client();
    await c.send({ type: 'hello', token: user.token, protocol_version: PROTOCOL_VERSION + 1 });
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.version_mismatch);
    expect(reason).toContain(`this server speaks ${PROTOCOL_VERSION}`);
  });

  it('answers hello with ready', async () => {
    const { user, ready: r } = await ready();
    expect(r).toMatchObject({
      type: 'ready',
      seq: 1,
      user: { id: user.id, email: user.email, role: 'sales_rep' },
      protocol_version: PROTOCOL_VERSION,
      max_frame_bytes: MAX_FRAME,
      resumed: false,
    });
    expect(r.connection_id).toBeTruthy();
    expect(Date.parse(r.token_expires_at)).toBeGreaterThan(Date.now());
  });
});

describe('frames', () => {
  it('answers an invalid frame with an error event and keeps the socket up', async () => {
    const { c } = await ready();
    await c.send('{not json');
    expect(await c.next('error')).toMatchObject({ code: 'invalid_json' });
    await c.send({ type: 'chat.send', request_id: 'r1' });
    expect(await c.next('error')).toMatchObject({ code: 'validation_failed', request_id: 'r1' });
    await c.send({ type: 'no.such.thing' });
    expect(await c.next('error')).toMatchObject({ code: 'validation_failed' });
    await c.send({ type: 'ping', id: 'p1' });
    const pong = await c.next('pong');
    expect(pong.id).toBe('p1');
    const seqs = c.events.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  /** A ping frame of exactly `bytes` bytes (JSON allows the trailing spaces). */
  function pingOf(bytes: number, id: string): string {
    const frame = JSON.stringify({ type: 'ping', id });
    return frame + ' '.repeat(bytes - Buffer.byteLength(frame));
  }

  it('a frame of exactly max_frame_bytes is answered', async () => {
    const { c } = await ready();
    await c.send(pingOf(MAX_FRAME, 'at-limit'));
    expect(await c.next('pong')).toMatchObject({ id: 'at-limit' });
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('closes 1009 with the sizes in the reason on a frame over the limit, after the frames before it', async () => {
    const { c } = await ready();
    await c.send({ type: 'ping', id: 'before' });
    await c.send(pingOf(MAX_FRAME + 1, 'over'));
    await c.send({ type: 'ping', id: 'after' });
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.too_large);
    expect(reason).toBe(`frame of ${MAX_FRAME + 1} bytes exceeds max_frame_bytes ${MAX_FRAME}`);
    const pongs = c.events.flatMap((e) => (e.type === 'pong' ? [e.id] : []));
    expect(pongs).toEqual(['before']);
  });

  it('the reason holds up to the hard ceiling; a frame of multi-byte text counts its bytes', async () => {
    const ceiling = frameCeiling(MAX_FRAME);
    expect(ceiling).toBeGreaterThan(MAX_FRAME);
    const { c } = await ready();
    const frame = JSON.stringify({ type: 'ping', id: '€'.repeat((ceiling - 40) / 3) });
    const bytes = Buffer.byteLength(frame);
    expect(frame.length).toBeLessThanOrEqual(MAX_FRAME);
    expect(bytes).toBeGreaterThan(MAX_FRAME);
    expect(bytes).toBeLessThanOrEqual(ceiling);
    await c.send(frame);
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.too_large);
    expect(reason).toBe(`frame of ${bytes} bytes exceeds max_frame_bytes ${MAX_FRAME}`);
  });

  it('a frame over the hard ceiling is cut by ws: 1009 with no reason', async () => {
    const { c } = await ready();
    await c.send(pingOf(frameCeiling(MAX_FRAME) + 1, 'huge'));
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.too_large);
    expect(reason).toBe('');
  });

  it('an oversize first frame (before hello) closes 1009 with the reason too', async () => {
    const c = client();
    await c.send(pingOf(MAX_FRAME + 10, 'early'));
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.too_large);
    expect(reason).toMatch(/^frame of \d+ bytes exceeds max_frame_bytes 2048$/);
    expect(c.events).toEqual([]);
  });

  it('answers rate_limited past the per-connection message budget', async () => {
    const { c } = await ready();
    for (let i = 0; i < BUDGET + 2; i++) await c.send({ type: 'ping', id: String(i) });
    expect(await c.next('error')).toMatchObject({ code: 'rate_limited' });
    expect(c.events.filter((e) => e.type === 'pong')).toHaveLength(BUDGET - 1);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('reauth with a fresh token of the same user is accepted; another user’s is refused', async () => {
    const { user, c } = await ready();
    const again = await t.login(user.email, user.password);
    await c.send({ type: 'reauth', token: again.json().access_token });
    expect(await c.next('reauth.ok')).toMatchObject({ type: 'reauth.ok' });
    const other = await t.userWithToken();
    await c.send({ type: 'reauth', token: other.token });
    expect(await c.next('error')).toMatchObject({ code: 'forbidden' });
    await c.send({ type: 'reauth', token: 'not-a-jwt' });
    expect(await c.next('error')).toMatchObject({ code: 'unauthorized' });
  });
});

describe('chat.send', () => {
  it('streams text deltas in order with increasing seq, then message.end', async () => {
    const { c } = await ready('executive');
    fake.clear();
    fake.script('anthropic', { text: ['Revenue ', 'is ', 'up ', '5%.'], chunkDelayMs: 10 });
    await c.send({
      type: 'chat.send',
      request_id: 'turn-1',
      message: 'How is revenue?',
      agent: 'finance',
    });
    const end = await c.next('message.end');
    expect(end).toMatchObject({
      request_id: 'turn-1',
      agent: 'finance',
      text: 'Revenue is up 5%.',
      finish: 'stop',
      provider: 'anthropic',
      fallback_reason: null,
    });
    expect(end.model).toBeTruthy();
    // Someone reads this turn as it is written: the model is asked to stream it.
    expect(fake.lastRequest()!.stream).toBe(true);
    const turn = c.events.filter((e) => 'request_id' in e && e.request_id === 'turn-1');
    const deltas = turn.filter((e) => e.type === 'text.delta');
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.map((d) => d.text).join('')).toBe('Revenue is up 5%.');
    expect(turn.findIndex((e) => e.type === 'model.start')).toBeLessThan(
      turn.findIndex((e) => e.type === 'text.delta'),
    );
    expect(turn.at(-1)!.type).toBe('message.end');
    const seqs = c.events.map((e) => e.seq);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]!);

    // Stored like a REST turn.
    const detail = await t.inject(undefined, { method: 'GET', url: '/health' });
    expect(detail.statusCode).toBe(200);
    const rows = await t.db
      .selectFrom('conversations')
      .select(['role', 'content'])
      .where('session_id', '=', end.session_id)
      .orderBy('created_at', 'asc')
      .execute();
    expect(rows).toEqual([
      { role: 'user', content: 'How is revenue?' },
      { role: 'assistant', content: 'Revenue is up 5%.' },
    ]);
  });

  it.each(['invalid-json', 'garbage', 'truncated'] as const)(
    'a provider answering %s output: an error event, the turn stored as failed, the socket stays up',
    async (malformed) => {
      const { user, c } = await ready('executive');
      fake.clear();
      fake.script('anthropic', { text: 'never seen', malformed });
      await c.send({ type: 'chat.send', request_id: 'bad', message: 'Revenue?', agent: 'finance' });
      const error = await c.next('error', (e) => e.request_id === 'bad');
      expect(error.code).toBe('llm_unavailable');
      expect(c.events.some((e) => e.type === 'message.end')).toBe(false);
      const rows = await t.db
        .selectFrom('conversations')
        .select(['role', 'content', 'metadata'])
        .where('user_id', '=', user.id)
        .orderBy('created_at', 'asc')
        .execute();
      expect(rows.map((r) => r.role)).toEqual(['user', 'assistant']);
      expect(rows[1]!.metadata).toMatchObject({ status: 'failed', error: 'llm_unavailable' });
      await c.send({ type: 'ping', id: 'after' });
      expect(await c.next('pong')).toMatchObject({ id: 'after' });
    },
  );

  it('cancel mid-stream ends the turn with finish cancelled', async () => {
    const { c } = await ready('executive');
    fake.clear();
    fake.script('anthropic', {
      text: Array.from({ length: 40 }, (_, i) => `w${i} `),
      chunkDelayMs: 50,
    });
    await c.send({ type: 'chat.send', request_id: 'turn-c', message: 'Talk', agent: 'support' });
    await c.next('text.delta', (e) => e.request_id === 'turn-c');
    await c.send({ type: 'chat.cancel', request_id: 'turn-c' });
    const end = await c.next('message.end', (e) => e.request_id === 'turn-c');
    expect(end.finish).toBe('cancelled');
    expect(end.text.split(' ').length).toBeLessThan(40);
  });

  it('cancel of no running turn is not_found', async () => {
    const { c } = await ready();
    await c.send({ type: 'chat.cancel', request_id: 'nothing' });
    expect(await c.next('error')).toMatchObject({ code: 'not_found', request_id: 'nothing' });
  });

  it("another user's session id is not_found", async () => {
    const owner = await t.userWithToken('executive');
    fake.clear();
    fake.script('anthropic', 'Mine.');
    const res = await t.inject(owner.token, {
      method: 'POST',
      url: '/chat/send',
      payload: { message: 'Private', agent: 'support' },
    });
    expect(res.statusCode).toBe(200);
    const { c } = await ready('executive');
    await c.send({
      type: 'chat.send',
      request_id: 'steal',
      message: 'Show me',
      session_id: res.json().session_id,
    });
    expect(await c.next('error')).toMatchObject({ code: 'not_found', request_id: 'steal' });
    expect(fake.counts.anthropic).toBe(1);
  });

  it('an agent the role may not reach is agent_forbidden', async () => {
    const { c } = await ready('sales_rep');
    await c.send({ type: 'chat.send', request_id: 'f', message: 'Invoices', agent: 'finance' });
    expect(await c.next('error')).toMatchObject({ code: 'agent_forbidden', request_id: 'f' });
  });

  it('an unknown agent is validation_failed naming the field; the socket stays up for the next frame', async () => {
    const { c } = await ready('executive');
    fake.clear();
    await c.send({ type: 'chat.send', request_id: 'u', message: 'Contracts?', agent: 'legal' });
    const error = await c.next('error');
    expect(error).toMatchObject({ code: 'validation_failed', request_id: 'u' });
    expect(error.message).toMatch(/^agent: /);
    expect(fake.counts.anthropic).toBe(0);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);

    fake.script('anthropic', 'Fine.');
    await c.send({ type: 'chat.send', request_id: 'k', message: 'Contracts?', agent: 'support' });
    const end = await c.next('message.end', (e) => e.request_id === 'k');
    expect(end).toMatchObject({ agent: 'support', text: 'Fine.' });
    expect(fake.counts.anthropic).toBe(1);
  });

  it('resumes after a reconnect from the last seq, with events sent while away', async () => {
    const { user, c, ready: r } = await ready('executive');
    fake.clear();
    fake.script('anthropic', { text: ['one ', 'two ', 'three ', 'four.'], chunkDelayMs: 100 });
    await c.send({ type: 'chat.send', request_id: 'turn-r', message: 'Count', agent: 'support' });
    const first = await c.next('text.delta', (e) => e.request_id === 'turn-r');
    c.ws.terminate();
    await c.closed;

    const again = client();
    const resumed = await again.hello(user.token, {
      resume: { connection_id: r.connection_id, last_seq: first.seq },
    });
    expect(resumed.resumed).toBe(true);
    expect(resumed.connection_id).toBe(r.connection_id);
    const end = await again.next('message.end', (e) => e.request_id === 'turn-r');
    expect(end.text).toBe('one two three four.');
    const replayed = again.events.filter((e) => e.type === 'text.delta');
    expect(first.text + replayed.map((e) => e.type === 'text.delta' && e.text).join('')).toBe(
      'one two three four.',
    );
    expect(Math.min(...again.events.map((e) => e.seq))).toBe(first.seq + 1);
  });

  it("another user's connection_id does not resume", async () => {
    const { ready: r } = await ready();
    const other = await t.userWithToken();
    const c = client();
    const second = await c.hello(other.token, {
      resume: { connection_id: r.connection_id, last_seq: 0 },
    });
    expect(second.resumed).toBe(false);
    expect(second.connection_id).not.toBe(r.connection_id);
  });
});

describe('access changes', () => {
  it("closes the user's socket 4003 when an admin deactivates them", async () => {
    const admin = await t.userWithToken('admin');
    const { user, c } = await ready();
    const { c: bystander } = await ready();
    const started = Date.now();
    const off = await t.inject(admin.token, {
      method: 'PATCH',
      url: `/admin/users/${user.id}`,
      payload: { is_active: false },
    });
    expect(off.statusCode).toBe(200);
    const { code, reason } = await c.closed;
    expect(code).toBe(WS_CLOSE.forbidden);
    expect(reason).toMatch(/deactivated/);
    expect(Date.now() - started).toBeLessThan(2_000);
    await bystander.send({ type: 'ping' });
    await bystander.next('pong');
  });

  it("closes the user's socket 4003 when their role changes", async () => {
    const admin = await t.userWithToken('admin');
    const { user, c } = await ready('sales_manager');
    const res = await t.inject(admin.token, {
      method: 'PATCH',
      url: `/admin/users/${user.id}`,
      payload: { role: 'sales_rep' },
    });
    expect(res.statusCode, res.body).toBe(200);
    const { code } = await c.closed;
    expect(code).toBe(WS_CLOSE.forbidden);
  });
});

describe('approval.decide', () => {
  async function parkMail(token: string): Promise<string> {
    const ctx: ToolContext = {
      principal: await t.container.auth.authenticate(token),
      sessionId: null,
      source: 'web',
      signal: new AbortController().signal,
      log: t.container.loggers.app,
    };
    const outcome: ToolOutcome = await t.container.tools.executor.execute(
      {
        id: 'call_ws',
        name: 'send_email',
        input: { to: ['client@customer.test'], subject: 'Hi', body: 'Hello' },
      },
      ctx,
      ['send_email'],
    );
    expect(outcome.status).toBe('pending_approval');
    return (outcome as { approvalId: string }).approvalId;
  }

  it("another user's approval id is not_found and stays pending; the owner's is decided", async () => {
    const owner = await t.userWithToken('sales_rep');
    const id = await parkMail(owner.token);
    const { c } = await ready('sales_rep');
    await c.send({ type: 'approval.decide', approval_id: id, decision: 'approve' });
    expect(await c.next('error')).toMatchObject({ code: 'not_found' });
    const row = await t.db
      .selectFrom('pending_actions')
      .select('status')
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row.status).toBe('pending');

    const mine = client();
    await mine.hello(owner.token);
    await mine.send({ type: 'approval.decide', approval_id: id, decision: 'reject' });
    const decided = await mine.next('approval.decided');
    expect(decided.approval).toMatchObject({ id, status: 'rejected' });
  });
});

describe('HTTP rate limiter', () => {
  it('does not count the upgrade', async () => {
    const limited = await createTestApp({
      testDatabase: db,
      overrides: { rate_limit: { enabled: true, ip_points: 3 } },
    });
    try {
      const target = await listen(limited);
      const sockets = Array.from({ length: 6 }, () => client(target));
      await Promise.all(sockets.map((s) => s.opened()));
      const res = await limited.app.inject({ method: 'GET', url: '/chat/sessions' });
      expect(res.statusCode).toBe(401);
      expect(res.headers['x-ratelimit-remaining']).toBe('2');
      for (const s of sockets) s.ws.terminate();
    } finally {
      await limited.close();
    }
  });
});
