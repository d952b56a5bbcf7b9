/**
 * Process entry. `--role=all|api|worker|scheduler` (or PROCESS_ROLE): `all` runs everything
 * in one process on embedded defaults; the others need DATABASE_URL (and REDIS_URL).
 */
import { buildApp } from './app.ts';
import type { ResolvedConfig } from './config/config.schema.ts';
import { ConfigError, loadConfig } from './config/load-config.ts';
import { createContainer, openDatabase, registerSchedules } from './container.ts';
import { migrate } from './db/migrate.ts';
import { lockDataDir } from './infra/data-dir-lock.ts';
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
  const runs = (r: string) => role === 'all' || role === r;

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
  if (runs('worker')) await container.queue.startWorker();
  if (runs('scheduler')) {
    await registerSchedules(container);
    await container.queue.startScheduler();
  }

  const engines = `${database.engine}${config.redis.url ? ' + redis' : ', in-process queue and pub/sub'}`;
  if (app) {
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : config.server.port;
    const shownHost = ['0.0.0.0', '::'].includes(config.server.host)
      ? 'localhost'
      : config.server.host;
    const url = `http://${shownHost}:${port}`;
    log.info({ role, url, engines }, 'server listening');
    process.stdout.write(
      `Mezzofy AI Assistant (${role}; ${engines}) listening on ${url}  — docs: ${url}/docs\n`,
    );
  } else {
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

main().catch((err) => {
  process.stderr.write(`fatal: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
