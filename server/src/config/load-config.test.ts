import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig } from './load-config.ts';
import { loadRoles } from './roles.ts';

const run = promisify(execFile);
const tmp = () => mkdtempSync(join(tmpdir(), 'mz-config-'));

describe('parseConfig', () => {
  it('has working embedded defaults', () => {
    const { config } = parseConfig({ env: {}, ignoreFile: true });
    expect(config.server.port).toBe(8000);
    expect(config.data_dir).toBe('./data');
    expect(config.process_role).toBe('all');
    expect(config.server.workers).toBe(1);
    expect(config.auth.access_ttl_s).toBe(900);
    expect(config.auth.argon2).toEqual({ memory_kib: 19456, iterations: 2, parallelism: 1 });
  });

  it('takes the usual environment names and MEZZOFY__ paths', () => {
    const { config } = parseConfig({
      env: {
        PORT: '9001',
        DATA_DIR: '/tmp/x',
        MEZZOFY__auth__access_ttl_s: '600',
        MEZZOFY__rate_limit__enabled: 'false',
      },
      ignoreFile: true,
    });
    expect(config.server.port).toBe(9001);
    expect(config.data_dir).toBe('/tmp/x');
    expect(config.auth.access_ttl_s).toBe(600);
    expect(config.rate_limit.enabled).toBe(false);
  });

  it('WEB_CONCURRENCY: API processes for the roles that serve the API, ignored by the others', () => {
    const production = {
      DATABASE_URL: 'postgres://db/x',
      REDIS_URL: 'redis://r',
      JWT_SECRET: 'j'.repeat(40),
      WEB_CONCURRENCY: '4',
    };
    for (const role of ['all', 'api', 'worker', 'scheduler']) {
      const { config } = parseConfig({
        env: { ...production, PROCESS_ROLE: role },
        ignoreFile: true,
      });
      expect(config.server.workers).toBe(4);
    }
    // Without Redis, only the roles that would fork refuse.
    const noRedis = { ...production, REDIS_URL: undefined };
    expect(() =>
      parseConfig({ env: { ...noRedis, PROCESS_ROLE: 'api' }, ignoreFile: true }),
    ).toThrow(/server\.workers/);
    expect(() =>
      parseConfig({ env: { ...noRedis, PROCESS_ROLE: 'worker' }, ignoreFile: true }),
    ).toThrow(/redis\.url: required for process role 'worker'/);
  });

  it('reads TRUST_PROXY as a flag, a hop count or a list of proxies', () => {
    const trust = (v: string) =>
      parseConfig({ env: { TRUST_PROXY: v }, ignoreFile: true }).config.server.trust_proxy;
    expect(trust('false')).toBe(false);
    expect(trust('true')).toBe(true);
    expect(trust('2')).toBe(2);
    expect(trust('127.0.0.1')).toEqual(['127.0.0.1']);
    expect(trust('127.0.0.1, 10.0.0.0/8')).toEqual(['127.0.0.1', '10.0.0.0/8']);
    expect(() => trust('proxy.example.com')).toThrow(/server\.trust_proxy/);
  });

  it('names the key, the problem and the source in one line', () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ PORT: 'abc' }, /^config error: server\.port: .*\(from PORT\)$/],
      [{ PORT: '70000' }, /^config error: server\.port: .*\(from PORT\)$/],
      [
        { JWT_SECRET: 'short' },
        /^config error: auth\.jwt_secret: must be at least 32 characters \(from JWT_SECRET\)$/,
      ],
      [
        { DATABASE_URL: 'postgres://db/x' },
        /^config error: auth\.jwt_secret: required when DATABASE_URL is set/,
      ],
      [
        { PROCESS_ROLE: 'worker' },
        /^config error: database\.url: required for process role 'worker'/,
      ],
      [{ PROCESS_ROLE: 'chef' }, /^config error: process_role: .*\(from PROCESS_ROLE\)$/],
      [{ WEB_CONCURRENCY: '0' }, /^config error: server\.workers: .*\(from WEB_CONCURRENCY\)$/],
      [{ WEB_CONCURRENCY: 'two' }, /^config error: server\.workers: .*\(from WEB_CONCURRENCY\)$/],
      [
        { WEB_CONCURRENCY: '2' },
        /^config error: server\.workers: 2 API processes need PostgreSQL \(set DATABASE_URL\).* \(from WEB_CONCURRENCY\)$/,
      ],
      [
        { WEB_CONCURRENCY: '2', DATABASE_URL: 'postgres://db/x', JWT_SECRET: 'j'.repeat(40) },
        /^config error: server\.workers: 2 API processes need Redis \(set REDIS_URL\).* \(from WEB_CONCURRENCY\)$/,
      ],
      [{ LOG_LEVEL: 'loud' }, /^config error: logging\.level: /],
      [
        { DATABASE_URL: 'not a url', JWT_SECRET: 'j'.repeat(40) },
        /^config error: database\.url: not a valid URL$/,
      ],
      [{ REDIS_URL: 'redis://' + ' x' }, /^config error: redis\.url: not a valid URL$/],
      [
        { MEZZOFY__llm__response_timeout_ms: '180000' },
        /^config error: llm\.response_timeout_ms: must be shorter than agents\.turn_timeout_ms \(180000\)/,
      ],
      [{ MEZZOFY__auth__argon2__memory_kib: '1024' }, /^config error: auth\.argon2\.memory_kib: /],
    ];
    for (const [env, pattern] of cases) {
      let error: unknown;
      try {
        parseConfig({ env, ignoreFile: true });
      } catch (err) {
        error = err;
      }
      expect(error, JSON.stringify(env)).toBeInstanceOf(ConfigError);
      const message = (error as Error).message;
      expect(message, JSON.stringify(env)).toMatch(pattern);
      expect(message).not.toContain('\n');
    }
  });

  it('rejects unknown keys and invalid YAML in the config file', () => {
    const dir = tmp();
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'server:\n  prot: 8000\n');
    expect(() => parseConfig({ env: { CONFIG_FILE: file } })).toThrow(
      /unknown key server\.prot \(in .*config\.yaml\)/,
    );
    writeFileSync(file, 'server: [unclosed\n');
    expect(() => parseConfig({ env: { CONFIG_FILE: file } })).toThrow(/is not valid YAML/);
    expect(() => parseConfig({ env: { CONFIG_FILE: join(dir, 'missing.yaml') } })).toThrow(
      /does not exist/,
    );
  });

  it('lets the environment win over the file', () => {
    const dir = tmp();
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'server:\n  port: 8100\n  host: 127.0.0.1\n');
    const { config } = parseConfig({ env: { CONFIG_FILE: file, PORT: '8200' } });
    expect(config.server.port).toBe(8200);
    expect(config.server.host).toBe('127.0.0.1');
  });

  it('accepts PostgreSQL URLs in the libpq forms, Unix sockets included', () => {
    for (const url of [
      'postgres://mezzofy:secret@127.0.0.1:5432/mezzofy_ai',
      'postgresql://mezzofy@/mezzofy_ai?host=/var/run/postgresql',
      'postgres:///mezzofy_ai?host=/var/run/postgresql',
    ]) {
      const env = { DATABASE_URL: url, JWT_SECRET: 'j'.repeat(40) };
      expect(parseConfig({ env, ignoreFile: true }).config.database.url, url).toBe(url);
    }
  });

  it('reads server/config/.env (ENV_FILE) under the real environment', () => {
    const dir = tmp();
    const file = join(dir, '.env');
    writeFileSync(file, 'PORT=8300\nJWT_SECRET=from-dotenv-file-0123456789abcdefghij\n');
    const yaml = join(dir, 'config.yaml');
    writeFileSync(yaml, '');
    const fromFile = parseConfig({ env: { ENV_FILE: file, CONFIG_FILE: yaml } }).config;
    expect(fromFile.server.port).toBe(8300);
    expect(fromFile.auth.jwt_secret).toBe('from-dotenv-file-0123456789abcdefghij');
    const env = parseConfig({ env: { ENV_FILE: file, CONFIG_FILE: yaml, PORT: '8400' } }).config;
    expect(env.server.port).toBe(8400);
  });

  it('the example config file is valid', () => {
    const example = resolve(import.meta.dirname, '../../config/config.example.yaml');
    expect(() => parseConfig({ env: { CONFIG_FILE: example } })).not.toThrow();
  });
});

