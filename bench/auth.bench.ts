/**
 * `npm run bench`: the authenticated hot path (GET /auth/me) and the login rate, against the
 * real server started as a child process on PostgreSQL + Redis, with production logging
 * (info level, access log on; the child's stdout goes to a file).
 *
 * Each run gets its own PostgreSQL schema (dropped afterwards) and Redis key prefix (deleted
 * afterwards). Only 127.0.0.1 is targeted. Any non-2xx response, error or timeout fails the
 * run (exit 1). Missing a performance target is reported; set BENCH_ENFORCE_TARGETS=1 to make
 * it fail the run too (exit 2).
 *
 * Environment (all optional):
 *   BENCH_DATABASE_URL   default postgres://postgres@127.0.0.1:5432/test
 *   BENCH_REDIS_URL      default redis://127.0.0.1:6379
 *   BENCH_DURATION_S     GET /auth/me measurement, default 15 (after BENCH_WARMUP_S, default 3)
 *   BENCH_LOGIN_S        login measurement, default 10
 *   BENCH_CONNECTIONS    default 50 (one user, and one token, per connection)
 *   BENCH_ROLE           process role of the server, default all
 *   BENCH_WORKERS        API processes of the server (WEB_CONCURRENCY), default: one per core
 *   BENCH_PROFILE=1      run the server with --cpu-prof; profiles land in bench/results/profiles
 *   BENCH_KEEP_LOG=1     keep the server's stdout (the logs) instead of deleting it
 */
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  api,
  apiProcessPid,
  BENCH_PASSWORD,
  badResponses,
  benchServerProcess,
  benchUsers,
  type ChildServer,
  countAccessLines,
  freePort,
  loadAverage,
  log,
  openBenchRun,
  printTable,
  processRssMb,
  processTreeCpuMs,
  redisCpuS as redisCpuSAt,
  runBench,
  runCannon,
  serverNodeArgs,
  startBenchServer,
  summarize,
  verdict,
} from './harness.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = join(ROOT, 'bench', 'results');

const env = process.env;
const DATABASE_URL = env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DURATION_S = Number(env.BENCH_DURATION_S ?? 15);
const WARMUP_S = Number(env.BENCH_WARMUP_S ?? 3);
const LOGIN_S = Number(env.BENCH_LOGIN_S ?? 10);
const CONNECTIONS = Number(env.BENCH_CONNECTIONS ?? 50);
const USERS = CONNECTIONS;
const LOGIN_CONCURRENCY = 4;
const PROFILE = env.BENCH_PROFILE === '1';
const SERVER = benchServerProcess(env);

/** Raised for the run so that 50 users at full speed never see a 429: a config, not a trick. */
const RATE_LIMIT = { user_points: 100_000_000, ip_points: 1_000_000, window_s: 60 };

const TARGETS = { meRps: 10_000, meP99Ms: 10 };

const redisCpuS = () => redisCpuSAt(REDIS_URL);

