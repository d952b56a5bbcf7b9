/**
 * The supervisor of API workers with real forked processes: a stand-in worker
 * (server/test/fakes/api-worker-stub.mjs) that starts, fails, dies or hangs as each test says.
 * The real server under the supervisor is tested in server/test/api-workers.redis.test.ts.
 */
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type ApiWorkers, type ApiWorkersOptions, startApiWorkers } from './api-workers.ts';
import { withServerNodeFlags } from './node-flags.ts';

const STUB = resolve(import.meta.dirname, '../../test/fakes/api-worker-stub.mjs');

let forks = 0;
cluster.on('fork', () => {
  forks += 1;
});

interface Line {
  msg: string;
  restart_in_ms?: number;
  worker_pids?: number[];
}

let running: ApiWorkers | undefined;
afterEach(async () => {
  running?.kill();
  running = undefined;
});

/** Starts the supervisor over stub workers; `modes` in fork order, the last one repeating. */
function start(modes: string[], options: Partial<ApiWorkersOptions> = {}) {
  process.env.STUB_MODES = modes.join(',');
  process.env.STUB_ID_BASE = String(forks);
  // Long enough for the other first worker to listen before a 'die' worker exits.
  process.env.STUB_LIVE_MS = '300';
  const lines: Line[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l)) });
  running = startApiWorkers({
    count: 2,
    log,
    args: [],
    exec: STUB,
    stopTimeoutMs: 2_000,
    restartDelay: { firstMs: 20, maxMs: 80, youngMs: 10_000 },
    ...options,
  });
  return { workers: running, lines };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The pid of the worker that takes a new connection on `port`. */
function answeredBy(port: number): Promise<number> {
  return new Promise((ok, fail) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      text += d;
    });
    socket.on('end', () => ok(Number(text.trim())));
    socket.on('error', fail);
  });
}

async function until(predicate: () => boolean, ms: number, what: string) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('startApiWorkers', () => {
  it('is ready with the shared port once every worker listens; connections go to both; stop asks each to stop', async () => {
    const { workers } = start(['ok']);
    const port = await workers.ready;
    const pids = workers.pids();
    expect(pids).toHaveLength(2);
    const seen = new Set<number>();
    for (let i = 0; i < 6; i++) seen.add(await answeredBy(port));
    expect(seen).toEqual(new Set(pids));
    // Each worker runs with this process's node arguments and the server's V8 flags, which
    // the primary adds when it was started without them (as this test process is).
    const expected = withServerNodeFlags(process.execArgv, process.env.NODE_OPTIONS);
    for (const pid of pids) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      for (const arg of expected) expect(argv).toContain(arg);
    }
    expect(await workers.stop('SIGTERM')).toBe(true);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(workers.pids()).toEqual([]);
  });

  it('a worker that cannot start fails the start with its reason, once, and the other is stopped', async () => {
    const { workers } = start(['ok', 'fail']);
    await expect(workers.ready).rejects.toThrow(/^stub 1 cannot start$/);
    await until(() => workers.pids().length === 0, 3_000, 'the other worker to stop');
  });

  it('stop kills a worker that does not stop within the limit, and says so', async () => {
    const { workers, lines } = start(['ok', 'hang'], { stopTimeoutMs: 300 });
    await workers.ready;
    const hung = workers.pids()[1]!;
    const started = Date.now();
    expect(await workers.stop('SIGTERM')).toBe(false);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(alive(hung)).toBe(false);
    expect(lines.find((l) => l.msg === 'API workers did not stop in time; killed')).toMatchObject({
      worker_pids: [hung],
    });
  });

  it('replaces a worker that dies, doubling the delay while replacements die young, then gives up', async () => {
    // Fork order: a good worker and one that dies 300 ms after listening, as do its
    // replacements.
    const { workers, lines } = start(['ok', 'die'], { maxYoungDeaths: 4 });
    await workers.ready;
    const error = await workers.failed;
    expect(error.message).toMatch(/^API workers keep dying young \(last: exit code 3\)$/);
    const delays = lines
      .filter((l) => l.msg === 'API worker exited; starting another')
      .map((l) => l.restart_in_ms);
    expect(delays).toEqual([20, 40, 80]);
    expect(lines.filter((l) => l.msg === 'API worker replaced')).toHaveLength(3);
    expect(lines.at(-1)?.msg).toBe('API workers keep dying young; giving up');
    await until(() => workers.pids().length === 0, 3_000, 'the good worker to stop');
  });

  it('a worker that lived past youngMs is replaced after the first delay again', async () => {
    const { workers, lines } = start(['ok', 'die'], {
      restartDelay: { firstMs: 20, maxMs: 80, youngMs: 1 },
    });
    await workers.ready;
    await until(
      () => lines.filter((l) => l.msg === 'API worker exited; starting another').length >= 3,
      5_000,
      'three replacements',
    );
    const delays = lines
      .filter((l) => l.msg === 'API worker exited; starting another')
      .map((l) => l.restart_in_ms);
    expect(delays.slice(0, 3)).toEqual([20, 20, 20]);
    await workers.stop('SIGTERM');
  });

  it('a replacement that never listens counts as young, however long it took', async () => {
    // Two good workers, then replacements that fail before listening.
    const { workers, lines } = start(['ok', 'die', 'fail'], {
      restartDelay: { firstMs: 20, maxMs: 80, youngMs: 1 },
      maxYoungDeaths: 3,
    });
    await workers.ready;
    const error = await workers.failed;
    expect(error.message).toMatch(/cannot start/);
    const delays = lines
      .filter((l) => l.msg === 'API worker exited; starting another')
      .map((l) => l.restart_in_ms);
    // The 'die' worker had listened and lived past youngMs: the first delay. Its failing
    // replacements never listened: young, so the delay doubles until the primary gives up.
    expect(delays).toEqual([20, 40, 80]);
  });
});
