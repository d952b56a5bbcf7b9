/**
 * Real server processes (`--role=api`) on one PostgreSQL schema and one Redis: start-up
 * together (migrations, first admin), changes made on one process applying on the other at
 * once, rate limits counted across processes, and SIGTERM.
 */
import { PROTOCOL_VERSION, WS_CLOSE } from '@mezzofy/protocol';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createPasswordHasher } from '../src/auth/passwords.ts';
import { createDatabase, type Database } from '../src/db/database.ts';
import { readMigrations } from '../src/db/migrate.ts';
import { bootstrapAdmin } from '../src/users/bootstrap-admin.ts';
import {
  freePort,
  postgresRedisEnv,
  type ServerProcess,
  startServer,
  waitFor,
} from './helpers/processes.ts';
import { clearRedisPrefix, testKeyPrefix, testRedisUrl } from './helpers/redis.ts';
import { createTestApp, STRONG_PASSWORD, TEST_JWT_SECRET } from './helpers/test-app.ts';
import { createPostgresSchema, createTestDatabase } from './helpers/test-database.ts';

const dbUrl = process.env.TEST_DATABASE_URL ?? '';
const redisUrl = testRedisUrl();
const prefix = testKeyPrefix('multi');
const limitedPrefix = testKeyPrefix('multi-rl');
const ADMIN_EMAIL = 'first-admin@mezzofy.test';

interface Node {
  name: string;
  base: string;
  proc: ServerProcess;
}

let schema: string;
let dropSchema: () => Promise<void>;
let db: Database;
const nodes: Record<'A' | 'B' | 'C' | 'D', Node> = {} as never;

function start(name: string, port: number, keyPrefix: string, extra: Record<string, string> = {}) {
  const proc = startServer(
    {
      ...postgresRedisEnv({
        databaseUrl: dbUrl,
        schema,
        redisUrl,
        keyPrefix,
        port,
        adminEmail: ADMIN_EMAIL,
        adminPassword: STRONG_PASSWORD,
        jwtSecret: TEST_JWT_SECRET,
      }),
      MEZZOFY__logging__access_log: 'false',
      LOG_LEVEL: 'warn',
      ...extra,
    },
    ['--role=api'],
  );
  return { name, base: `http://127.0.0.1:${port}`, proc };
}

async function healthy(node: Node): Promise<boolean> {
  if (node.proc.child.exitCode !== null) {
    throw new Error(
      `process ${node.name} exited with ${node.proc.child.exitCode}:\n${node.proc.stderr()}\n${node.proc.stdout()}`,
    );
  }
  try {
    return (await fetch(`${node.base}/health`)).status === 200;
  } catch {
    return false;
  }
}

interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: JSON replies, checked by the assertions
  body: any;
}

