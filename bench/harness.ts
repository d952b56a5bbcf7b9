/**
 * Shared by the benchmarks: a free local port, a child server that is always killed, an
 * autocannon run that only counts 2xx, a plain-text table, the PostgreSQL, Redis, admin API
 * and /proc helpers, and one run of a server bench (its schema, key prefix, files, the real
 * server started on them, its users).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import { withServerNodeFlags } from '../server/src/infra/node-flags.ts';

export const HOST = '127.0.0.1';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ChildServer {
  child: ChildProcess;
  /** The last lines the child wrote to stderr (for error messages). */
  stderrTail(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the child has exited. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Map<ChildProcess, Promise<void>>();
const cleanups: Array<() => Promise<unknown>> = [];
let handlersInstalled = false;

/** Runs `fn` if the bench is interrupted (Ctrl-C, SIGTERM), after the server has stopped. */
export function onInterrupt(fn: () => Promise<unknown>): void {
  installExitHandlers();
  cleanups.push(fn);
}

/** Stop every child we started, whatever way this process ends. */
function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const c of live.keys()) c.kill('SIGKILL');
  });
  let interrupted = false;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, async () => {
      if (interrupted) return;
      interrupted = true;
      process.stderr.write(`\nbench: ${signal}; stopping the server and cleaning up\n`);
      for (const c of live.keys()) c.kill('SIGTERM');
      const force = setTimeout(() => {
        for (const c of live.keys()) c.kill('SIGKILL');
      }, 3_000);
      await Promise.race([Promise.allSettled(live.values()), sleep(4_000)]);
      clearTimeout(force);
      await Promise.race([Promise.allSettled(cleanups.map((f) => f())), sleep(10_000)]);
      process.exit(130);
    });
  }
}

