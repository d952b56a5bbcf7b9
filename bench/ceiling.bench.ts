/**
 * `npm run bench:ceiling`: what this machine can reach at best for a chat turn. It measures
 * the floors that are not our server: the CPU per turn of the fake model and the load
 * generator alone (A), of a minimal Node pass-through gateway that stores nothing (B), and of
 * PostgreSQL alone running one turn's SQL statements (C); then sets their sum against the CPU
 * budget of 1,000 turns/s on this machine's cores.
 *
 * Phases, in order:
 *   A. model only   autocannon POST /v1/messages straight to the zero-latency fake model
 *                   (bench/fake-model-launcher.ts, its own process) with a ~10.4 KB streaming
 *                   Anthropic request (bench/passthrough-gateway.ts: modelRequestBody):
 *                   BENCH_CONNECTIONS connections for BENCH_DURATION_S after BENCH_WARMUP_S,
 *                   then BENCH_LATENCY_CONNECTIONS connections for BENCH_DURATION_S
 *   B. gateway      the same two runs against POST /chat/send of bench/passthrough-gateway.ts
 *                   (its own process: node:http, fetch to the fake with the same request, SSE
 *                   read to the end, JSON reply; no auth, no storage, no logging)
 *   C. PostgreSQL   pgbench running one chat turn's statements, as the server sends them
 *                   (turn lease, user message, history, usage row, answer + end of turn), in a
 *                   fresh schema built by the project's migrations with 50 users and 5,000
 *                   sessions: -M extended (unnamed statements, what node-postgres does with
 *                   parameters) and -M prepared (named statements), BENCH_PG_CLIENTS clients
 *                   each, BENCH_PG_S each; CPU per turn read from /proc over a window inside
 *                   each run, turns counted by the llm_usage id sequence
 *   composition     budget per turn at 1,000 turns/s = cpus x 1e6 / 1000 µs; the floors
 *                   A (fake + load generator) + B (gateway) + C (PostgreSQL, prepared, lowest);
 *                   the implied ceiling for a server that costs nothing but forwarding and storing
 *
 * Only 127.0.0.1 is loaded over HTTP. Any non-2xx response, error or timeout in A or B, and any
 * pgbench failure, fails the run (exit 1). Without pgbench, phase C is skipped (reported).
 * The schema is dropped afterwards, also on Ctrl-C.
 *
 * Environment (all optional):
 *   BENCH_DATABASE_URL         default postgres://postgres@127.0.0.1:5432/test
 *   BENCH_DURATION_S           each run of A and B, default 10 (after BENCH_WARMUP_S, default 2)
 *   BENCH_CONNECTIONS          throughput runs of A and B, default 50
 *   BENCH_LATENCY_CONNECTIONS  latency runs of A and B, default 10
 *   BENCH_PG_S                 each pgbench run, default 10
 *   BENCH_PG_CLIENTS           pgbench client counts, default 10,50
 *   BENCH_SESSION_TURNS        turns per session before a pgbench client moves to its next
 *                              session, default 10 (as bench/chat.bench.ts)
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { createDatabase } from '../server/src/db/database.ts';
import { migrate } from '../server/src/db/migrate.ts';
import {
  badResponses,
  type ChildServer,
  cleanChildEnv,
  type Distribution,
  distribution,
  HOST,
  type LoadSummary,
  loadAverage,
  log,
  machineCpuMs,
  onInterrupt,
  postgresBackendPids,
  printTable,
  processCpuMs,
  runBench,
  sleep,
  startChild,
  summarize,
  waitJsonLine,
  withPg,
} from './harness.ts';
import {
  BENCH_MESSAGE,
  MODEL,
  MODEL_REQUEST_HEADERS,
  modelRequestBody,
  readSse,
} from './passthrough-gateway.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = join(ROOT, 'bench', 'results');

const env = process.env;
const DATABASE_URL = env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const DURATION_S = Number(env.BENCH_DURATION_S ?? 10);
const WARMUP_S = Number(env.BENCH_WARMUP_S ?? 2);
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 50);
const LATENCY_CONNECTIONS = Number(env.BENCH_LATENCY_CONNECTIONS ?? 10);
const PG_S = Number(env.BENCH_PG_S ?? 10);
const PG_CLIENTS = (env.BENCH_PG_CLIENTS ?? '10,50').split(',').map(Number);
const SESSION_TURNS = Number(env.BENCH_SESSION_TURNS ?? 10);
const PG_MODES = ['extended', 'prepared'] as const;
type PgMode = (typeof PG_MODES)[number];

const TARGET_TURNS_PER_S = 1_000;
const USERS = 50;
const SESSIONS = 5_000;
const CPUS = os.cpus().length;
const ANCHOR = {
  what: 'Portkey gateway (Node) against a zero-latency model, storing nothing',
  requests_per_s: 800,
  p50_ms: 11,
  source: 'issue 3 (measured on this machine by the issue author); B is our own equivalent',
};

const runId = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
const schema = `ceiling_${runId}`;

// ---- CPU accounting ----

/** CPU time so far of the processes a run watches, this process, and the whole machine. */
interface CpuMark {
  procs: Record<string, number | undefined>;
  self: NodeJS.CpuUsage;
  machine: { busy: number; idle: number } | undefined;
}

function cpuMark(pids: Record<string, number>): CpuMark {
  const procs: Record<string, number | undefined> = {};
  for (const [name, pid] of Object.entries(pids)) procs[name] = processCpuMs(pid);
  return { procs, self: process.cpuUsage(), machine: machineCpuMs() };
}

interface CpuPerUnit {
  /** µs per unit of each watched process, of this process (the load generator) and the machine. */
  us: Record<string, number | undefined>;
  machine_busy_percent: number | undefined;
}

