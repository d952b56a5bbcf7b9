/**
 * Reads config.yaml, overlays environment variables and validates the result.
 * The only module that reads process.env.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseDotenv } from 'dotenv';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { type Config, ConfigSchema, type ResolvedConfig, servesApi } from './config.schema.ts';

export const SERVER_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** A configuration problem: one line that names the key and what is wrong. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The usual environment names and the config key each sets. */
export const ENV_KEYS: Record<string, string> = {
  PROCESS_ROLE: 'process_role',
  DATA_DIR: 'data_dir',
  HOST: 'server.host',
  PORT: 'server.port',
  TRUST_PROXY: 'server.trust_proxy',
  PUBLIC_URL: 'server.public_url',
  /** The usual name (Heroku, Render, Gunicorn) for the number of web processes. */
  WEB_CONCURRENCY: 'server.workers',
  DATABASE_URL: 'database.url',
  DATABASE_SCHEMA: 'database.schema',
  REDIS_URL: 'redis.url',
  JWT_SECRET: 'auth.jwt_secret',
  ADMIN_EMAIL: 'admin.email',
  ADMIN_PASSWORD: 'admin.password',
  ADMIN_NAME: 'admin.name',
  LOG_LEVEL: 'logging.level',
  LOG_DIR: 'logging.dir',
  ANTHROPIC_API_KEY: 'llm.providers.anthropic.api_key',
  /** Without /v1, as the Anthropic SDK expects. */
  ANTHROPIC_BASE_URL: 'llm.providers.anthropic.base_url',
  MOONSHOT_API_KEY: 'llm.providers.moonshot.api_key',
  MOONSHOT_BASE_URL: 'llm.providers.moonshot.base_url',
  OPENAI_API_KEY: 'llm.providers.openai.api_key',
  /** With /v1. Also any OpenAI-compatible server (e.g. Ollama's http://127.0.0.1:11434/v1). */
  OPENAI_BASE_URL: 'llm.providers.openai.base_url',
};
/** Any key can also be set as MEZZOFY__section__key (e.g. MEZZOFY__auth__access_ttl_s=600). */
const ENV_PREFIX = 'MEZZOFY__';

type Env = Record<string, string | undefined>;

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    if (typeof node[part] !== 'object' || node[part] === null) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1)!] = value;
}

function envOverrides(env: Env): { values: Record<string, unknown>; sources: Map<string, string> } {
  const values: Record<string, unknown> = {};
  const sources = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || value === '') continue;
    let path = ENV_KEYS[name];
    if (!path && name.startsWith(ENV_PREFIX))
      path = name.slice(ENV_PREFIX.length).toLowerCase().replaceAll('__', '.');
    if (!path) continue;
    setPath(values, path, value);
    sources.set(path, name);
  }
  return { values, sources };
}

function deepMerge(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prev = out[key];
    out[key] =
      value &&
      typeof value === 'object' &&
      !Array.isArray(value) &&
      prev &&
      typeof prev === 'object' &&
      !Array.isArray(prev)
        ? deepMerge(prev as Record<string, unknown>, value as Record<string, unknown>)
        : value;
  }
  return out;
}

function describeIssue(
  issue: z.core.$ZodIssue,
  sources: Map<string, string>,
  file: string | null,
): string {
  const key = issue.path.join('.') || '(root)';
  const from = sources.get(key) ? ` (from ${sources.get(key)})` : file ? ` (in ${file})` : '';
  if (issue.code === 'unrecognized_keys') {
    return `config error: unknown key ${issue.keys.map((k) => [...issue.path, k].join('.')).join(', ')}${from}`;
  }
  return `config error: ${key}: ${issue.message}${from}`;
}

export interface LoadConfigOptions {
  env?: Env;
  /** Config values applied last, for tests. */
  overrides?: Record<string, unknown>;
  /** Base for relative paths such as DATA_DIR. */
  cwd?: string;
  /** Skip reading server/config/config.yaml (tests). */
  ignoreFile?: boolean;
}

/**
 * The process environment over server/config/.env (or ENV_FILE), so a deployment can keep
 * its secrets in that file; real environment variables always win.
 */
export function effectiveEnv(options: LoadConfigOptions): Env {
  const env = options.env ?? process.env;
  if (options.ignoreFile) return env;
  const file = env.ENV_FILE ?? join(SERVER_ROOT, 'config', '.env');
  if (!existsSync(file)) return env;
  return { ...parseDotenv(readFileSync(file)), ...env };
}

