/**
 * The terminal chat client's core against the listening app and the fake model server:
 * a message streams its text and the footer names the provider and model; a send_email tool
 * call asks for approval and `/approve <id>` decides it and delivers to the outbox, then the
 * turn goes on; Ctrl-C cancels a turn and a second one quits; the access token is refreshed
 * before it expires and the socket re-authenticated; a dropped connection is reconnected and
 * its stream resumed, the answer printed once; a wrong password is a clear error and a
 * non-zero exit.
 */
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createChatClient } from '../src/cli/chat-client.ts';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';

let fake: FakeModelServer;
let db: TestDatabase;
let t: TestApp;
let baseUrl: string;

beforeAll(async () => {
  fake = await startFakeModelServer();
  db = await createTestDatabase();
  t = await createTestApp({
    testDatabase: db,
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
  });
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = t.app.server.address() as AddressInfo;
  baseUrl = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  await t?.close();
  await db?.drop();
  await fake?.close();
});

/** Runs the client with a captured output; `until` waits for the output to match. */
function session(
  email: string,
  password: string,
  extra: { url?: string; refreshMarginMs?: number; fetch?: typeof fetch } = {},
) {
  const output = new PassThrough();
  let text = '';
  output.on('data', (chunk) => {
    text += String(chunk);
  });
  const client = createChatClient({
    url: extra.url ?? baseUrl,
    email,
    password,
    output,
    WebSocket,
    ...(extra.refreshMarginMs === undefined ? {} : { refreshMarginMs: extra.refreshMarginMs }),
    ...(extra.fetch ? { fetch: extra.fetch } : {}),
  });
  const until = async (pattern: RegExp, timeoutMs = 5_000): Promise<RegExpMatchArray> => {
    const started = Date.now();
    for (;;) {
      const match = text.match(pattern);
      if (match) return match;
      if (Date.now() - started > timeoutMs) throw new Error(`no ${pattern} in:\n${text}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { client, until, output: () => text };
}

describe('chat client', () => {
  it('streams a reply and prints the provider/model footer', async () => {
    const user = await t.createUser('executive');
    fake.clear();
    fake.script('anthropic', { text: ['Revenue ', 'is ', 'up ', '5%.'], chunkDelayMs: 10 });
    const s = session(user.email, user.password);
    async function* lines() {
      await s.until(/Connected as/);
      yield '/agent finance';
      yield 'How is revenue?';
      await s.until(/answered by/);
      yield '/quit';
    }
    expect(await s.client.run(lines())).toBe(0);
    expect(s.output()).toContain('Revenue is up 5%.\n');
    expect(s.output()).toMatch(/— answered by anthropic \([^)]+\)/);
  });

  it('asks for approval of send_email; /approve delivers it to the outbox and the turn goes on', async () => {
    const user = await t.createUser('sales_rep');
    fake.clear();
    fake.script('anthropic', {
      toolCalls: [
        {
          name: 'send_email',
          input: { to: ['buyer@kopihouse.test'], subject: 'Hello', body: 'Hi there' },
        },
      ],
    });
    fake.script('anthropic', 'Sent it to Kopi House.');
    const s = session(user.email, user.password);
    let approvalId = '';
    async function* lines() {
      await s.until(/Connected as/);
      yield '/agent sales';
      yield 'E-mail Kopi House';
      approvalId = (await s.until(/approval needed ([0-9a-f-]{36})/))[1]!;
      await s.until(/answered by/);
      yield '/approvals';
      await s.until(new RegExp(`${approvalId}\\s+send_email`));
      yield `/approve ${approvalId}`;
      await s.until(/approval\.decided/);
      // The turn resumes after the decision and its answer streams in.
      await s.until(/Sent it to Kopi House\.\n.*answered by/s);
      yield '/quit';
    }
    expect(await s.client.run(lines())).toBe(0);
    expect(s.output()).toContain(`/approve ${approvalId}`);
    expect(s.output()).toMatch(new RegExp(`approval\\.decided ${approvalId}: send_email`));
    const started = Date.now();
    let rows: unknown[] = [];
    while (rows.length === 0 && Date.now() - started < 5_000) {
      rows = await t.db
        .selectFrom('outbox')
        .selectAll()
        .where('pending_action_id', '=', approvalId)
        .execute();
      if (rows.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(rows).toHaveLength(1);
  });

  it('reconnects after the connection drops mid-answer and resumes: the answer is printed once', async () => {
    const user = await t.createUser('executive');
    fake.clear();
    fake.script('anthropic', { text: ['Alpha ', 'beta ', 'gamma ', 'delta.'], chunkDelayMs: 120 });
    const s = session(user.email, user.password);
    async function* lines() {
      await s.until(/Connected as/);
      yield '/agent finance';
      yield 'Spell it out';
      await s.until(/Alpha/);
      // The network drops: the server side of every socket goes away without a close frame.
      for (const socket of t.app.websocketServer.clients) socket.terminate();
      await s.until(/reconnected; nothing was lost/);
      await s.until(/answered by/);
      yield '/quit';
    }
    expect(await s.client.run(lines())).toBe(0);
    const out = s.output();
    expect(out).toMatch(/connection closed \(close 1006\); reconnecting/);
    for (const word of ['Alpha', 'beta', 'gamma', 'delta.'])
      expect(out.split(word)).toHaveLength(2); // exactly once
    const at = (w: string) => out.indexOf(w);
    expect(at('Alpha')).toBeLessThan(at('beta'));
    expect(at('beta')).toBeLessThan(at('gamma'));
    expect(at('gamma')).toBeLessThan(at('delta.'));
    expect(at('delta.')).toBeLessThan(at('answered by'));
    expect(fake.requests).toHaveLength(1);
  });

  it('a wrong password prints a clear error and exits non-zero', async () => {
    const user = await t.createUser('sales_rep');
    const s = session(user.email, 'not-the-password');
    async function* lines() {
      yield '/quit';
    }
    expect(await s.client.run(lines())).toBe(1);
    expect(s.output()).toMatch(/^error: POST \/auth\/login failed: .+\(\w+\)\n$/);
  });

  it('Ctrl-C cancels the running turn; a second Ctrl-C quits', async () => {
    const user = await t.createUser('executive');
    fake.clear();
    fake.script('anthropic', {
      text: Array.from({ length: 200 }, (_, i) => `word${i} `),
      chunkDelayMs: 20,
    });
    const s = session(user.email, user.password);
    async function* lines() {
      await s.until(/Connected as/);
      yield '/agent finance';
      yield 'Write a long report';
      await s.until(/word3 /);
      s.client.interrupt();
      await s.until(/answered by .*\[cancelled\]/);
      s.client.interrupt();
      await new Promise(() => {}); // no more input: the second Ctrl-C ends the run
    }
    expect(await s.client.run(lines())).toBe(0);
    expect(s.output()).toContain('— cancelling (Ctrl-C again to quit)');
    expect(s.output()).not.toContain('word199');
  });

  it('refreshes the access token before it expires and re-authenticates the socket', async () => {
    // Access tokens live 3 s here: without reauth the server closes the socket at expiry.
    const short = await createTestApp({
      testDatabase: db,
      env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
      overrides: { auth: { access_ttl_s: 3 } },
    });
    await short.app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = short.app.server.address() as AddressInfo;
      const user = await short.createUser('executive');
      const paths: string[] = [];
      const recording: typeof fetch = (input, init) => {
        paths.push(new URL(String(input)).pathname);
        return fetch(input, init);
      };
      fake.clear();
      fake.script('anthropic', 'Still here.');
      const s = session(user.email, user.password, {
        url: `http://127.0.0.1:${port}`,
        refreshMarginMs: 2_000,
        fetch: recording,
      });
      async function* lines() {
        await s.until(/Connected as/);
        // Past the first token's expiry (3 s): only a reauth keeps the socket open.
        await new Promise((r) => setTimeout(r, 4_500));
        yield '/agent finance';
        yield 'Are you still there?';
        await s.until(/answered by/);
        yield '/quit';
      }
      expect(await s.client.run(lines())).toBe(0);
      expect(paths.filter((p) => p === '/auth/refresh').length).toBeGreaterThanOrEqual(1);
      expect(s.output()).toContain('Still here.');
      expect(s.output()).not.toMatch(/error|expired/);
    } finally {
      await short.close();
    }
  }, 15_000);
});
