/**
 * `npm run bench:chat`: the cost of a chat turn in the server, against the real server started
 * as a child process on PostgreSQL + Redis (production logging: info level, access log on,
 * stdout to a file) and a zero-latency fake model in a process of its own
 * (bench/fake-model-launcher.ts: the Anthropic wire format of server/test/fakes, precomputed),
 * reached through the real Anthropic SDK. A REST turn asks for the whole answer, a WebSocket
 * turn for a stream (docs/adr/0008).
 *
 * Phases, in order (every turn names its agent, so the router makes no classifier call: one
 * model request per turn, checked against the fake's count):
 *   warm-up     POST /chat/send, all users, BENCH_WARMUP_S
 *   overhead    POST /chat/send, BENCH_LATENCY_USERS users one turn at a time each, BENCH_LATENCY_S:
 *               per turn, client latency minus the fake's handling time of that turn's model
 *               request (paired through a tag in the message); with the least mean latency
 *               Little's law allows these closed-loop users on this machine, from the CPU per
 *               turn of each process in the throughput phase
 *   paced       POST /chat/send, the same users with Poisson arrivals at each offered rate of
 *               BENCH_PACED_RATES turns/s in all, BENCH_PACED_S each: the same overhead, when
 *               the users do not send back to back (a rate not below what the users reached
 *               back to back is skipped: they could not keep up with it)
 *   throughput  POST /chat/send, BENCH_USERS connections (autocannon), BENCH_DURATION_S:
 *               turns/s counting 2xx only
 *   ttft        WebSocket /chat/ws, BENCH_LATENCY_USERS sockets, BENCH_LATENCY_S: chat.send to
 *               the first text.delta; then paced as the REST users are, BENCH_PACED_S each
 *   direct      the server's own model request (captured by the fake, asked streaming as a
 *               WebSocket turn asks it; a REST turn asks for the whole answer) replayed from this
 *               process straight to the fake with node:http, BENCH_LATENCY_USERS at a time,
 *               BENCH_DIRECT_S: the model's own time to first token and round trip
 *   anchor      after the server has stopped: the issue's anchor measured on this machine, the
 *               Portkey gateway (bench/anchor.ts) forwarding the same request (as a REST turn
 *               asks it) to the same fake, storing nothing, at BENCH_LATENCY_USERS and then
 *               BENCH_USERS connections (autocannon), BENCH_ANCHOR_S each
 * Each user continues its own session and starts a new one every BENCH_SESSION_TURNS turns.
 *
 * Each run gets its own PostgreSQL schema (dropped afterwards) and Redis key prefix (deleted
 * afterwards). Only 127.0.0.1 is targeted. Any non-2xx response, error or timeout fails the
 * run (exit 1). Missing a performance target is reported; set BENCH_ENFORCE_TARGETS=1 to make
 * it fail the run too (exit 2).
 *
 * Environment (all optional):
 *   BENCH_DATABASE_URL   default postgres://postgres@127.0.0.1:5432/test
 *   BENCH_REDIS_URL      default redis://127.0.0.1:6379
 *   BENCH_DURATION_S     throughput measurement, default 15 (after BENCH_WARMUP_S, default 3)
 *   BENCH_LATENCY_S      overhead and time-to-first-token measurements, default 10 each
 *   BENCH_DIRECT_S       direct model baseline, default 5
 *   BENCH_PACED_RATES    offered turns/s of the paced phases, default 100,300,500; '' leaves them out
 *   BENCH_PACED_S        each paced phase, default 5
 *   BENCH_ANCHOR_S       anchor phase, seconds per connection count, default 10; 0 leaves it out
 *                        (the first run installs Portkey into bench/anchor: npm ci, ~10 s)
 *   BENCH_USERS          users, and connections in the throughput phase, default 50
 *   BENCH_LATENCY_USERS  concurrent users in the overhead and ttft phases, default 10
 *   BENCH_SESSION_TURNS  turns per session before a user starts a new one, default 10
 *   BENCH_ROLE           process role of the server, default all
 *   BENCH_NODE_ARGS      experiments: node flags for the server (recorded in the results)
 *   BENCH_SERVER_ENV     experiments: `K=V K2=V2` server environment, e.g.
 *                        MEZZOFY__database__pool_max=20 (recorded in the results)
 *   BENCH_WORKERS        API processes of the server (WEB_CONCURRENCY), default: one per core
 *   BENCH_PROFILE=1      run the server with --cpu-prof (profiles in bench/results/profiles) and
 *                        print the profile summary of the throughput phase
 *   BENCH_KEEP_LOG=1     keep the server's stdout (the logs) instead of deleting it
 *   BENCH_ENFORCE_TARGETS=1  a missed target exits 2
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ChatReply, PROTOCOL_VERSION, type WsServerEvent } from '@mezzofy/protocol';
import type autocannon from 'autocannon';
import WebSocket from 'ws';
import { ANCHOR_PACKAGE, type AnchorLoad, measureAnchor } from './anchor.ts';
import {
  api,
  apiProcessPid,
  badResponses,
  benchServerProcess,
  benchUsers,
  type ChildServer,
  cleanChildEnv,
  countAccessLines,
  type Distribution,
  distribution,
  freePort,
  HOST,
  type LoadSummary,
  loadAverage,
  log,
  machineCpuMs,
  machineSpeedCheckUs,
  openBenchRun,
  pidsCpuMs,
  postgresBackendPids,
  printTable,
  processCpuMs,
  processRssMb,
  processTreeCpuMs,
  redisCpuS,
  runBench,
  runCannon,
  serverNodeArgs,
  sleep,
  startBenchServer,
  startChild,
  summarize,
  verdict,
  waitJsonLine,
  withPg,
} from './harness.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = join(ROOT, 'bench', 'results');

const env = process.env;
const DATABASE_URL = env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DURATION_S = Number(env.BENCH_DURATION_S ?? 15);
const WARMUP_S = Number(env.BENCH_WARMUP_S ?? 3);
const LATENCY_S = Number(env.BENCH_LATENCY_S ?? 10);
const DIRECT_S = Number(env.BENCH_DIRECT_S ?? 5);
const USERS = Number(env.BENCH_USERS ?? env.BENCH_CONNECTIONS ?? 50);
const LATENCY_USERS = Math.min(USERS, Number(env.BENCH_LATENCY_USERS ?? 10));
const SESSION_TURNS = Number(env.BENCH_SESSION_TURNS ?? 10);
/** Offered turns/s of the paced phases (LATENCY_USERS users, Poisson arrivals); empty: none. */
const PACED_RATES = (env.BENCH_PACED_RATES ?? '100,300,500')
  .split(',')
  .filter((r) => r.trim())
  .map(Number);
const PACED_S = Number(env.BENCH_PACED_S ?? 5);
if (PACED_RATES.some((r) => !(r > 0))) throw new Error('BENCH_PACED_RATES: positive numbers');
const PROFILE = env.BENCH_PROFILE === '1';
const SETUP_CONCURRENCY = 4;
const SERVER = benchServerProcess(env);
const LAUNCHER_ENTRY = ['bench/fake-model-launcher.ts'];

/** The users are sales reps: chat:use and agent:sales (server/config/roles.yaml). */
const AGENT = 'sales';
const MODEL = 'anthropic/claude-sonnet-5-5';
const FAKE_API_KEY = 'bench-fake-model-key';
/** The user's message; the tag `[bench <id>]` lets the fake pair its request with the turn. */
const messageOf = (tag: string) =>
  `[bench ${tag}] Which of my leads should I follow up with this week?`;

/** Raised for the run so that no user ever sees a 429: a config, not a trick. */
const RATE_LIMIT = { user_points: 100_000_000, ip_points: 1_000_000, window_s: 60 };
/** The WebSocket's own per-connection message budget (default 120 per 60 s), raised likewise. */
const WS_MESSAGES_PER_WINDOW = 100_000_000;

const TARGETS = { overheadP50Ms: 3, overheadP99Ms: 10, turnsPerS: 1_000, ttftAddedP50Ms: 5 };
const ANCHOR = {
  what: 'Portkey gateway (Node) against a zero-latency model, storing nothing',
  requests_per_s: 800,
  p50_ms: 11,
  source: "issue 3's figure, from an earlier machine; anchor_measured is this run's own",
};
/** Seconds per connection count of the anchor phase (bench/anchor.ts); 0 leaves it out. */
const ANCHOR_S = Number(env.BENCH_ANCHOR_S ?? 10);
const ANCHOR_RUN = ANCHOR_S > 0;

