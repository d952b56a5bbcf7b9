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
 *   C. PostgreSQL   pgbench running a chat turn's statements exactly as the server sends them
 *                   for a turn in an existing session that names its agent (as the chat
 *                   bench's turns): leaseAndInsertUserMessages (lease, user message, history)
 *                   and insertAnswersAndEndTurns (usage row, answer, lease given back), the SQL
 *                   imported from server/src/chat/chat.repository.ts, each a group commit whose
 *                   JSON array parameter holds BENCH_PG_BATCH turns (sessions) per transaction
 *                   (docs/adr/0009), in a fresh schema built by the project's migrations with 50
 *                   users and 5,000 x BENCH_PG_BATCH sessions: -M extended (unnamed statements)
 *                   and -M prepared (named statements, as the server runs them),
 *                   BENCH_PG_CLIENTS clients each, BENCH_PG_S each; checked first against what
 *                   the server's own functions send; CPU per turn read from /proc over a window
 *                   inside each run, turns counted by the llm_usage id sequence (one row a turn)
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
 *                              session(s), default 10 (as bench/chat.bench.ts)
 *   BENCH_PG_BATCH             turns per pgbench transaction, default 1: each statement's JSON
 *                              array holds that many turns (different sessions of the client),
 *                              as the server's group commit sends them under load (1 to 64)
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import {
  type AnswerValues,
  insertAnswersAndEndTurns,
  insertAnswersStatement,
  type LeaseInsertValues,
  leaseAndInsertStatement,
  leaseAndInsertUserMessages,
} from '../server/src/chat/chat.repository.ts';
import { TURN_BATCH_MAX } from '../server/src/chat/turn-statements.ts';
import { createDatabase, type Database } from '../server/src/db/database.ts';
import { migrate } from '../server/src/db/migrate.ts';
import type { Prepared } from '../server/src/db/prepared.ts';
import { type UsageRow, usageColumns } from '../server/src/llm/usage.repository.ts';
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
const PG_BATCH = Number(env.BENCH_PG_BATCH ?? 1);
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

const uuidOf = (prefix: string, n: string) => `('${prefix}' || lpad(${n}::text, 12, '0'))::uuid`;
const userUuid = (n: string) => uuidOf('00000000-0000-0000-0000-', n);
const sessionUuid = (n: string) => uuidOf('00000000-0000-0000-0001-', n);
/**
 * The turn's lease token and the model call's id (uuids the server makes with randomUUID): one
 * per session and visit `v` (a client's stay in its sessions, see turnScript).
 */
const visitUuid = (kind: '0002' | '0003', v: string, n: string) =>
  `('00000000-0000-${kind}-' || lpad(${v}::text, 4, '0') || '-' || lpad(${n}::text, 12, '0'))::uuid`;
/** The same uuids as text, as the SQL above writes them (the sanity check). */
const idText = (prefix: string, n: number) => `${prefix}${String(n).padStart(12, '0')}`;
const userId = (n: number) => idText('00000000-0000-0000-0000-', n);
const sessionId = (n: number) => idText('00000000-0000-0000-0001-', n);
const visitId = (kind: '0002' | '0003', v: number, n: number) =>
  idText(`00000000-0000-${kind}-${String(v).padStart(4, '0')}-`, n);

/** The user message and the stored answer, as bench/chat.bench.ts's turns. */
const USER_TEXT = BENCH_MESSAGE;
const REPLY_TEXT = 'Hello from the fake model: a short benchmark reply.';
/** container.ts: turnLeaseMs = agents.turn_timeout_ms (180,000 by default) + 60,000. */
const LEASE_MS = 240_000;
const AGENT = 'sales';
/** The user message's metadata (chat.service.ts userRow: no client_message_id, no media). */
const USER_METADATA = { agent: AGENT };
/** The answer's metadata (chat.service.ts: reply_to, agent, routed_by, answerMetadata). */
const ANSWER_METADATA = {
  reply_to: '00000000-0000-0000-0004-000000000001',
  agent: AGENT,
  routed_by: 'explicit',
  provider: 'anthropic',
  model: MODEL,
  fallback_reason: null,
  finish: 'stop',
  usage: { input_tokens: 2600, output_tokens: 12, cost_usd: 0.00798 },
  tool_calls: [],
  pending_approvals: [],
  transcript: [{ role: 'assistant', content: [{ type: 'text', text: REPLY_TEXT }] }],
};

/** The final answer's llm_usage row (llm-manager.ts rowOf, deferred to the answer's statement). */
function usageRow(session: string, user: string, callId: string, createdAt: Date): UsageRow {
  return {
    provider: 'anthropic',
    model: MODEL,
    purpose: 'chat',
    department: AGENT,
    userId: user,
    source: 'api',
    sessionId: session,
    callId,
    attempt: 1,
    status: 'ok',
    errorKind: null,
    errorMessage: null,
    fallbackReason: null,
    inputTokens: 2600,
    outputTokens: 12,
    costUsd: '0.007980',
    latencyMs: 1,
    // A REST turn asks for the whole answer (ADR 0008): no time to first byte.
    ttfbMs: null,
    createdAt,
  };
}

/** The items of one turn as each statement's JSON parameter holds them. */
function leaseItem(n: number, v: number): LeaseInsertValues {
  return {
    user_id: userId((n % USERS) + 1),
    session_id: sessionId(n),
    content: USER_TEXT,
    client_message_id: null,
    metadata: USER_METADATA,
    token: visitId('0002', v, n),
    leaseMs: LEASE_MS,
  };
}
function answerItem(n: number, v: number, createdAt: Date): AnswerValues {
  const user = userId((n % USERS) + 1);
  return {
    user_id: user,
    session_id: sessionId(n),
    content: REPLY_TEXT,
    metadata: ANSWER_METADATA,
    agent: AGENT,
    token: visitId('0002', v, n),
    usage: [usageRow(sessionId(n), user, visitId('0003', v, n), createdAt)],
  };
}

/** Placeholders in the JSON templates, replaced per session by the script's select. */
const SLOT = {
  session: '@@session@@',
  user: '@@user@@',
  token: '@@token@@',
  call: '@@call@@',
  created: '@@created@@',
} as const;

/**
 * One element of each JSON parameter, as chat.repository.ts writes it (JSON.stringify, keys in
 * its order), with placeholders for the values of a turn. The sanity check compares the
 * parameters built from these with the ones the server sends.
 */
const TEMPLATES = {
  items: JSON.stringify({
    session_id: SLOT.session,
    user_id: SLOT.user,
    token: SLOT.token,
    lease_ms: LEASE_MS,
    content: USER_TEXT,
    client_message_id: null,
    metadata: USER_METADATA,
  }),
  answers: JSON.stringify({
    session_id: SLOT.session,
    user_id: SLOT.user,
    content: REPLY_TEXT,
    metadata: ANSWER_METADATA,
    agent: AGENT,
    token: SLOT.token,
  }),
  usage: JSON.stringify({
    ...usageColumns(usageRow(SLOT.session, SLOT.user, SLOT.call, new Date(0))),
    created_at: SLOT.created,
  }),
};

/**
 * A string literal for the script: an E'' literal without a colon (`\x3a`), since pgbench reads
 * `:name` as a variable anywhere in a command, inside literals too.
 */
const literal = (text: string) =>
  `E'${text.replaceAll('\\', '\\\\').replaceAll("'", "''").replaceAll(':', '\\x3a')}'`;

/** The server's two statements of a turn (chat.repository.ts), with their parameters' names. */
const TURN_STATEMENTS = [leaseAndInsertStatement, insertAnswersStatement] as const;

/**
 * A statement of the server in pgbench's form: each `$k` becomes `:<parameter name>`, which
 * pgbench sends as `$k` again (numbered in order of appearance, so each must appear once, in
 * order). Throws if the statement has anything pgbench would misread.
 */
function pgbenchStatement(statement: Prepared<unknown, string>): string {
  const { sql } = statement;
  if (/[;\n\\]/.test(sql) || /(?<!:):[A-Za-z_]/.test(sql))
    throw new Error(`${statement.name}: its SQL has a ';', a newline, a '\\' or a ':name'`);
  const seen: number[] = [];
  const text = sql.replace(/\$(\d+)/g, (_, k: string) => {
    const slot = statement.slots[Number(k) - 1];
    if (!slot || !('key' in slot)) throw new Error(`${statement.name}: $${k} is not a parameter`);
    seen.push(Number(k));
    return `:${slot.key}`;
  });
  if (seen.join() !== statement.slots.map((_, i) => i + 1).join())
    throw new Error(`${statement.name}: parameters ${seen} are not $1..$n, once each, in order`);
  if (pgbenchForm(text).text !== sql)
    throw new Error(`${statement.name}: pgbench would not send the server's SQL`);
  return text;
}

/** A command as pgbench sends it in -M extended and -M prepared: `:name` becomes `$k`. */
function pgbenchForm(command: string): { text: string; names: string[] } {
  const names: string[] = [];
  const text = command.replace(/(?<!:):([A-Za-z_]\w*)/g, (_, name: string) => {
    names.push(name);
    return `$${names.length}`;
  });
  return { text, names };
}

/** The turns of one pgbench transaction: their session numbers and their visit. */
interface TurnScript {
  script: string;
  /** The select that builds the parameters (pgbench form, without \gset). */
  parameters: string;
  /** The two statements of the server (pgbench form). */
  statements: string[];
  /** Visits of a client before it comes back to its first sessions. */
  visits: number;
  /** Each \set of a visit, mirrored: the sessions of client `c` at its turn `turn`. */
  sessionsOf: (client: number, turn: number) => { n0: number; v: number; sessions: number[] };
}

/**
 * One pgbench transaction: `batch` chat turns, as the server sends them for turns in existing
 * sessions that name their agent, with no client_message_id (as bench/chat.bench.ts's turns):
 *   1. leaseAndInsertUserMessages  server/src/chat/chat.repository.ts (leaseAndInsertStatement:
 *                                  takes each session's free lease, inserts the user message
 *                                  into each leased session, returns the sessions and their
 *                                  earlier messages; parameter `items`, a JSON array)
 *   2. insertAnswersAndEndTurns    chat.repository.ts (insertAnswersStatement: inserts the turns'
 *                                  llm_usage rows, deferred by the model call, updates each
 *                                  session and gives its lease back, inserts the answers;
 *                                  parameters `answers` and `usage`, JSON arrays)
 * The SQL is the server's own, imported (pgbenchStatement); each autocommits, as in the server.
 * Under load the server's group commit (turn-statements.ts, docs/adr/0009) gives each
 * statement the turns ready at the same moment, one element each; a lone turn is an array of
 * one. Here each statement carries `batch` elements: `batch` different sessions of the client,
 * ordered by user then session as the server orders them.
 *
 * pgbench has no string variables, so the JSON parameters are built by a select whose columns
 * `\gset` into the variables `items`, `answers` and `usage` (the templates above, a placeholder
 * replaced per session). It runs when a client moves to its next sessions, once every
 * `sessionTurns` transactions: the token and the model call id stay the same during a visit (the
 * lease is given back at every turn, so the statements do the same work), the usage row's
 * created_at is the visit's start. That select is the one statement the server does not send:
 * a one-row select over `batch` generated rows, no table read, once per sessionTurns x batch
 * turns.
 *
 * Client c visits sessions c+1+clients*k, with k = v*batch .. v*batch+batch-1 at visit
 * v = (turn / sessionTurns) % visits (`turn` is a per-client variable that persists across
 * transactions, started by -D turn=-1), so histories hold 0 to sessionTurns-1 earlier turns, no
 * two clients share a session and no statement names a session twice.
 */
function turnScript(clients: number, sessionTurns: number, batch: number): TurnScript {
  const visits = Math.floor(SESSIONS / clients);
  if (visits < 1) throw new Error(`${clients} clients: more than the ${SESSIONS} sessions`);
  const [lease, answers] = TURN_STATEMENTS.map(pgbenchStatement);
  const keys = TURN_STATEMENTS.flatMap((s) =>
    s.slots.map((slot) => ('key' in slot ? slot.key : '')),
  );
  if (keys.join() !== Object.keys(TEMPLATES).join())
    throw new Error(`the turn statements' parameters are ${keys}, not ${Object.keys(TEMPLATES)}`);
  const fill = (template: string, values: Partial<Record<keyof typeof SLOT, string>>) => {
    let expr = literal(template);
    for (const [slot, value] of Object.entries(values))
      expr = `replace(${expr}, '${SLOT[slot as keyof typeof SLOT]}', ${value})`;
    return expr;
  };
  const array = (element: string) => `'[' || string_agg(${element}, ',' order by u, s) || ']'`;
  const ids = { session: 's::text', user: 'u::text', token: 't::text' };
  const isoMs = literal('YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
  const parameters = [
    `select ${array(fill(TEMPLATES.items, ids))} as items,`,
    `${array(fill(TEMPLATES.answers, ids))} as answers,`,
    `${array(fill(TEMPLATES.usage, { ...ids, call: 'c::text', created: 'd' }))} as usage`,
    `from (select ${sessionUuid('n')} as s, ${userUuid(`(n % ${USERS} + 1)`)} as u,`,
    `${visitUuid('0002', 'v', 'n')} as t, ${visitUuid('0003', 'v', 'n')} as c,`,
    `to_char(clock_timestamp() at time zone 'UTC', ${isoMs}) as d`,
    `from (select :n0::int + ${clients} * j as n, :v::int as v`,
    `from generate_series(0, ${batch - 1}) j) k) x`,
  ].join(' ');
  const script = `\\set turn :turn + 1
\\if :turn % ${sessionTurns} = 0
\\set n0 :client_id + 1 + ${clients * batch} * ((:turn / ${sessionTurns}) % ${visits})
\\set v (:turn / ${sessionTurns}) % 10000
${parameters} \\gset
\\endif
${lease};
${answers};
`;
  const sessionsOf = (client: number, turn: number) => {
    const visit = Math.floor(turn / sessionTurns);
    const n0 = client + 1 + clients * batch * (visit % visits);
    const sessions = Array.from({ length: batch }, (_, j) => n0 + clients * j);
    return { n0, v: visit % 10_000, sessions };
  };
  return { script, parameters, statements: [lease!, answers!], visits, sessionsOf };
}

const SCRIPT_VARIABLES = new Set(['turn', 'client_id', 'n0', 'v', ...Object.keys(TEMPLATES)]);

/** Every `:name` in the script is one of its variables (a literal could slip one in). */
function checkScriptVariables(script: string): void {
  for (const m of script.matchAll(/(?<!:):([A-Za-z_]\w*)/g))
    if (!SCRIPT_VARIABLES.has(m[1]!)) throw new Error(`pgbench script: stray variable :${m[1]}`);
}

/**
 * Within each visit no session twice, no session of another client, and every session seeded,
 * over a whole cycle of each client's visits (the arithmetic of the script's \set lines).
 */
function checkRotation(t: TurnScript, clients: number, sessionTurns: number, sessions: number) {
  const owner = new Map<number, number>();
  for (let client = 0; client < clients; client++)
    for (let visit = 0; visit < t.visits; visit++) {
      const { sessions: visited } = t.sessionsOf(client, visit * sessionTurns);
      if (new Set(visited).size !== visited.length)
        throw new Error(`pgbench script: client ${client} names a session twice: ${visited}`);
      for (const n of visited) {
        if (n < 1 || n > sessions) throw new Error(`pgbench script: session ${n} is not seeded`);
        if ((owner.get(n) ?? client) !== client)
          throw new Error(`pgbench script: session ${n} is shared by two clients`);
        owner.set(n, client);
      }
    }
}

const seedSql = (sessions: number) => `
insert into users (id, email, password_hash, name, department, role)
select ${userUuid('u')}, 'ceiling-' || u || '@bench.invalid', 'x', 'Bench User ' || u, 'sales', 'sales_rep'
  from generate_series(1, ${USERS}) u;
insert into chat_sessions (id, user_id, title, agent)
select ${sessionUuid('n')}, ${userUuid(`(n % ${USERS} + 1)`)}, 'Bench session', 'sales'
  from generate_series(1, ${sessions}) n;
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
  /** Turns per transaction: elements of each statement's JSON arrays. */
  batch: number;
  duration_s: number;
  /** pgbench's transactions per second (each `batch` turns), and the turns per second. */
  tps: number;
  turns_per_s: number;
  /** Per transaction (both statements, `batch` turns). */
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
    const tps = num(/tps = ([\d.]+)/);
    return {
      mode,
      clients,
      batch: PG_BATCH,
      duration_s: PG_S,
      tps: Math.round(tps),
      turns_per_s: Math.round(tps * PG_BATCH),
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
  batch: number;
  client_message_id: string;
  statements: string[];
  script: string;
  runs: PgRun[];
}

/** The first place two texts part (the sanity check's message). */
function firstDifference(a: string, b: string): string {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return `at ${i}: ${JSON.stringify(a.slice(Math.max(0, i - 40), i + 40))} against ${JSON.stringify(b.slice(Math.max(0, i - 40), i + 40))}`;
}

/**
 * The turn's statements checked once, before the runs, on client 0's first sessions:
 *   - the script's statements are the server's SQL as pgbench sends it (pgbenchStatement);
 *   - the parameters the script's select builds are, byte for byte, the ones the server sends
 *     for the same turns: leaseAndInsertUserMessages and insertAnswersAndEndTurns run through
 *     the server's pool, which records what they send (name, text, values);
 *   - those turns lease and store all `batch` sessions and give every lease back;
 *   - the script's two statements, run as pgbench runs them (`:name` as `$k`) for the visit's
 *     next turn, do the same, with the first turn's messages as history.
 */
async function checkTurnStatements(database: Database, monitor: pg.Client, t: TurnScript) {
  if (database.raw.kind !== 'postgres') throw new Error('expected PostgreSQL');
  const pool = database.raw.pool;
  const fail = (what: string) => {
    throw new Error(`turn statements: ${what}`);
  };
  const run = async (command: string, vars: Record<string, unknown>) => {
    const { text, names } = pgbenchForm(command);
    return monitor.query(
      text,
      names.map((name) => (name in vars ? vars[name] : fail(`no value for :${name}`))),
    );
  };
  const count = async (sql: string) =>
    (await monitor.query<{ n: number }>(`select (${sql})::int as n`)).rows[0]!.n;
  const leasesHeld = () => count('select count(*) from chat_sessions where turn_token is not null');

  await monitor.query(`set search_path = "${schema}"`);
  const { n0, v, sessions } = t.sessionsOf(0, 0);
  const batch = sessions.length;
  const built = (await run(t.parameters, { n0, v })).rows[0] as Record<
    keyof typeof TEMPLATES,
    string
  >;

  // The server's own functions for the same turns, through a pool that records what it sends.
  const sent = new Map<string, { text: string; values: unknown[] }>();
  const query = pool.query;
  pool.query = ((q: unknown, ...rest: unknown[]) => {
    if (q && typeof q === 'object' && 'name' in q && 'text' in q && 'values' in q)
      sent.set(String(q.name), { text: String(q.text), values: q.values as unknown[] });
    return (query as (...args: unknown[]) => unknown).call(pool, q, ...rest);
  }) as typeof pool.query;
  // Ordered as the server orders a statement's items (the usage rows follow the answers' order).
  const byUser = (n: number) => `${userId((n % USERS) + 1)} ${sessionId(n)}`;
  const ordered = [...sessions].sort((a, b) => (byUser(a) < byUser(b) ? -1 : 1));
  const createdAt = new Date((JSON.parse(built.usage) as { created_at: string }[])[0]!.created_at);
  let leased: Awaited<ReturnType<typeof leaseAndInsertUserMessages>>;
  let stored: Awaited<ReturnType<typeof insertAnswersAndEndTurns>>;
  try {
    leased = await leaseAndInsertUserMessages(
      database.db,
      sessions.map((n) => leaseItem(n, v)),
    );
    stored = await insertAnswersAndEndTurns(
      database.db,
      ordered.map((n) => answerItem(n, v, createdAt)),
    );
  } finally {
    pool.query = query;
  }
  const script = [built.items, built.answers, built.usage];
  const server = TURN_STATEMENTS.flatMap((s) => {
    const call = sent.get(s.name) ?? fail(`${s.name} was not sent by name`);
    if (call.text !== s.sql) fail(`${s.name}: the server sent other SQL than the statement's`);
    return call.values;
  });
  if (server.length !== script.length) fail(`the server sent ${server.length} parameters`);
  server.forEach((value, i) => {
    if (value !== script[i])
      fail(
        `parameter ${Object.keys(TEMPLATES)[i]} is not what the server sends: ${firstDifference(String(value), script[i]!)}`,
      );
  });
  const turns = [...leased.values()];
  if (turns.length !== batch || turns.some((x) => !x.message || x.earlier.length !== 0))
    fail(`${turns.length} of ${batch} sessions leased with their message stored`);
  if (stored.size !== batch) fail(`${stored.size} of ${batch} answers stored`);
  if ((await leasesHeld()) !== 0) fail('the server did not give every lease back');

  // The script's statements as pgbench sends them: the visit's next turn, same parameters.
  const [lease, answers] = t.statements;
  const leaseRows = (await run(lease!, built)).rowCount;
  // Each session, its two earlier messages, the new one.
  if (leaseRows !== 4 * batch)
    fail(`the lease statement returned ${leaseRows} rows, not ${4 * batch}`);
  const answerRows = (await run(answers!, built)).rowCount;
  if (answerRows !== batch) fail(`the answers statement returned ${answerRows} rows, not ${batch}`);
  if ((await leasesHeld()) !== 0) fail("the script's statements did not give every lease back");
  const usage = await count('select count(*) from llm_usage');
  const messages = await count('select count(*) from conversations');
  if (usage !== 2 * batch || messages !== 4 * batch)
    fail(`${usage} usage rows and ${messages} messages after two turns of ${batch} sessions`);
  await monitor.query('reset search_path');
}