export function startChild(options: {
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Child stdout goes here (a file), so the logs are written as in production and drained. */
  stdoutFile: string;
}): ChildServer {
  installExitHandlers();
  const out = openSync(options.stdoutFile, 'w');
  const child = spawn(process.execPath, options.args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', out, 'pipe'],
  });
  closeSync(out);
  let tail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      live.delete(child);
      resolve();
    });
  });
  live.set(child, exited);
  return {
    child,
    stderrTail: () => tail,
    async stop(graceMs = 8_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Polls `url` until it answers 200, the child exits, or the timeout passes. */
export async function waitHttpOk(url: string, server: ChildServer, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.child.exitCode !== null)
      throw new Error(`server exited (code ${server.child.exitCode}):\n${server.stderrTail()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(200);
  }
  throw new Error(`server not ready at ${url} within ${timeoutMs} ms:\n${server.stderrTail()}`);
}

export interface LoadSummary {
  requestsPerSecond: number;
  totalRequests: number;
  total2xx: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  latencyMs: { avg: number; p50: number; p90: number; p97_5: number; p99: number; max: number };
  /** Responses in each second of the run: how steady the rate was. */
  perSecond?: { min: number; p2_5: number; p50: number; p97_5: number; max: number };
  durationS: number;
  connections: number;
}

export function summarize(r: autocannon.Result): LoadSummary {
  const statusCodes: Record<string, number> = {};
  for (const [code, s] of Object.entries(r.statusCodeStats ?? {})) statusCodes[code] = s.count ?? 0;
  return {
    requestsPerSecond: Math.round(r.requests.average),
    totalRequests: r.requests.total,
    total2xx: r['2xx'],
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    statusCodes,
    latencyMs: {
      avg: Math.round(r.latency.average * 100) / 100,
      p50: r.latency.p50,
      p90: r.latency.p90,
      p97_5: r.latency.p97_5,
      p99: r.latency.p99,
      max: r.latency.max,
    },
    perSecond: {
      min: r.requests.min,
      p2_5: r.requests.p2_5,
      p50: r.requests.p50,
      p97_5: r.requests.p97_5,
      max: r.requests.max,
    },
    durationS: r.duration,
    connections: r.connections,
  };
}

/** Any non-2xx, error or timeout makes the run a failure. */
export function badResponses(s: LoadSummary): string | undefined {
  if (s.non2xx === 0 && s.errors === 0 && s.timeouts === 0 && s.total2xx > 0) return undefined;
  return `non-2xx=${s.non2xx} errors=${s.errors} timeouts=${s.timeouts} 2xx=${s.total2xx} status=${JSON.stringify(s.statusCodes)}`;
}

export function runCannon(options: autocannon.Options): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    const url = new URL(options.url);
    if (url.hostname !== HOST) {
      reject(new Error(`refusing to load ${url.hostname}: benchmarks only target ${HOST}`));
      return;
    }
    // Bounded: autocannon stops itself after `duration` seconds.
    autocannon(options, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

export function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(rows[0]!));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows.slice(1)) console.log(line(r));
}

/** CPU time (user + system, ms) the process has used so far, from /proc (Linux). */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/** CPU time (ms) of a process and its direct children (API workers), from /proc. */
export function processTreeCpuMs(pid: number | undefined): number | undefined {
  const own = processCpuMs(pid);
  if (own === undefined || !pid) return own;
  let total = own;
  for (const child of processTree(pid).slice(1)) total += processCpuMs(child) ?? 0;
  return total;
}

/** Resident memory of a process and its direct children (API workers) in MB, from /proc. */
export function processRssMb(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  let kb = 0;
  for (const p of processTree(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      kb += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb > 0 ? Math.round(kb / 1024) : undefined;
}

/** The process that serves HTTP: the first API worker when there are several, else `pid`. */
export function apiProcessPid(pid: number): number {
  return processTree(pid)[1] ?? pid;
}

export function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

export async function withPg<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Deletes every Redis key under `keyPrefix`; the number deleted. */
export async function cleanRedis(url: string, keyPrefix: string): Promise<number> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  redis.on('error', () => {});
  try {
    await redis.connect();
    let cursor = '0';
    let deleted = 0;
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) deleted += await redis.unlink(...keys);
    } while (cursor !== '0');
    return deleted;
  } finally {
    redis.disconnect();
  }
}

/** redis-server CPU seconds so far (it shares the machine's cores with the server). */
export async function redisCpuS(url: string): Promise<number | undefined> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const info = await redis.info('cpu');
    const user = Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]);
    const sys = Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1]);
    return Number.isFinite(user + sys) ? user + sys : undefined;
  } catch {
    return undefined;
  } finally {
    redis.disconnect();
  }
}

/** One JSON request to the server under test (setup and checks, not load). */
export async function api<T>(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? null : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, body: (await res.json()) as T };
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

/** Lines of the server's stdout that are access-log records. */
export async function countAccessLines(file: string): Promise<number> {
  let n = 0;
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const line of rl) if (line.includes('"log":"access"')) n++;
  return n;
}

/**
 * The caller's environment for a server child, without anything that would configure the
 * server behind the bench's back (MEZZOFY__ overrides, BENCH_ settings, port, paths, roles).
 */
export function cleanChildEnv(env: NodeJS.ProcessEnv, alsoDrop: string[] = []): NodeJS.ProcessEnv {
  const drop = new Set([
    'PORT',
    'HOST',
    'CONFIG_FILE',
    'LOG_DIR',
    'LOG_LEVEL',
    'DATA_DIR',
    'TRUST_PROXY',
    'NODE_OPTIONS',
    'PROCESS_ROLE',
    ...alsoDrop,
  ]);
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('MEZZOFY__') || k.startsWith('BENCH_') || drop.has(k)) continue;
    out[k] = v;
  }
  return out;
}

export interface BenchUser {
  email: string;
  name: string;
  password: string;
  department: string;
  role: string;
}

/** Creates the users through the admin API (201 each, else throws). */
export async function createUsers(
  base: string,
  adminToken: string,
  users: BenchUser[],
  concurrency: number,
): Promise<void> {
  await pool(users, concurrency, async (user) => {
    const res = await api(base, 'POST', '/admin/users', user, adminToken);
    if (res.status !== 201)
      throw new Error(`create ${user.email}: ${res.status} ${JSON.stringify(res.body)}`);
  });
}

/** Logs each user in once; their access tokens, in order. */
export function loginAll(
  base: string,
  users: Array<{ email: string; password: string }>,
  concurrency: number,
): Promise<string[]> {
  return pool(users, concurrency, async ({ email, password }) => {
    const res = await api<{ access_token: string }>(base, 'POST', '/auth/login', {
      email,
      password,
    });
    if (res.status !== 200) throw new Error(`login ${email}: ${res.status}`);
    return res.body.access_token;
  });
}

/**
 * The first line of `file` that parses as a JSON object: how a launched child (the fake model
 * server) reports where it listens. Throws if the child exits or `timeoutMs` passes first.
 */
export async function waitJsonLine<T>(
  file: string,
  server: ChildServer,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.child.exitCode !== null)
      throw new Error(`child exited (code ${server.child.exitCode}):\n${server.stderrTail()}`);
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      // not written yet
    }
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        return JSON.parse(line) as T;
      } catch {
        // a line still being written
      }
    }
    await sleep(50);
  }
  throw new Error(`no JSON line in ${file} within ${timeoutMs} ms:\n${server.stderrTail()}`);
}

/** Percentile (nearest rank) of an ascending array; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface Distribution {
  count: number;
  avg: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Summary of a sample of durations, in the sample's unit, rounded to `digits` decimals. */
export function distribution(values: number[], digits = 2): Distribution {
  const sorted = Float64Array.from(values).sort();
  const round = (v: number) => (Number.isFinite(v) ? Number(v.toFixed(digits)) : Number.NaN);
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    avg: round(sum / sorted.length),
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.length ? sorted[sorted.length - 1]! : Number.NaN),
  };
}

/** CPU time (ms) of several processes together; those gone or unreadable count 0. */
export function pidsCpuMs(pids: number[]): number {
  let total = 0;
  for (const pid of pids) total += processCpuMs(pid) ?? 0;
  return total;
}

/** A process and its direct children (API workers), from /proc. */
function processTree(pid: number): number[] {
  try {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    return [pid, ...(children ? children.split(/\s+/).map(Number) : [])];
  } catch {
    return [pid];
  }
}

/**
 * The PostgreSQL backend processes serving `pid`'s (and its API workers') connections, so
 * a bench counts the database CPU its server causes, apart from anyone else's on the same
 * PostgreSQL. Our server names each connection `mezzofy-<role>:<pid>` (application_name),
 * whatever the transport (TCP or a Unix socket); any other process (Linux) is matched by its
 * TCP sockets to the database port, by client port in pg_stat_activity.
 */
export async function postgresBackendPids(pid: number, databaseUrl: string): Promise<number[]> {
  const pids = processTree(pid);
  const dbPort = Number(new URL(databaseUrl.replace(/@\//, '@localhost/')).port || 5432);
  const inodes = new Set<string>();
  for (const owner of pids) {
    for (const fd of readdirSync(`/proc/${owner}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${owner}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        // closed meanwhile
      }
    }
  }
  const clientPorts: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9]!)) continue;
      const local = Number.parseInt(f[1]!.split(':')[1]!, 16);
      const remote = Number.parseInt(f[2]!.split(':')[1]!, 16);
      if (remote === dbPort) clientPorts.push(local);
    }
  }
  const res = await withPg(databaseUrl, (c) =>
    c.query<{ pid: number }>(
      `select pid from pg_stat_activity
        where client_port = any($1)
           or (application_name like 'mezzofy-%:%'
               and split_part(application_name, ':', 2) = any($2))`,
      [clientPorts, pids.map(String)],
    ),
  );
  return res.rows.map((r) => r.pid);
}

