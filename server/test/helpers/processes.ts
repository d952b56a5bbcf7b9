/** Spawning real server processes for end-to-end tests. */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';

export const MAIN = resolve(import.meta.dirname, '../../src/main.ts');

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => ok(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export interface ServerProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** The environment of a server process on PostgreSQL and Redis, as the multi-process tests run it. */
export function postgresRedisEnv(o: {
  databaseUrl: string;
  schema: string;
  redisUrl: string;
  keyPrefix: string;
  port: number;
  adminEmail: string;
  adminPassword: string;
  jwtSecret: string;
}): Record<string, string> {
  return {
    DATABASE_URL: o.databaseUrl,
    DATABASE_SCHEMA: o.schema,
    REDIS_URL: o.redisUrl,
    JWT_SECRET: o.jwtSecret,
    HOST: '127.0.0.1',
    PORT: String(o.port),
    ADMIN_EMAIL: o.adminEmail,
    ADMIN_PASSWORD: o.adminPassword,
    MEZZOFY__redis__key_prefix: o.keyPrefix,
  };
}

export function startServer(env: Record<string, string>, args: string[] = []): ServerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return track(child);
}

function track(child: ChildProcess): ServerProcess {
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((ok) => child.on('exit', (code) => ok(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

/**
 * The server as an operator starts it, `npm start -- <args>` from the repository root, in a
 * process group of its own (kill `-child.pid` to signal the whole tree, as a terminal does).
 */
export function startServerWithNpm(
  env: Record<string, string>,
  args: string[] = [],
): ServerProcess {
  return track(
    spawn('npm', ['start', '--', ...args], {
      cwd: resolve(import.meta.dirname, '../../..'),
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    }),
  );
}

export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