/** Phase C: a migrated, seeded schema, the script checked once by hand, then the pgbench runs. */
async function postgresPhase(scriptFiles: string[]): Promise<PgPhase> {
  const pgbench = pgbenchVersion()!;
  const sessions = SESSIONS * PG_BATCH;
  const sample = turnScript(PG_CLIENTS[0]!, SESSION_TURNS, PG_BATCH);
  const database = await createDatabase({ url: DATABASE_URL, schema });
  const monitor = new pg.Client({ connectionString: DATABASE_URL });
  try {
    const applied = await migrate(database);
    log(`schema ${schema}: ${applied.applied.length} migrations applied`);
    if (database.raw.kind !== 'postgres') throw new Error('expected PostgreSQL');
    await database.raw.pool.query(seedSql(sessions));
    await monitor.connect();
    // Sanity: the script sends the server's statements with the server's parameters.
    await checkTurnStatements(database, monitor, sample);
  } catch (err) {
    await monitor.end().catch(() => {});
    throw err;
  } finally {
    await database.close();
  }

  try {
    const setting = async (name: string) =>
      (await monitor.query<{ v: string }>(`select current_setting($1) as v`, [name])).rows[0]!.v;
    const serverVersion = await setting('server_version');
    const synchronousCommit = await setting('synchronous_commit');

    const runs: PgRun[] = [];
    for (const mode of PG_MODES)
      for (const clients of PG_CLIENTS) {
        const turns = turnScript(clients, SESSION_TURNS, PG_BATCH);
        checkScriptVariables(turns.script);
        checkRotation(turns, clients, SESSION_TURNS, sessions);
        const file = join(os.tmpdir(), `ceiling-${runId}-c${clients}.sql`);
        if (!scriptFiles.includes(file)) scriptFiles.push(file);
        writeFileSync(file, turns.script);
        await resetSchema();
        log(`C. PostgreSQL: pgbench -M ${mode} -c ${clients}, batch ${PG_BATCH}, ${PG_S}s`);
        const run = await pgbenchRun(mode, clients, file, monitor);
        log(
          `   ${run.tps} tx/s (${run.turns_per_s} turns/s), latency avg ${run.latency_avg_ms} ms, PostgreSQL ${run.postgres_cpu_us_per_turn ?? '?'} µs/turn (backends ${run.postgres_backends_cpu_us_per_turn})`,
        );
        runs.push(run);
      }
    return {
      pgbench,
      server_version: serverVersion,
      synchronous_commit: synchronousCommit,
      schema,
      seed: { users: USERS, sessions },
      session_turns: SESSION_TURNS,
      batch: PG_BATCH,
      client_message_id: 'null (as bench/chat.bench.ts sends none)',
      statements: TURN_STATEMENTS.map(
        (s) =>
          `${s.name} (server/src/chat/chat.repository.ts), parameters ${s.slots.map((x) => ('key' in x ? x.key : '?'))}`,
      ),
      script: sample.script,
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
  if (!Number.isInteger(PG_BATCH) || PG_BATCH < 1 || PG_BATCH > TURN_BATCH_MAX) {
    log(
      `BENCH_PG_BATCH must be a whole number from 1 to ${TURN_BATCH_MAX} (the server's most turns per statement), not ${env.BENCH_PG_BATCH}`,
    );
    return 1;
  }
  // The pgbench scripts can be made (before A and B, which take a while).
  for (const clients of PG_CLIENTS)
    checkRotation(
      turnScript(clients, SESSION_TURNS, PG_BATCH),
      clients,
      SESSION_TURNS,
      SESSIONS * PG_BATCH,
    );
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
        pg_batch: PG_BATCH,
        session_turns: SESSION_TURNS,
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
            what: `pgbench running a chat turn's two statements as the server sends them (leaseAndInsertUserMessages: lease, user message, history; insertAnswersAndEndTurns: usage row, answer, lease given back), each autocommitted, each with a JSON array of ${PG_BATCH} turn${PG_BATCH === 1 ? '' : 's'} (${PG_BATCH} sessions of the client) per transaction; a select builds the arrays once every ${SESSION_TURNS} transactions (the one statement the server does not send)`,
            tps_means: `pgbench's transactions per second; turns_per_s = tps x batch (${PG_BATCH}); latency_avg_ms is per transaction`,
            postgres_cpu_us_per_turn_means:
              "CPU time (/proc) of the run's backends (pgbench's connections) and of PostgreSQL's background processes (WAL writer, checkpointer, background writer, autovacuum launcher and workers running at the window's start) over a window inside the run (after connecting, before the end), divided by the turns stored in that window (llm_usage id sequence: one row per turn)",
            postgres_backends_means: "the run's own backends only",
            postgres_background_means:
              "PostgreSQL's background processes only (shared with any other database work)",
            pgbench_means:
              "pgbench's own CPU per turn (the stand-in for the server's database client)",
            machine_means: 'every process on the machine (/proc/stat) per turn in the window',
            modes_mean:
              'extended: each statement parsed and planned on every run (unnamed statements, what node-postgres does for a parameterised query without a name); prepared: named statements, parsed once per connection (what the server does for these statements: runPrepared names them)',
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
          ? `C, -M prepared, the lowest measured (${pgFloor.clients} clients, ${pgFloor.batch} turn${pgFloor.batch === 1 ? '' : 's'} per statement): the run's backends + PostgreSQL's background processes, per turn`
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
          'batch',
          'tx/s',
          'turns/s',
          'latency avg ms',
          'PostgreSQL',
          'backends',
          'pgbench',
          'machine (busy)',
        ],
        ...pgPhase.runs.map((r) => [
          `pgbench -M ${r.mode}`,
          String(r.clients),
          String(r.batch),
          q(r.tps),
          q(r.turns_per_s),
          String(r.latency_avg_ms),
          q(r.postgres_cpu_us_per_turn),
          q(r.postgres_backends_cpu_us_per_turn),
          q(r.pgbench_cpu_us_per_turn),
          `${q(r.machine_cpu_us_per_turn)} (${r.machine_busy_percent ?? '?'}%)`,
        ]),
      ]);
      console.log(
        `${pgPhase.pgbench}, server ${pgPhase.server_version}, synchronous_commit ${pgPhase.synchronous_commit}; ${pgPhase.batch} turn${pgPhase.batch === 1 ? '' : 's'} per statement (BENCH_PG_BATCH), latency per transaction; PostgreSQL = the run's backends + background processes (WAL writer, checkpointer, autovacuum).`,
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
        pgFloor
          ? `-M prepared, ${pgFloor.clients} clients, batch ${pgFloor.batch} (lowest)`
          : 'skipped',
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
