/**
 * The one validated configuration. YAML (config.yaml) and environment variables are merged
 * into this shape and checked with zod at boot; every limit, timeout and toggle lives here.
 */
import { z } from 'zod';
import { LlmConfigSchema } from '../llm/llm-config.ts';

const Seconds = z.coerce.number().int().positive();
const Bool = z.preprocess(
  (v) => (typeof v === 'string' ? ['1', 'true', 'yes', 'on'].includes(v.toLowerCase()) : v),
  z.boolean(),
);

/**
 * From the environment: "true"/"false", a hop count ("1"), or a comma-separated list of
 * proxy IPs/CIDRs ("127.0.0.1,10.0.0.0/8"). From YAML: the same as native values.
 */
const TrustProxy = z.preprocess(
  (v) => {
    if (typeof v !== 'string') return v;
    const s = v.trim();
    if (s === 'true' || s === 'false') return s === 'true';
    if (/^\d+$/.test(s)) return Number(s);
    return s
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
  },
  z.union([
    z.boolean(),
    z.number().int().min(1),
    z
      .array(
        z
          .string()
          .regex(
            /^[0-9a-fA-F:.]+(\/\d{1,3})?$|^(loopback|linklocal|uniquelocal)$/,
            'must be an IP, a CIDR or loopback/linklocal/uniquelocal',
          ),
      )
      .min(1),
  ]),
);

export const PROCESS_ROLES = ['all', 'api', 'worker', 'scheduler'] as const;
export type ProcessRole = (typeof PROCESS_ROLES)[number];
/** The roles that serve HTTP and the WebSocket (and fork API workers with server.workers > 1). */
export const servesApi = (role: ProcessRole) => role === 'all' || role === 'api';

