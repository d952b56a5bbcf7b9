/**
 * WEB_CONCURRENCY=2: one started process (the primary) forks two API processes that share its
 * port, on one PostgreSQL schema and one Redis. Connections are shared out between them; a
 * change made through one applies on the other at once; a worker that dies is replaced; one
 * that cannot start fails the start; SIGTERM stops them all, each draining.
 */
import { request } from 'node:http';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  freePort,
  postgresRedisEnv,
  type ServerProcess,
  startServer,
  startServerWithNpm,
  waitFor,
} from './helpers/processes.ts';
import { clearRedisPrefix, testKeyPrefix, testRedisUrl } from './helpers/redis.ts';
import { STRONG_PASSWORD, TEST_JWT_SECRET } from './helpers/test-app.ts';
import { createPostgresSchema } from './helpers/test-database.ts';

const dbUrl = process.env.TEST_DATABASE_URL ?? '';
const redisUrl = testRedisUrl();
const prefix = testKeyPrefix('workers');
const ADMIN_EMAIL = 'workers-admin@mezzofy.test';

let schema: string;
let dropSchema: () => Promise<void>;
let port: number;
let server: ServerProcess;

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...postgresRedisEnv({
      databaseUrl: dbUrl,
      schema,
      redisUrl,
      keyPrefix: prefix,
      port,
      adminEmail: ADMIN_EMAIL,
      adminPassword: STRONG_PASSWORD,
      jwtSecret: TEST_JWT_SECRET,
    }),
    WEB_CONCURRENCY: '2',
    MEZZOFY__server__drain_delay_ms: '200',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

interface Reply {
  status: number;
  requestId: string;
  // biome-ignore lint/suspicious/noExplicitAny: JSON replies, checked by the assertions
  body: any;
}

/** One request on a connection of its own (no keep-alive), so each may reach another worker. */
function call(
  method: string,
  path: string,
  options: { token?: string; body?: unknown } = {},
): Promise<Reply> {
  return new Promise((ok, fail) => {
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        headers: {
          ...(body ? { 'content-type': 'application/json' } : {}),
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () =>
          ok({
            status: res.statusCode ?? 0,
            requestId: String(res.headers['x-request-id']),
            body: text ? JSON.parse(text) : undefined,
          }),
        );
      },
    );
    req.on('error', fail);
    req.setTimeout(5_000, () => req.destroy(new Error(`${method} ${path}: no answer in 5 s`)));
    req.end(body);
  });
}

