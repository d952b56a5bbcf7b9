/**
 * Wires every service from the resolved config: the one place that chooses embedded or
 * production engines. Routes and jobs get what they need from here.
 */
import { join } from 'node:path';
import type { AgentDefinition, AgentName, AgentRunner } from './agents/agent.ts';
import { createAgentRunner } from './agents/base-agent.ts';
import { createKnowledge } from './agents/knowledge.ts';
import { AGENTS } from './agents/registry.ts';
import { writeAudit } from './audit/audit.repository.ts';
import { createAuditService } from './audit/audit.service.ts';
import { createAccessTokens } from './auth/access-tokens.ts';
import { createAuthService, loadUserState } from './auth/auth.service.ts';
import { createLockout } from './auth/lockout.ts';
import { createPasswordHasher } from './auth/passwords.ts';
import { toPrincipal } from './auth/principal.ts';
import { createUserStateCache, type UserStateCache } from './auth/user-state-cache.ts';
import { type ChatService, createChatService } from './chat/chat.service.ts';
import { createSessionHistory } from './chat/session-history.ts';
import type { ResolvedConfig } from './config/config.schema.ts';
import { ConfigError } from './config/load-config.ts';
import { loadRoles, type RoleTable } from './config/roles.ts';
import { createDatabase, type Database } from './db/database.ts';
import { createIntentRouter, type IntentRouter } from './gateway/intent-router.ts';
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
import { createOutboxService, type OutboxService } from './output/outbox.service.ts';
import { createInProcessPubSub, createRedisPubSub, type PubSub } from './realtime/pubsub.ts';
import { createStreamHandoff, type StreamHandoff } from './realtime/stream-handoff.ts';
import { createUserEvents, type UserEvents } from './realtime/user-events.ts';
import { createBullmqQueue } from './scheduler/bullmq-queue.ts';
import { createInProcessQueue } from './scheduler/in-process-queue.ts';
import { EXPIRE_APPROVALS_JOB, expireApprovalsJob } from './scheduler/jobs/expire-approvals.job.ts';
import { PURGE_AUTH_JOB, purgeAuthJob } from './scheduler/jobs/purge-auth.job.ts';
import type { JobQueue } from './scheduler/queue.ts';
import { SKILL_IMPLEMENTATIONS } from './skills/available/index.ts';
import { loadSkills } from './skills/skill-loader.ts';
import { createSkillRegistry, type SkillRegistry } from './skills/skill-registry.ts';
import {
  type ApprovalsService,
  createApprovalsService,
  toApprovalView,
} from './tools/approvals/approvals.service.ts';
import { defaultTools } from './tools/default-tools.ts';
import type { ToolExecutor } from './tools/tool.ts';
import { createToolExecutor } from './tools/tool-executor.ts';
import { createToolRegistry, type ToolRegistry } from './tools/tool-registry.ts';
import { findUserById } from './users/users.repository.ts';
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
  /** Events for a user's sockets on every process, and cancels (realtime/user-events.ts). */
  userEvents: UserEvents;
  /** Moves a WebSocket event stream to the process its client reconnected to. */
  streamHandoff: StreamHandoff;
  queue: JobQueue;
  rateLimiter: RateLimiter;
  loggers: Loggers;
  clock: Clock;
  auth: ReturnType<typeof createAuthService>;
  /** Per-process user state; `onInvalidate` fires on every process (WebSockets close on it). */
  userStates: UserStateCache;
  users: ReturnType<typeof createUsersService>;
  audit: ReturnType<typeof createAuditService>;
  health: ReturnType<typeof createHealthService>;
  /** Every model call goes through here: failover, usage, budgets. */
  llm: LlmManager;
  usage: UsageService;
  /** Every tool call goes through `tools.executor`: permission, limits, audit, approval. */
  tools: { registry: ToolRegistry; executor: ToolExecutor };
  approvals: ApprovalsService;
  outbox: OutboxService;
  /** Picks the agent for a message (explicit, session, keywords, classifier, department). */
  router: IntentRouter;
  /** Runs one agent turn: the model ⇄ tools loop. */
  agents: AgentRunner;
  agentDefinitions: ReadonlyMap<AgentName, AgentDefinition>;
  /** Chat over REST: sessions, history, one turn per session at a time. */
  chat: ChatService;
  /** The loaded skills (skills/available/*.yaml), validated at start. */
  skills: SkillRegistry;
  /** Brand and company context for prompts (knowledge/brand/*.md). */
  knowledge: () => string;
  passwords: Awaited<ReturnType<typeof createPasswordHasher>>;
  draining: { value: boolean };
  close(): Promise<void>;
}

/** `mezzofy-<role>:<pid>` in pg_stat_activity: the process behind each connection. */
export const databaseApplicationName = (role: string, pid = process.pid) =>
  `mezzofy-${role}:${pid}`;

