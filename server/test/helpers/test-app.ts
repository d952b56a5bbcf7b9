/**
 * Builds the real app on a test database, with captured logs, and offers the calls a test
 * makes again and again: create a user of a role, log in, call with a token.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { LoginResponse } from '@mezzofy/protocol';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../src/app.ts';
import type { ResolvedConfig } from '../../src/config/config.schema.ts';
import { loadConfig } from '../../src/config/load-config.ts';
import { type Container, createContainer } from '../../src/container.ts';
import type { Clock } from '../../src/infra/clock.ts';
import { createLoggers } from '../../src/logging/logger.ts';
import { insertUser } from '../../src/users/users.repository.ts';
import { createTestDatabase, type TestDatabase } from './test-database.ts';

export const TEST_JWT_SECRET = 'test-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
export const STRONG_PASSWORD = 'Correct-Horse-Battery-9';

/** Captures every log line (app and access) as text. */
export class LogCapture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void) {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    done();
  }
  text(): string {
    return this.lines.join('\n');
  }
}

export interface TestAppOptions {
  overrides?: Record<string, unknown>;
  env?: Record<string, string>;
  clock?: Clock;
  testDatabase?: TestDatabase;
}

export type TestApp = Awaited<ReturnType<typeof createTestApp>>;

export function testConfig(
  overrides: Record<string, unknown> = {},
  env: Record<string, string> = {},
): ResolvedConfig {
  return loadConfig({
    env: {
      JWT_SECRET: TEST_JWT_SECRET,
      DATA_DIR: mkdtempSync(join(tmpdir(), 'mz-data-')),
      LOG_LEVEL: 'info',
      ...env,
    },
    ignoreFile: true,
    overrides: { rate_limit: { enabled: false }, ...overrides },
  });
}

export async function createTestApp(options: TestAppOptions = {}) {
  const testDb = options.testDatabase ?? (await createTestDatabase());
  const config = testConfig(options.overrides, options.env);
  const logs = new LogCapture();
  const loggers = createLoggers({ level: config.logging.level, stdout: logs });
  const container: Container = await createContainer(config, {
    database: testDb.database,
    loggers,
    tools: {},
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const app = await buildApp(container);
  await app.ready();

  let counter = 0;
  const helpers = {
    app,
    container,
    config,
    logs,
    db: testDb.database.db,
    engine: testDb.database.engine,

    /** Inserts a user directly (fast path for test data); returns id and e-mail. */
    async createUser(
      role = 'sales_rep',
      extra: { email?: string; password?: string; department?: string; is_active?: boolean } = {},
    ) {
      counter += 1;
      const email = extra.email ?? `user${counter}-${randomBytes(3).toString('hex')}@mezzofy.test`;
      const password = extra.password ?? STRONG_PASSWORD;
      const roleDef = container.roles.get(role);
      if (!roleDef) throw new Error(`no role ${role}`);
      const user = await insertUser(testDb.database.db, {
        email,
        name: `Test ${role} ${counter}`,
        password_hash: await container.passwords.hash(password),
        department: extra.department ?? roleDef.department,
        role,
        ...(extra.is_active === undefined ? {} : { is_active: extra.is_active }),
      });
      return { id: user.id, email, password, role };
    },

    async login(
      email: string,
      password = STRONG_PASSWORD,
      headers: Record<string, string> = {},
    ): Promise<LightMyRequestResponse> {
      return app.inject({
        method: 'POST',
        url: '/auth/login',
        payload: { email, password },
        headers,
      });
    },

    /** Creates a user of `role` and logs in; returns the tokens and user. */
    async userWithToken(role = 'sales_rep') {
      const user = await helpers.createUser(role);
      const res = await helpers.login(user.email, user.password);
      if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`);
      const body = res.json() as LoginResponse;
      return { ...user, token: body.access_token, refresh: body.refresh_token, body };
    },

    inject(token: string | undefined, options: InjectOptions) {
      return app.inject({
        ...options,
        headers: {
          ...(options.headers ?? {}),
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
      });
    },

    async close() {
      await app.close();
      await container.close();
      if (!options.testDatabase) await testDb.drop();
    },
  };
  return helpers;
}
