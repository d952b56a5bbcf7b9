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
import type { ResolvedConfig } from './config/config.schema.ts';
import { ConfigError, loadConfig } from './config/load-config.ts';
import { createContainer, openDatabase, registerSchedules } from './container.ts';
import { migrate } from './db/migrate.ts';
import { type ApiWorkers, startApiWorkers } from './infra/api-workers.ts';
import { lockDataDir } from './infra/data-dir-lock.ts';
import { createLoggers } from './logging/logger.ts';
import { bootstrapAdmin } from './users/bootstrap-admin.ts';

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
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
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
  const role = config.process_role;
  const supervises = cluster.isPrimary && config.server.workers > 1 && role !== 'worker';
  if (supervises && role === 'api') return superviseOnly(config);
  const runs = (r: string) => (role === 'all' || role === r) && !(supervises && r === 'api');

  let releaseLock = () => {};
  if (!config.database.url) {
    try {
      releaseLock = lockDataDir(config.data_dir);
    } catch (err) {
      fail(`error: ${(err as Error).message}`);
    }
  }

  const database = await openDatabase(config).catch((err: Error) =>
    fail(`error: cannot open the database: ${err.message}`),
  );
  try {
    await migrate(database);
  } catch (err) {
    await database.close();
    releaseLock();
    fail(`error: ${(err as Error).message}`);
  }
  const container = await createContainer(config, { database }).catch(async (err: Error) => {
    await database.close();
    releaseLock();
    fail(`error: ${err.message}`);
  });
  const log = container.loggers.app;

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
    await app.listen({ host: config.server.host, port: config.server.port });
  }
  let workers: ApiWorkers | undefined;
  let workersPort: number | undefined;
  if (supervises) {
    workers = startApiWorkers(workerOptions(config, log));
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

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: draining requests');
    container.draining.value = true;
    const force = setTimeout(() => {
      log.error('shutdown timed out; exiting');
      container.loggers.flush();
      process.exit(1);
    }, config.server.shutdown_timeout_ms);
    force.unref();
    // SIGTERM (a supervisor or load balancer stopping us): keep serving for a moment with
    // /health at 503, so the balancer stops sending new work before the listener closes.
    if (signal === 'SIGTERM' && app && config.server.drain_delay_ms > 0) {
      await new Promise((resolve) => setTimeout(resolve, config.server.drain_delay_ms));
    }
    try {
      // The API workers drain the same way, each on its own.
      await workers?.stop(signal as NodeJS.Signals);
      // Turns still running are aborted and stored as failed (their senders get 503 or an
      // error event); then the listener closes and sockets close with 1001.
      await container.chat.shutdown(Math.floor(config.server.shutdown_timeout_ms / 2));
      await app?.close();
      await container.close();
      await database.close();
    } finally {
      releaseLock();
    }
    log.info('shutdown complete');
    container.loggers.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
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
 * `--role=api` with several workers: this process only starts and watches them. Each worker
 * migrates (under the migration lock) and creates the first admin if none exists (once: the
 * unique e-mail settles a race), as a lone API process does.
 */
async function superviseOnly(config: ResolvedConfig): Promise<void> {
  const loggers = createLoggers({ level: config.logging.level, dir: config.logging.dir });
  const log = loggers.app;
  const workers = startApiWorkers(workerOptions(config, log));
  const port = await workers.ready.catch((err: Error) => fail(`error: ${err.message}`));
  announce(config, log, port, `postgres + redis`);
  let stopping = false;
  const shutdown = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: stopping the API workers');
    await workers.stop(signal);
    log.info('shutdown complete');
    loggers.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`fatal: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