const SPEED_DOC = {
  system: 'You are the Mezzofy sales assistant. '.repeat(150),
  tools: Array.from({ length: 6 }, (_, i) => ({
    name: `tool_${i}`,
    description: 'Looks things up in the company systems. '.repeat(8),
    input_schema: { type: 'object', properties: { q: { type: 'string', maxLength: 200 } } },
  })),
  messages: Array.from({ length: 6 }, (_, i) => ({
    role: i % 2 ? 'assistant' : 'user',
    content: `turn ${i}`,
  })),
};

/**
 * A fixed piece of CPU work: `rounds` x (JSON of a chat-request-sized object written and read
 * back, string and number work). Returns a number that depends on the work, so it cannot be
 * optimised away.
 */
export function fixedCpuWork(rounds: number): number {
  let n = 0;
  for (let i = 0; i < rounds; i++) {
    const text = JSON.stringify(SPEED_DOC);
    n += (JSON.parse(text) as { messages: unknown[] }).messages.length + text.length;
  }
  if (n <= 0) throw new Error('unreachable');
  return n;
}

/**
 * `fixedCpuWork(200)` timed in this process: the best of `tries`, in µs. The same code on the
 * same machine should take the same time; when it does not, the machine itself was slower
 * (another tenant on the host), and so were the figures measured around it. Run it while the
 * machine is otherwise idle.
 */