describe('loadConfig', () => {
  it('generates the embedded JWT signing key once, mode 0600, and reuses it', () => {
    const dataDir = tmp();
    const a = loadConfig({ env: { DATA_DIR: dataDir }, ignoreFile: true });
    const b = loadConfig({ env: { DATA_DIR: dataDir }, ignoreFile: true });
    expect(a.auth.jwt_secret.length).toBeGreaterThanOrEqual(32);
    expect(b.auth.jwt_secret).toBe(a.auth.jwt_secret);
    const file = join(dataDir, 'jwt-secret');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8').trim()).toBe(a.auth.jwt_secret);
  });

  it('resolves a relative DATA_DIR against the directory the command was typed in', () => {
    const cwd = tmp();
    const config = loadConfig({
      env: { DATA_DIR: 'here', JWT_SECRET: 'x'.repeat(40) },
      cwd,
      ignoreFile: true,
    });
    expect(config.data_dir).toBe(join(cwd, 'here'));
  });
});

describe('roles.yaml', () => {
  it('defines the ten roles, each tied to a department', () => {
    const roles = loadRoles(resolve(import.meta.dirname, '../../config/roles.yaml'));
    expect(roles.list().map((r) => r.name)).toEqual(
      expect.arrayContaining([
        'admin',
        'executive',
        'finance_manager',
        'finance_viewer',
        'sales_manager',
        'sales_rep',
        'marketing_manager',
        'marketing_staff',
        'support_manager',
        'support_agent',
      ]),
    );
    expect(roles.get('finance_viewer')?.department).toBe('finance');
    expect(roles.can('admin', 'users:write')).toBe(true);
    expect(roles.can('sales_rep', 'users:write')).toBe(false);
  });

  it('refuses a roles file with a missing role or a bad department', () => {
    const dir = tmp();
    const file = join(dir, 'roles.yaml');
    writeFileSync(
      file,
      'roles:\n  admin:\n    department: management\n    permissions: [users:write]\n',
    );
    expect(() => loadRoles(file)).toThrow(/missing role\(s\) executive/);
    writeFileSync(
      file,
      'roles:\n  admin:\n    department: kitchen\n    permissions: [users:write]\n',
    );
    expect(() => loadRoles(file)).toThrow(/roles\.admin\.department/);
  });
});

describe('process start with a bad config', () => {
  it('exits 1 with one clear line naming the key', async () => {
    const main = resolve(import.meta.dirname, '../main.ts');
    const error = await run(process.execPath, ['--import', 'tsx', main], {
      env: { PATH: process.env.PATH, PORT: 'not-a-port', DATA_DIR: tmp() },
      timeout: 20_000,
    }).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    expect(error?.code).toBe(1);
    expect(error?.stderr.trim()).toMatch(/^config error: server\.port: .*\(from PORT\)$/);
  });
});