/** Parses and validates, without touching the disk beyond reading config.yaml. */
export function parseConfig(options: LoadConfigOptions = {}): {
  config: Config;
  file: string | null;
} {
  const env = effectiveEnv(options);
  const file = env.CONFIG_FILE ?? join(SERVER_ROOT, 'config', 'config.yaml');
  let fromFile: Record<string, unknown> = {};
  let usedFile: string | null = null;
  if (!options.ignoreFile && existsSync(file)) {
    try {
      fromFile = (parseYaml(readFileSync(file, 'utf8')) as Record<string, unknown>) ?? {};
    } catch (err) {
      throw new ConfigError(
        `config error: ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`,
      );
    }
    usedFile = file;
  } else if (env.CONFIG_FILE && !options.ignoreFile) {
    throw new ConfigError(`config error: CONFIG_FILE ${file} does not exist`);
  }
  const { values, sources } = envOverrides(env);
  const merged = deepMerge(deepMerge(fromFile, values), options.overrides ?? {});
  const result = ConfigSchema.safeParse(merged);
  if (!result.success) {
    throw new ConfigError(describeIssue(result.error.issues[0]!, sources, usedFile));
  }
  const config = result.data;
  if (config.process_role !== 'all' && !config.database.url) {
    throw new ConfigError(
      `config error: database.url: required for process role '${config.process_role}' (set DATABASE_URL)`,
    );
  }
  if (
    (config.process_role === 'worker' || config.process_role === 'scheduler') &&
    !config.redis.url
  ) {
    throw new ConfigError(
      `config error: redis.url: required for process role '${config.process_role}' (set REDIS_URL)`,
    );
  }
  // Only the roles that serve the API fork workers; the others ignore the setting (it is often
  // set for every process of a deployment, as Heroku does).
  if (config.server.workers > 1 && servesApi(config.process_role)) {
    const needs = !config.database.url
      ? 'PostgreSQL (set DATABASE_URL): the embedded database belongs to one process'
      : !config.redis.url
        ? 'Redis (set REDIS_URL): the processes share events, cancels and rate limits through it'
        : undefined;
    if (needs) {
      const from = sources.get('server.workers');
      throw new ConfigError(
        `config error: server.workers: ${config.server.workers} API processes need ${needs}${from ? ` (from ${from})` : ''}`,
      );
    }
  }
  if (config.database.url && !config.auth.jwt_secret) {
    throw new ConfigError(
      'config error: auth.jwt_secret: required when DATABASE_URL is set (set JWT_SECRET, 32+ characters)',
    );
  }
  if (config.llm.response_timeout_ms >= config.agents.turn_timeout_ms) {
    throw new ConfigError(
      `config error: llm.response_timeout_ms: must be shorter than agents.turn_timeout_ms (${config.agents.turn_timeout_ms}), so that a model that timed out can still be failed over within the turn`,
    );
  }
  if (config.database.url && !isDatabaseUrl(config.database.url))
    throw new ConfigError('config error: database.url: not a valid URL');
  if (config.redis.url && !URL.canParse(config.redis.url))
    throw new ConfigError('config error: redis.url: not a valid URL');
  return { config, file: usedFile };
}

/**
 * A PostgreSQL connection URL, libpq's forms included: `postgres://user@/db?host=/run/postgresql`
 * (a Unix socket: an empty host after the user, which WHATWG URLs refuse) and
 * `postgres:///db?host=...`.
 */
export function isDatabaseUrl(url: string): boolean {
  return (
    URL.canParse(url) ||
    URL.canParse(url.replace(/^(postgres(?:ql)?:\/\/[^/@]*@)\//, '$1localhost/'))
  );
}

const JWT_SECRET_FILE = 'jwt-secret';

/** Embedded default: a signing key generated once into DATA_DIR, readable only by us. */
function embeddedJwtSecret(dataDir: string): string {
  const file = join(dataDir, JWT_SECRET_FILE);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(48).toString('base64url');
  writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return secret;
}

/** Full start-up resolution: paths made absolute, the embedded signing key created if needed. */
export function loadConfig(options: LoadConfigOptions = {}): ResolvedConfig {
  const { config } = parseConfig(options);
  const env = effectiveEnv(options);
  const cwd = options.cwd ?? env.INIT_CWD ?? process.cwd();
  const dataDir = isAbsolute(config.data_dir) ? config.data_dir : resolve(cwd, config.data_dir);
  const logDir =
    config.logging.dir && !isAbsolute(config.logging.dir)
      ? resolve(cwd, config.logging.dir)
      : config.logging.dir;
  const jwtSecret = config.auth.jwt_secret ?? embeddedJwtSecret(dataDir);
  const pkg = JSON.parse(readFileSync(join(SERVER_ROOT, 'package.json'), 'utf8')) as {
    version: string;
  };
  return {
    ...config,
    data_dir: dataDir,
    logging: { ...config.logging, dir: logDir },
    auth: { ...config.auth, jwt_secret: jwtSecret },
    paths: {
      roles_file: env.ROLES_FILE ?? join(SERVER_ROOT, 'config', 'roles.yaml'),
      server_root: SERVER_ROOT,
    },
    version: pkg.version,
  };
}
