/**
 * The anchor figure: a bare Fastify `GET /` in a child process, hit with the same autocannon
 * settings as bench/auth.bench.ts (50 connections, 3 s warm-up, 15 s). Nothing else: no
 * logger, no hooks, no schema. Run: `npx tsx bench/baseline-fastify.bench.ts`.
 * Writes bench/results/baseline-fastify-<ISO timestamp>.json and baseline-fastify-latest.json.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import {
  badResponses,
  freePort,
  HOST,
  onInterrupt,
  printTable,
  processCpuMs,
  runCannon,
  startChild,
  summarize,
  waitHttpOk,
} from './harness.ts';

const SELF = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(SELF), '..');
const RESULTS = join(ROOT, 'bench', 'results');
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 15);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);

async function serve(port: number): Promise<void> {
  const app = Fastify();
  app.get('/', async () => ({ hello: 'world' }));
  await app.listen({ host: HOST, port });
  process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
}

async function bench(): Promise<number> {
  const loadBefore = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  const port = await freePort();
  const stdoutFile = join(os.tmpdir(), `mezzofy-baseline-${process.pid}.log`);
  onInterrupt(async () => rmSync(stdoutFile, { force: true }));
  const server = startChild({
    args: ['--import', 'tsx', SELF, '--serve', String(port)],
    env: { ...process.env, NODE_ENV: 'production', NODE_OPTIONS: '' },
    cwd: ROOT,
    stdoutFile,
  });
  try {
    const url = `http://${HOST}:${port}/`;
    await waitHttpOk(url, server);
    const warm = summarize(await runCannon({ url, connections: CONNECTIONS, duration: WARMUP_S }));
    if (badResponses(warm)) throw new Error(`warm-up: ${badResponses(warm)}`);
    const cpuBefore = processCpuMs(server.child.pid) ?? 0;
    const clientBefore = process.cpuUsage();
    const r = summarize(await runCannon({ url, connections: CONNECTIONS, duration: DURATION_S }));
    const client = process.cpuUsage(clientBefore);
    const clientCpuPct = Math.round((client.user + client.system) / 10 / (r.durationS * 1000));
    const cpuMs = (processCpuMs(server.child.pid) ?? 0) - cpuBefore;
    const cpuUsPerRequest = Math.round((1000 * cpuMs) / r.totalRequests);
    const cpuPct = Math.round((100 * cpuMs) / (r.durationS * 1000));
    const result = {
      date: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      load_average_before: loadBefore,
      endpoint: 'GET / (bare Fastify, no logger)',
      connections: CONNECTIONS,
      duration_s: r.durationS,
      requests_per_s: r.requestsPerSecond,
      latency_ms: r.latencyMs,
      total_requests: r.totalRequests,
      server_cpu_us_per_request: cpuUsPerRequest,
      server_cpu_percent: cpuPct,
      client_cpu_percent: clientCpuPct,
      non_2xx: r.non2xx,
      errors: r.errors,
    };
    mkdirSync(RESULTS, { recursive: true });
    const json = `${JSON.stringify(result, null, 2)}\n`;
    const stamp = result.date.replaceAll(':', '-');
    writeFileSync(join(RESULTS, `baseline-fastify-${stamp}.json`), json);
    writeFileSync(join(RESULTS, 'baseline-fastify-latest.json'), json);
    printTable([
      ['metric', 'value'],
      ['GET / requests/s (avg)', String(r.requestsPerSecond)],
      [
        'latency p50 / p97.5 / p99 (ms)',
        `${r.latencyMs.p50} / ${r.latencyMs.p97_5} / ${r.latencyMs.p99}`,
      ],
      ['total requests', String(r.totalRequests)],
      ['server CPU per request (µs) / CPU %', `${cpuUsPerRequest} / ${cpuPct}%`],
      ['load generator (autocannon) CPU %', `${clientCpuPct}%`],
      ['non-2xx / errors', `${r.non2xx} / ${r.errors + r.timeouts}`],
    ]);
    console.log(`\nnode ${process.version}, ${os.cpus().length} cpus, load before ${loadBefore}`);
    return badResponses(r) ? 1 : 0;
  } finally {
    await server.stop();
    rmSync(stdoutFile, { force: true });
  }
}

const serveAt = process.argv.indexOf('--serve');
if (serveAt >= 0) {
  await serve(Number(process.argv[serveAt + 1]));
} else {
  bench().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