async function call(
  node: Node,
  method: string,
  path: string,
  options: { token?: string; body?: unknown } = {},
): Promise<Reply> {
  const res = await fetch(`${node.base}${path}`, {
    method,
    headers: {
      ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

async function login(node: Node, email: string, password = STRONG_PASSWORD): Promise<string> {
  const res = await call(node, 'POST', '/auth/login', { body: { email, password } });
  if (res.status !== 200)
    throw new Error(`login on ${node.name}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.access_token;
}

let userCounter = 0;
async function createUser(node: Node, adminToken: string, role: string, department: string) {
  userCounter += 1;
  const email = `mp-user-${userCounter}-${Date.now()}@mezzofy.test`;
  const res = await call(node, 'POST', '/admin/users', {
    token: adminToken,
    body: { email, name: `Multi ${userCounter}`, password: STRONG_PASSWORD, department, role },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { id: res.body.id as string, email };
}

/**
 * Calls until the expected status arrives, for at most one second; returns how many calls it
 * took (the expected path: 1, the change is already visible on the first call).
 */
async function within1s(expected: number, request: () => Promise<Reply>): Promise<number> {
  const started = performance.now();
  let tries = 0;
  let last: Reply;
  do {
    tries += 1;
    last = await request();
    if (last.status === expected) break;
    await new Promise((r) => setTimeout(r, 20));
  } while (performance.now() - started < 1_000);
  expect(last.status, JSON.stringify(last.body)).toBe(expected);
  expect(performance.now() - started).toBeLessThan(1_000);
  return tries;
}

interface Socket {
  ws: WebSocket;
  // biome-ignore lint/suspicious/noExplicitAny: JSON events, checked by the assertions
  ready: any;
  closed: Promise<{ code: number; reason: string }>;
  /** The next event after those already taken. */
  // biome-ignore lint/suspicious/noExplicitAny: JSON events, checked by the assertions
  next: () => Promise<any>;
}

/** A WebSocket to `node` past hello (its `ready` event). */
async function openSocket(node: Node, token: string): Promise<Socket> {
  const ws = new WebSocket(`${node.base.replace('http', 'ws')}/chat/ws`);
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
  );
  const events: unknown[] = [];
  const waiting: ((event: unknown) => void)[] = [];
  ws.on('message', (data) => {
    const event = JSON.parse(String(data));
    const waiter = waiting.shift();
    if (waiter) waiter(event);
    else events.push(event);
  });
  const next = () =>
    events.length
      ? Promise.resolve(events.shift())
      : new Promise((resolve) => waiting.push(resolve));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ type: 'hello', token, protocol_version: PROTOCOL_VERSION }));
  const ready = await next();
  expect(ready).toMatchObject({ type: 'ready' });
  return { ws, ready, closed, next };
}

/** The socket's close, or a failure naming the wait if it stays open longer than `ms`. */
async function closedWithin(socket: Socket, ms: number) {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the socket was still open after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([socket.closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

beforeAll(async () => {
  ({ schema, drop: dropSchema } = await createPostgresSchema(dbUrl));
  const ports = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  // All four start at once on an empty schema: they migrate and bootstrap concurrently.
  nodes.A = start('A', ports[0]!, prefix);
  nodes.B = start('B', ports[1]!, prefix);
  const limited = { MEZZOFY__rate_limit__user_points: '5', MEZZOFY__rate_limit__window_s: '60' };
  nodes.C = start('C', ports[2]!, limitedPrefix, limited);
  nodes.D = start('D', ports[3]!, limitedPrefix, limited);
  await Promise.all(
    Object.values(nodes).map((n) =>
      waitFor(() => healthy(n), 50_000, `process ${n.name} /health 200`),
    ),
  );
  db = await createDatabase({ url: dbUrl, schema, poolMax: 2 });
}, 60_000);

afterAll(async () => {
  for (const n of Object.values(nodes)) {
    if (n.proc.child.exitCode === null && n.proc.child.signalCode === null) {
      n.proc.child.kill('SIGKILL');
      await n.proc.exited;
    }
  }
  await db?.close();
  await dropSchema?.();
  await clearRedisPrefix(redisUrl, prefix);
  await clearRedisPrefix(redisUrl, limitedPrefix);
});

describe('start-up', () => {
  it('four processes started together on an empty schema all come up, with one migration history and one first admin', async () => {
    for (const n of Object.values(nodes)) expect(n.proc.child.exitCode).toBeNull();
    const applied = await sql<{
      version: number;
    }>`select version from schema_migrations order by version`.execute(db.db);
    expect(applied.rows.map((r) => r.version)).toEqual(readMigrations().map((m) => m.version));
    const admins = await db.db.selectFrom('users').select(['email', 'role']).execute();
    expect(admins).toEqual([{ email: ADMIN_EMAIL, role: 'admin' }]);
    const bootstraps = await db.db
      .selectFrom('audit_log')
      .select('id')
      .where('action', '=', 'admin.bootstrap_admin_created')
      .execute();
    expect(bootstraps).toHaveLength(1);
    const health = await call(nodes.B, 'GET', '/health');
    expect(health.body).toMatchObject({
      status: 'ok',
      checks: {
        database: { status: 'ok', engine: 'postgres' },
        redis: { status: 'ok' },
        queue: { status: 'ok', engine: 'bullmq' },
        rate_limit: { status: 'ok', store: 'redis' },
      },
    });
  });

  it('two processes creating the first admin at the same moment: one creates it, neither fails', async () => {
    const t = await createTestDatabase('postgres');
    const other = await createDatabase({ url: t.url!, schema: t.schema!, poolMax: 2 });
    const passwords = await createPasswordHasher({
      memory_kib: 19_456,
      iterations: 2,
      parallelism: 1,
    });
    const admin = { email: ADMIN_EMAIL, password: STRONG_PASSWORD, name: 'First' };
    try {
      for (let round = 0; round < 5; round++) {
        await t.database.db.deleteFrom('audit_log').execute();
        await t.database.db.deleteFrom('users').execute();
        const results = await Promise.all([
          bootstrapAdmin(t.database, passwords, admin),
          bootstrapAdmin(other, passwords, admin),
        ]);
        expect(results.filter((r) => r.created)).toHaveLength(1);
        const users = await t.database.db.selectFrom('users').select('email').execute();
        expect(users).toEqual([{ email: ADMIN_EMAIL }]);
      }
    } finally {
      await other.close();
      await t.drop();
    }
  });
});

describe('a change made on one process applies on the other at once', () => {
  let adminToken: string;
  beforeAll(async () => {
    adminToken = await login(nodes.A, ADMIN_EMAIL);
  });

  it('deactivation on A: the user’s next request on B is refused', async () => {
    const user = await createUser(nodes.A, adminToken, 'sales_rep', 'sales');
    const token = await login(nodes.B, user.email);
    const me = await call(nodes.B, 'GET', '/auth/me', { token });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ id: user.id, email: user.email, role: 'sales_rep' });

    const off = await call(nodes.A, 'DELETE', `/admin/users/${user.id}`, { token: adminToken });
    expect(off.status).toBe(200);
    // Within 1 s, as the issue asks; usually the first try. The invalidation and the next
    // request can still race inside B's event loop (see the issue note on strict ordering).
    await within1s(401, () => call(nodes.B, 'GET', '/auth/me', { token }));
  });

  it('role change on A: a role that lost users:read gets 403 on B', async () => {
    const user = await createUser(nodes.A, adminToken, 'admin', 'management');
    const token = await login(nodes.B, user.email);
    expect((await call(nodes.B, 'GET', '/admin/users', { token })).status).toBe(200);

    const patch = await call(nodes.A, 'PATCH', `/admin/users/${user.id}`, {
      token: adminToken,
      body: { role: 'executive' },
    });
    expect(patch.status, JSON.stringify(patch.body)).toBe(200);
    // Within 1 s, as the issue asks; usually the first try. The invalidation and the next
    // request can still race inside B's event loop (see the issue note on strict ordering).
    await within1s(403, () => call(nodes.B, 'GET', '/admin/users', { token }));
    const me = await call(nodes.B, 'GET', '/auth/me', { token });
    expect(me.body.role).toBe('executive');
    expect(me.body.permissions).not.toContain('users:read');
  });

  it('deactivation on A closes the user’s WebSocket on B with 4003', async () => {
    const user = await createUser(nodes.A, adminToken, 'sales_rep', 'sales');
    const token = await login(nodes.B, user.email);
    const socket = await openSocket(nodes.B, token);

    const started = performance.now();
    const off = await call(nodes.A, 'DELETE', `/admin/users/${user.id}`, { token: adminToken });
    expect(off.status).toBe(200);
    const { code, reason } = await closedWithin(socket, 1_000);
    expect(code).toBe(WS_CLOSE.forbidden);
    expect(reason).toMatch(/deactivated/);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('demotion on A closes the user’s WebSocket on B with 4003 naming the role change', async () => {
    const user = await createUser(nodes.A, adminToken, 'sales_manager', 'sales');
    const bystander = await createUser(nodes.A, adminToken, 'sales_manager', 'sales');
    const token = await login(nodes.B, user.email);
    const socket = await openSocket(nodes.B, token);
    expect(socket.ready).toMatchObject({ user: { id: user.id, role: 'sales_manager' } });
    const other = await openSocket(nodes.B, await login(nodes.B, bystander.email));

    const started = performance.now();
    const patch = await call(nodes.A, 'PATCH', `/admin/users/${user.id}`, {
      token: adminToken,
      body: { role: 'sales_rep' },
    });
    expect(patch.status, JSON.stringify(patch.body)).toBe(200);
    const { code, reason } = await closedWithin(socket, 1_000);
    expect(code).toBe(WS_CLOSE.forbidden);
    expect(reason).toMatch(/role changed/);
    expect(performance.now() - started).toBeLessThan(1_000);

    // Only that user's sockets: another user's on B is still up.
    other.ws.send(JSON.stringify({ type: 'ping', id: 'still-up' }));
    expect(await other.next()).toMatchObject({ type: 'pong', id: 'still-up' });
    other.ws.close();
    // The same token reconnects on B with the new role.
    const again = await openSocket(nodes.B, token);
    expect(again.ready).toMatchObject({ user: { id: user.id, role: 'sales_rep' } });
    again.ws.close();
  });

  it('logout on A: the same token is refused on B', async () => {
    const user = await createUser(nodes.A, adminToken, 'support_agent', 'support');
    const token = await login(nodes.B, user.email);
    expect((await call(nodes.B, 'GET', '/auth/me', { token })).status).toBe(200);

    const out = await call(nodes.A, 'POST', '/auth/logout', { token });
    expect(out.status).toBe(200);
    // Within 1 s, as the issue asks; usually the first try. The invalidation and the next
    // request can still race inside B's event loop (see the issue note on strict ordering).
    await within1s(401, () => call(nodes.B, 'GET', '/auth/me', { token }));
  });
});

describe('rate limits', () => {
  it('count one user’s requests on both processes together', async () => {
    const adminToken = await login(nodes.C, ADMIN_EMAIL);
    const user = await createUser(nodes.C, adminToken, 'sales_rep', 'sales');
    const token = await login(nodes.D, user.email);
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await call(i % 2 ? nodes.D : nodes.C, 'GET', '/auth/me', { token });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-ratelimit-limit')).toBe('5');
      remaining.push(res.headers.get('x-ratelimit-remaining')!);
    }
    expect(remaining).toEqual(['4', '3', '2', '1', '0']);

    const sixth = await call(nodes.D, 'GET', '/auth/me', { token });
    expect(sixth.status).toBe(429);
    const retryAfter = Number(sixth.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(sixth.body).toEqual({
      error: {
        code: 'rate_limited',
        message: expect.any(String),
        details: { retry_after_s: retryAfter },
        request_id: sixth.headers.get('x-request-id'),
      },
    });
    expect((await call(nodes.C, 'GET', '/auth/me', { token })).status).toBe(429);
  });
});

describe('shutdown', () => {
  it('SIGTERM: the process drains and exits with code 0 within a few seconds; its peers carry on', async () => {
    const node = nodes.D;
    const started = performance.now();
    node.proc.child.kill('SIGTERM');
    const code = await Promise.race([
      node.proc.exited,
      new Promise<string>((r) => setTimeout(() => r('still running after 5 s'), 5_000)),
    ]);
    expect(code, node.proc.stderr()).toBe(0);
    expect(performance.now() - started).toBeLessThan(5_000);
    await expect(fetch(`${node.base}/health`)).rejects.toThrow();
    expect((await call(nodes.C, 'GET', '/health')).status).toBe(200);
  });

  it('while draining, /health answers 503 so the load balancer stops sending traffic', async () => {
    const testDb = await createTestDatabase('postgres');
    const t = await createTestApp({
      testDatabase: testDb,
      overrides: { redis: { url: redisUrl, key_prefix: prefix } },
    });
    try {
      expect((await t.app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
      t.container.draining.value = true;
      const res = await t.app.inject({ method: 'GET', url: '/health' });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ status: 'unavailable', draining: true });
    } finally {
      await t.close();
      await testDb.drop();
    }
  });
});