/** The process that answered each request, from its access log line (lines carry the pid). */
async function answeredBy(replies: Reply[]): Promise<number[]> {
  const pidOf = (id: string) => {
    const line = server
      .stdout()
      .split('\n')
      .find((l) => l.includes(`"reqId":"${id}"`) && l.includes('"log":"access"'));
    return line ? (JSON.parse(line) as { pid: number }).pid : undefined;
  };
  await waitFor(() => replies.every((r) => pidOf(r.requestId)), 5_000, 'the access log lines');
  return replies.map((r) => pidOf(r.requestId)!);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function healthyTimes(n: number): Promise<Reply[]> {
  const replies: Reply[] = [];
  for (let i = 0; i < n; i++) replies.push(await call('GET', '/health'));
  return replies;
}

describe('several API processes on one port (WEB_CONCURRENCY)', () => {
  beforeAll(async () => {
    ({ schema, drop: dropSchema } = await createPostgresSchema(dbUrl));
    port = await freePort();
    server = startServer(env(), ['--role=all']);
    await waitFor(
      () => {
        if (server.child.exitCode !== null) {
          throw new Error(`server exited ${server.child.exitCode}:\n${server.stderr()}`);
        }
        return server.stdout().includes('listening on');
      },
      30_000,
      'the server to start',
    );
  }, 40_000);

  afterAll(async () => {
    if (server && server.child.exitCode === null) {
      server.child.kill('SIGKILL');
      await server.exited;
    }
    await dropSchema?.();
    await clearRedisPrefix(redisUrl, prefix);
  });

  it('announces itself once, and shares connections out between its two API processes', async () => {
    const banners = server.stdout().match(/listening on/g) ?? [];
    expect(banners).toHaveLength(1);
    expect(server.stdout()).toMatch(/\(all; postgres \+ redis; 2 API processes\) listening on/);
    const replies = await healthyTimes(8);
    expect(replies.map((r) => r.status)).toEqual(Array(8).fill(200));
    const pids = new Set(await answeredBy(replies));
    expect(pids.size).toBe(2);
    expect(pids.has(server.child.pid!)).toBe(false);
    // The first admin was created exactly once, by whichever process got there first.
    expect(server.stdout().match(/first admin user created/g)).toHaveLength(1);
  });

  it('a change made through one process applies on the other at once', async () => {
    const admin = await call('POST', '/auth/login', {
      body: { email: ADMIN_EMAIL, password: STRONG_PASSWORD },
    });
    expect(admin.status).toBe(200);
    const adminToken = admin.body.access_token as string;
    const email = `worker-user-${Date.now()}@mezzofy.test`;
    const created = await call('POST', '/admin/users', {
      token: adminToken,
      body: {
        email,
        name: 'Worker User',
        password: STRONG_PASSWORD,
        department: 'sales',
        role: 'sales_rep',
      },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const login = await call('POST', '/auth/login', { body: { email, password: STRONG_PASSWORD } });
    const token = login.body.access_token as string;
    // Each process now knows the user (its cache of user states holds them).
    const before: Reply[] = [];
    for (let i = 0; i < 6; i++) before.push(await call('GET', '/auth/me', { token }));
    expect(before.map((r) => r.status)).toEqual(Array(6).fill(200));
    expect(new Set(await answeredBy(before)).size).toBe(2);

    const off = await call('DELETE', `/admin/users/${created.body.id}`, { token: adminToken });
    expect(off.status, JSON.stringify(off.body)).toBe(200);
    // The change reaches the other process through Redis: within a second, as between machines.
    let after: Reply[] = [];
    const deadline = Date.now() + 1_000;
    do {
      after = [];
      for (let i = 0; i < 6; i++) after.push(await call('GET', '/auth/me', { token }));
    } while (after.some((r) => r.status !== 401) && Date.now() < deadline);
    expect(after.map((r) => r.status)).toEqual(Array(6).fill(401));
    expect(new Set(await answeredBy(after)).size).toBe(2);
  });

  it('a worker that dies is replaced, and the port keeps answering meanwhile', async () => {
    const pids = [...new Set(await answeredBy(await healthyTimes(6)))];
    expect(pids).toHaveLength(2);
    process.kill(pids[0]!, 'SIGKILL');
    await waitFor(
      () => /"signal":"SIGKILL".*"API worker exited; starting another"/.test(server.stdout()),
      5_000,
      'the primary to see the worker exit',
    );
    // Until the replacement starts (a second later), the other worker takes the connections.
    const meanwhile = await healthyTimes(4);
    expect(meanwhile.map((r) => r.status)).toEqual(Array(4).fill(200));
    await waitFor(
      () => server.stdout().includes('API worker replaced'),
      15_000,
      'the replacement worker',
    );
    const now = new Set(await answeredBy(await healthyTimes(8)));
    expect(now.size).toBe(2);
    expect(now.has(pids[0]!)).toBe(false);
    expect(now.has(pids[1]!)).toBe(true);
  }, 30_000);

  it('SIGTERM: every worker drains and exits, then the primary exits with code 0', async () => {
    const workers = [...new Set(await answeredBy(await healthyTimes(6)))];
    const started = performance.now();
    server.child.kill('SIGTERM');
    const code = await Promise.race([
      server.exited,
      new Promise<string>((r) => setTimeout(() => r('still running after 10 s'), 10_000)),
    ]);
    expect(code, server.stderr()).toBe(0);
    expect(performance.now() - started).toBeLessThan(10_000);
    for (const pid of workers) expect(alive(pid)).toBe(false);
    // Each worker drained and finished before the primary did.
    const completed = new Map(
      server
        .stdout()
        .split('\n')
        .filter((l) => l.includes('"msg":"shutdown complete"'))
        .map((l) => JSON.parse(l) as { pid: number; time: number })
        .map((l) => [l.pid, l.time]),
    );
    const primaryDone = completed.get(server.child.pid!);
    expect(primaryDone).toBeDefined();
    for (const pid of workers) expect(completed.get(pid)).toBeLessThanOrEqual(primaryDone!);
    await expect(call('GET', '/health')).rejects.toThrow();
  }, 20_000);

  it('`npm start -- --role=api`: the role reaches the server, whose primary only starts and watches its workers; Ctrl-C stops them all', async () => {
    const apiPort = await freePort();
    const api = startServerWithNpm(env({ PORT: String(apiPort) }), ['--role=api']);
    try {
      await waitFor(() => api.stdout().includes('listening on'), 40_000, 'the API processes');
      expect(api.stdout()).toMatch(/\(api; postgres \+ redis; 2 API processes\) listening on/);
      const health = await fetch(`http://127.0.0.1:${apiPort}/health`);
      expect(health.status).toBe(200);
      // A terminal's Ctrl-C: SIGINT to the whole process group (npm, tsx, the primary, the
      // workers), some of which relay it again.
      process.kill(-api.child.pid!, 'SIGINT');
      await api.exited;
      await waitFor(
        () => (api.stdout().match(/"msg":"shutdown complete"/g) ?? []).length === 3,
        10_000,
        'the primary and both workers to finish',
      );
      expect(api.stdout()).not.toMatch(/timed out|did not stop/);
    } finally {
      try {
        process.kill(-api.child.pid!, 'SIGKILL');
      } catch {
        // the whole group has exited
      }
    }
  }, 60_000);

  it('a worker that cannot start fails the start: the primary says why, once, and exits 1', async () => {
    // The port is taken by another program, so no worker can listen.
    const blocker = createServer();
    const taken = await new Promise<number>((ok) =>
      blocker.listen(0, '127.0.0.1', () => ok((blocker.address() as { port: number }).port)),
    );
    const failing = startServer(env({ PORT: String(taken) }), ['--role=all']);
    try {
      const code = await Promise.race([
        failing.exited,
        new Promise<string>((r) => setTimeout(() => r('still running after 20 s'), 20_000)),
      ]);
      expect(code, failing.stdout()).toBe(1);
      // Both workers fail the same way; the reason is said once, by the primary.
      expect(failing.stderr().trim()).toBe(
        `error: cannot listen on 127.0.0.1:${taken}: bind EADDRINUSE 127.0.0.1:${taken}`,
      );
    } finally {
      if (failing.child.exitCode === null) failing.child.kill('SIGKILL');
      blocker.close();
    }
  }, 30_000);
});