/** Monotonic clock in µs: the fake's process reads the same one (process.hrtime). */
const nowUs = () => Number(process.hrtime.bigint()) / 1000;
const ms = (us: number) => us / 1000;
/** µs of CPU per turn between two CPU readings in ms; undefined when either is. */
const cpuUsPerTurn = (fromMs: number | undefined, toMs: number | undefined, turns: number) =>
  fromMs === undefined || toMs === undefined
    ? undefined
    : Math.round((1000 * (toMs - fromMs)) / Math.max(1, turns));

// ---- the fake model's control port ----

interface FakeInfo {
  url: string;
  stats_url: string;
  pid: number;
}
interface FakeStats {
  counts_since_start: { anthropic: number; openai: number; handled: number };
  handled: {
    count: number;
    dropped: number;
    p50_us: number | null;
    p90_us: number | null;
    p99_us: number | null;
    max_us: number | null;
  };
  reply: string;
}

async function fakeGet<T>(fake: FakeInfo, path: string): Promise<T> {
  const res = await fetch(`${fake.stats_url}${path}`, { signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`fake model ${path}: ${res.status}`);
  return (await res.json()) as T;
}
async function fakeReset(fake: FakeInfo): Promise<void> {
  const res = await fetch(`${fake.stats_url}/reset`, { method: 'POST' });
  await res.arrayBuffer();
}
const fakeStats = (fake: FakeInfo) => fakeGet<FakeStats>(fake, '/stats');
const fakeTurns = (fake: FakeInfo) => fakeGet<Record<string, [number, number]>>(fake, '/turns');

// ---- closed-loop clients ----

interface Outcomes {
  statusCodes: Record<string, number>;
  errors: number;
  timeouts: number;
  firstError?: string;
}
const newOutcomes = (): Outcomes => ({ statusCodes: {}, errors: 0, timeouts: 0 });
function countStatus(o: Outcomes, status: number): void {
  o.statusCodes[status] = (o.statusCodes[status] ?? 0) + 1;
}

interface RestSample {
  tag: string;
  startUs: number;
  endUs: number;
}

/** One POST /chat/send on the user's own keep-alive connection; times the whole exchange. */
function postTurn(
  agent: http.Agent,
  port: number,
  token: string,
  body: string,
): Promise<{ status: number; text: string; startUs: number; endUs: number }> {
  return new Promise((resolvePost, reject) => {
    const req = http.request(
      {
        host: HOST,
        port,
        method: 'POST',
        path: '/chat/send',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          authorization: `Bearer ${token}`,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolvePost({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
            startUs,
            endUs: nowUs(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    const startUs = nowUs();
    req.end(body);
  });
}

/**
 * The due times of one user's turns: back to back without `meanGapUs`, else paced: the next
 * turn falls due an exponential gap of mean `meanGapUs` after the last one's due time, so the
 * users together make Poisson arrivals. `next()` waits for the next turn's due time and says
 * what to time it from, or that the deadline has come. A paced turn that fell due while the
 * user's previous turn was still running is timed from its due time (the wait is the server's,
 * not the client's: no coordinated omission); one sent on time is timed from its send, so the
 * client's timer does not count.
 */
function pacer(deadlineUs: number, meanGapUs?: number) {
  const gap = () => -Math.log(1 - Math.random()) * meanGapUs!;
  let dueUs = meanGapUs ? nowUs() + gap() : 0;
  return async (): Promise<{ lateSinceUs?: number } | undefined> => {
    if (nowUs() >= deadlineUs) return undefined;
    if (!meanGapUs) return {};
    const waitUs = dueUs - nowUs();
    const late = waitUs > 0 ? undefined : dueUs;
    if (waitUs > 0) {
      if (dueUs >= deadlineUs) return undefined;
      await sleep(waitUs / 1000);
    }
    dueUs += gap();
    return late === undefined ? {} : { lateSinceUs: late };
  };
}

/**
 * The offered rates the paced phases run: those below what the same users reached back to back
 * (`closedLoopPerS`). The users send one turn at a time, so a higher rate cannot be served: its
 * figures would only measure a queue growing for the whole phase. The others are logged as
 * skipped.
 */
function sustainableRates(
  closedLoopPerS: number,
  transport: string,
): { rates: number[]; skipped: number[]; closedLoopPerS: number } {
  const rates = PACED_RATES.filter((r) => r < closedLoopPerS);
  const skipped = PACED_RATES.filter((r) => r >= closedLoopPerS);
  if (skipped.length)
    log(
      `paced ${transport}: skipping ${skipped.join(', ')} turns/s: not below the ${Math.round(closedLoopPerS)} turns/s that ${LATENCY_USERS} users reached back to back`,
    );
  return { rates, skipped, closedLoopPerS: Math.round(closedLoopPerS) };
}

/** One user's turns over REST, one at a time, until the deadline (paced: see pacer). */
async function restUser(opts: {
  port: number;
  token: string;
  tagPrefix: string;
  deadlineUs: number;
  samples: RestSample[];
  outcomes: Outcomes;
  meanGapUs?: number;
}): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let session: string | undefined;
  const next = pacer(opts.deadlineUs, opts.meanGapUs);
  try {
    for (let n = 0; ; n++) {
      const due = await next();
      if (!due) break;
      const tag = `${opts.tagPrefix}-${n}`;
      const continuing = n % SESSION_TURNS !== 0 && session !== undefined;
      const body = JSON.stringify({
        message: messageOf(tag),
        agent: AGENT,
        ...(continuing ? { session_id: session } : {}),
      });
      try {
        const res = await postTurn(agent, opts.port, opts.token, body);
        countStatus(opts.outcomes, res.status);
        if (res.status === 200) {
          session = (JSON.parse(res.text) as ChatReply).session_id;
          opts.samples.push({ tag, startUs: due.lateSinceUs ?? res.startUs, endUs: res.endUs });
        } else {
          opts.outcomes.firstError ??= `${res.status} ${res.text.slice(0, 300)}`;
          session = undefined;
        }
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        if (message === 'timeout') opts.outcomes.timeouts += 1;
        else opts.outcomes.errors += 1;
        opts.outcomes.firstError ??= message;
        session = undefined;
      }
    }
  } finally {
    agent.destroy();
  }
}

interface WsSample {
  tag: string;
  startUs: number;
  firstDeltaUs: number;
  endUs: number;
}

/** One user's turns over the WebSocket, one at a time, until the deadline (paced: see pacer). */
async function wsUser(opts: {
  port: number;
  token: string;
  tagPrefix: string;
  deadlineUs: number;
  samples: WsSample[];
  outcomes: Outcomes;
  meanGapUs?: number;
}): Promise<void> {
  const ws = new WebSocket(`ws://${HOST}:${opts.port}/chat/ws`);
  let ready: ((ok: boolean) => void) | undefined;
  let current:
    | {
        tag: string;
        startUs: number;
        firstDeltaUs?: number;
        done: (r: { endUs: number; sessionId?: string; error?: string }) => void;
      }
    | undefined;
  let closed: string | undefined;
  ws.on('message', (data) => {
    const t = nowUs();
    const event = JSON.parse(String(data)) as WsServerEvent;
    if (event.type === 'ready') ready?.(true);
    else if (event.type === 'text.delta') {
      if (current && event.request_id === current.tag) current.firstDeltaUs ??= t;
    } else if (event.type === 'message.end') {
      if (current && event.request_id === current.tag)
        current.done({ endUs: t, sessionId: event.session_id });
    } else if (event.type === 'error') {
      if (current && (event.request_id === undefined || event.request_id === current.tag))
        current.done({ endUs: t, error: `${event.code}: ${event.message}` });
      else opts.outcomes.firstError ??= `ws error event: ${event.code}: ${event.message}`;
    }
  });
  ws.on('close', (code, reason) => {
    closed = `closed ${code} ${String(reason)}`;
    ready?.(false);
    current?.done({ endUs: nowUs(), error: closed });
  });
  ws.on('error', (err) => {
    closed ??= err.message;
  });
  try {
    await once(ws, 'open');
    const isReady = new Promise<boolean>((r) => {
      ready = r;
    });
    ws.send(
      JSON.stringify({ type: 'hello', token: opts.token, protocol_version: PROTOCOL_VERSION }),
    );
    if (!(await isReady)) throw new Error(`no ready: ${closed}`);
    let session: string | undefined;
    const next = pacer(opts.deadlineUs, opts.meanGapUs);
    for (let n = 0; !closed; n++) {
      const due = await next();
      if (!due || closed) break;
      const tag = `${opts.tagPrefix}-${n}`;
      const continuing = n % SESSION_TURNS !== 0 && session !== undefined;
      const result = await new Promise<{ endUs: number; sessionId?: string; error?: string }>(
        (done) => {
          current = { tag, startUs: due.lateSinceUs ?? nowUs(), done };
          ws.send(
            JSON.stringify({
              type: 'chat.send',
              request_id: tag,
              message: messageOf(tag),
              agent: AGENT,
              ...(continuing ? { session_id: session } : {}),
            }),
          );
        },
      );
      const turn = current!;
      current = undefined;
      if (result.error || turn.firstDeltaUs === undefined) {
        opts.outcomes.errors += 1;
        opts.outcomes.firstError ??= result.error ?? 'message.end without a text.delta';
        session = undefined;
        continue;
      }
      countStatus(opts.outcomes, 200);
      session = result.sessionId;
      opts.samples.push({
        tag,
        startUs: turn.startUs,
        firstDeltaUs: turn.firstDeltaUs,
        endUs: result.endUs,
      });
    }
  } catch (err) {
    opts.outcomes.errors += 1;
    opts.outcomes.firstError ??= err instanceof Error ? err.message : String(err);
  } finally {
    ws.close();
  }
}

interface DirectSample {
  status: number;
  ttfbUs: number;
  totalUs: number;
}

/**
 * The server's model request, replayed straight to the fake, one at a time, until the
 * deadline. node:http, the lightest client at hand: what it measures is the model's own time,
 * with as little client cost as possible counted in it (the server's SDK uses fetch, which
 * costs more; that difference is counted as server overhead).
 */
async function directUser(opts: {
  url: string;
  headers: Record<string, string>;
  body: string;
  deadlineUs: number;
  samples: DirectSample[];
  outcomes: Outcomes;
}): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const target = new URL(opts.url);
  const headers = { ...opts.headers, 'content-length': String(Buffer.byteLength(opts.body)) };
  try {
    while (nowUs() < opts.deadlineUs) {
      try {
        const sample = await new Promise<DirectSample>((resolveSample, reject) => {
          let firstUs: number | undefined;
          let seen = '';
          const req = http.request(
            {
              host: target.hostname,
              port: target.port,
              path: target.pathname,
              method: 'POST',
              agent,
              headers,
            },
            (res) => {
              res.setEncoding('utf8');
              res.on('data', (chunk: string) => {
                if (firstUs !== undefined) return;
                const t = nowUs();
                seen += chunk;
                if (seen.includes('"text_delta"')) firstUs = t;
              });
              res.on('end', () => {
                const endUs = nowUs();
                resolveSample({
                  status: res.statusCode ?? 0,
                  ttfbUs: firstUs === undefined ? Number.NaN : firstUs - startUs,
                  totalUs: endUs - startUs,
                });
              });
              res.on('error', reject);
            },
          );
          req.setTimeout(30_000, () => req.destroy(new Error('timeout')));
          req.on('error', reject);
          const startUs = nowUs();
          req.end(opts.body);
        });
        countStatus(opts.outcomes, sample.status);
        if (sample.status !== 200 || Number.isNaN(sample.ttfbUs)) {
          opts.outcomes.firstError ??= `direct: ${sample.status}, no text delta`;
          continue;
        }
        opts.samples.push(sample);
      } catch (err) {
        opts.outcomes.errors += 1;
        opts.outcomes.firstError ??= err instanceof Error ? err.message : String(err);
      }
    }
  } finally {
    agent.destroy();
  }
}

/** Each REST turn paired with its model request at the fake (by tag): the overhead's parts. */
function pairWithModel(samples: RestSample[], turns: Record<string, [number, number]>) {
  const totals: number[] = [];
  const models: number[] = [];
  const overheads: number[] = [];
  const beforeModel: number[] = [];
  const afterModel: number[] = [];
  let unmatched = 0;
  for (const s of samples) {
    const m = turns[s.tag];
    if (!m) {
      unmatched += 1;
      continue;
    }
    const total = ms(s.endUs - s.startUs);
    const model = ms(m[1] - m[0]);
    totals.push(total);
    models.push(model);
    overheads.push(total - model);
    beforeModel.push(ms(m[0] - s.startUs));
    afterModel.push(ms(s.endUs - m[1]));
  }
  return { totals, models, overheads, beforeModel, afterModel, unmatched };
}

interface PacedRun {
  offered_turns_per_s: number;
  turns_per_s: number;
  turns: number;
  overhead_ms: Distribution;
  total_ms: Distribution;
  unmatched_turns: number;
  server_cpu_us_per_turn: number | undefined;
  load: ReturnType<typeof loadSummaryOf>;
  outcomes: Outcomes;
}

/** Per second of a phase: turns completed, and the p50 and max of their latency (ms). */
interface WsPacedRun {
  offered_turns_per_s: number;
  turns_per_s: number;
  turns: number;
  ttft_ms: Distribution;
  server_cpu_us_per_turn: number | undefined;
  errors: number;
  first_error: string | undefined;
}

function timelineOf(samples: Array<{ startUs: number; endUs: number }>, fromUs: number) {
  const seconds: number[][] = [];
  for (const s of samples) {
    const i = Math.floor((s.endUs - fromUs) / 1e6);
    seconds[i] ??= [];
    seconds[i].push(ms(s.endUs - s.startUs));
  }
  return Array.from(seconds, (lat = []) => {
    const d = distribution(lat, 1);
    return { turns: d.count, p50_ms: d.p50, max_ms: d.max };
  });
}

/** A closed-loop phase's outcome in the shape autocannon's summary has (for badResponses). */
function loadSummaryOf(
  okLatenciesMs: number[],
  outcomes: Outcomes,
  durationS: number,
  connections: number,
): LoadSummary {
  const d = distribution(okLatenciesMs);
  const total = Object.values(outcomes.statusCodes).reduce((a, b) => a + b, 0);
  const ok = outcomes.statusCodes['200'] ?? 0;
  return {
    requestsPerSecond: Math.round(ok / durationS),
    totalRequests: total + outcomes.errors + outcomes.timeouts,
    total2xx: Object.entries(outcomes.statusCodes)
      .filter(([code]) => code.startsWith('2'))
      .reduce((a, [, n]) => a + n, 0),
    non2xx: Object.entries(outcomes.statusCodes)
      .filter(([code]) => !code.startsWith('2'))
      .reduce((a, [, n]) => a + n, 0),
    errors: outcomes.errors,
    timeouts: outcomes.timeouts,
    statusCodes: outcomes.statusCodes,
    latencyMs: { avg: d.avg, p50: d.p50, p90: d.p90, p97_5: Number.NaN, p99: d.p99, max: d.max },
    durationS,
    connections,
  };
}

async function main(): Promise<number> {
  const started = new Date();
  const loadBefore = loadAverage();
  mkdirSync(RESULTS, { recursive: true });
  const port = await freePort();
  const profileDir = join(RESULTS, 'profiles');
  const run = await openBenchRun(DATABASE_URL, REDIS_URL);
  const { schema, keyPrefix, stdoutFile } = run;
  const fakeStdoutFile = run.file('fake.log');

  log(`load average before: ${loadBefore} (${os.cpus().length} cpus)`);
  log(`schema ${schema}, redis prefix ${keyPrefix}, port ${port}`);
  let server: ChildServer | undefined;
  let fakeChild: ChildServer | undefined;
  let exitCode = 0;
  try {
    // The fake model, in its own process.
    fakeChild = startChild({
      args: ['--import', 'tsx', ...LAUNCHER_ENTRY],
      env: cleanChildEnv(env),
      cwd: ROOT,
      stdoutFile: fakeStdoutFile,
    });
    const fake = await waitJsonLine<FakeInfo>(fakeStdoutFile, fakeChild);
    log(`fake model at ${fake.url} (pid ${fake.pid})`);

    // No model provider but the fake, and no server/config/.env.
    const bench = await startBenchServer({
      run,
      port,
      root: ROOT,
      entry: SERVER.entry,
      rateLimit: RATE_LIMIT,
      dropEnv: [
        'ANTHROPIC_API_KEY',
        'ANTHROPIC_BASE_URL',
        'MOONSHOT_API_KEY',
        'MOONSHOT_BASE_URL',
        'OPENAI_API_KEY',
        'OPENAI_BASE_URL',
        'ENV_FILE',
        'ROLES_FILE',
      ],
      env: {
        ENV_FILE: join(run.dataDir, 'no-such.env'),
        MEZZOFY__realtime__messages_per_window: String(WS_MESSAGES_PER_WINDOW),
        ANTHROPIC_API_KEY: FAKE_API_KEY,
        ANTHROPIC_BASE_URL: fake.url,
        MEZZOFY__llm__models__chat: MODEL,
        ...SERVER.env,
      },
      profileDir: PROFILE ? profileDir : undefined,
      table: 'conversations',
    });
    server = bench.server;
    const { base, health } = bench;
    const serverPid = bench.server.child.pid!;
    const { tokens } = await benchUsers(bench, USERS, SETUP_CONCURRENCY);

    // The server's CPU with no requests at all (timers, queues, pollers), over 3 s.
    await sleep(1_000);
    const idle0 = processTreeCpuMs(serverPid);
    const idleFrom = nowUs();
    await sleep(3_000);
    const idle1 = processTreeCpuMs(serverPid);
    const idleCpuPct =
      idle0 !== undefined && idle1 !== undefined
        ? Math.round((100 * (idle1 - idle0)) / ms(nowUs() - idleFrom))
        : undefined;
    log(`server CPU while idle: ${idleCpuPct ?? '?'}%`);

    // Sanity: one turn answers the fake's text, routed explicitly, with one model request.
    const before = await fakeStats(fake);
    const first = await api<ChatReply>(
      base,
      'POST',
      '/chat/send',
      { message: messageOf('sanity-0'), agent: AGENT },
      tokens[0],
    );
    const second = await api<ChatReply>(
      base,
      'POST',
      '/chat/send',
      { message: messageOf('sanity-1'), agent: AGENT, session_id: first.body.session_id },
      tokens[0],
    );
    const after = await fakeStats(fake);
    if (first.status !== 200 || second.status !== 200)
      throw new Error(
        `chat sanity check: ${first.status} ${JSON.stringify(first.body)} / ${second.status}`,
      );
    if (first.body.text !== after.reply || first.body.routed_by !== 'explicit')
      throw new Error(`chat sanity check: unexpected reply ${JSON.stringify(first.body)}`);
    if (second.body.session_id !== first.body.session_id)
      throw new Error('chat sanity check: the second turn did not continue the session');
    const sanityModelCalls =
      after.counts_since_start.anthropic - before.counts_since_start.anthropic;
    if (sanityModelCalls !== 2)
      throw new Error(`chat sanity check: ${sanityModelCalls} model requests for 2 turns`);
    const captured = await fakeGet<{ headers: Record<string, string>; body: unknown }>(
      fake,
      '/last-request',
    );
    const capturedShape = captured.body as { stream?: boolean; messages?: unknown[] };
    // A REST turn is read by nobody as it is written: the server asks for the whole answer.
    if (capturedShape.stream !== false)
      throw new Error('a REST turn sent a streaming model request');
    // The direct phase replays it as the WebSocket's turn sends it: streaming, so that it
    // measures the model's own time to first token too.
    const capturedBody = JSON.stringify({ ...capturedShape, stream: true });

    // Database activity: pg_stat_user_tables of the run's schema, before and after the turns.
    const tableStats = () =>
      withPg(DATABASE_URL, (c) =>
        c.query<{
          relname: string;
          seq_scan: number;
          idx_scan: number;
          ins: number;
          upd: number;
          hot_upd: number;
          del: number;
        }>(
          `select relname, coalesce(seq_scan, 0)::int as seq_scan, coalesce(idx_scan, 0)::int as idx_scan,
                  n_tup_ins::int as ins, n_tup_upd::int as upd, n_tup_hot_upd::int as hot_upd,
                  n_tup_del::int as del
             from pg_stat_user_tables where schemaname = $1`,
          [schema],
        ),
      ).then((r) => new Map(r.rows.map((row) => [row.relname, row])));
    const tablesBefore = await tableStats();
    const modelCountAtStart = (await fakeStats(fake)).counts_since_start.anthropic;

    // ---- warm-up, and the throughput phase's load (autocannon) ----
    /**
     * One connection per user; each connection has its own list of SESSION_TURNS requests
     * (autocannon shares request objects between connections otherwise): the first starts a
     * new session, the others continue it; autocannon clears the context after the last one,
     * so the connection then starts a new session.
     */
    const cannonOptions = (duration: number, connections: number): autocannon.Options => {
      let nextUser = 0;
      const requestsFor = (token: string): autocannon.Request[] =>
        Array.from({ length: SESSION_TURNS }, (_, i) => ({
          method: 'POST',
          path: '/chat/send',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          setupRequest: (req: autocannon.Request, context: { session_id?: string }) => ({
            ...req,
            body: JSON.stringify({
              message: messageOf('load'),
              agent: AGENT,
              ...(i > 0 && context.session_id ? { session_id: context.session_id } : {}),
            }),
          }),
          ...(i === 0
            ? {
                onResponse: (status: number, body: string, context: { session_id?: string }) => {
                  if (status === 200)
                    context.session_id = (JSON.parse(body) as ChatReply).session_id;
                },
              }
            : {}),
        })) as autocannon.Request[];
      return {
        url: `${base}/chat/send`,
        connections,
        duration,
        timeout: 30,
        requests: requestsFor(tokens[0]!),
        setupClient: (client: autocannon.Client) => {
          client.setRequests(requestsFor(tokens[nextUser++ % tokens.length]!));
        },
      };
    };
    log(`warm-up ${WARMUP_S}s: POST /chat/send, ${USERS} connections`);
    const warm = summarize(await runCannon(cannonOptions(WARMUP_S, USERS)));
    const warmBad = badResponses(warm);
    if (warmBad) throw new Error(`warm-up: ${warmBad}`);
    const windows: Record<string, { from: number; to: number }> = {};

    // ---- overhead: LATENCY_USERS users over REST, each turn paired with its model request ----
    log(`overhead: POST /chat/send, ${LATENCY_USERS} users one turn at a time, ${LATENCY_S}s`);
    await fakeReset(fake);
    const restSamples: RestSample[] = [];
    const restOutcomes = newOutcomes();
    let cpu0 = processTreeCpuMs(serverPid);
    windows.overhead = { from: nowUs(), to: 0 };
    const overheadStart = nowUs();
    await Promise.all(
      Array.from({ length: LATENCY_USERS }, (_, u) =>
        restUser({
          port,
          token: tokens[u]!,
          tagPrefix: `r${u}`,
          deadlineUs: overheadStart + LATENCY_S * 1e6,
          samples: restSamples,
          outcomes: restOutcomes,
        }),
      ),
    );
    const overheadS = (nowUs() - overheadStart) / 1e6;
    windows.overhead.to = nowUs();
    let cpu1 = processTreeCpuMs(serverPid);
    const overheadCpuUs = cpuUsPerTurn(cpu0, cpu1, restSamples.length);
    const { totals, models, overheads, beforeModel, afterModel, unmatched } = pairWithModel(
      restSamples,
      await fakeTurns(fake),
    );
    const overheadLoad = loadSummaryOf(
      restSamples.map((s) => ms(s.endUs - s.startUs)),
      restOutcomes,
      overheadS,
      LATENCY_USERS,
    );

    // ---- paced: the same users, each turn due at Poisson arrivals of a set total rate ----
    const paced: PacedRun[] = [];
    const restPaced = sustainableRates(restSamples.length / overheadS, 'REST');
    for (const [i, rate] of restPaced.rates.entries()) {
      log(`paced: POST /chat/send, ${LATENCY_USERS} users, ${rate} turns/s offered, ${PACED_S}s`);
      await fakeReset(fake);
      const samples: RestSample[] = [];
      const outcomes = newOutcomes();
      const c0 = processTreeCpuMs(serverPid);
      const startUs = nowUs();
      await Promise.all(
        Array.from({ length: LATENCY_USERS }, (_, u) =>
          restUser({
            port,
            token: tokens[u]!,
            tagPrefix: `p${i}u${u}`,
            deadlineUs: startUs + PACED_S * 1e6,
            samples,
            outcomes,
            meanGapUs: (LATENCY_USERS / rate) * 1e6,
          }),
        ),
      );
      const durationS = (nowUs() - startUs) / 1e6;
      const c1 = processTreeCpuMs(serverPid);
      const paired = pairWithModel(samples, await fakeTurns(fake));
      paced.push({
        offered_turns_per_s: rate,
        turns_per_s: Math.round(samples.length / durationS),
        turns: samples.length,
        overhead_ms: distribution(paired.overheads),
        total_ms: distribution(paired.totals),
        unmatched_turns: paired.unmatched,
        server_cpu_us_per_turn: cpuUsPerTurn(c0, c1, samples.length),
        load: loadSummaryOf(paired.totals, outcomes, durationS, LATENCY_USERS),
        outcomes,
      });
    }

    // ---- throughput: USERS connections, autocannon ----
    log(`throughput: POST /chat/send, ${USERS} connections, ${DURATION_S}s`);
    await fakeReset(fake);
    const pgPids = await postgresBackendPids(serverPid, DATABASE_URL).catch(() => []);
    const modelBefore = (await fakeStats(fake)).counts_since_start.anthropic;
    const speedBefore = machineSpeedCheckUs();
    windows.throughput = { from: nowUs(), to: 0 };
    const redisBefore = await redisCpuS(REDIS_URL);
    cpu0 = processTreeCpuMs(serverPid);
    const pgCpu0 = pidsCpuMs(pgPids);
    const fakeCpu0 = processCpuMs(fake.pid);
    const machine0 = machineCpuMs();
    const clientBefore = process.cpuUsage();
    const load = summarize(await runCannon(cannonOptions(DURATION_S, USERS)));
    const client = process.cpuUsage(clientBefore);
    const machine1 = machineCpuMs();
    cpu1 = processTreeCpuMs(serverPid);
    const pgCpu1 = pidsCpuMs(pgPids);
    const fakeCpu1 = processCpuMs(fake.pid);
    const redisAfter = await redisCpuS(REDIS_URL);
    windows.throughput.to = nowUs();
    const loadFake = await fakeStats(fake);
    const speedAfter = machineSpeedCheckUs();
    const modelRequests = loadFake.counts_since_start.anthropic - modelBefore;
    const turnsPerS = Math.round(load.total2xx / load.durationS);
    const perTurn = (deltaMs: number | undefined) =>
      deltaMs === undefined ? undefined : Math.round((1000 * deltaMs) / Math.max(1, load.total2xx));
    const serverCpuUsPerTurn = cpuUsPerTurn(cpu0, cpu1, load.total2xx);
    const serverCpuPct =
      cpu0 !== undefined && cpu1 !== undefined
        ? Math.round((100 * (cpu1 - cpu0)) / (load.durationS * 1000))
        : undefined;
    const pgCpuUsPerTurn = pgPids.length ? perTurn(pgCpu1 - pgCpu0) : undefined;
    const fakeCpuUsPerTurn = cpuUsPerTurn(fakeCpu0, fakeCpu1, load.total2xx);
    const redisCpuUsPerTurn =
      redisBefore !== undefined && redisAfter !== undefined
        ? perTurn(1000 * (redisAfter - redisBefore))
        : undefined;
    const clientCpuPct = Math.round((client.user + client.system) / 10 / (load.durationS * 1000));
    const clientCpuUsPerTurn = perTurn((client.user + client.system) / 1000);
    // Every process on the machine (other people's work included), and how busy it was.
    const machineCpuUsPerTurn =
      machine0 && machine1 ? perTurn(machine1.busy - machine0.busy) : undefined;
    const machineBusyPct =
      machine0 && machine1
        ? Math.round(
            (100 * (machine1.busy - machine0.busy)) /
              (machine1.busy - machine0.busy + machine1.idle - machine0.idle),
          )
        : undefined;
    const ownCpuUsPerTurn = [
      serverCpuUsPerTurn,
      pgCpuUsPerTurn,
      redisCpuUsPerTurn,
      fakeCpuUsPerTurn,
      clientCpuUsPerTurn,
    ].reduce<number>((a, b) => a + (b ?? 0), 0);
    const serverRssMb = processRssMb(serverPid);
    /**
     * Little's law: LATENCY_USERS closed-loop users wait on average at least LATENCY_USERS x
     * the machine's CPU time per turn / its cores, here with the CPU per turn of the
     * throughput phase (the cheapest per turn: the most work shared): first of everything but
     * our server (PostgreSQL, Redis, the fake, the load generator), then with it.
     */
    const closedLoopFloorMs = (cpuUsPerTurn: number) =>
      Number(((LATENCY_USERS * cpuUsPerTurn) / os.cpus().length / 1000).toFixed(2));
    const closedLoopFloor = {
      users: LATENCY_USERS,
      without_server_ms: closedLoopFloorMs(ownCpuUsPerTurn - (serverCpuUsPerTurn ?? 0)),
      with_server_ms: closedLoopFloorMs(ownCpuUsPerTurn),
      means:
        "Little's law: the least mean latency of users closed-loop users on this machine = users x CPU per turn (the throughput phase's, per process) / cores; without_server counts PostgreSQL, Redis, the fake model and the load generator only",
    };

    // ---- time to first token over the WebSocket ----
    const wsPhase = async (seconds: number, prefix: string, offeredPerS?: number) => {
      const samples: WsSample[] = [];
      const outcomes = newOutcomes();
      const startUs = nowUs();
      await Promise.all(
        Array.from({ length: LATENCY_USERS }, (_, u) =>
          wsUser({
            port,
            token: tokens[u]!,
            tagPrefix: `${prefix}${u}`,
            deadlineUs: startUs + seconds * 1e6,
            samples,
            outcomes,
            ...(offeredPerS ? { meanGapUs: (LATENCY_USERS / offeredPerS) * 1e6 } : {}),
          }),
        ),
      );
      return { samples, outcomes, durationS: (nowUs() - startUs) / 1e6, startUs };
    };
    log(`ttft: WebSocket warm-up 2s, then ${LATENCY_USERS} sockets, ${LATENCY_S}s`);
    const wsWarm = await wsPhase(2, 'x');
    if (wsWarm.outcomes.errors)
      throw new Error(
        `WebSocket warm-up: ${wsWarm.outcomes.errors} errors: ${wsWarm.outcomes.firstError}`,
      );
    await fakeReset(fake);
    cpu0 = processTreeCpuMs(serverPid);
    windows.ttft = { from: nowUs(), to: 0 };
    const ws = await wsPhase(LATENCY_S, 'w');
    windows.ttft.to = nowUs();
    cpu1 = processTreeCpuMs(serverPid);
    const wsCpuUs = cpuUsPerTurn(cpu0, cpu1, ws.samples.length);
    const wsTurns = await fakeTurns(fake);
    const ttfts: number[] = [];
    const wsTotals: number[] = [];
    const wsModels: number[] = [];
    const wsBeforeModel: number[] = [];
    const wsAfterModel: number[] = [];
    let wsUnmatched = 0;
    for (const s of ws.samples) {
      ttfts.push(ms(s.firstDeltaUs - s.startUs));
      wsTotals.push(ms(s.endUs - s.startUs));
      const m = wsTurns[s.tag];
      if (!m) {
        wsUnmatched += 1;
        continue;
      }
      wsModels.push(ms(m[1] - m[0]));
      wsBeforeModel.push(ms(m[0] - s.startUs));
      wsAfterModel.push(ms(s.firstDeltaUs - m[1]));
    }
    const wsLoad = loadSummaryOf(wsTotals, ws.outcomes, ws.durationS, LATENCY_USERS);

    // ---- the same sockets, paced (Poisson arrivals, see pacer) ----
    const wsPaced: WsPacedRun[] = [];
    const wsPacedRates = sustainableRates(ws.samples.length / ws.durationS, 'WebSocket');
    for (const [i, rate] of wsPacedRates.rates.entries()) {
      log(`ttft paced: ${LATENCY_USERS} sockets, ${rate} turns/s offered, ${PACED_S}s`);
      const c0 = processTreeCpuMs(serverPid);
      const run = await wsPhase(PACED_S, `q${i}u`, rate);
      const c1 = processTreeCpuMs(serverPid);
      wsPaced.push({
        offered_turns_per_s: rate,
        turns_per_s: Math.round(run.samples.length / run.durationS),
        turns: run.samples.length,
        ttft_ms: distribution(run.samples.map((x) => ms(x.firstDeltaUs - x.startUs))),
        server_cpu_us_per_turn: cpuUsPerTurn(c0, c1, run.samples.length),
        errors: run.outcomes.errors,
        first_error: run.outcomes.firstError,
      });
    }

    // ---- the model's own time: the server's request, straight to the fake ----
    const directPhase = async (seconds: number) => {
      const samples: DirectSample[] = [];
      const outcomes = newOutcomes();
      const startUs = nowUs();
      const headers = { ...captured.headers, 'x-api-key': FAKE_API_KEY };
      await Promise.all(
        Array.from({ length: LATENCY_USERS }, () =>
          directUser({
            url: `${fake.url}/v1/messages`,
            headers,
            body: capturedBody,
            deadlineUs: startUs + seconds * 1e6,
            samples,
            outcomes,
          }),
        ),
      );
      return { samples, outcomes, durationS: (nowUs() - startUs) / 1e6 };
    };
    const modelCountBeforeDirect = (await fakeStats(fake)).counts_since_start.anthropic;
    log(`direct model: warm-up 1s, then ${LATENCY_USERS} at a time, ${DIRECT_S}s`);
    await directPhase(1);
    await fakeReset(fake);
    const direct = await directPhase(DIRECT_S);
    const directFake = await fakeStats(fake);
    const directLoad = loadSummaryOf(
      direct.samples.map((s) => ms(s.totalUs)),
      direct.outcomes,
      direct.durationS,
      LATENCY_USERS,
    );

    await bench.server.stop();
    const accessLines = await countAccessLines(stdoutFile);
    const logBytes = statSync(stdoutFile).size;
    // The server's backends have exited: their table statistics are flushed.
    await sleep(500);
    const tablesAfter = await tableStats();
    // Turns the server completed, those whose client had gone (the end of a load run) included.
    const storedTurns = await withPg(DATABASE_URL, (c) =>
      c.query<{ n: number }>(
        `select count(*)::int as n from "${schema}".conversations where role = 'assistant'`,
      ),
    ).then((r) => r.rows[0]!.n - 2);

    // ---- the anchor, on this machine: Portkey forwarding the same request, storing nothing ----
    const anchor = ANCHOR_RUN
      ? await measureAnchor({
          root: ROOT,
          env,
          stdoutFile: run.file('anchor.log'),
          fake,
          apiKey: FAKE_API_KEY,
          headers: captured.headers,
          body: JSON.stringify(capturedShape),
          connections: [LATENCY_USERS, USERS],
          seconds: ANCHOR_S,
          warmupS: 2,
        })
      : undefined;

    // ---- figures ----
    const serverModelRequests = modelCountBeforeDirect - modelCountAtStart;
    const dbPerTurn: Record<string, Record<string, number>> = {};
    for (const [table, a] of tablesAfter) {
      const b = tablesBefore.get(table);
      const row: Record<string, number> = {};
      for (const k of ['seq_scan', 'idx_scan', 'ins', 'upd', 'hot_upd', 'del'] as const) {
        const v = (a[k] - (b?.[k] ?? 0)) / storedTurns;
        if (v >= 0.005) row[k] = Number(v.toFixed(2));
      }
      if (Object.keys(row).length) dbPerTurn[table] = row;
    }

    const total = distribution(totals);
    const model = distribution(models);
    const overhead = distribution(overheads);
    const directTotal = distribution(direct.samples.map((s) => ms(s.totalUs)));
    const directTtfb = distribution(direct.samples.map((s) => ms(s.ttfbUs)));
    const ttft = distribution(ttfts);
    const round2 = (v: number) => Number(v.toFixed(2));
    const ttftAddedP50 = round2(ttft.p50 - directTtfb.p50);
    const ttftAddedP99 = round2(ttft.p99 - directTtfb.p99);
    const overheadVsDirect = {
      p50: round2(total.p50 - directTotal.p50),
      p99: round2(total.p99 - directTotal.p99),
    };

    const anchorRate = (r: AnchorLoad) => Math.round(r.load.total2xx / r.load.durationS);
    // Our turns/s over the anchor's requests/s at the throughput phase's connections.
    const anchorAtUsers = anchor?.runs.find((r) => r.connections === USERS);
    const anchorRatio = anchorAtUsers ? round2(turnsPerS / anchorRate(anchorAtUsers)) : null;

    const problems = [
      ['overhead', badResponses(overheadLoad)],
      ['throughput', badResponses(load)],
      ['ttft', badResponses(wsLoad)],
      ['direct model', badResponses(directLoad)],
      ...paced.map((r) => [`paced at ${r.offered_turns_per_s}/s`, badResponses(r.load)]),
      ...(anchor?.runs ?? []).map((r) => [`anchor at ${r.connections}`, badResponses(r.load)]),
    ]
      .filter(([, p]) => p)
      .map(([phase, p]) => `${phase}: ${p}`);
    for (const [phase, o] of [
      ['overhead', restOutcomes],
      ['ttft', ws.outcomes],
      ['direct model', direct.outcomes],
    ] as const)
      if (o.firstError) problems.push(`${phase}: first error: ${o.firstError}`);
    for (const r of wsPaced)
      if (r.first_error)
        problems.push(`ttft paced at ${r.offered_turns_per_s}/s: first error: ${r.first_error}`);
    for (const r of paced)
      if (r.outcomes.firstError)
        problems.push(`paced at ${r.offered_turns_per_s}/s: first error: ${r.outcomes.firstError}`);
    const pacedUnmatched = paced.reduce((n, r) => n + r.unmatched_turns, 0);
    if (pacedUnmatched > 0.01 * paced.reduce((n, r) => n + r.turns, 0))
      problems.push(`${pacedUnmatched} paced turns without their model request at the fake`);
    if (unmatched + wsUnmatched > 0.01 * (restSamples.length + ws.samples.length))
      problems.push(`${unmatched + wsUnmatched} turns without their model request at the fake`);
    const expectedAccess =
      warm.totalRequests +
      overheadLoad.totalRequests +
      paced.reduce((n, r) => n + r.load.totalRequests, 0) +
      load.totalRequests;

    const pass = {
      overheadP50: overhead.p50 <= TARGETS.overheadP50Ms,
      overheadP99: overhead.p99 <= TARGETS.overheadP99Ms,
      turnsPerS: turnsPerS >= TARGETS.turnsPerS,
      ttftAdded: ttftAddedP50 <= TARGETS.ttftAddedP50Ms,
    };

    const result = {
      date: started.toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model,
      load_average_before: loadBefore,
      load_average_after: loadAverage(),
      server: {
        command: `node ${serverNodeArgs(PROFILE ? profileDir : undefined).join(' ')} --import tsx ${SERVER.entry.join(' ')}`,
        processes: SERVER.processes,
        // Experiments: recorded so a result never hides the settings it ran with.
        node_args: env.BENCH_NODE_ARGS || null,
        config_overrides: env.BENCH_SERVER_ENV || null,
        db_engine: health.checks.database?.engine,
        database: `${DATABASE_URL.replace(/\/\/[^@]*@/, '//')} schema ${schema}`,
        redis: `${REDIS_URL} prefix ${keyPrefix}`,
        redis_status: health.checks.redis?.status,
        rate_limiter_store: health.checks.rate_limit?.store,
        queue_engine: health.checks.queue?.engine,
        log_level: 'info',
        access_log: true,
        stdout: 'file (drained by the kernel), deleted after the run',
        access_log_lines: accessLines,
        access_log_lines_expected_at_least: expectedAccess,
        log_bytes: logBytes,
        rss_mb_after_load: serverRssMb,
        idle_cpu_percent: idleCpuPct,
        rate_limit_config: {
          ...RATE_LIMIT,
          ws_messages_per_window: WS_MESSAGES_PER_WINDOW,
          note: 'per-user and per-IP points and the WebSocket message budget raised via MEZZOFY__rate_limit__* and MEZZOFY__realtime__messages_per_window so the run sees no 429; every HTTP request is still counted in Redis',
        },
      },
      model: {
        fake: 'bench/fake-model-launcher.ts in its own process: plain node:http, answers precomputed once per (model, stream) by the fake model server’s wire helpers, zero latency',
        provider: `${MODEL} through the Anthropic SDK (ANTHROPIC_BASE_URL = the fake)`,
        reply: after.reply,
        agent: AGENT,
        routed_by: first.body.routed_by,
        request_bytes: Buffer.byteLength(capturedBody),
        request_messages_at_turn_2: capturedShape.messages?.length,
        turns_stored_after_setup: storedTurns,
        model_requests_after_setup: serverModelRequests,
        model_requests_per_turn: round2(serverModelRequests / storedTurns),
      },
      sessions: {
        turns_per_session: SESSION_TURNS,
        note: 'each user (each connection) continues its own session and starts a new one every turns_per_session turns, so history loading runs with 0 to turns_per_session - 1 earlier turns',
      },
      overhead: {
        transport: 'POST /chat/send, node:http keep-alive, one connection per user',
        users: LATENCY_USERS,
        duration_s: round2(overheadS),
        turns: restSamples.length,
        turns_per_s: overheadLoad.requestsPerSecond,
        total_ms: total,
        model_ms: model,
        model_ms_means:
          "the fake's own handling time of the turn's model request: request headers parsed -> last response byte handed to the kernel, in the fake's process",
        overhead_ms: overhead,
        overhead_ms_means: 'per turn: total client latency minus the model_ms of that same turn',
        before_model_ms: distribution(beforeModel),
        after_model_ms: distribution(afterModel),
        before_after_means:
          'send -> the fake receives the model request; the fake finishes -> the reply is received (one monotonic clock shared by the processes)',
        overhead_vs_direct_round_trip_ms: overheadVsDirect,
        overhead_vs_direct_means:
          'total p50/p99 minus the direct round trip p50/p99 (the same model request from this process to the fake with fetch): counts the model call as an SDK sees it',
        timeline_per_second: timelineOf(restSamples, overheadStart),
        unmatched_turns: unmatched,
        server_cpu_us_per_turn: overheadCpuUs,
        non_2xx: overheadLoad.non2xx,
        errors: overheadLoad.errors,
        timeouts: overheadLoad.timeouts,
        status_codes: overheadLoad.statusCodes,
      },
      closed_loop_floor: closedLoopFloor,
      paced: {
        transport: 'POST /chat/send, node:http keep-alive, one connection per user',
        users: LATENCY_USERS,
        seconds: PACED_S,
        skipped_rates: restPaced.skipped,
        closed_loop_turns_per_s: restPaced.closedLoopPerS,
        arrivals:
          "Poisson at the offered rate in all: each user's next turn falls due an exponential gap after the last one's due time; a turn due while the user's previous one still runs is timed from its due time",
        runs: paced.map(({ load: l, outcomes: o, ...r }) => ({
          ...r,
          non_2xx: l.non2xx,
          errors: l.errors,
          timeouts: l.timeouts,
        })),
      },
      throughput: {
        endpoint: 'POST /chat/send (autocannon)',
        connections: USERS,
        users: USERS,
        warmup_s: WARMUP_S,
        duration_s: load.durationS,
        turns_per_s: turnsPerS,
        turns_per_s_means: '2xx responses / duration',
        responses_per_second: load.perSecond,
        machine_speed_check_us: { before: speedBefore, after: speedAfter },
        machine_speed_check_means:
          'a fixed piece of CPU work in the bench process, best of 5, just before and after the phase (lower: a faster machine)',
        latency_ms: load.latencyMs,
        total_requests: load.totalRequests,
        total_2xx: load.total2xx,
        model_requests: modelRequests,
        model_handling_us: {
          p50: loadFake.handled.p50_us,
          p99: loadFake.handled.p99_us,
        },
        server_cpu_us_per_turn: serverCpuUsPerTurn,
        server_cpu_percent: serverCpuPct,
        postgres_cpu_us_per_turn: pgCpuUsPerTurn,
        postgres_backends: pgPids.length,
        redis_server_cpu_us_per_turn: redisCpuUsPerTurn,
        fake_model_cpu_us_per_turn: fakeCpuUsPerTurn,
        client_cpu_percent: clientCpuPct,
        client_cpu_us_per_turn: clientCpuUsPerTurn,
        bench_processes_cpu_us_per_turn: ownCpuUsPerTurn,
        bench_processes_means:
          'server + its PostgreSQL backends + redis-server + fake model + load generator',
        machine_cpu_us_per_turn: machineCpuUsPerTurn,
        machine_busy_percent: machineBusyPct,
        machine_means: 'every process on the machine (/proc/stat), other work included',
        non_2xx: load.non2xx,
        errors: load.errors,
        timeouts: load.timeouts,
        status_codes: load.statusCodes,
      },
      ttft: {
        transport: 'WebSocket /chat/ws (ws), one socket per user',
        users: LATENCY_USERS,
        duration_s: round2(ws.durationS),
        turns: ws.samples.length,
        ttft_ms: ttft,
        ttft_means: 'chat.send sent -> first text.delta received',
        turn_ms: distribution(wsTotals),
        model_ms: distribution(wsModels),
        before_model_ms: distribution(wsBeforeModel),
        model_end_to_first_delta_ms: distribution(wsAfterModel),
        model_own_ttfb_ms: directTtfb,
        added_p50_ms: ttftAddedP50,
        added_p99_ms: ttftAddedP99,
        added_means:
          'ttft p50 (p99) minus the direct streaming request time to first text_delta p50 (p99)',
        timeline_per_second: timelineOf(ws.samples, ws.startUs),
        unmatched_turns: wsUnmatched,
        server_cpu_us_per_turn: wsCpuUs,
        errors: ws.outcomes.errors,
        paced_skipped_rates: wsPacedRates.skipped,
        paced_closed_loop_turns_per_s: wsPacedRates.closedLoopPerS,
        paced: wsPaced.map((r) => ({
          ...r,
          added_p50_ms: round2(r.ttft_ms.p50 - directTtfb.p50),
          added_p99_ms: round2(r.ttft_ms.p99 - directTtfb.p99),
        })),
      },
      direct_model: {
        client: 'node:http keep-alive (lighter than the fetch the server SDK uses)',
        request:
          'the streaming /v1/messages request the server sent for a second turn, replayed as is',
        concurrency: LATENCY_USERS,
        duration_s: round2(direct.durationS),
        requests: direct.samples.length,
        ttfb_ms: directTtfb,
        round_trip_ms: directTotal,
        fake_handling_us: { p50: directFake.handled.p50_us, p99: directFake.handled.p99_us },
        errors: direct.outcomes.errors,
      },
      db_per_turn: {
        tables: dbPerTurn,
        means:
          "pg_stat_user_tables of the run's schema after setup, divided by the turns stored (sequential and index scans, rows inserted, updated, deleted per turn)",
      },
      anchor: ANCHOR,
      anchor_measured: anchor
        ? {
            what: `Portkey AI gateway ${anchor.version} (${ANCHOR_PACKAGE}, Node, build/start-server.js --headless, NODE_ENV=production), POST /v1/messages with x-portkey-provider anthropic and x-portkey-custom-host = the fake: the server's own whole-answer model request (request_bytes), after the server stopped, same fake; stores nothing`,
            speed_check_us: anchor.speedCheckUs,
            runs: anchor.runs.map((r) => ({
              connections: r.connections,
              requests_per_s: anchorRate(r),
              latency_ms: r.load.latencyMs,
              per_second: r.load.perSecond,
              gateway_cpu_us_per_request: r.gatewayCpuUsPerRequest,
              fake_cpu_us_per_request: r.fakeCpuUsPerRequest,
              non2xx: r.load.non2xx,
              errors: r.load.errors + r.load.timeouts,
            })),
            throughput_vs_anchor_at_same_connections: anchorRatio,
            means:
              'our turns/s (auth, rate limit, routing, two statements on PostgreSQL, usage row, access log) divided by the requests/s of a gateway that only forwards, at the same connection count, on the same machine',
          }
        : null,
      targets: {
        overhead_p50_ms: {
          target: `<= ${TARGETS.overheadP50Ms}`,
          value: overhead.p50,
          pass: pass.overheadP50,
        },
        overhead_p99_ms: {
          target: `<= ${TARGETS.overheadP99Ms}`,
          value: overhead.p99,
          pass: pass.overheadP99,
        },
        turns_per_s: { target: `>= ${TARGETS.turnsPerS}`, value: turnsPerS, pass: pass.turnsPerS },
        ttft_added_p50_ms: {
          target: `<= ${TARGETS.ttftAddedP50Ms}`,
          value: ttftAddedP50,
          pass: pass.ttftAdded,
        },
        only_2xx: { target: 'non-2xx = 0, errors = 0', pass: problems.length === 0 },
      },
      pass: Object.values(pass).every(Boolean) && problems.length === 0,
      ...(PROFILE
        ? { profile: { dir: profileDir, pid: apiProcessPid(serverPid), windows_us: windows } }
        : {}),
    };

    const stamp = started.toISOString().replaceAll(':', '-');
    const json = `${JSON.stringify(result, null, 2)}\n`;
    writeFileSync(join(RESULTS, `chat-${stamp}.json`), json);
    writeFileSync(join(RESULTS, 'chat-latest.json'), json);
    if (PROFILE)
      writeFileSync(
        join(profileDir, 'latest.json'),
        `${JSON.stringify(
          {
            pid: serverPid,
            me_window_us: windows.throughput,
            window_label: `POST /chat/send throughput window (${USERS} connections)`,
            windows_us: windows,
            run: `chat-${stamp}`,
          },
          null,
          2,
        )}\n`,
      );

    const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
    const pair = (d: Distribution) => `${d.p50} / ${d.p99}`;
    console.log('');
    printTable([
      ['metric', 'value', 'target'],
      [
        `REST overhead per turn p50 (ms), ${LATENCY_USERS} users`,
        String(overhead.p50),
        `<= ${TARGETS.overheadP50Ms} ${mark(pass.overheadP50)}`,
      ],
      [
        `REST overhead per turn p99 (ms), ${LATENCY_USERS} users`,
        String(overhead.p99),
        `<= ${TARGETS.overheadP99Ms} ${mark(pass.overheadP99)}`,
      ],
      ['  = total p50 / p99 (ms)', pair(total), '(report)'],
      ['  - model (fake handling, same turn) p50 / p99', pair(model), '(report)'],
      ['  send -> model request p50 / p99 (ms)', pair(distribution(beforeModel)), '(report)'],
      ['  model done -> reply p50 / p99 (ms)', pair(distribution(afterModel)), '(report)'],
      ['  direct model round trip p50 / p99 (ms)', pair(directTotal), '(report)'],
      [
        '  total - direct round trip p50 / p99 (ms)',
        `${overheadVsDirect.p50} / ${overheadVsDirect.p99}`,
        '(report)',
      ],
      [
        '  turns/s / server CPU per turn (µs)',
        `${overheadLoad.requestsPerSecond} / ${overheadCpuUs ?? '?'}`,
        '(report)',
      ],
      [
        `  least mean latency, ${LATENCY_USERS} closed-loop users (ms)`,
        `${closedLoopFloor.without_server_ms} without our server, ${closedLoopFloor.with_server_ms} with`,
        "(Little's law)",
      ],
      ...paced.map((r) => [
        `  paced, ${LATENCY_USERS} users, ${r.offered_turns_per_s} turns/s: overhead p50 / p99`,
        `${pair(r.overhead_ms)} (${r.turns_per_s}/s, ${r.server_cpu_us_per_turn ?? '?'} µs)`,
        '(report)',
      ]),
      [
        `throughput turns/s (2xx), ${USERS} users`,
        String(turnsPerS),
        `>= ${TARGETS.turnsPerS} ${mark(pass.turnsPerS)}`,
      ],
      ['  latency p50 / p99 (ms)', `${load.latencyMs.p50} / ${load.latencyMs.p99}`, '(report)'],
      ['  machine speed check before / after (µs)', `${speedBefore} / ${speedAfter}`, '(report)'],
      [
        '  each second: min / p50 / max turns',
        load.perSecond
          ? `${load.perSecond.min} / ${load.perSecond.p50} / ${load.perSecond.max}`
          : '?',
        '(report)',
      ],
      [
        '  server CPU per turn (µs) / CPU %',
        `${serverCpuUsPerTurn ?? '?'} / ${serverCpuPct ?? '?'}%`,
        '(report)',
      ],
      ['  PostgreSQL backends CPU per turn (µs)', `${pgCpuUsPerTurn ?? '?'}`, '(report)'],
      ['  redis-server CPU per turn (µs)', `${redisCpuUsPerTurn ?? '?'}`, '(report)'],
      ['  fake model CPU per turn (µs)', `${fakeCpuUsPerTurn ?? '?'}`, '(report)'],
      ['  load generator (autocannon) CPU %', `${clientCpuPct}%`, '(report)'],
      [
        '  CPU per turn, bench processes / machine (µs)',
        `${ownCpuUsPerTurn} / ${machineCpuUsPerTurn ?? '?'} (${machineBusyPct ?? '?'}% busy)`,
        '(report)',
      ],
      [
        '  model requests per turn',
        String(result.model.model_requests_per_turn),
        '1 (explicit agent)',
      ],
      ['WS time to first token p50 / p99 (ms)', pair(ttft), '(report)'],
      ["  model's own time to first token p50 / p99", pair(directTtfb), '(report)'],
      [
        '  added by the server p50 (ms)',
        String(ttftAddedP50),
        `<= ${TARGETS.ttftAddedP50Ms} ${mark(pass.ttftAdded)}`,
      ],
      ['  added by the server p99 (ms)', String(ttftAddedP99), '(report)'],
      ...wsPaced.map((r) => [
        `  paced, ${LATENCY_USERS} sockets, ${r.offered_turns_per_s} turns/s: added p50 / p99`,
        `${round2(r.ttft_ms.p50 - directTtfb.p50)} / ${round2(r.ttft_ms.p99 - directTtfb.p99)} (${r.turns_per_s}/s, ${r.server_cpu_us_per_turn ?? '?'} µs)`,
        '(report)',
      ]),
      ['  send -> model request p50 / p99 (ms)', pair(distribution(wsBeforeModel)), '(report)'],
      [
        '  turns / server CPU per turn (µs)',
        `${ws.samples.length} / ${wsCpuUs ?? '?'}`,
        '(report)',
      ],
      [
        'non-2xx / errors (all phases)',
        `${overheadLoad.non2xx + load.non2xx + paced.reduce((n, r) => n + r.load.non2xx, 0)} / ${overheadLoad.errors + overheadLoad.timeouts + load.errors + load.timeouts + ws.outcomes.errors + direct.outcomes.errors + paced.reduce((n, r) => n + r.load.errors + r.load.timeouts, 0) + wsPaced.reduce((n, r) => n + r.errors, 0)}`,
        `0 ${mark(problems.length === 0)}`,
      ],
      ['access log lines written', String(accessLines), `>= ${expectedAccess}`],
      [
        'anchor: Portkey gateway (Node), no storage',
        `${ANCHOR.requests_per_s} req/s, p50 ${ANCHOR.p50_ms} ms`,
        '(from the issue)',
      ],
      ...(anchor?.runs ?? []).map((r) => [
        `  measured here, ${r.connections} connections`,
        `${anchorRate(r)} req/s, p50 ${r.load.latencyMs.p50} ms, ${r.gatewayCpuUsPerRequest ?? '?'} µs/req`,
        '(report)',
      ]),
      ...(anchorRatio === null
        ? []
        : [[`  our turns/s / its req/s, ${USERS} connections`, String(anchorRatio), '(report)']]),
    ]);
    console.log(
      `\nnode ${process.version}, ${os.cpus().length} cpus, load before ${loadBefore}; server: ${result.server.db_engine} + redis, log level info with access log; model: zero-latency fake in its own process, ${result.model.request_bytes} B request.`,
    );
    console.log(
      `Overhead = per turn, client latency minus the fake's handling time of that turn's model request. Sessions: a new one every ${SESSION_TURNS} turns.`,
    );
    console.log(
      `DB per turn: ${Object.entries(dbPerTurn)
        .map(
          ([t, r]) =>
            `${t} ${Object.entries(r)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ')}`,
        )
        .join('; ')}`,
    );
    console.log(`Results: bench/results/chat-${stamp}.json (and chat-latest.json)`);

    if (PROFILE) {
      console.log(`\nCPU profile: ${profileDir}; summary of the throughput window:`);
      try {
        execFileSync(
          process.execPath,
          ['--import', 'tsx', join(ROOT, 'bench/profile-summary.ts'), '--top', '30'],
          { cwd: ROOT, stdio: 'inherit' },
        );
      } catch (err) {
        log(`profile summary failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }

    exitCode = verdict({
      problems: problems,
      accessLines,
      expectedAccess,
      pass: result.pass,
    });
  } catch (err) {
    log(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
    exitCode = 1;
  } finally {
    await server?.stop().catch(() => {});
    await fakeChild?.stop().catch(() => {});
    await run.cleanup();
  }
  return exitCode;
}

runBench(main);