export const ConfigSchema = z.strictObject({
  process_role: z.enum(PROCESS_ROLES).default('all'),
  data_dir: z.string().min(1).default('./data'),
  server: z
    .strictObject({
      host: z.string().min(1).default('0.0.0.0'),
      port: z.coerce.number().int().min(0).max(65535).default(8000),
      /** Largest JSON body accepted, in bytes. */
      body_limit_bytes: z.coerce.number().int().positive().default(1_048_576),
      /**
       * Which proxies may set X-Forwarded-For: false (none), true (any — only behind a
       * proxy that always overwrites the header), a hop count, or a list of IPs/CIDRs.
       */
      trust_proxy: TrustProxy.default(false),
      shutdown_timeout_ms: z.coerce.number().int().positive().default(10_000),
      /** On SIGTERM, /health answers 503 this long before the listener closes. */
      drain_delay_ms: z.coerce.number().int().min(0).default(1_000),
      request_timeout_ms: z.coerce.number().int().positive().default(120_000),
      /**
       * API processes on this machine (node:cluster, sharing the port); more than one needs
       * PostgreSQL and Redis, which they share. Set it to the number of cores for production.
       */
      workers: z.coerce.number().int().min(1).max(64).default(1),
      public_url: z.url().optional(),
    })
    .prefault({}),
  database: z
    .strictObject({
      url: z.string().optional(),
      /**
       * PostgreSQL schema to work in (sets search_path); unset uses the server's default
       * (public). Lets several deployments, or test runs, share one database.
       */
      schema: z
        .string()
        .regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'must be a plain schema name')
        .optional(),
      pool_max: z.coerce.number().int().min(1).max(200).default(10),
      statement_timeout_ms: z.coerce.number().int().positive().default(15_000),
      health_timeout_ms: z.coerce.number().int().positive().default(2_000),
    })
    .prefault({}),
  redis: z
    .strictObject({
      url: z.string().optional(),
      key_prefix: z.string().default('mz:'),
    })
    .prefault({}),
  auth: z
    .strictObject({
      jwt_secret: z.string().min(32, 'must be at least 32 characters').optional(),
      issuer: z.string().min(1).default('mezzofy-ai-assistant'),
      audience: z.string().min(1).default('mezzofy-app'),
      access_ttl_s: Seconds.default(900),
      /** A refresh token's own lifetime; each rotation issues a new one. */
      refresh_ttl_s: Seconds.default(14 * 24 * 3600),
      /** Absolute lifetime of a login session (a refresh-token family). */
      session_max_age_s: Seconds.default(30 * 24 * 3600),
      /**
       * A token rotated less than this many seconds ago, presented again, is answered 401
       * without revoking its family (two tabs refreshing at once). Later reuse revokes it.
       */
      refresh_reuse_grace_s: z.coerce.number().int().min(0).default(10),
      argon2: z
        .strictObject({
          memory_kib: z.coerce.number().int().min(19_456).default(19_456),
          iterations: z.coerce.number().int().min(2).default(2),
          parallelism: z.coerce.number().int().min(1).default(1),
        })
        .prefault({}),
      lockout: z
        .strictObject({
          account_max_failures: z.coerce.number().int().positive().default(10),
          account_ip_max_failures: z.coerce.number().int().positive().default(5),
          window_s: Seconds.default(900),
          lock_s: Seconds.default(900),
        })
        .prefault({}),
      user_cache_ttl_s: Seconds.default(300),
      user_cache_max: z.coerce.number().int().positive().default(10_000),
    })
    .prefault({}),
  admin: z
    .strictObject({
      email: z.email().optional(),
      password: z.string().optional(),
      name: z.string().default('Administrator'),
    })
    .prefault({}),
  rate_limit: z
    .strictObject({
      enabled: Bool.default(true),
      /** Requests per window for a signed-in user. */
      user_points: z.coerce.number().int().positive().default(600),
      /** Requests per window for an anonymous client, per IP. */
      ip_points: z.coerce.number().int().positive().default(300),
      window_s: Seconds.default(60),
    })
    .prefault({}),
  logging: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      /** When set, app.log, error.log and access.log are written in this folder. */
      dir: z.string().optional(),
      access_log: Bool.default(true),
    })
    .prefault({}),
  jobs: z
    .strictObject({
      purge_auth_cron: z.string().default('17 * * * *'),
      /** Revoked or expired sessions are kept this long for the audit trail. */
      session_retention_s: Seconds.default(30 * 24 * 3600),
    })
    .prefault({}),
  /** Department agents: the tool loop's limits and the router's classifier timeout. */
  agents: z
    .strictObject({
      /** Model calls per turn before it ends with `step_limit`. */
      max_steps: z.coerce.number().int().min(1).max(50).default(8),
      /** A turn (every model call and tool run) ends with `time_limit` after this long. */
      turn_timeout_ms: z.coerce.number().int().positive().default(180_000),
      /** The router's LLM classification gives up after this long (then: department). */
      routing_timeout_ms: z.coerce.number().int().positive().default(2_000),
      /**
       * A model call whose prompt is longer than this many characters (a pasted document,
       * long tool results) goes to the `llm.models.long_document` models.
       */
      long_document_chars: z.coerce.number().int().positive().default(48_000),
    })
    .prefault({}),
  /** Chat over REST: message size and how much earlier conversation the model reads. */
  chat: z
    .strictObject({
      /** Longest user message, in characters; a longer one is refused with 413. */
      max_message_chars: z.coerce.number().int().min(1).max(1_000_000).default(16_000),
      /**
       * Earlier turns sent to the model, in characters (a stored summary included); older
       * turns are summarised by the `summary` model and the summary kept on the session.
       */
      history_max_chars: z.coerce.number().int().min(1_000).default(60_000),
      /** Summarising older turns gives up after this long (then: their first lines). */
      summary_timeout_ms: z.coerce.number().int().positive().default(15_000),
      /** Longest summary of older turns the model may write, in output tokens. */
      summary_max_tokens: z.coerce.number().int().min(64).max(32_000).default(1_024),
      /** Largest file POST /chat/send-media accepts, in bytes; a larger one is refused with 413. */
      max_media_bytes: z.coerce
        .number()
        .int()
        .min(1)
        .max(1024 * 1024 * 1024)
        .default(20 * 1024 * 1024),
    })
    .prefault({}),
  /** Chat over the WebSocket `GET /chat/ws` (realtime/ws-gateway.ts). */
  realtime: z
    .strictObject({
      /** The first frame must be hello within this long, else close 4001. */
      hello_timeout_ms: z.coerce.number().int().positive().default(5_000),
      /** Largest client frame in bytes; a larger one closes the socket with 1009. */
      max_frame_bytes: z.coerce
        .number()
        .int()
        .min(1_024)
        .default(256 * 1024),
      /** The server pings this often; a socket that missed the previous pong is dropped. */
      heartbeat_s: Seconds.default(30),
      /** Client messages per connection per window; more are answered with rate_limited. */
      messages_per_window: z.coerce.number().int().positive().default(120),
      window_s: Seconds.default(60),
      /** Above this many unsent bytes, text deltas are coalesced instead of sent one by one. */
      high_water_bytes: z.coerce
        .number()
        .int()
        .min(1_024)
        .default(1024 * 1024),
      /** A client whose unsent bytes stay above the high-water mark this long is closed 1013. */
      stuck_timeout_ms: z.coerce.number().int().positive().default(30_000),
      /** Events kept per connection for resume after a reconnect. */
      resume_buffer_events: z.coerce.number().int().min(0).default(500),
      /** How long a dropped connection can be resumed. */
      resume_ttl_s: Seconds.default(120),
      /**
       * A resume for a stream held by another process (Redis): how long to wait for that
       * process to hand it over before starting a new stream.
       */
      resume_handoff_ms: z.coerce.number().int().positive().default(1_000),
    })
    .prefault({}),
  tools: z
    .strictObject({
      /** Time limit of one tool call, unless the tool sets its own. */
      timeout_ms: z.coerce.number().int().positive().default(30_000),
      /** Largest tool result handed back to the model, in bytes; longer ones are cut. */
      result_max_bytes: z.coerce.number().int().min(256).default(16_384),
      /** A pending action not decided within this time expires. */
      approval_ttl_s: Seconds.default(24 * 3600),
      /** Roles whose external tool calls run without asking. Off (empty) by default. */
      auto_approve_roles: z.array(z.string().min(1)).default([]),
      /** Marks pending actions past their expiry as expired. */
      expire_approvals_cron: z.string().default('*/10 * * * *'),
    })
    .prefault({}),
  /** Model providers, models per purpose, prices, failover and budgets (llm/llm-config.ts). */
  llm: LlmConfigSchema.prefault({}),
});

export type Config = z.infer<typeof ConfigSchema>;
/** The config after start-up has resolved paths and secrets. */
export type ResolvedConfig = Config & {
  data_dir: string;
  auth: Config['auth'] & { jwt_secret: string };
  paths: { roles_file: string; server_root: string };
  version: string;
};