export function machineSpeedCheckUs(tries = 5): number {
  let best = Number.POSITIVE_INFINITY;
  for (let t = 0; t < tries; t++) {
    const started = process.hrtime.bigint();
    fixedCpuWork(200);
    best = Math.min(best, Number(process.hrtime.bigint() - started) / 1000);
  }
  return Math.round(best);
}

/** The whole machine's CPU time so far, busy and idle (ms, all cores), from /proc/stat. */
export function machineCpuMs(): { busy: number; idle: number } | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f.map(Number) as number[];
    // In clock ticks (100 per second).
    return {
      busy: (user! + nice! + system! + irq! + softirq! + steal!) * 10,
      idle: (idle! + iowait!) * 10,
    };
  } catch {
    return undefined;
  }
}

/** A progress or failure line on stderr (the table goes to stdout). */
export function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

/**
 * The run's exit code: 1 for any non-2xx/error (`problems`) or missing access-log lines, 2 for
 * a missed target when BENCH_ENFORCE_TARGETS=1, else 0.
 */
export function verdict(run: {
  problems: string[];
  accessLines: number;
  expectedAccess: number;
  pass: boolean;
}): number {
  if (run.problems.length) {
    log(`FAILED: ${run.problems.join('; ')}`);
    return 1;
  }
  if (run.accessLines < run.expectedAccess) {
    log(`FAILED: ${run.accessLines} access log lines for ${run.expectedAccess} requests`);
    return 1;
  }
  return !run.pass && process.env.BENCH_ENFORCE_TARGETS === '1' ? 2 : 0;
}

/** Runs a bench's main and exits with its code (1 on a crash). */
export function runBench(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (err) => {
      log(`fatal: ${err instanceof Error ? err.stack : String(err)}`);
      process.exit(1);
    },
  );
}

// ---- one run of a server bench: its own schema, key prefix, files and server ----

export const BENCH_PASSWORD = 'Bench-only passphrase 4711!';
const BENCH_ADMIN_EMAIL = 'bench-admin@bench.invalid';

/**
 * A run's own resources: the PostgreSQL schema `bench_<id>`, the Redis key prefix
 * `bench:<id>:`, a data folder and the server's stdout file, plus any file made with `file()`.
 * `cleanup` removes them all (also on Ctrl-C, after the children stopped); the stdout file is
 * kept with BENCH_KEEP_LOG=1.
 */