export async function openDatabase(config: ResolvedConfig): Promise<Database> {
  return createDatabase({
    url: config.database.url,
    schema: config.database.schema,
    pgliteDir: join(config.data_dir, 'pgdata'),
    poolMax: config.database.pool_max,
    statementTimeoutMs: config.database.statement_timeout_ms,
    applicationName: databaseApplicationName(config.process_role),
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
  const userEvents = await createUserEvents(pubsub, log);
  const streamHandoff = await createStreamHandoff(pubsub, log, config.realtime.resume_handoff_ms);

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

  // Permissions as the user's role grants them now: a role change applies to the next call.
  const currentPermissions = async (userId: string): Promise<ReadonlySet<string>> => {
    const user = await findUserById(database.db, userId);
    return user?.is_active ? (roles.get(user.role)?.permissions ?? new Set()) : new Set();
  };
  for (const role of config.tools.auto_approve_roles) {
    if (!roles.has(role))
      throw new ConfigError(`config error: tools.auto_approve_roles: unknown role '${role}'`);
  }
  const toolLimits = {
    timeoutMs: config.tools.timeout_ms,
    resultMaxBytes: config.tools.result_max_bytes,
  };
  const outbox = createOutboxService({ database, clock });
  const toolRegistry = createToolRegistry(defaultTools({ database, outbox, clock }));
  const approvals = createApprovalsService({
    database,
    registry: toolRegistry,
    clock,
    log,
    limits: { ...toolLimits, approvalTtlSeconds: config.tools.approval_ttl_s },
    currentPermissions,
  });
  const toolExecutor = createToolExecutor({
    registry: toolRegistry,
    approvals,
    limits: { ...toolLimits, autoApproveRoles: config.tools.auto_approve_roles },
    audit: (entry) => writeAudit(database.db, entry),
    currentPermissions,
  });
  queue.define(expireApprovalsJob({ approvals }));

  // Agents and skills: a broken skill manifest, or an agent naming a tool or skill that does
  // not exist, stops start-up here with one line.
  const skills = createSkillRegistry(
    loadSkills({
      dir: join(config.paths.server_root, 'src', 'skills', 'available'),
      implementations: SKILL_IMPLEMENTATIONS,
    }),
  );
  const knowledge = createKnowledge(join(config.paths.server_root, 'knowledge', 'brand'));
  const agents = createAgentRunner({
    llm,
    tools: toolExecutor,
    skills,
    agents: AGENTS,
    knowledge,
    clock,
    limits: {
      maxSteps: config.agents.max_steps,
      turnTimeoutMs: config.agents.turn_timeout_ms,
      longDocumentChars: config.agents.long_document_chars,
    },
    log,
  });
  const router = createIntentRouter({
    agents: AGENTS,
    llm,
    classifierTimeoutMs: config.agents.routing_timeout_ms,
    log,
  });

  const chat = createChatService({
    database,
    agents,
    router,
    events: userEvents,
    history: createSessionHistory({
      maxChars: config.chat.history_max_chars,
      summaries: {
        database,
        llm,
        log,
        timeoutMs: config.chat.summary_timeout_ms,
        maxOutputTokens: config.chat.summary_max_tokens,
      },
    }),
    limits: {
      maxMessageChars: config.chat.max_message_chars,
      duplicateWaitMs: config.agents.turn_timeout_ms,
      // Longer than a turn can run (its time limit, the history summary and storing it).
      turnLeaseMs: config.agents.turn_timeout_ms + 60_000,
      turnWaitMs: config.agents.turn_timeout_ms + 60_000,
    },
    principalOf: async (userId) => {
      const user = await findUserById(database.db, userId);
      return user?.is_active ? toPrincipal(user, 'approval', roles) : null;
    },
    log,
  });
  // A decided approval shows on every socket of its user, and continues the turn that parked it.
  approvals.setDecidedHandler((action, outcome) => {
    userEvents.publish(action.user_id, {
      type: 'approval.decided',
      approval: toApprovalView(action),
    });
    chat.onDecided(action, outcome);
  });

  let closed = false;
  return {
    config,
    roles,
    database,
    redis,
    pubsub,
    userEvents,
    streamHandoff,
    queue,
    rateLimiter,
    loggers,
    clock,
    auth,
    userStates: cache,
    users,
    audit: createAuditService({ database }),
    health,
    llm,
    usage: createUsageService({ database, config: config.llm, clock }),
    tools: { registry: toolRegistry, executor: toolExecutor },
    approvals,
    outbox,
    router,
    agents,
    agentDefinitions: AGENTS,
    chat,
    skills,
    knowledge,
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
  await container.queue.schedule(
    'tools-expire-approvals',
    container.config.tools.expire_approvals_cron,
    EXPIRE_APPROVALS_JOB,
    {},
  );
}
