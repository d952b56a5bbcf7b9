/**
 * `npm run bench:cold`: what the same piece of CPU work costs this machine when it runs back
 * to back, and when it runs the way a lightly loaded server runs its work: after an idle gap,
 * or after waiting for another process (as the server waits for PostgreSQL, Redis or the
 * model). No server of ours takes part; the figures are the machine's.
 *
 * The unit is `fixedCpuWork(BENCH_COLD_UNIT)` (bench/harness.ts: JSON of a chat-request-sized
 * object written and read back, ~30 µs a round on a quiet machine) and a pass over a
 * BENCH_COLD_SET_KB working set, timed in this process: the wall time of the synchronous unit
 * (its median gives the ratios; the unit runs on the main thread, so wall time is its CPU time
 * unless it was preempted), and the process's user + system CPU around it, all threads (V8's
 * background GC and compiler threads too, whose work overlaps back-to-back units). Modes:
 *
 *   back to back          the next unit from setImmediate: the CPU never leaves this process
 *   idle N ms             setTimeout(N) between units (BENCH_COLD_GAPS_MS: 1, 5, 20)
 *   round trip, peer idle a 1-byte request over loopback TCP to a peer process that answers
 *                         at once, then the unit: waking up after waiting for another process
 *   round trip, peer busy the same, but the peer runs the same unit before it answers, as a
 *                         database runs a statement: the other process used the cores (and
 *                         their caches) in between
 *
 * Rounds alternate the modes (BENCH_COLD_ROUNDS, 3) so a slow period of the machine hits them
 * all; each figure is the median of the rounds. Results: bench/results/cold-cpu-<ISO>.json and
 * cold-cpu-latest.json.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  fixedCpuWork,
  HOST,
  loadAverage,
  log,
  machineSpeedCheckUs,
  percentile,
  printTable,
  runBench,
} from './harness.ts';

const env = process.env;
/** A whole number >= `min` from the environment, or the default. */
function whole(name: string, fallback: number, min: number): number {
  const value = Number(env[name] ?? fallback);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name}: a whole number >= ${min}`);
  return value;
}
const UNIT_ROUNDS = whole('BENCH_COLD_UNIT', 6, 1);
const SET_KB = whole('BENCH_COLD_SET_KB', 2048, 0);
const ROUNDS = whole('BENCH_COLD_ROUNDS', 3, 1);
const GAPS_MS = (env.BENCH_COLD_GAPS_MS ?? '1,5,20').split(',').filter(Boolean).map(Number);
if (GAPS_MS.some((ms) => !(ms > 0))) throw new Error('BENCH_COLD_GAPS_MS: positive numbers');
const RESULTS = resolve(dirname(fileURLToPath(import.meta.url)), 'results');

/**
 * The process's working set: a server's turn touches megabytes of code and data (the HTTP,
 * database and SDK code paths, their objects), not just a few objects. The unit reads one
 * word of each 64-byte cache line of this array once.
 */
const workingSet = new Int32Array((SET_KB * 1024) / 4).map((_, i) => i & 0xff);
let sink = 0;

/** The unit of work: the JSON rounds, then a pass over the working set. */
function unit(): void {
  sink += fixedCpuWork(UNIT_ROUNDS);
  let sum = 0;
  for (let i = 0; i < workingSet.length; i += 16) sum += workingSet[i]!;
  sink += sum;
}

// ---- the peer: answers each byte, after one unit of work when the byte asks for it ----

if (process.argv.includes('--peer')) {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      // One byte per request: 'w' = run the unit first, anything else = answer at once.
      for (const byte of chunk) {
        if (byte === 0x77) unit();
        socket.write('.');
      }
    });
  });
  server.listen(0, HOST, () => {
    const address = server.address();
    process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
  });
  process.on('disconnect', () => process.exit(0));
} else {
  runBench(main);
}

interface Sample {
  wallUs: number[];
  cpuUs: number;
}

/** Runs `units` units, each after `before()` has resolved; times only the unit. */
async function measure(units: number, before: () => Promise<void> | void): Promise<Sample> {
  const wallUs: number[] = [];
  let cpuUs = 0;
  for (let i = 0; i < units; i++) {
    await before();
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    unit();
    wallUs.push(Number(process.hrtime.bigint() - t0) / 1000);
    const cpu = process.cpuUsage(cpu0);
    cpuUs += cpu.user + cpu.system;
  }
  return { wallUs: wallUs.sort((a, b) => a - b), cpuUs: cpuUs / units };
}

const immediate = () => new Promise<void>((r) => setImmediate(r));
const after = (ms: number) => () => new Promise<void>((r) => setTimeout(r, ms));

/** One request to the peer: a byte out, a byte back. */
function roundTrip(socket: Socket, byte: string): () => Promise<void> {
  return () =>
    new Promise<void>((r) => {
      socket.once('data', () => r());
      socket.write(byte);
    });
}

async function startPeer(): Promise<{ child: ChildProcess; socket: Socket }> {
  const child = fork(fileURLToPath(import.meta.url), ['--peer'], {
    env: { ...env, BENCH_COLD_UNIT: String(UNIT_ROUNDS), BENCH_COLD_SET_KB: String(SET_KB) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((ok, fail) => {
    child.once('message', (m) => ok((m as { port: number }).port));
    child.once('exit', (code) => fail(new Error(`peer exited with ${code}`)));
  });
  const socket = connect(port, HOST);
  socket.setNoDelay(true);
  await new Promise<void>((ok, fail) => {
    socket.once('connect', ok);
    socket.once('error', fail);
  });
  return { child, socket };
}

async function main(): Promise<number> {
  log(`load average before: ${loadAverage()} (${os.cpus().length} cpus)`);
  const speedBefore = machineSpeedCheckUs();
  const { child, socket } = await startPeer();
  try {
    const modes: { name: string; units: number; before: () => Promise<void> | void }[] = [
      { name: 'back to back', units: 1000, before: immediate },
      ...GAPS_MS.map((ms) => ({
        name: `idle ${ms} ms`,
        units: Math.max(50, Math.min(500, Math.round(4000 / ms))),
        before: after(ms),
      })),
      { name: 'round trip, peer idle', units: 1000, before: roundTrip(socket, 'i') },
      { name: 'round trip, peer busy', units: 1000, before: roundTrip(socket, 'w') },
    ];
    // Warm-up: the unit compiled and optimised, the peer too.
    await measure(2000, immediate);
    await measure(500, roundTrip(socket, 'w'));

    const rounds = new Map<string, Sample[]>(modes.map((m) => [m.name, []]));
    for (let r = 0; r < ROUNDS; r++) {
      log(`round ${r + 1} of ${ROUNDS}`);
      for (const m of modes) rounds.get(m.name)!.push(await measure(m.units, m.before));
    }
    const median = (xs: number[]) =>
      percentile(
        [...xs].sort((a, b) => a - b),
        50,
      );
    const rows = modes.map((m) => {
      const samples = rounds.get(m.name)!;
      return {
        mode: m.name,
        units_per_round: m.units,
        wall_p50_us: Math.round(median(samples.map((s) => percentile(s.wallUs, 50)))),
        wall_p90_us: Math.round(median(samples.map((s) => percentile(s.wallUs, 90)))),
        cpu_mean_us: Math.round(median(samples.map((s) => s.cpuUs))),
      };
    });
    const base = rows[0]!;
    const table = rows.map((row) => ({
      ...row,
      times_back_to_back: Number((row.wall_p50_us / base.wall_p50_us).toFixed(2)),
    }));
    const speedAfter = machineSpeedCheckUs();

    printTable([
      [
        'the same unit of CPU work, run…',
        'units/round',
        'wall p50 µs',
        'wall p90 µs',
        'process CPU µs',
        'x back to back (p50)',
      ],
      ...table.map((t) => [
        t.mode,
        String(t.units_per_round),
        String(t.wall_p50_us),
        String(t.wall_p90_us),
        String(t.cpu_mean_us),
        t.times_back_to_back.toFixed(2),
      ]),
    ]);
    if (sink === 0) throw new Error('unreachable');
    console.log(
      `unit: fixedCpuWork(${UNIT_ROUNDS}) (bench/harness.ts) and one pass over a ${SET_KB} KB working set; median of ${ROUNDS} alternating rounds; x back to back = wall p50 over the back-to-back wall p50; process CPU = this process's user + system around the unit, all threads, mean; machine speed check before / after ${speedBefore} / ${speedAfter} µs; node ${process.version}, ${os.cpus().length} cpus, load ${loadAverage()}.`,
    );

    const result = {
      date: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model,
      load_average: loadAverage(),
      unit: `fixedCpuWork(${UNIT_ROUNDS}), then one read per 64-byte line of a ${SET_KB} KB working set`,
      rounds: ROUNDS,
      speed_check_us: { before: speedBefore, after: speedAfter },
      means:
        "wall: the unit's own wall time (it is synchronous, on the main thread); cpu: this process's user + system time around it, all threads, mean per unit; each the median of the rounds; x back to back: wall p50 against the back-to-back mode's",
      modes: table,
    };
    mkdirSync(RESULTS, { recursive: true });
    const file = join(RESULTS, `cold-cpu-${result.date.replace(/:/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(join(RESULTS, 'cold-cpu-latest.json'), `${JSON.stringify(result, null, 2)}\n`);
    log(`results: ${file}`);
    return 0;
  } finally {
    socket.destroy();
    child.kill();
  }
}