async function main(): Promise<number> {
  const started = new Date();
  const loadBefore = loadAverage();
  mkdirSync(RESULTS, { recursive: true });
  const port = await freePort();
  const profileDir = join(RESULTS, 'profiles');
  const run = await openBenchRun(DATABASE_URL, REDIS_URL);
  const { schema, keyPrefix, stdoutFile } = run;

  log(`load average before: ${loadBefore} (${os.cpus().length} cpus)`);
  log(`schema ${schema}, redis prefix ${keyPrefix}, port ${port}`);
  let server: ChildServer | undefined;
  let exitCode = 0;
  try {
    const bench = await startBenchServer({
      run,
      port,
      root: ROOT,
      entry: SERVER.entry,
      rateLimit: RATE_LIMIT,
      env: SERVER.env,
      profileDir: PROFILE ? profileDir : undefined,
      table: 'users',
    });
    server = bench.server;
    const { base, health } = bench;
    const { users, tokens } = await benchUsers(bench, USERS, LOGIN_CONCURRENCY);
    const emails = users.map((u) => u.email);
    const check = await api<{ email: string }>(base, 'GET', '/auth/me', undefined, tokens[7]);
    if (check.status !== 200 || check.body.email !== emails[7])
      throw new Error(`GET /auth/me sanity check failed: ${check.status}`);

    // GET /auth/me: one connection per user, each with its own token.
    const meOptions = (duration: number) => {
      let next = 0;
      return {
        url: `${base}/auth/me`,
        connections: CONNECTIONS,
        duration,
        setupClient: (client: { setHeaders(h: Record<string, string>): void }) => {
          client.setHeaders({ authorization: `Bearer ${tokens[next++ % tokens.length]}` });
        },
      };
    };
    log(`warm-up ${WARMUP_S}s`);
    const warm = summarize(await runCannon(meOptions(WARMUP_S)));
    const warmBad = badResponses(warm);
    if (warmBad) throw new Error(`warm-up: ${warmBad}`);
    log(`GET /auth/me: ${CONNECTIONS} connections, ${DURATION_S}s`);
    // Monotonic clock, in µs: the same clock V8 stamps CPU profile samples with.
    const meWindowUs = { from: Number(process.hrtime.bigint() / 1000n), to: 0 };
    const redisBefore = await redisCpuS();
    const cpuBefore = processTreeCpuMs(bench.server.child.pid);
    const clientBefore = process.cpuUsage();
    const me = summarize(await runCannon(meOptions(DURATION_S)));
    const client = process.cpuUsage(clientBefore);
    const cpuAfter = processTreeCpuMs(bench.server.child.pid);
    // The load generator (autocannon, in this process) shares the cores with the server.
    const clientCpuPct = Math.round((client.user + client.system) / 10 / (me.durationS * 1000));
    const redisAfter = await redisCpuS();
    const redisCpuUsPerRequest =
      redisBefore !== undefined && redisAfter !== undefined
        ? Math.round((1e6 * (redisAfter - redisBefore)) / me.totalRequests)
        : undefined;
    meWindowUs.to = Number(process.hrtime.bigint() / 1000n);
    // Server CPU per request: much less sensitive to other load on the machine than req/s.
    const cpuUsPerRequest =
      cpuBefore !== undefined && cpuAfter !== undefined
        ? Math.round((1000 * (cpuAfter - cpuBefore)) / me.totalRequests)
        : undefined;
    const serverCpuPct =
      cpuBefore !== undefined && cpuAfter !== undefined
        ? Math.round((100 * (cpuAfter - cpuBefore)) / (me.durationS * 1000))
        : undefined;

    // Logins: correct passwords, the 50 users in turn, 4 in flight. The lockout counts each
    // attempt until it succeeds, so no account here ever has more than one attempt open.
    log(`POST /auth/login: ${LOGIN_CONCURRENCY} connections, ${LOGIN_S}s`);
    let loginNext = 0;
    const login = summarize(
      await runCannon({
        url: `${base}/auth/login`,
        connections: LOGIN_CONCURRENCY,
        duration: LOGIN_S,
        timeout: 30,
        requests: [
          {
            method: 'POST',
            path: '/auth/login',
            headers: { 'content-type': 'application/json' },
            setupRequest: (req) => ({
              ...req,
              body: JSON.stringify({
                email: emails[loginNext++ % emails.length],
                password: BENCH_PASSWORD,
              }),
            }),
          },
        ],
      }),
    );

    const serverRssMb = processRssMb(bench.server.child.pid);
    await bench.server.stop();
    const accessLines = await countAccessLines(stdoutFile);
    const logBytes = statSync(stdoutFile).size;

    const problems = [badResponses(me), badResponses(login)].filter(Boolean) as string[];
    const meRpsPass = me.requestsPerSecond >= TARGETS.meRps;
    const meP99Pass = me.latencyMs.p99 <= TARGETS.meP99Ms;
    const expectedAccess = warm.totalRequests + me.totalRequests + login.totalRequests;

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
        rate_limit_config: {
          ...RATE_LIMIT,
          note: 'per-user and per-IP points raised via MEZZOFY__rate_limit__* so the run sees no 429; every request is still counted in Redis',
        },
      },
      me: {
        endpoint: 'GET /auth/me',
        connections: CONNECTIONS,
        users: USERS,
        warmup_s: WARMUP_S,
        duration_s: me.durationS,
        requests_per_s: me.requestsPerSecond,
        latency_ms: me.latencyMs,
        total_requests: me.totalRequests,
        server_cpu_us_per_request: cpuUsPerRequest,
        server_cpu_percent: serverCpuPct,
        redis_server_cpu_us_per_request: redisCpuUsPerRequest,
        client_cpu_percent: clientCpuPct,
        non_2xx: me.non2xx,
        errors: me.errors,
        timeouts: me.timeouts,
        status_codes: me.statusCodes,
      },
      login: {
        endpoint: 'POST /auth/login (correct passwords, the users in turn)',
        lockout_note:
          'the lockout counts an attempt before the password check and a successful login clears it; with 4 in flight over 50 users no account ever has more than one open attempt, far below the limits',
        connections: LOGIN_CONCURRENCY,
        duration_s: login.durationS,
        logins_per_s: login.requestsPerSecond,
        latency_ms: login.latencyMs,
        total_requests: login.totalRequests,
        non_2xx: login.non2xx,
        errors: login.errors,
        timeouts: login.timeouts,
      },
      targets: {
        me_requests_per_s: { target: `>= ${TARGETS.meRps}`, pass: meRpsPass },
        me_p99_ms: { target: `<= ${TARGETS.meP99Ms}`, pass: meP99Pass },
        only_2xx: { target: 'non-2xx = 0', pass: problems.length === 0 },
      },
      pass: meRpsPass && meP99Pass && problems.length === 0,
      ...(PROFILE
        ? {
            profile: {
              dir: profileDir,
              pid: apiProcessPid(bench.server.child.pid!),
              me_window_us: meWindowUs,
            },
          }
        : {}),
    };

    const stamp = started.toISOString().replaceAll(':', '-');
    const json = `${JSON.stringify(result, null, 2)}\n`;
    writeFileSync(join(RESULTS, `auth-${stamp}.json`), json);
    writeFileSync(join(RESULTS, 'auth-latest.json'), json);
    if (PROFILE)
      writeFileSync(
        join(profileDir, 'latest.json'),
        `${JSON.stringify({ pid: bench.server.child.pid, me_window_us: meWindowUs, run: stamp }, null, 2)}\n`,
      );

    const mark = (ok: boolean) => (ok ? 'pass' : 'FAIL');
    console.log('');
    printTable([
      ['metric', 'value', 'target'],
      [
        'GET /auth/me requests/s (avg)',
        String(me.requestsPerSecond),
        `>= ${TARGETS.meRps} ${mark(meRpsPass)}`,
      ],
      ['GET /auth/me latency p50 (ms)', String(me.latencyMs.p50), ''],
      ['GET /auth/me latency p97.5 (ms)', String(me.latencyMs.p97_5), ''],
      [
        'GET /auth/me latency p99 (ms)',
        String(me.latencyMs.p99),
        `<= ${TARGETS.meP99Ms} ${mark(meP99Pass)}`,
      ],
      ['GET /auth/me total requests', String(me.totalRequests), ''],
      [
        'server CPU per request (µs) / CPU %',
        `${cpuUsPerRequest ?? '?'} / ${serverCpuPct ?? '?'}%`,
        '(report)',
      ],
      ['redis-server CPU per request (µs)', `${redisCpuUsPerRequest ?? '?'}`, '(report)'],
      ['load generator (autocannon) CPU %', `${clientCpuPct}%`, '(report)'],
      [
        'GET /auth/me non-2xx / errors',
        `${me.non2xx} / ${me.errors + me.timeouts}`,
        `0 ${mark(!badResponses(me))}`,
      ],
      ['POST /auth/login logins/s', String(login.requestsPerSecond), '(report)'],
      [
        'POST /auth/login p50 / p99 (ms)',
        `${login.latencyMs.p50} / ${login.latencyMs.p99}`,
        '(report)',
      ],
      [
        'POST /auth/login non-2xx / errors',
        `${login.non2xx} / ${login.errors + login.timeouts}`,
        `0 ${mark(!badResponses(login))}`,
      ],
      ['access log lines written', String(accessLines), `>= ${expectedAccess}`],
    ]);
    console.log(
      `\nnode ${process.version}, ${os.cpus().length} cpus, load before ${loadBefore}; server: ${result.server.db_engine} + redis, rate limiter store ${result.server.rate_limiter_store}, log level info with access log.`,
    );
    console.log(
      `Rate limits raised for the run by config (MEZZOFY__rate_limit__user_points=${RATE_LIMIT.user_points}, ip_points=${RATE_LIMIT.ip_points}); every request is still counted in Redis.`,
    );
    console.log(`Results: bench/results/auth-${stamp}.json (and auth-latest.json)`);
    if (PROFILE) console.log(`CPU profile: ${profileDir}`);

    exitCode = verdict({
      problems: problems.length ? [`non-2xx responses: ${problems.join('; ')}`] : [],
      accessLines,
      expectedAccess,
      pass: result.pass,
    });
  } catch (err) {
    log(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
    exitCode = 1;
  } finally {
    await server?.stop().catch(() => {});
    await run.cleanup();
  }
  return exitCode;
}

runBench(main);