export interface BenchRun {
  id: string;
  schema: string;
  keyPrefix: string;
  dataDir: string;
  stdoutFile: string;
  databaseUrl: string;
  redisUrl: string;
  /** A temporary file path of this run, removed by cleanup. */
  file(suffix: string): string;
  cleanup(): Promise<void>;
}

export async function openBenchRun(databaseUrl: string, redisUrl: string): Promise<BenchRun> {
  const id = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const schema = `bench_${id}`;
  const keyPrefix = `bench:${id}:`;
  const dataDir = join(os.tmpdir(), `mezzofy-bench-${id}`);
  mkdirSync(dataDir, { recursive: true });
  const stdoutFile = join(os.tmpdir(), `mezzofy-bench-${id}.log`);
  const files: string[] = [];
  let cleaned = false;
  const run: BenchRun = {
    id,
    schema,
    keyPrefix,
    dataDir,
    stdoutFile,
    databaseUrl,
    redisUrl,
    file(suffix) {
      const path = join(os.tmpdir(), `mezzofy-bench-${id}-${suffix}`);
      files.push(path);
      return path;
    },
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      await withPg(databaseUrl, (c) => c.query(`drop schema if exists "${schema}" cascade`)).catch(
        (err: Error) => log(`could not drop schema ${schema}: ${err.message}`),
      );
      await cleanRedis(redisUrl, keyPrefix).catch((err: Error) =>
        log(`could not clean Redis: ${err.message}`),
      );
      rmSync(dataDir, { recursive: true, force: true });
      for (const f of files) rmSync(f, { force: true });
      if (process.env.BENCH_KEEP_LOG === '1') log(`server stdout kept: ${stdoutFile}`);
      else rmSync(stdoutFile, { force: true });
    },
  };
  onInterrupt(() => run.cleanup());
  await withPg(databaseUrl, (c) => c.query(`create schema "${schema}"`));
  return run;
}

export interface BenchServer {
  server: ChildServer;
  base: string;
  health: { checks: Record<string, Record<string, unknown>> };
  adminToken: string;
}

/**
 * node's arguments for the server: its V8 flags as deployed (docs/adr/0011), `--cpu-prof` into
 * `profileDir`, and experiments from BENCH_NODE_ARGS (e.g. `--max-semi-space-size=128`, which
 * then replaces the deployed value).
 */
export function serverNodeArgs(profileDir?: string): string[] {
  const args = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  args.push(...(process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean));
  return withServerNodeFlags(args);
}

/**
 * The server process the benches start: `--role=BENCH_ROLE` (default all) with
 * WEB_CONCURRENCY=BENCH_WORKERS API processes (default: one per core, as deployed), which
 * needs WEB_CONCURRENCY in its own environment (cleanChildEnv drops the caller's).
 */
export function benchServerProcess(env: NodeJS.ProcessEnv = process.env): {
  entry: string[];
  env: Record<string, string>;
  processes: string;
} {
  const workers = Number(env.BENCH_WORKERS ?? os.availableParallelism());
  if (!Number.isInteger(workers) || workers < 1)
    throw new Error('BENCH_WORKERS: a whole number >= 1');
  const role = env.BENCH_ROLE ?? 'all';
  return {
    entry: ['server/src/main.ts', `--role=${role}`],
    env: { WEB_CONCURRENCY: String(workers) },
    processes:
      workers > 1 ? `1 ${role} + ${workers} API processes (WEB_CONCURRENCY=${workers})` : '1',
  };
}

/**
 * Starts the real server (`node <serverNodeArgs> --import tsx <entry>`, e.g.
 * server/src/main.ts) in the run's schema and key prefix with production logging (level info,
 * access log on, stdout to the run's file) and the given rate limits, in an environment cleaned
 * of the caller's settings; waits for /health, checks its tables are in the run's schema
 * (`table`), logs the generated admin in. A server that fails to come up is stopped before this
 * throws.
 */
