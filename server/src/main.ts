/**
 * Process entry. `--role=all|api|worker|scheduler` (or PROCESS_ROLE): `all` runs everything
 * in one process on embedded defaults; the others need DATABASE_URL (and REDIS_URL).
 * With `server.workers` > 1 (WEB_CONCURRENCY) and a role that serves the API, this process
 * forks that many API processes sharing the port (infra/api-workers.ts) and keeps the rest of
 * its role (`all`: the job worker and the scheduler) for itself.
 */
import cluster from 'node:cluster';
import type { Logger } from 'pino';
import { buildApp } from './app.ts';
import { type ResolvedConfig, servesApi } from './config/config.schema.ts';
import { ConfigError, loadConfig } from './config/load-config.ts';
import { createContainer, openDatabase, registerSchedules } from './container.ts';
import { migrate } from './db/migrate.ts';
import {
  type ApiWorkers,
  onShutdownRequest,
  reportStartFailure,
  startApiWorkers,
} from './infra/api-workers.ts';
import { lockDataDir } from './infra/data-dir-lock.ts';
import { createLoggers } from './logging/logger.ts';
import { bootstrapAdmin } from './users/bootstrap-admin.ts';

/** Start-up failed: say why (an API worker says it through the primary, once) and exit 1. */
async function fail(message: string): Promise<never> {
  if (!(await reportStartFailure(message))) process.stderr.write(`${message}\n`);
  process.exit(1);
}

function roleFromArgs(): string | undefined {
  const arg = process.argv.slice(2).find((a) => a.startsWith('--role='));
  return arg?.slice('--role='.length);
}

async function main(): Promise<void> {
  let config: ResolvedConfig;
  try {
    const role = roleFromArgs();
    config = loadConfig({ env: role ? { ...process.env, PROCESS_ROLE: role } : process.env });
  } catch (err) {
    if (err instanceof ConfigError) return fail(err.message);
    throw err;
  }
  const role = config.process_role;
  const supervises = cluster.isPrimary && config.server.workers > 1 && servesApi(role);
  if (supervises && role === 'api') return superviseOnly(config);
  const runs = (r: string) => (role === 'all' || role === r) && !(supervises && r === 'api');

  let releaseLock = () => {};
  if (!config.database.url) {
    try {
      releaseLock = lockDataDir(config.data_dir);
    } catch (err) {
      return fail(`error: ${(err as Error).message}`);
    }
  }

  const database = await openMigrated(config, releaseLock);
  const container = await createContainer(config, { database }).catch(async (err: Error) => {
    await database.close();
    releaseLock();
    return fail(`error: ${err.message}`);
  });
  const log = container.loggers.app;
  if (config.server.workers > 1 && !servesApi(role)) {
    log.warn(
      { role, workers: config.server.workers },
      'server.workers (WEB_CONCURRENCY) applies to API processes; ignored for this role',
    );
  }

  if (runs('api')) {
    const admin = await bootstrapAdmin(database, container.passwords, config.admin);
    if (admin.created) {
      log.info({ email: admin.email }, 'first admin user created');
      if (admin.generatedPassword) {
        // Straight to the terminal, once; never through the logger.
        process.stdout.write(
          `\n  First admin created: ${admin.email}\n  Password (shown once, change it after logging in): ${admin.generatedPassword}\n\n`,
        );
      }
    }
  }

  let app: Awaited<ReturnType<typeof buildApp>> | undefined;
  if (runs('api')) {
    app = await buildApp(container);
    try {
      await app.listen({ host: config.server.host, port: config.server.port });
    } catch (err) {
      return fail(
        `error: cannot listen on ${config.server.host}:${config.server.port}: ${(err as Error).message}`,
      );
    }
  }
  let workers: ApiWorkers | undefined;
  let workersPort: number | undefined;
  const workersOptions = workerOptions(config, log);
  if (supervises) {
    workers = startApiWorkers(workersOptions);
    workersPort = await workers.ready.catch(async (err: Error) => {
      await container.close();
      await database.close();
      return fail(`error: ${err.message}`);
    });
  }
  if (runs('worker')) await container.queue.startWorker();
  if (runs('scheduler')) {
    await registerSchedules(container);
    await container.queue.startScheduler();
  }

  const engines = `${database.engine}${config.redis.url ? ' + redis' : ', in-process queue and pub/sub'}`;
  if (app || workers) {
    const address = app?.server.address();
    const port =
      workersPort ?? (typeof address === 'object' && address ? address.port : config.server.port);
    announce(config, log, port, engines);
  } else if (!cluster.isWorker) {
    log.info({ role, engines }, 'process started');
  }

  let clean = true;
  const stop = onStopSignal(async (signal) => {
    log.info({ signal }, 'shutting down: draining requests');
    container.draining.value = true;
    // The API workers drain on their own, within their stop limit; this process waits for them.
    const limitMs = Math.max(
      config.server.shutdown_timeout_ms,
      workers ? workersOptions.stopTimeoutMs + 1_000 : 0,
    );
    const force = setTimeout(() => {
      log.error('shutdown timed out; exiting');
      workers?.kill();
      container.loggers.flush();
      process.exit(1);
    }, limitMs);
    force.unref();
    try {
      await Promise.all([
        workers?.stop(signal).then((stopped) => {
          clean &&= stopped;
        }),
        (async () => {
          // SIGTERM (a supervisor or load balancer stopping us): keep serving for a moment
          // with /health at 503, so the balancer stops sending new work before the listener
          // closes.
          if (signal === 'SIGTERM' && app && config.server.drain_delay_ms > 0) {
            await new Promise((resolve) => setTimeout(resolve, config.server.drain_delay_ms));
          }
          // Turns still running are aborted and stored as failed (their senders get 503 or an
          // error event); then the listener closes and sockets close with 1001.
          await container.chat.shutdown(Math.floor(config.server.shutdown_timeout_ms / 2));
          await app?.close();
        })(),
      ]);
      await container.close();
      await database.close();
    } finally {
      releaseLock();
    }
    log.info('shutdown complete');
    container.loggers.flush();
    process.exit(clean ? 0 : 1);
  });
  if (workers)
    stopWhenWorkersFail(workers, log, () => {
      clean = false;
      stop('SIGTERM');
    });
}

