/**
 * Shared by the benchmarks: a free local port, a child server that is always killed, an
 * autocannon run that only counts 2xx, and a plain-text table.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import autocannon from 'autocannon';

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

/** CPU time (ms) of a process and its direct children (cluster workers), from /proc. */
export function processTreeCpuMs(pid: number | undefined): number | undefined {
  const own = processCpuMs(pid);
  if (own === undefined || !pid) return own;
  let total = own;
  try {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    for (const child of children ? children.split(/\s+/) : [])
      total += processCpuMs(Number(child)) ?? 0;
  } catch {
    // no children file: count the process alone
  }
  return total;
}