export async function startBenchServer(options: {
  run: BenchRun;
  port: number;
  root: string;
  /** The script and its arguments, relative to `root`. */
  entry: string[];
  rateLimit: { user_points: number; ip_points: number; window_s: number };
  /** Variables of the caller's environment to drop too (see cleanChildEnv). */
  dropEnv?: string[];
  /** More server environment (models, limits). */
  env?: Record<string, string>;
  /** Profile the server with --cpu-prof into this folder. */
  profileDir?: string | undefined;
  table: string;
}): Promise<BenchServer> {
  const { run, port } = options;
  const adminPassword = `Adm1n-${randomBytes(9).toString('base64url')}`;
  const env = {
    ...cleanChildEnv(process.env, options.dropEnv),
    NODE_ENV: 'production',
    HOST,
    PORT: String(port),
    DATA_DIR: run.dataDir,
    DATABASE_URL: run.databaseUrl,
    DATABASE_SCHEMA: run.schema,
    REDIS_URL: run.redisUrl,
    MEZZOFY__redis__key_prefix: run.keyPrefix,
    JWT_SECRET: randomBytes(48).toString('base64url'),
    ADMIN_EMAIL: BENCH_ADMIN_EMAIL,
    ADMIN_PASSWORD: adminPassword,
    LOG_LEVEL: 'info',
    MEZZOFY__logging__access_log: 'true',
    MEZZOFY__rate_limit__enabled: 'true',
    MEZZOFY__rate_limit__user_points: String(options.rateLimit.user_points),
    MEZZOFY__rate_limit__ip_points: String(options.rateLimit.ip_points),
    MEZZOFY__rate_limit__window_s: String(options.rateLimit.window_s),
    ...options.env,
    // Experiments with the server's configuration (e.g. MEZZOFY__database__pool_max=20).
    ...Object.fromEntries(
      (process.env.BENCH_SERVER_ENV ?? '')
        .split(/\s+/)
        .filter(Boolean)
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    ),
  };
  const profileDir = options.profileDir;
  if (profileDir) {
    // Profiles are large and machine-specific: kept out of version control.
    mkdirSync(profileDir, { recursive: true });
    writeFileSync(join(profileDir, '.gitignore'), '*\n');
  }
  const server = startChild({
    args: [...serverNodeArgs(profileDir), '--import', 'tsx', ...options.entry],
    env,
    cwd: options.root,
    stdoutFile: run.stdoutFile,
  });
  const base = `http://${HOST}:${port}`;
  try {
    await waitHttpOk(`${base}/health`, server);
    const health = (await api<BenchServer['health']>(base, 'GET', '/health')).body;
    const tables = await withPg(run.databaseUrl, (c) =>
      c.query<{ n: number }>(
        'select count(*)::int as n from information_schema.tables where table_schema = $1 and table_name = $2',
        [run.schema, options.table],
      ),
    );
    if (tables.rows[0]?.n !== 1)
      throw new Error(`server did not create its tables in ${run.schema}`);
    const login = await api<{ access_token: string }>(base, 'POST', '/auth/login', {
      email: BENCH_ADMIN_EMAIL,
      password: adminPassword,
    });
    if (login.status !== 200) throw new Error(`admin login: ${login.status}`);
    return { server, base, health, adminToken: login.body.access_token };
  } catch (err) {
    await server.stop().catch(() => {});
    throw err;
  }
}

/** `count` sales reps created through the admin API and each logged in once. */
export async function benchUsers(
  bench: BenchServer,
  count: number,
  concurrency: number,
): Promise<{ users: BenchUser[]; tokens: string[] }> {
  const users = Array.from({ length: count }, (_, i) => ({
    email: `bench-user-${i}@bench.invalid`,
    name: `Bench User ${i}`,
    password: BENCH_PASSWORD,
    department: 'sales',
    role: 'sales_rep',
  }));
  log(`creating ${count} users`);
  await createUsers(bench.base, bench.adminToken, users, concurrency);
  return { users, tokens: await loginAll(bench.base, users, concurrency) };
}