function cpuPerUnit(from: CpuMark, to: CpuMark, units: number): CpuPerUnit {
  const per = (ms: number | undefined) =>
    ms === undefined ? undefined : Math.round((1000 * ms) / Math.max(1, units));
  const us: Record<string, number | undefined> = {};
  for (const [name, before] of Object.entries(from.procs)) {
    const after = to.procs[name];
    us[name] = per(before !== undefined && after !== undefined ? after - before : undefined);
  }
  // process.cpuUsage() counts µs.
  const selfUs = to.self.user - from.self.user + (to.self.system - from.self.system);
  us.load_generator = Math.round(selfUs / Math.max(1, units));
  const m0 = from.machine;
  const m1 = to.machine;
  us.machine = per(m0 && m1 ? m1.busy - m0.busy : undefined);
  const busyPct =
    m0 && m1
      ? Math.round((100 * (m1.busy - m0.busy)) / (m1.busy - m0.busy + m1.idle - m0.idle))
      : undefined;
  return { us, machine_busy_percent: busyPct };
}

// ---- HTTP load (phases A and B) ----

interface Target {
  url: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * runCannon (harness.ts), also keeping each 2xx response's time: autocannon's own histogram
 * keeps whole milliseconds, too coarse for a zero-latency model at 10 connections.
 */
function cannon(
  options: autocannon.Options,
): Promise<{ result: autocannon.Result; latenciesMs: number[] }> {
  return new Promise((resolveRun, reject) => {
    if (new URL(options.url).hostname !== HOST) {
      reject(new Error(`refusing to load ${options.url}: benchmarks only target ${HOST}`));
      return;
    }
    const latenciesMs: number[] = [];
    const instance = autocannon(options, (err, result) =>
      err ? reject(err) : resolveRun({ result, latenciesMs }),
    );
    instance.on('response', (_client, statusCode: number, _bytes, responseTime: number) => {
      if (statusCode >= 200 && statusCode < 300) latenciesMs.push(responseTime);
    });
  });
}

const cannonOptions = (target: Target, connections: number, duration: number) => ({
  url: target.url,
  method: 'POST' as const,
  headers: target.headers,
  body: target.body,
  connections,
  duration,
  timeout: 30,
});

interface HttpRun {
  connections: number;
  duration_s: number;
  requests_per_s: number;
  total_2xx: number;
  latency_ms: Distribution;
  cpu_us_per_request: Record<string, number | undefined>;
  machine_busy_percent: number | undefined;
  model_requests_per_request?: number;
  non_2xx: number;
  errors: number;
  timeouts: number;
  status_codes: Record<string, number>;
}

/** One measured autocannon run; CPU per 2xx response of each process in `pids`. */
async function httpRun(
  target: Target,
  connections: number,
  pids: Record<string, number>,
  fake: FakeInfo,
): Promise<{ run: HttpRun; load: LoadSummary }> {
  const modelBefore = await fakeModelRequests(fake);
  const before = cpuMark(pids);
  const { result, latenciesMs } = await cannon(cannonOptions(target, connections, DURATION_S));
  const after = cpuMark(pids);
  const modelRequests = (await fakeModelRequests(fake)) - modelBefore;
  const load = summarize(result);
  const cpu = cpuPerUnit(before, after, load.total2xx);
  return {
    load,
    run: {
      connections,
      duration_s: load.durationS,
      requests_per_s: Math.round(load.total2xx / load.durationS),
      total_2xx: load.total2xx,
      latency_ms: distribution(latenciesMs),
      cpu_us_per_request: cpu.us,
      machine_busy_percent: cpu.machine_busy_percent,
      model_requests_per_request: Number((modelRequests / Math.max(1, load.total2xx)).toFixed(3)),
      non_2xx: load.non2xx,
      errors: load.errors,
      timeouts: load.timeouts,
      status_codes: load.statusCodes,
    },
  };
}

// ---- the fake model ----

interface FakeInfo {
  url: string;
  stats_url: string;
  pid: number;
}
interface FakeStats {
  counts_since_start: { anthropic: number };
  reply: string;
}

async function fakeStats(fake: FakeInfo): Promise<FakeStats> {
  const res = await fetch(`${fake.stats_url}/stats`, { signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`fake model /stats: ${res.status}`);
  return (await res.json()) as FakeStats;
}
const fakeModelRequests = async (fake: FakeInfo) =>
  (await fakeStats(fake)).counts_since_start.anthropic;

/** One request of a run's kind, by hand (the checks before a run). */
async function post(target: Target): Promise<{ status: number; text: string }> {
  const res = await fetch(target.url, {
    method: 'POST',
    headers: target.headers,
    body: target.body,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, text: await res.text() };
}

/** The fake answers the request with 200 and an SSE stream of text deltas: its reply. */
async function checkModel(target: Target, reply: string): Promise<void> {
  const { status, text } = await post(target);
  if (status !== 200 || !text.includes('"text_delta"'))
    throw new Error(`fake model check: ${status} ${text.slice(0, 300)}`);
  const sse = readSse(text);
  if (sse.reply !== reply || sse.model !== MODEL)
    throw new Error(`fake model check: unexpected stream ${JSON.stringify(sse)}`);
}

/** The gateway answers 200 with the fake's reply and the model's name. */
async function checkGateway(target: Target, reply: string): Promise<void> {
  const { status, text } = await post(target);
  const body = status === 200 ? (JSON.parse(text) as { reply?: string; model?: string }) : {};
  if (body.reply !== reply || body.model !== MODEL)
    throw new Error(`gateway check: ${status} ${text.slice(0, 300)}`);
}

// ---- phase C: PostgreSQL alone ----

const userUuid = (n: string) => `('00000000-0000-0000-0000-' || lpad(${n}::text, 12, '0'))::uuid`;
const sessionUuid = (n: string) =>
  `('00000000-0000-0000-0001-' || lpad(${n}::text, 12, '0'))::uuid`;
/** The turn's lease token and the model call's id: uuids the server makes with randomUUID. */
const tokenUuid = (t: string) => `('00000000-0000-0000-0002-' || lpad(${t}::text, 12, '0'))::uuid`;
const callUuid = (t: string) => `('00000000-0000-0000-0003-' || lpad(${t}::text, 12, '0'))::uuid`;

/** The user message and the stored answer, as bench/chat.bench.ts's turns. */
const USER_TEXT = BENCH_MESSAGE;
const REPLY_TEXT = 'Hello from the fake model: a short benchmark reply.';
/** container.ts: turnLeaseMs = agents.turn_timeout_ms (180,000 by default) + 60,000. */
const LEASE_MS = 240_000;

/**
 * One chat turn's statements, in the order the server runs them for a turn in an existing
 * session with an explicit agent and no client_message_id (as bench/chat.bench.ts's turns):
 *   1. leaseSession          server/src/chat/chat.repository.ts
 *   2. insertUserMessage     chat.repository.ts (inserts the message and returns the session's
 *                            earlier ones: a data-modifying CTE and a union)
 *   3. insertUsage           server/src/llm/usage.repository.ts
 *   4. insertAnswerAndEndTurn  chat.repository.ts (a data-modifying CTE)
 * Each autocommits, as in the server (no transaction around them). These are the statements of
 * 2026-11-26 02:00. The server has since folded 1 and 2 into one statement for a turn that
 * names its agent (leaseAndInsertUserMessages), and stores the answers ready at the same time
 * with one statement (insertAnswersAndEndTurns, docs/adr/0009), so this script overstates
 * PostgreSQL's share of a turn, and the implied ceiling is lower than what the server can reach. The server binds every
 * value as a parameter; here the per-turn values (session, user, token) are pgbench variables
 * (parameters in -M extended and -M prepared), the constant ones literals. pgbench reads `:name`
 * as a variable anywhere, so the JSON literals have a space after each colon (same jsonb).
 *
 * Client c moves to its next session every `sessionTurns` turns (sessions c+1, c+1+clients, …;
 * `turn` is a per-client variable that persists across transactions, started by -D turn=-1),
 * so histories hold 0 to sessionTurns-1 earlier turns and no two clients share a session.
 */
function turnScript(clients: number, sessionTurns: number): string {
  const slots = Math.max(1, Math.floor(SESSIONS / clients));
  const s = sessionUuid(':n');
  const u = userUuid(':u');
  const token = tokenUuid(':t');
  const userMeta = '{"agent": "sales"}';
  const answerMeta = JSON.stringify({
    reply_to: '00000000-0000-0000-0004-000000000001',
    agent: 'sales',
    routed_by: 'explicit',
    provider: 'anthropic',
    model: MODEL,
    fallback_reason: null,
    finish: 'stop',
    usage: { input_tokens: 2600, output_tokens: 12, cost_usd: 0.00798 },
    tool_calls: [],
    pending_approvals: [],
    transcript: [{ role: 'assistant', content: [{ type: 'text', text: REPLY_TEXT }] }],
  }).replaceAll('":', '": ');
  const returning = 'returning id, role, content, metadata, client_message_id, created_at';
  return `\\set turn :turn + 1
\\set n :client_id + 1 + ${clients} * ((:turn / ${sessionTurns}) % ${slots})
\\set u (:n % ${USERS}) + 1
\\set t random(1, 999999999999)
update chat_sessions set turn_token = ${token}, turn_expires_at = now() + ${LEASE_MS} * interval '1 millisecond' where id = ${s} and user_id = ${u} and deleted_at is null and (turn_token is null or turn_expires_at < now()) returning id, user_id, title, agent, created_at, updated_at, deleted_at, turn_token, turn_expires_at, summary, summary_through;
with ins as (insert into conversations (user_id, session_id, role, content, client_message_id, metadata) values (${u}, ${s}, 'user', '${USER_TEXT}', null, '${userMeta}') on conflict (user_id, client_message_id) where client_message_id is not null do nothing ${returning}) select true as inserted, id, role, content, metadata, client_message_id, created_at from ins union all select false as inserted, id, role, content, metadata, client_message_id, created_at from conversations where session_id = ${s} order by inserted, created_at, id;
insert into llm_usage (provider, model, purpose, department, user_id, source, session_id, call_id, attempt, status, error_kind, error_message, fallback_reason, input_tokens, output_tokens, cost_usd, latency_ms, ttfb_ms, created_at) values ('anthropic', '${MODEL}', 'chat', 'sales', ${u}, 'api', ${s}, ${callUuid(':t')}, 1, 'ok', null, null, null, 2600, 12, '0.007980', 1, 1, now());
with ended as (update chat_sessions set agent = coalesce('sales', agent), updated_at = now(), turn_token = case when turn_token = ${token} then null else turn_token end, turn_expires_at = case when turn_token = ${token} then null else turn_expires_at end where id = ${s}) insert into conversations (user_id, session_id, role, content, metadata) values (${u}, ${s}, 'assistant', '${REPLY_TEXT}', '${answerMeta}') ${returning};
`;
}

const SCRIPT_VARIABLES = new Set(['turn', 'client_id', 'n', 'u', 't']);

/** The SQL lines of the script with its variables replaced by values (the sanity check). */
function statementsWith(script: string, values: Record<string, number>): string[] {
  return script
    .split('\n')
    .filter((line) => line && !line.startsWith('\\'))
    .map((line) =>
      line.replace(/(?<!:):([A-Za-z_]\w*)/g, (_, name: string) => {
        const v = values[name];
        if (v === undefined) throw new Error(`pgbench script: unknown variable :${name}`);
        return String(v);
      }),
    );
}

/** Every `:name` in the script is one of its variables (a JSON literal could slip one in). */
function checkScriptVariables(script: string): void {
  for (const m of script.matchAll(/(?<!:):([A-Za-z_]\w*)/g))
    if (!SCRIPT_VARIABLES.has(m[1]!)) throw new Error(`pgbench script: stray variable :${m[1]}`);
}

const SEED_SQL = `
insert into users (id, email, password_hash, name, department, role)
select ${userUuid('u')}, 'ceiling-' || u || '@bench.invalid', 'x', 'Bench User ' || u, 'sales', 'sales_rep'
  from generate_series(1, ${USERS}) u;
insert into chat_sessions (id, user_id, title, agent)
select ${sessionUuid('n')}, ${userUuid(`(n % ${USERS} + 1)`)}, 'Bench session', 'sales'
  from generate_series(1, ${SESSIONS}) n;
`;

/**
 * The schema's rows back to the seed (no messages, no usage, every lease free), analysed, on a
 * connection of its own: its table statistics are flushed when it ends, before the run.
 */
async function resetSchema(): Promise<void> {
  await withPg(DATABASE_URL, async (client) => {
    await client.query(
      `truncate "${schema}".conversations, "${schema}".llm_usage restart identity`,
    );
    await client.query(
      `update "${schema}".chat_sessions set turn_token = null, turn_expires_at = null, agent = 'sales'`,
    );
    for (const table of ['chat_sessions', 'conversations', 'llm_usage', 'users'])
      await client.query(`vacuum analyze "${schema}".${table}`);
    // Dirty pages of the run before are written now, not during the next run (superuser only).
    await client.query('checkpoint').catch(() => {});
  });
  await sleep(500);
}

/** CPU time so far (ms) of each of `pids` still running. */
function cpuByPid(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    const ms = processCpuMs(pid);
    if (ms !== undefined) out.set(pid, ms);
  }
  return out;
}

/** CPU (ms) used between two readings by the processes present in both. */
function cpuBetween(from: Map<number, number>, to: Map<number, number>): number {
  let total = 0;
  for (const [pid, ms] of to) {
    const before = from.get(pid);
    if (before !== undefined) total += ms - before;
  }
  return total;
}

/** PostgreSQL's own processes (WAL writer, checkpointer, background writer, autovacuum). */
async function backgroundPids(monitor: pg.Client): Promise<number[]> {
  const r = await monitor.query<{ pid: number }>(
    "select pid from pg_stat_activity where backend_type <> 'client backend'",
  );
  return r.rows.map((row) => row.pid);
}

interface PgRun {
  mode: PgMode;
  clients: number;
  duration_s: number;
  tps: number;
  latency_avg_ms: number;
  transactions: number;
  failed_transactions: number;
  window_s: number;
  turns_in_window: number;
  postgres_cpu_us_per_turn: number;
  postgres_backends_cpu_us_per_turn: number;
  postgres_background_cpu_us_per_turn: number;
  pgbench_cpu_us_per_turn: number | undefined;
  machine_cpu_us_per_turn: number | undefined;
  machine_busy_percent: number | undefined;
  backends: number;
  /** Over the whole run: rows the turns wrote, per stored usage row (expected 2 and 2). */
  per_turn: { session_updates: number; messages: number };
}

/** What the turns wrote so far: usage rows, messages, and updates of chat_sessions. */
async function writtenRows(monitor: pg.Client) {
  const r = await monitor.query<{ usage: number; messages: number; upd: number }>(
    `select (select count(*) from "${schema}".llm_usage)::int as usage,
            (select count(*) from "${schema}".conversations)::int as messages,
            (select n_tup_upd from pg_stat_user_tables
              where schemaname = $1 and relname = 'chat_sessions')::int as upd`,
    [schema],
  );
  return r.rows[0]!;
}

interface PgConnection {
  host: string;
  port: string;
  user: string;
  database: string;
  password: string;
}

function pgConnection(url: string): PgConnection {
  const u = new URL(url);
  return {
    host: u.hostname || HOST,
    port: u.port || '5432',
    user: decodeURIComponent(u.username) || 'postgres',
    database: decodeURIComponent(u.pathname.slice(1)) || 'postgres',
    password: decodeURIComponent(u.password),
  };
}

/** The pgbench child while it runs (stopped on Ctrl-C and on exit). */
let pgbenchChild: ChildProcess | undefined;

/** One pgbench run; CPU per turn over a window inside it (after connecting, before the end). */
async function pgbenchRun(
  mode: PgMode,
  clients: number,
  scriptFile: string,
  monitor: pg.Client,
): Promise<PgRun> {
  const c = pgConnection(DATABASE_URL);
  const args = [
    ...['-h', c.host, '-p', c.port, '-U', c.user, '-n', '-M', mode],
    ...['-c', String(clients), '-j', String(Math.min(2, clients)), '-T', String(PG_S)],
    ...['-D', 'turn=-1', '-f', scriptFile, c.database],
  ];
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    PGOPTIONS: `-c search_path=${schema}`,
    ...(c.password ? { PGPASSWORD: c.password } : {}),
  };
  const rows0 = await writtenRows(monitor);
  const child = spawn('pgbench', args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  pgbenchChild = child;
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    output += s;
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    output += s;
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const turnsSoFar = async () =>
    Number(
      (
        await monitor.query<{ v: string }>(
          `select last_value::text as v from "${schema}".llm_usage_id_seq`,
        )
      ).rows[0]!.v,
    );

  try {
    // The run's backends: PostgreSQL processes serving pgbench's sockets.
    let backends: number[] = [];
    const connectBy = Date.now() + 15_000;
    while (Date.now() < connectBy && child.exitCode === null) {
      backends = await postgresBackendPids(child.pid!, DATABASE_URL).catch(() => []);
      if (backends.length >= clients) break;
      await sleep(100);
    }
    if (backends.length < clients)
      throw new Error(`pgbench connected ${backends.length} of ${clients} clients:\n${output}`);
    const ready = Date.now();
    const warmMs = Math.min(1_000, PG_S * 100);
    const tailMs = Math.min(700, PG_S * 100);
    const background = await backgroundPids(monitor);

    await sleep(warmMs);
    const t0 = Date.now();
    const turns0 = await turnsSoFar();
    const pg0 = cpuByPid(backends);
    const bg0 = cpuByPid(background);
    const bench0 = processCpuMs(child.pid);
    const m0 = machineCpuMs();
    await sleep(Math.max(0, ready + PG_S * 1000 - tailMs - Date.now()));
    const turns1 = await turnsSoFar();
    const pg1 = cpuByPid(backends);
    const bg1 = cpuByPid(background);
    const bench1 = processCpuMs(child.pid);
    const m1 = machineCpuMs();
    const windowS = (Date.now() - t0) / 1000;

    const code = await exited;
    if (code !== 0) throw new Error(`pgbench exited with code ${code}:\n${output.slice(-3000)}`);
    // Every turn took its lease and gave it back (two session updates) and stored two messages
    // (the backends have exited: their table statistics are flushed).
    await sleep(500);
    const rows1 = await writtenRows(monitor);
    const stored = rows1.usage - rows0.usage;
    const perTurn = {
      session_updates: Number(((rows1.upd - rows0.upd) / Math.max(1, stored)).toFixed(3)),
      messages: Number(((rows1.messages - rows0.messages) / Math.max(1, stored)).toFixed(3)),
    };
    if (Math.abs(perTurn.session_updates - 2) > 0.02 || Math.abs(perTurn.messages - 2) > 0.02)
      throw new Error(
        `pgbench -M ${mode} -c ${clients}: ${JSON.stringify(perTurn)} per turn instead of 2 and 2: the turn statements did not all apply`,
      );
    const num = (re: RegExp) => Number(re.exec(output)?.[1] ?? Number.NaN);
    const turns = turns1 - turns0;
    const per = (ms: number | undefined) =>
      ms === undefined ? undefined : Math.round((1000 * ms) / Math.max(1, turns));
    const backendsMs = cpuBetween(pg0, pg1);
    const backgroundMs = cpuBetween(bg0, bg1);
    return {
      mode,
      clients,
      duration_s: PG_S,
      tps: Math.round(num(/tps = ([\d.]+)/)),
      latency_avg_ms: num(/latency average = ([\d.]+) ms/),
      transactions: num(/actually processed: (\d+)/),
      failed_transactions: num(/failed transactions: (\d+)/) || 0,
      window_s: Number(windowS.toFixed(2)),
      turns_in_window: turns,
      postgres_cpu_us_per_turn: per(backendsMs + backgroundMs)!,
      postgres_backends_cpu_us_per_turn: per(backendsMs)!,
      postgres_background_cpu_us_per_turn: per(backgroundMs)!,
      pgbench_cpu_us_per_turn: per(
        bench0 !== undefined && bench1 !== undefined ? bench1 - bench0 : undefined,
      ),
      machine_cpu_us_per_turn: per(m0 && m1 ? m1.busy - m0.busy : undefined),
      machine_busy_percent:
        m0 && m1
          ? Math.round((100 * (m1.busy - m0.busy)) / (m1.busy - m0.busy + m1.idle - m0.idle))
          : undefined,
      backends: backends.length,
      per_turn: perTurn,
    };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    pgbenchChild = undefined;
  }
}

function pgbenchVersion(): string | undefined {
  const r = spawnSync('pgbench', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

interface PgPhase {
  pgbench: string;
  server_version: string;
  synchronous_commit: string;
  schema: string;
  seed: { users: number; sessions: number };
  session_turns: number;
  client_message_id: string;
  script: string;
  runs: PgRun[];
}

/** Phase C: a migrated, seeded schema, the script checked once by hand, then the pgbench runs. */
async function postgresPhase(scriptFiles: string[]): Promise<PgPhase> {
  const pgbench = pgbenchVersion()!;
  const database = await createDatabase({ url: DATABASE_URL, schema });
  try {
    const applied = await migrate(database);
    log(`schema ${schema}: ${applied.applied.length} migrations applied`);
    if (database.raw.kind !== 'postgres') throw new Error('expected PostgreSQL');
    await database.raw.pool.query(SEED_SQL);
  } finally {
    await database.close();
  }

  const monitor = new pg.Client({ connectionString: DATABASE_URL });
  await monitor.connect();
  try {
    const setting = async (name: string) =>
      (await monitor.query<{ v: string }>(`select current_setting($1) as v`, [name])).rows[0]!.v;
    const serverVersion = await setting('server_version');
    const synchronousCommit = await setting('synchronous_commit');

    // Sanity: the turn's statements, values filled in, do what a turn does.
    const sample = turnScript(PG_CLIENTS[0]!, SESSION_TURNS);
    checkScriptVariables(sample);
    await monitor.query(`set search_path = "${schema}"`);
    const counts: number[] = [];
    for (const statement of statementsWith(sample, { n: 1, u: 2, t: 7 }))
      counts.push((await monitor.query(statement)).rowCount ?? 0);
    const expected = [1, 1, 1, 1];
    if (counts.join() !== expected.join())
      throw new Error(`turn statements: row counts ${counts} instead of ${expected}`);
    const left = await monitor.query<{ n: number }>(
      'select count(*)::int as n from chat_sessions where turn_token is not null',
    );
    if (left.rows[0]!.n !== 0) throw new Error('turn statements: the lease was not given back');
    await monitor.query('reset search_path');

    const runs: PgRun[] = [];
    for (const mode of PG_MODES)
      for (const clients of PG_CLIENTS) {
        const script = turnScript(clients, SESSION_TURNS);
        checkScriptVariables(script);
        const file = join(os.tmpdir(), `ceiling-${runId}-c${clients}.sql`);
        if (!scriptFiles.includes(file)) scriptFiles.push(file);
        writeFileSync(file, script);
        await resetSchema();
        log(`C. PostgreSQL: pgbench -M ${mode} -c ${clients}, ${PG_S}s`);
        const run = await pgbenchRun(mode, clients, file, monitor);
        log(
          `   ${run.tps} tps, latency avg ${run.latency_avg_ms} ms, PostgreSQL ${run.postgres_cpu_us_per_turn ?? '?'} µs/turn (backends ${run.postgres_backends_cpu_us_per_turn})`,
        );
        runs.push(run);
      }
    return {
      pgbench,
      server_version: serverVersion,
      synchronous_commit: synchronousCommit,
      schema,
      seed: { users: USERS, sessions: SESSIONS },
      session_turns: SESSION_TURNS,
      client_message_id: 'null (as bench/chat.bench.ts sends none)',
      script: turnScript(PG_CLIENTS[0]!, SESSION_TURNS),
      runs,
    };
  } finally {
    await monitor.end();
  }
}

// ---- main ----

async function main(): Promise<number> {
  const started = new Date();
  const loadBefore = loadAverage();
  mkdirSync(RESULTS, { recursive: true });
  const fakeStdout = join(os.tmpdir(), `ceiling-${runId}-fake.log`);
  const gatewayStdout = join(os.tmpdir(), `ceiling-${runId}-gateway.log`);
  const scriptFiles: string[] = [];
  log(`load average before: ${loadBefore} (${CPUS} cpus)`);

  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    pgbenchChild?.kill('SIGTERM');
    await sleep(pgbenchChild ? 500 : 0);
    await withPg(DATABASE_URL, (c) => c.query(`drop schema if exists "${schema}" cascade`)).catch(
      (err: Error) => log(`could not drop schema ${schema}: ${err.message}`),
    );
    for (const f of [fakeStdout, gatewayStdout, ...scriptFiles]) rmSync(f, { force: true });
  };
  onInterrupt(cleanup);
  process.on('exit', () => pgbenchChild?.kill('SIGKILL'));

  let fakeChild: ChildServer | undefined;
  let gatewayChild: ChildServer | undefined;
  const problems: string[] = [];
  try {
    // ---- A. model only ----
    fakeChild = startChild({
      args: ['--import', 'tsx', 'bench/fake-model-launcher.ts'],
      env: cleanChildEnv(env),
      cwd: ROOT,
      stdoutFile: fakeStdout,
    });
    const fake = await waitJsonLine<FakeInfo>(fakeStdout, fakeChild);
    const reply = (await fakeStats(fake)).reply;
    log(`fake model at ${fake.url} (pid ${fake.pid})`);
    const modelTarget: Target = {
      url: `${fake.url}/v1/messages`,
      headers: MODEL_REQUEST_HEADERS,
      body: modelRequestBody(BENCH_MESSAGE),
    };
    await checkModel(modelTarget, reply);
    const requestBytes = Buffer.byteLength(modelTarget.body);

    log(
      `A. model only: warm-up ${WARMUP_S}s, then ${CONNECTIONS} and ${LATENCY_CONNECTIONS} connections, ${DURATION_S}s each`,
    );
    const warmA = summarize(
      (await cannon(cannonOptions(modelTarget, CONNECTIONS, WARMUP_S))).result,
    );
    if (badResponses(warmA)) throw new Error(`A warm-up: ${badResponses(warmA)}`);
    const pidsA = { fake: fake.pid };
    const a50 = await httpRun(modelTarget, CONNECTIONS, pidsA, fake);
    const a10 = await httpRun(modelTarget, LATENCY_CONNECTIONS, pidsA, fake);

    // ---- B. pass-through gateway ----
    gatewayChild = startChild({
      args: ['--import', 'tsx', 'bench/passthrough-gateway.ts'],
      env: { ...cleanChildEnv(env), NODE_ENV: 'production', FAKE_MODEL_URL: fake.url },
      cwd: ROOT,
      stdoutFile: gatewayStdout,
    });
    const gateway = await waitJsonLine<{ url: string; pid: number }>(gatewayStdout, gatewayChild);
    log(`gateway at ${gateway.url} (pid ${gateway.pid})`);
    const gatewayTarget: Target = {
      url: `${gateway.url}/chat/send`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ message: BENCH_MESSAGE }),
    };
    await checkGateway(gatewayTarget, reply);
    log(
      `B. gateway: warm-up ${WARMUP_S}s, then ${CONNECTIONS} and ${LATENCY_CONNECTIONS} connections, ${DURATION_S}s each`,
    );
    const warmB = summarize(
      (await cannon(cannonOptions(gatewayTarget, CONNECTIONS, WARMUP_S))).result,
    );
    if (badResponses(warmB)) throw new Error(`B warm-up: ${badResponses(warmB)}`);
    const pidsB = { gateway: gateway.pid, fake: fake.pid };
    const b50 = await httpRun(gatewayTarget, CONNECTIONS, pidsB, fake);
    const b10 = await httpRun(gatewayTarget, LATENCY_CONNECTIONS, pidsB, fake);
    for (const [name, r] of [
      ['A model only', a50],
      [`A model only ${LATENCY_CONNECTIONS}`, a10],
      ['B gateway', b50],
      [`B gateway ${LATENCY_CONNECTIONS}`, b10],
    ] as const) {
      const bad = badResponses(r.load);
      if (bad) problems.push(`${name}: ${bad}`);
    }
    await gatewayChild.stop();
    await fakeChild.stop();

    // ---- C. PostgreSQL only ----
    const pgbench = pgbenchVersion();
    let pgPhase: PgPhase | undefined;
    let pgSkipped: string | undefined;
    if (!pgbench) {
      pgSkipped =
        'pgbench not found: on Debian it comes with the PostgreSQL server package (postgresql-15 for PostgreSQL 15: /usr/lib/postgresql/15/bin/pgbench; postgresql-client-common links /usr/bin/pgbench to it)';
      log(`C. PostgreSQL: SKIPPED: ${pgSkipped}`);
    } else {
      await withPg(DATABASE_URL, (c) => c.query(`create schema "${schema}"`));
      pgPhase = await postgresPhase(scriptFiles);
    }

    // ---- composition ----
    const budgetUs = Math.round((CPUS * 1e6) / TARGET_TURNS_PER_S);
    const fakeUs = a50.run.cpu_us_per_request.fake;
    const loadGenUs = a50.run.cpu_us_per_request.load_generator;
    const gatewayUs = b50.run.cpu_us_per_request.gateway;
    const prepared = (pgPhase?.runs ?? []).filter((r) => r.mode === 'prepared');
    const pgFloor = prepared.reduce<PgRun | undefined>(
      (best, r) => (!best || r.postgres_cpu_us_per_turn < best.postgres_cpu_us_per_turn ? r : best),
      undefined,
    );
    const pgUs = pgFloor?.postgres_cpu_us_per_turn;
    const floorSum = [fakeUs, loadGenUs, gatewayUs, pgUs].reduce<number>((s, v) => s + (v ?? 0), 0);
    const ceiling = floorSum > 0 ? Math.round((CPUS * 1e6) / floorSum) : undefined;
    // Little's law: N closed-loop users with no think time wait N / throughput on average.
    const littleMs = (sumUs: number) =>
      sumUs > 0 ? Number(((LATENCY_CONNECTIONS * sumUs) / CPUS / 1000).toFixed(2)) : undefined;
    // The same floors seen by the whole machine: the kernel's share (loopback, WAL fsync) too.
    const gatewayMachineUs = b50.run.cpu_us_per_request.machine;
    const machineMinusPgbench = prepared
      .filter((r) => r.machine_cpu_us_per_turn !== undefined)
      .map((r) => r.machine_cpu_us_per_turn! - (r.pgbench_cpu_us_per_turn ?? 0));
    const pgMachineUs = machineMinusPgbench.length ? Math.min(...machineMinusPgbench) : undefined;
    const machineSum = (gatewayMachineUs ?? 0) + (pgMachineUs ?? 0);
    const machineCeiling = machineSum > 0 ? Math.round((CPUS * 1e6) / machineSum) : undefined;
    const addedAt10 = {
      p50: Number((b10.run.latency_ms.p50 - a10.run.latency_ms.p50).toFixed(2)),
      p99: Number((b10.run.latency_ms.p99 - a10.run.latency_ms.p99).toFixed(2)),
    };

    const result = {
      date: started.toISOString(),
      node: process.version,
      cpus: CPUS,
      cpu_model: os.cpus()[0]?.model,
      uptime_s: Math.round(os.uptime()),
      load_average_before: loadBefore,
      load_average_after: loadAverage(),
      settings: {
        duration_s: DURATION_S,
        warmup_s: WARMUP_S,
        connections: CONNECTIONS,
        latency_connections: LATENCY_CONNECTIONS,
        pg_s: PG_S,
        pg_clients: PG_CLIENTS,
      },
      model_request: {
        path: 'POST /v1/messages',
        bytes: requestBytes,
        stream: true,
        model: MODEL,
        shape:
          'system prompt (agent instructions), 3 messages (user, assistant, short user), 6 tools',
        fake: 'server/test/fakes/model-server.ts in its own process (bench/fake-model-launcher.ts), zeroLatency, recordRequests false',
        reply,
      },
      cpu_us_per_request_means:
        'CPU time (user + system, /proc) of each process during the run divided by the 2xx responses: fake = the fake model, gateway = passthrough-gateway.ts, load_generator = this process (autocannon, process.cpuUsage), machine = every process on the machine (/proc/stat), other work included',
      model_only: {
        what: 'autocannon POST /v1/messages straight to the fake: the fake and the load generator alone',
        throughput: a50.run,
        latency: a10.run,
      },
      passthrough_gateway: {
        what: 'autocannon POST /chat/send to bench/passthrough-gateway.ts: node:http, fetch (undici) to the fake with the same request, SSE read to the end, JSON reply; no auth, no storage, no logging',
        throughput: b50.run,
        latency: b10.run,
        added_latency_ms: addedAt10,
        added_latency_means: `gateway latency minus model-only latency at ${LATENCY_CONNECTIONS} connections (p50 minus p50, p99 minus p99)`,
      },
      postgres_only: pgPhase
        ? {
            ...pgPhase,
            what: "pgbench running one chat turn's statements as the server sends them (lease, user message + history, usage row, answer + end of turn), each autocommitted",
            postgres_cpu_us_per_turn_means:
              "CPU time (/proc) of the run's backends (pgbench's connections) and of PostgreSQL's background processes (WAL writer, checkpointer, background writer, autovacuum launcher and workers running at the window's start) over a window inside the run (after connecting, before the end), divided by the turns stored in that window (llm_usage id sequence)",
            postgres_backends_means: "the run's own backends only",
            postgres_background_means:
              "PostgreSQL's background processes only (shared with any other database work)",
            pgbench_means:
              "pgbench's own CPU per turn (the stand-in for the server's database client)",
            machine_means: 'every process on the machine (/proc/stat) per turn in the window',
            modes_mean:
              'extended: each statement parsed and planned on every run (unnamed statements, what node-postgres does for a parameterised query without a name); prepared: named statements, parsed once per connection',
          }
        : { skipped: pgSkipped },
      composition: {
        budget_us_per_turn: budgetUs,
        budget_means: `CPU available per turn at ${TARGET_TURNS_PER_S} turns/s on ${CPUS} cpus: cpus x 1e6 / ${TARGET_TURNS_PER_S} µs`,
        fake_model_us_per_turn: fakeUs,
        load_generator_us_per_turn: loadGenUs,
        fake_and_load_generator_means: `A at ${CONNECTIONS} connections: the fake's and the load generator's CPU per request`,
        gateway_us_per_turn: gatewayUs,
        gateway_means: `B at ${CONNECTIONS} connections: the gateway process's own CPU per request (forwarding only: HTTP in, fetch out, SSE in, JSON out)`,
        postgres_us_per_turn: pgUs,
        postgres_means: pgFloor
          ? `C, -M prepared, the lowest measured (${pgFloor.clients} clients): the run's backends + PostgreSQL's background processes, per turn`
          : 'not measured (phase C skipped)',
        floor_sum_us_per_turn: floorSum,
        floor_sum_means:
          'fake + load generator + gateway + PostgreSQL: the CPU a turn costs this machine with a server that costs nothing but forwarding and storing',
        headroom_us_per_turn: budgetUs - floorSum,
        headroom_means: `budget minus the floors: what our server may spend beyond forwarding (auth, rate limits, routing, its database client, logging, Redis) and still reach ${TARGET_TURNS_PER_S} turns/s`,
        ceiling_turns_per_s: ceiling,
        ceiling_means: 'cpus x 1e6 / floor sum: turns/s if the machine did nothing but the floors',
        mean_latency_ms_at_latency_users: littleMs(floorSum),
        mean_latency_means: `Little's law at the ceiling: ${LATENCY_CONNECTIONS} closed-loop users (no think time) x floor sum / cpus: the least mean latency per turn on a saturated machine`,
        machine_wide: {
          gateway_run_us_per_request: gatewayMachineUs,
          postgres_run_us_per_turn: pgMachineUs,
          sum_us_per_turn: machineSum,
          ceiling_turns_per_s: machineCeiling,
          mean_latency_ms_at_latency_users: littleMs(machineSum),
          means: `the floors as the whole machine sees them (/proc/stat, kernel work such as loopback networking and WAL fsync included, and anything else running): B's machine CPU per request at ${CONNECTIONS} connections (fake, load generator, gateway) + the lowest machine CPU per turn minus pgbench's own of the C -M prepared runs`,
        },
      },
      anchor: ANCHOR,
      problems,
      pass: problems.length === 0,
    };

    const stamp = started.toISOString().replaceAll(':', '-');
    const json = `${JSON.stringify(result, null, 2)}\n`;
    writeFileSync(join(RESULTS, `ceiling-${stamp}.json`), json);
    writeFileSync(join(RESULTS, 'ceiling-latest.json'), json);

    const q = (v: number | undefined) => (v === undefined ? '?' : v.toLocaleString('en-US'));
    const httpRow = (label: string, r: HttpRun) => [
      label,
      String(r.connections),
      q(r.requests_per_s),
      `${r.latency_ms.p50} / ${r.latency_ms.p99}`,
      q(r.cpu_us_per_request.fake),
      r.cpu_us_per_request.gateway === undefined ? '-' : q(r.cpu_us_per_request.gateway),
      q(r.cpu_us_per_request.load_generator),
      `${q(r.cpu_us_per_request.machine)} (${r.machine_busy_percent ?? '?'}%)`,
    ];
    console.log('');
    printTable([
      [
        'HTTP (CPU in µs per request)',
        'conns',
        'req/s',
        'p50 / p99 ms',
        'fake',
        'gateway',
        'load gen',
        'machine (busy)',
      ],
      httpRow('A. model only (POST /v1/messages)', a50.run),
      httpRow('A. model only', a10.run),
      httpRow('B. pass-through gateway (/chat/send)', b50.run),
      httpRow('B. pass-through gateway', b10.run),
    ]);
    console.log(
      `B added latency at ${LATENCY_CONNECTIONS} connections (B - A) p50 / p99: ${addedAt10.p50} / ${addedAt10.p99} ms. Anchor (issue): ${ANCHOR.what}: ${ANCHOR.requests_per_s} req/s, p50 ${ANCHOR.p50_ms} ms.`,
    );
    if (pgPhase) {
      console.log('');
      printTable([
        [
          'C. PostgreSQL only (CPU in µs per turn)',
          'clients',
          'tps',
          'latency avg ms',
          'PostgreSQL',
          'backends',
          'pgbench',
          'machine (busy)',
        ],
        ...pgPhase.runs.map((r) => [
          `pgbench -M ${r.mode}`,
          String(r.clients),
          q(r.tps),
          String(r.latency_avg_ms),
          q(r.postgres_cpu_us_per_turn),
          q(r.postgres_backends_cpu_us_per_turn),
          q(r.pgbench_cpu_us_per_turn),
          `${q(r.machine_cpu_us_per_turn)} (${r.machine_busy_percent ?? '?'}%)`,
        ]),
      ]);
      console.log(
        `${pgPhase.pgbench}, server ${pgPhase.server_version}, synchronous_commit ${pgPhase.synchronous_commit}; PostgreSQL = the run's backends + background processes (WAL writer, checkpointer, autovacuum).`,
      );
    } else console.log(`\nC. PostgreSQL only: skipped (${pgSkipped})`);
    console.log('');
    printTable([
      ['composition (CPU per turn)', 'µs', ''],
      [
        `budget at ${TARGET_TURNS_PER_S} turns/s (${CPUS} cpus x 1e6 / ${TARGET_TURNS_PER_S})`,
        q(budgetUs),
        '',
      ],
      ['  fake model (A)', q(fakeUs), `${CONNECTIONS} connections`],
      ['  load generator (A)', q(loadGenUs), 'autocannon, 10.4 KB request, SSE reply'],
      ['  pass-through gateway, own CPU (B)', q(gatewayUs), 'forwarding only, no storage'],
      [
        '  PostgreSQL, one turn (C)',
        q(pgUs),
        pgFloor ? `-M prepared, ${pgFloor.clients} clients (lowest)` : 'skipped',
      ],
      ['floors together', q(floorSum), 'a server that only forwards and stores'],
      ['headroom for our server beyond that', q(budgetUs - floorSum), 'budget - floors'],
      ['implied ceiling (turns/s)', q(ceiling), `${CPUS} x 1e6 / floors`],
      [
        `  mean latency at ${LATENCY_CONNECTIONS} users, at that ceiling (ms)`,
        String(littleMs(floorSum) ?? '?'),
        "Little's law",
      ],
      [
        'machine-wide floors (B machine + C machine - pgbench)',
        q(machineSum),
        `${q(gatewayMachineUs)} + ${q(pgMachineUs)}, kernel included`,
      ],
      [
        `  implied ceiling (turns/s) / mean latency at ${LATENCY_CONNECTIONS} users (ms)`,
        `${q(machineCeiling)} / ${littleMs(machineSum) ?? '?'}`,
        `${CPUS} x 1e6 / machine-wide floors`,
      ],
    ]);
    console.log(
      `\nnode ${process.version}, ${CPUS} cpus (${os.cpus()[0]?.model ?? '?'}), load before ${loadBefore}, after ${result.load_average_after}.`,
    );
    console.log(`Results: bench/results/ceiling-${stamp}.json (and ceiling-latest.json)`);
    if (problems.length) log(`FAILED: ${problems.join('; ')}`);
    return problems.length ? 1 : 0;
  } catch (err) {
    log(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    await gatewayChild?.stop().catch(() => {});
    await fakeChild?.stop().catch(() => {});
    await cleanup();
  }
}

runBench(main);
