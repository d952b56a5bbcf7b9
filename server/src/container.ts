/**
 * Wires every service from the resolved config: the one place that chooses embedded or
 * production engines. Routes and jobs get what they need from here.
 */
import { join } from 'node:path';
import { createAuditService } from './audit/audit.service.ts';
import { createAccessTokens } from './auth/access-tokens.ts';
import { createAuthService, loadUserState } from './auth/auth.service.ts';
import { createLockout } from './auth/lockout.ts';
import { createPasswordHasher } from './auth/passwords.ts';
import { createUserStateCache } from './auth/user-state-cache.ts';
import type { ResolvedConfig } from './config/config.schema.ts';
import { loadRoles, type RoleTable } from './config/roles.ts';
import { createDatabase, type Database } from './db/database.ts';
import { createHealthService } from './health/health.service.ts';
import { type Clock, systemClock } from './infra/clock.ts';
import { createRateLimiter, type RateLimiter } from './infra/rate-limiter.ts';
import { createRedis, type Redis, waitReady } from './infra/redis.ts';
import { detectSystemTools } from './infra/system-tools.ts';
import { createLlmManager, type LlmManager } from './llm/llm-manager.ts';
import { createProviders } from './llm/provider-registry.ts';
import type { ChatModelProvider } from './llm/types.ts';
import { createUsageService, type UsageService } from './llm/usage.service.ts';
import { createLoggers, type Loggers } from './logging/logger.ts';
import { createInProcessPubSub, createRedisPubSub, type PubSub } from './realtime/pubsub.ts';
import { createBullmqQueue } from './scheduler/bullmq-queue.ts';
import { createInProcessQueue } from './scheduler/in-process-queue.ts';
import { PURGE_AUTH_JOB, purgeAuthJob } from './scheduler/jobs/purge-auth.job.ts';
import type { JobQueue } from './scheduler/queue.ts';
import { createUsersService } from './users/users.service.ts';

export interface ContainerOptions {
  /** Use this database instead of opening one (tests). */
  database?: Database;
  loggers?: Loggers;
  clock?: Clock;
  tools?: Record<string, boolean>;
  /** Use these model adapters instead of building them from config (tests). */
  llmProviders?: Map<string, ChatModelProvider>;
}

export interface Container {
  config: ResolvedConfig;
  roles: RoleTable;
  database: Database;
  redis?: Redis | undefined;
  pubsub: PubSub;
  queue: JobQueue;
  rateLimiter: RateLimiter;
  loggers: Loggers;
  clock: Clock;
  auth: ReturnType<typeof createAuthService>;
  users: ReturnType<typeof createUsersService>;
  audit: ReturnType<typeof createAuditService>;
  health: ReturnType<typeof createHealthService>;
  /** Every model call goes through here: failover, usage, budgets. */
  llm: LlmManager;
  usage: UsageService;
  passwords: Awaited<ReturnType<typeof createPasswordHasher>>;
  draining: { value: boolean };
  close(): Promise<void>;
}

export async function openDatabase(config: ResolvedConfig): Promise<Database> {
  return createDatabase({
    url: config.database.url,
    schema: config.database.schema,
    pgliteDir: join(config.data_dir, 'pgdata'),
    poolMax: config.database.pool_max,
    statementTimeoutMs: config.database.statement_timeout_ms,
  });
}

export async function createContainer(
  config: ResolvedConfig,
  options: ContainerOptions = {},
): Promise<Container> {
  const loggers =
    options.loggers ?? createLoggers({ level: config.logging.level, dir: config.logging.dir });
  const log = loggers.app;
  const clock = options.clock ?? systemClock;
  const roles = loadRoles(config.paths.roles_file);
  const database = options.database ?? (await openDatabase(config));

  let redis: Redis | undefined;
  let pubsub: PubSub;
  if (config.redis.url) {
    redis = createRedis(config.redis.url, { enableOfflineQueue: false });
    const subscriber = createRedis(config.redis.url, { enableAutoPipelining: false });
    await Promise.all([waitReady(redis), waitReady(subscriber)]);
    pubsub = createRedisPubSub(redis, subscriber, config.redis.key_prefix);
  } else {
    pubsub = createInProcessPubSub();
  }

  const passwords = await createPasswordHasher(config.auth.argon2);
  const tokens = createAccessTokens({
    secret: config.auth.jwt_secret,
    issuer: config.auth.issuer,
    audience: config.auth.audience,
    ttlSeconds: config.auth.access_ttl_s,
    now: () => clock().getTime(),
  });
  const cache = await createUserStateCache({
    load: (userId) => loadUserState(database.db, userId, clock()),
    pubsub,
    ttlMs: config.auth.user_cache_ttl_s * 1000,
    max: config.auth.user_cache_max,
    onPublishError: (err, userId) =>
      log.warn({ err, userId }, 'user change not announced (Redis unreachable)'),
  });
  const lockout = createLockout(config.auth.lockout, clock);
  const auth = createAuthService({
    database,
    config,
    roles,
    passwords,
    tokens,
    lockout,
    cache,
    clock,
    log,
  });
  const users = createUsersService({ database, roles, passwords, cache, clock });

  const queue = config.redis.url
    ? createBullmqQueue({ redisUrl: config.redis.url, prefix: config.redis.key_prefix, log })
    : createInProcessQueue(log);
  queue.define(
    purgeAuthJob({
      database,
      clock,
      retentionSeconds: config.jobs.session_retention_s,
      lockoutWindowSeconds: config.auth.lockout.window_s,
    }),
  );

  const rateLimiter = createRateLimiter(config.rate_limit, redis, config.redis.key_prefix);
  const draining = { value: false };
  const tools = options.tools ?? detectSystemTools();
  const health = createHealthService({
    database,
    redis,
    queue,
    rateLimiter,
    tools,
    version: config.version,
    dbTimeoutMs: config.database.health_timeout_ms,
    isDraining: () => draining.value,
  });

  const llm = createLlmManager({
    config: config.llm,
    providers: options.llmProviders ?? createProviders(config.llm),
    database,
    clock,
    log,
  });
  if (!llm.configured('chat')) {
    log.warn(
      'no language model configured: chat answers llm_not_configured until ANTHROPIC_API_KEY, MOONSHOT_API_KEY or OPENAI_API_KEY is set',
    );
  }

  let closed = false;
  return {
    config,
    roles,
    database,
    redis,
    pubsub,
    queue,
    rateLimiter,
    loggers,
    clock,
    auth,
    users,
    audit: createAuditService({ database }),
    health,
    llm,
    usage: createUsageService({ database, config: config.llm, clock }),
    passwords,
    draining,
    async close() {
      if (closed) return;
      closed = true;
      await queue.close();
      await pubsub.close();
      redis?.disconnect();
      if (!options.database) await database.close();
      loggers.flush();
    },
  };
}

/** Registers the recurring jobs this codebase owns (scheduler role). */
export async function registerSchedules(container: Container): Promise<void> {
  await container.queue.schedule(
    'auth-purge',
    container.config.jobs.purge_auth_cron,
    PURGE_AUTH_JOB,
    {},
  );
}
