/**
 * Summarises a V8 .cpuprofile (from `BENCH_PROFILE=1 npm run bench` or `npm run bench:chat`):
 * self time by function and by package, and total (inclusive) time of the functions that
 * matter on the hot path. Only samples inside the measured window are counted when the bench
 * recorded one (GET /auth/me; for the chat bench the throughput phase, or `--window overhead`
 * / `--window ttft`).
 *
 *   npx tsx bench/profile-summary.ts [file.cpuprofile] [--top 30] [--window name]
 *
 * With no file: the profile of the last profiled run (bench/results/profiles/latest.json).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const TOP = topAt >= 0 ? Number(args[topAt + 1]) : 30;
let file = args.find((a) => a.endsWith('.cpuprofile'));
let window: [number, number] | undefined;
let windowLabel = 'GET /auth/me window only';
if (!file) {
  const dir = join(ROOT, 'bench/results/profiles');
  const latest = JSON.parse(readFileSync(join(dir, 'latest.json'), 'utf8')) as {
    pid: number;
    me_window_us: { from: number; to: number };
    window_label?: string;
    windows_us?: Record<string, { from: number; to: number }>;
  };
  const { pid } = latest;
  const match = readdirSync(dir).find((f) => f.includes(`.${pid}.0.`) && f.endsWith('.cpuprofile'));
  if (!match) throw new Error(`no profile for pid ${pid} in ${dir}`);
  file = join(dir, match);
  const windowAt = args.indexOf('--window');
  const named = windowAt >= 0 ? args[windowAt + 1] : undefined;
  const chosen = named ? latest.windows_us?.[named] : latest.me_window_us;
  if (!chosen)
    throw new Error(
      `no window ${named}; known: ${Object.keys(latest.windows_us ?? {}).join(', ')}`,
    );
  window = [chosen.from, chosen.to];
  if (named) windowLabel = `${named} window only`;
  else if (latest.window_label) windowLabel = latest.window_label;
}

const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

function where(cf: CallFrame): string {
  const url = cf.url.replace(/^file:\/\//, '');
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    const pkg = rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
    return pkg;
  }
  if (url.startsWith('node:')) return 'node (lib)';
  if (url.includes('/server/src/')) return `server/src/${url.split('/server/src/')[1]}`;
  if (url.includes('/protocol/src/')) return 'protocol';
  if (!url) return cf.functionName.startsWith('(') ? cf.functionName : 'native / V8';
  return url;
}
function pkgOf(cf: CallFrame): string {
  const w = where(cf);
  return w.startsWith('server/src/') ? 'server/src (ours)' : w;
}
const label = (cf: CallFrame) =>
  `${cf.functionName || '(anonymous)'}  ${where(cf)}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;

// Sample timestamps: startTime + cumulative deltas (µs, monotonic clock).
const selfUs = new Map<number, number>();
let t = profile.startTime;
let totalUs = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0;
  t += dt;
  if (window && (t < window[0] || t > window[1])) continue;
  const id = profile.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  totalUs += dt;
}

const selfByFn = new Map<string, number>();
const selfByPkg = new Map<string, number>();
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const node = byId.get(id)!;
  const key = label(node.callFrame);
  selfByFn.set(key, (selfByFn.get(key) ?? 0) + us);
  const pkg = pkgOf(node.callFrame);
  selfByPkg.set(pkg, (selfByPkg.get(pkg) ?? 0) + us);
  // Inclusive: every distinct function on the stack gets the sample once.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(byId.get(cur)!.callFrame);
    if (seen.has(k)) continue;
    seen.add(k);
    inclusive.set(k, (inclusive.get(k) ?? 0) + us);
  }
}

const pct = (us: number) => `${((100 * us) / totalUs).toFixed(1).padStart(5)}%`;
const print = (
  title: string,
  m: Map<string, number>,
  n: number,
  filter?: (k: string) => boolean,
) => {
  console.log(`\n${title}`);
  [...m]
    .filter(([k]) => !filter || filter(k))
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .forEach(([k, us]) => {
      console.log(`${pct(us)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`);
    });
};

console.log(
  `${file}\n${window ? `${windowLabel}, ` : ''}${(totalUs / 1e6).toFixed(1)} s of samples`,
);
print('Self time by package', selfByPkg, 25);
print(`Top ${TOP} functions by self time`, selfByFn, TOP);
print('Total (inclusive) time, our code and the hot-path libraries', inclusive, TOP, (k) =>
  /server\/src|fastify-type-provider-zod|fast-json-stringify|pino|sonic-boom|rate-limiter-flexible|ioredis|jose|lru-cache|zod|kysely| {2}pg(-[a-z]+)?:|@anthropic-ai|undici| {2}ws:/.test(
    k,
  ),
);

// --focus <regex>: where the inclusive time of matching functions goes (their direct callees).
const focusAt = args.indexOf('--focus');
if (focusAt >= 0) {
  const rx = new RegExp(args[focusAt + 1] ?? '.');
  const childTotals = new Map<string, number>();
  for (const [id, us] of selfUs) {
    // Walk up to the outermost matching frame; credit the frame just below it.
    let below: number | undefined;
    let hit = false;
    const chain: number[] = [];
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur))
      chain.push(cur);
    for (let i = chain.length - 1; i >= 0; i--) {
      if (rx.test(label(byId.get(chain[i]!)!.callFrame))) {
        hit = true;
        below = chain[i - 1];
        break;
      }
    }
    if (!hit) continue;
    const key = below === undefined ? '(self)' : label(byId.get(below)!.callFrame);
    childTotals.set(key, (childTotals.get(key) ?? 0) + us);
  }
  print(`Callees of ${rx}`, childTotals, TOP);
}

// --callers <regex>: who calls the matching functions (inclusive time through each caller).
const callersAt = args.indexOf('--callers');
if (callersAt >= 0) {
  const rx = new RegExp(args[callersAt + 1] ?? '.');
  const totals = new Map<string, number>();
  for (const [id, us] of selfUs) {
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      if (!rx.test(label(byId.get(cur)!.callFrame))) continue;
      const up = parent.get(cur);
      const key = up === undefined ? '(root)' : label(byId.get(up)!.callFrame);
      totals.set(key, (totals.get(key) ?? 0) + us);
      break;
    }
  }
  print(`Callers of ${rx}`, totals, TOP);
}
