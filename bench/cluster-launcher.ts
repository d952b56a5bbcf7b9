/**
 * Benchmark-only experiment, not a product feature: runs N `--role=api` server processes
 * sharing one port through node:cluster (Node 20 has no reusePort), to see whether more
 * processes than one help on this machine. Started by `BENCH_CLUSTER=N npm run bench`.
 * The primary only accepts connections and hands them to workers (round-robin).
 */
import cluster from 'node:cluster';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const workers = Number(process.env.BENCH_CLUSTER ?? 2);
const profile = process.execArgv.filter((a) => a.startsWith('--cpu-prof'));

cluster.setupPrimary({
  exec: join(ROOT, 'server/src/main.ts'),
  execArgv: [...profile, '--import', 'tsx'],
  args: ['--role=api'],
});
let stopping = false;
for (let i = 0; i < workers; i++) cluster.fork();
cluster.on('exit', (worker, code) => {
  if (stopping) {
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    return;
  }
  process.stderr.write(`cluster: worker ${worker.process.pid} exited (${code}); stopping\n`);
  stop(1);
});

function stop(code = 0) {
  stopping = true;
  for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
  setTimeout(() => process.exit(code), 10_000).unref();
  if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(code);
}
process.on('SIGTERM', () => stop());
process.on('SIGINT', () => stop());