/** When the API workers give up (too many early deaths): say why, then `stop`. */
function stopWhenWorkersFail(workers: ApiWorkers, log: Logger, stop: () => void) {
  void workers.failed.then((err) => {
    log.error(err.message);
    process.stderr.write(`error: ${err.message}\n`);
    stop();
  });
}

/**
 * Runs `stop` once: on SIGTERM, SIGINT, a stop request from the primary (an API worker), or a
 * call of the function returned. A signal may arrive twice (a terminal's Ctrl-C reaches the
 * process group, and tsx relays it to its child too): the first one counts, and the stop's own
 * time limit bounds the rest.
 */
function onStopSignal(stop: (signal: NodeJS.Signals) => Promise<void>) {
  let stopping = false;
  const once = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    void stop(signal);
  };
  process.on('SIGTERM', () => once('SIGTERM'));
  process.on('SIGINT', () => once('SIGINT'));
  onShutdownRequest(once);
  return once;
}

/**
 * The database, migrated; a failure ends the start with one line. An API worker only opens it:
 * its primary migrated before forking it.
 */
async function openMigrated(config: ResolvedConfig, releaseLock = () => {}) {
  const database = await openDatabase(config).catch((err: Error) =>
    fail(`error: cannot open the database: ${err.message}`),
  );
  if (cluster.isWorker) return database;
  try {
    await migrate(database);
  } catch (err) {
    await database.close();
    releaseLock();
    return fail(`error: ${(err as Error).message}`);
  }
  return database;
}

function workerOptions(config: ResolvedConfig, log: Logger) {
  return {
    count: config.server.workers,
    log,
    args: process.argv.slice(2),
    // Each worker waits drain_delay_ms, then up to shutdown_timeout_ms for its own drain.
    stopTimeoutMs: config.server.drain_delay_ms + config.server.shutdown_timeout_ms + 1_000,
  };
}

/** The banner, once: by the process that serves HTTP, or by the primary of API workers. */
function announce(config: ResolvedConfig, log: Logger, port: number, engines: string) {
  const role = config.process_role;
  const shownHost = ['0.0.0.0', '::'].includes(config.server.host)
    ? 'localhost'
    : config.server.host;
  const url = `http://${shownHost}:${port}`;
  const processes = config.server.workers > 1 ? `; ${config.server.workers} API processes` : '';
  log.info({ role, url, engines, workers: config.server.workers }, 'server listening');
  if (cluster.isWorker) return;
  process.stdout.write(
    `Mezzofy AI Assistant (${role}; ${engines}${processes}) listening on ${url}  — docs: ${url}/docs\n`,
  );
}

/**
 * `--role=api` with several workers: this process only starts and watches them. It migrates
 * first, so that a database that cannot be reached or migrated is reported once; each worker
 * then creates the first admin if none exists (once: the unique e-mail settles a race), as a
 * lone API process does.
 */
async function superviseOnly(config: ResolvedConfig): Promise<void> {
  await (await openMigrated(config)).close();
  const loggers = createLoggers({ level: config.logging.level, dir: config.logging.dir });
  const log = loggers.app;
  const workers = startApiWorkers(workerOptions(config, log));
  const port = await workers.ready.catch((err: Error) => fail(`error: ${err.message}`));
  announce(config, log, port, `postgres + redis`);
  let clean = true;
  const stop = onStopSignal(async (signal) => {
    log.info({ signal }, 'shutting down: stopping the API workers');
    clean = (await workers.stop(signal)) && clean;
    log.info('shutdown complete');
    loggers.flush();
    process.exit(clean ? 0 : 1);
  });
  stopWhenWorkersFail(workers, log, () => {
    clean = false;
    stop('SIGTERM');
  });
}

main().catch((err) => fail(`fatal: ${(err as Error).stack ?? err}`));
