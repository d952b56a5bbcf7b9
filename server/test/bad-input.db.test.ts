/**
 * Hostile and broken input: malformed or oversized bodies, wrong content types, forged
 * tokens, spoofed client IPs, password guessing. Every refusal is the one error envelope.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ERROR_CODES, ERROR_STATUS, type ErrorCode, type LoginResponse } from '@mezzofy/protocol';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestApp,
  STRONG_PASSWORD,
  TEST_JWT_SECRET,
  type TestApp,
} from './helpers/test-app.ts';

let t: TestApp;
/** body limit 1 KiB, trusts 127.0.0.1 as a proxy, locks an account after 3 failures; own clock. */
let tuned: TestApp;
let now = new Date('2030-01-01T00:00:00Z');
const clock = () => new Date(now.getTime());
let admin: Awaited<ReturnType<TestApp['userWithToken']>>;

beforeAll(async () => {
  [t, tuned] = await Promise.all([
    createTestApp(),
    createTestApp({
      clock,
      overrides: {
        server: { body_limit_bytes: 1024, trust_proxy: ['127.0.0.1'] },
        auth: { lockout: { account_max_failures: 3, account_ip_max_failures: 5, lock_s: 900 } },
      },
    }),
  ]);
  admin = await t.userWithToken('admin');
});
afterAll(async () => {
  await Promise.all([t?.close(), tuned?.close()]);
});

/**
 * What is wrong with an error answer, or null: the one envelope, a code from ERROR_CODES with
 * its HTTP status, a message, and request_id equal to the x-request-id header.
 */
function envelopeProblem(res: LightMyRequestResponse): string | null {
  let body: { error?: { code?: ErrorCode; message?: unknown; request_id?: string } };
  try {
    body = res.json();
  } catch {
    return `not JSON: ${res.body.slice(0, 200)}`;
  }
  const code = body.error?.code;
  if (!code || !(ERROR_CODES as readonly string[]).includes(code))
    return `unknown code ${code}: ${res.body.slice(0, 200)}`;
  if (ERROR_STATUS[code] !== res.statusCode) return `${code} with status ${res.statusCode}`;
  if (typeof body.error!.message !== 'string') return 'no message';
  if (!res.headers['x-request-id'] || body.error!.request_id !== res.headers['x-request-id'])
    return `request_id ${body.error!.request_id} vs header ${res.headers['x-request-id']}`;
  return null;
}

/** Every call in this file goes through here: each error answer is held to the envelope. */
async function send(app: TestApp, options: InjectOptions, token?: string) {
  const res = await app.inject(token, options);
  if (res.statusCode >= 400 && options.method !== 'HEAD')
    expect(envelopeProblem(res), `${options.method} ${options.url}`).toBeNull();
  return res;
}

function expectError(res: LightMyRequestResponse, status: number, code: ErrorCode) {
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  const body = res.json();
  expect(body.error.code, res.body).toBe(code);
  expect(body.error.request_id).toBe(res.headers['x-request-id']);
  return body.error as { code: string; message: string; details?: unknown; request_id: string };
}

const post = (app: TestApp, url: string, payload: string | undefined, headers = {}) =>
  send(app, {
    method: 'POST',
    url,
    headers,
    ...(payload === undefined ? {} : { payload }),
  });
const JSON_TYPE = { 'content-type': 'application/json' };

async function stillAnswers(app: TestApp) {
  const res = await app.app.inject({ method: 'GET', url: '/health' });
  expect(res.statusCode).toBe(200);
}

describe('malformed and invalid bodies', () => {
  it('malformed JSON is 400 invalid_json', async () => {
    for (const body of [
      '{"email": "a@b.c", "password": ',
      '{not json}',
      "{'a': 1}",
      '[1,2',
      'nul',
    ]) {
      expectError(await post(t, '/auth/login', body, JSON_TYPE), 400, 'invalid_json');
    }
    // Behind the token check too.
    const res = await send(
      t,
      { method: 'POST', url: '/admin/users', payload: '{"email":', headers: JSON_TYPE },
      admin.token,
    );
    expectError(res, 400, 'invalid_json');
    // Prototype poisoning is refused, not merged.
    expectError(
      await post(
        t,
        '/auth/login',
        '{"email":"a@b.c","password":"x","__proto__":{"isAdmin":true}}',
        JSON_TYPE,
      ),
      400,
      'invalid_json',
    );
  });

  it('wrong types, missing and unknown fields are 400 validation_failed with details', async () => {
    const cases: [unknown, string][] = [
      [{ email: 123, password: true }, 'email'],
      [{ email: 'a@b.c' }, 'password'],
      [{ password: STRONG_PASSWORD }, 'email'],
      [{ email: 'a@b.c', password: STRONG_PASSWORD, remember_me: true }, ''],
      [[{ email: 'a@b.c', password: STRONG_PASSWORD }], ''],
      ['just a string', ''],
      [null, ''],
      [{ email: '', password: '' }, 'email'],
      [{ email: 'a@b.c', password: 'x'.repeat(5000) }, 'password'],
    ];
    for (const [payload, path] of cases) {
      const res = await post(t, '/auth/login', JSON.stringify(payload), JSON_TYPE);
      const error = expectError(res, 400, 'validation_failed');
      const details = error.details as { in: string; path: string; message: string }[];
      expect(Array.isArray(details), res.body).toBe(true);
      expect(details.length).toBeGreaterThan(0);
      expect(details[0]!.in).toBe('body');
      expect(typeof details[0]!.message).toBe('string');
      if (path)
        expect(
          details.map((d) => d.path),
          res.body,
        ).toContain(path);
    }
    const query = await send(t, { method: 'GET', url: '/admin/users?limit=abc' }, admin.token);
    const error = expectError(query, 400, 'validation_failed');
    expect(error.details).toEqual([expect.objectContaining({ in: 'querystring', path: 'limit' })]);
    const params = await send(t, { method: 'GET', url: '/admin/users/42' }, admin.token);
    expect((expectError(params, 400, 'validation_failed').details as { in: string }[])[0]!.in).toBe(
      'params',
    );
  });

  it('a body over server.body_limit_bytes is 413 payload_too_large', async () => {
    const big = JSON.stringify({ email: 'a@b.c', password: 'x'.repeat(2000) });
    expectError(await post(tuned, '/auth/login', big, JSON_TYPE), 413, 'payload_too_large');
    const user = await tuned.userWithToken('admin');
    const create = await send(
      tuned,
      {
        method: 'POST',
        url: '/admin/users',
        headers: JSON_TYPE,
        payload: JSON.stringify({
          email: 'big@mezzofy.test',
          name: 'n'.repeat(3000),
          password: STRONG_PASSWORD,
          department: 'sales',
          role: 'sales_rep',
        }),
      },
      user.token,
    );
    expectError(create, 413, 'payload_too_large');
    // Just under the limit is read normally.
    const small = await post(
      tuned,
      '/auth/login',
      JSON.stringify({ email: user.email, password: STRONG_PASSWORD }),
      { ...JSON_TYPE, 'x-forwarded-for': '192.0.2.200' },
    );
    expect(small.statusCode).toBe(200);
    await stillAnswers(tuned);
  });

  it('a content type other than JSON is 415 unsupported_media_type', async () => {
    const creds = 'email=a@b.c&password=whatever-123';
    for (const type of [
      'text/plain',
      'text/plain; charset=utf-8',
      'application/x-www-form-urlencoded',
      'application/xml',
      'multipart/form-data; boundary=x',
    ]) {
      const res = await post(t, '/auth/login', creds, { 'content-type': type });
      expectError(res, 415, 'unsupported_media_type');
    }
    const json = JSON.stringify({ email: admin.email, password: STRONG_PASSWORD });
    const withCharset = await post(t, '/auth/login', json, {
      'content-type': 'application/json; charset=utf-8',
    });
    expect(withCharset.statusCode).toBe(200);
    // Behind the token check too, before anything is created.
    const res = await send(
      t,
      {
        method: 'POST',
        url: '/admin/users',
        headers: { 'content-type': 'text/plain' },
        payload: 'email=x@y.z',
      },
      admin.token,
    );
    expectError(res, 415, 'unsupported_media_type');
  });

  it('an empty body on POST or DELETE is a 4xx envelope, never a crash', async () => {
    const answers = [
      await post(t, '/auth/login', undefined),
      await post(t, '/auth/login', undefined, JSON_TYPE),
      await post(t, '/auth/login', '', JSON_TYPE),
      await post(t, '/auth/refresh', undefined),
      await post(t, '/auth/refresh', '', JSON_TYPE),
      await send(t, { method: 'POST', url: '/admin/users' }, admin.token),
      await send(
        t,
        { method: 'POST', url: '/admin/users', headers: JSON_TYPE, payload: '' },
        admin.token,
      ),
      await send(
        t,
        { method: 'POST', url: `/admin/users/${randomUUID()}/reset-password` },
        admin.token,
      ),
      await send(
        t,
        { method: 'DELETE', url: `/admin/users/${randomUUID()}`, headers: JSON_TYPE, payload: '' },
        admin.token,
      ),
      await send(t, { method: 'DELETE', url: `/admin/users/${randomUUID()}` }, admin.token),
      await send(t, { method: 'PATCH', url: `/admin/users/${randomUUID()}` }, admin.token),
    ];
    for (const res of answers) {
      expect(res.statusCode, res.body).toBeGreaterThanOrEqual(400);
      expect(res.statusCode, res.body).toBeLessThan(500);
      expect(ERROR_CODES).toContain(res.json().error.code);
    }
    // Logging out needs no body.
    const u = await t.userWithToken();
    const out = await send(t, { method: 'POST', url: '/auth/logout' }, u.token);
    expect(out.statusCode).toBe(200);
    await stillAnswers(t);
  });

  it('text with a NUL character is a 400, not a database error', async () => {
    const login = await post(
      t,
      '/auth/login',
      JSON.stringify({ email: 'nul\u0000@mezzofy.test', password: 'Wrong-Pass-1' }),
      JSON_TYPE,
    );
    expectError(login, 400, 'bad_request');
    for (const url of [
      '/admin/users?q=%00',
      '/admin/users?role=a%00b',
      '/admin/audit?action=%00',
    ]) {
      expectError(await send(t, { method: 'GET', url }, admin.token), 400, 'bad_request');
    }
    const create = await send(
      t,
      {
        method: 'POST',
        url: '/admin/users',
        payload: {
          email: `nul-${randomBytes(3).toString('hex')}@mezzofy.test`,
          name: 'Nul\u0000Name',
          password: STRONG_PASSWORD,
          department: 'sales',
          role: 'sales_rep',
        },
      },
      admin.token,
    );
    expectError(create, 400, 'bad_request');
    await stillAnswers(t);
  });

  it('an unknown route or method is a 404 envelope', async () => {
    expectError(await send(t, { method: 'GET', url: '/nope' }), 404, 'not_found');
    expectError(
      await send(t, { method: 'GET', url: '/admin/nope' }, admin.token),
      404,
      'not_found',
    );
    expectError(await send(t, { method: 'PUT', url: '/auth/login' }), 404, 'not_found');
    const res = await send(t, { method: 'GET', url: '/nope?token=secret' });
    expect(res.json().error.message).not.toContain('secret');
  });

  it('a malformed URL or an over-long path parameter is a 400 envelope', async () => {
    expectError(
      await send(t, { method: 'GET', url: '/admin/users/%E0%A4%A' }, admin.token),
      400,
      'bad_request',
    );
    const long = await send(
      t,
      { method: 'GET', url: `/admin/users/${'a'.repeat(500)}` },
      admin.token,
    );
    expect(long.statusCode).toBe(400);
    expect(['bad_request', 'validation_failed']).toContain(long.json().error.code);
  });
});

describe('client IP and request id', () => {
  const failureIps = async (app: TestApp, email: string) =>
    (
      await app.db
        .selectFrom('audit_log')
        .select(['ip_address', 'details'])
        .where('action', '=', 'auth.login_failed')
        .execute()
    )
      .filter((r) => r.details?.email === email)
      .map((r) => r.ip_address);

  it('ignores a spoofed X-Forwarded-For by default', async () => {
    const email = `spoof-${randomBytes(3).toString('hex')}@mezzofy.test`;
    const res = await post(t, '/auth/login', JSON.stringify({ email, password: 'Wrong-Pass-1' }), {
      ...JSON_TYPE,
      'x-forwarded-for': '203.0.113.66',
    });
    expectError(res, 401, 'invalid_credentials');
    expect(await failureIps(t, email)).toEqual(['127.0.0.1']);
    // Nor is a client-chosen request id taken.
    const own = await t.app.inject({
      method: 'GET',
      url: '/nope',
      headers: { 'x-request-id': 'client-chosen-id-123' },
    });
    expect(own.headers['x-request-id']).not.toBe('client-chosen-id-123');
  });

  it('trusts X-Forwarded-For and X-Request-Id from a configured proxy', async () => {
    const email = `proxied-${randomBytes(3).toString('hex')}@mezzofy.test`;
    const res = await post(
      tuned,
      '/auth/login',
      JSON.stringify({ email, password: 'Wrong-Pass-1' }),
      { ...JSON_TYPE, 'x-forwarded-for': '203.0.113.66', 'x-request-id': 'proxy-request-0001' },
    );
    expectError(res, 401, 'invalid_credentials');
    expect(res.headers['x-request-id']).toBe('proxy-request-0001');
    expect(res.json().error.request_id).toBe('proxy-request-0001');
    expect(await failureIps(tuned, email)).toEqual(['203.0.113.66']);
    // A junk request id is replaced.
    const junk = await tuned.app.inject({
      method: 'GET',
      url: '/nope',
      headers: { 'x-request-id': 'bad id with spaces <script>' },
    });
    expect(junk.headers['x-request-id']).not.toContain(' ');
  });
});

describe('forged access tokens', () => {
  it('refuses tokens with a wrong key, algorithm, audience, issuer, type or lifetime', async () => {
    const u = await t.userWithToken('sales_rep');
    const { sid } = JSON.parse(Buffer.from(u.token.split('.')[1]!, 'base64url').toString()) as {
      sid: string;
    };
    const { issuer, audience } = t.config.auth;
    const secret = new TextEncoder().encode(TEST_JWT_SECRET);
    const sign = async (
      options: {
        key?: Uint8Array;
        alg?: string;
        typ?: string;
        iss?: string;
        aud?: string;
        iat?: number;
        exp?: number;
        sid?: string;
        sub?: string;
      } = {},
    ) => {
      const iat = options.iat ?? Math.floor(Date.now() / 1000);
      return new SignJWT({ sid: options.sid ?? sid })
        .setProtectedHeader({ alg: options.alg ?? 'HS256', typ: options.typ ?? 'at+jwt' })
        .setSubject(options.sub ?? u.id)
        .setIssuer(options.iss ?? issuer)
        .setAudience(options.aud ?? audience)
        .setIssuedAt(iat)
        .setExpirationTime(options.exp ?? iat + 600)
        .sign(options.key ?? secret);
    };
    const me = (token: string) => send(t, { method: 'GET', url: '/auth/me' }, token);

    // The harness itself is right: a token made like the server's works.
    expect((await me(await sign())).statusCode).toBe(200);

    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: u.id, sid, iss: issuer, aud: audience, iat: now, exp: now + 600 };
    const forged: Record<string, string> = {
      'other secret': await sign({ key: new TextEncoder().encode('x'.repeat(48)) }),
      'alg none': `${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(claims)}.`,
      'HS512 with the right secret': await sign({ alg: 'HS512' }),
      'wrong audience': await sign({ aud: 'someone-else' }),
      'wrong issuer': await sign({ iss: 'evil-issuer' }),
      'plain JWT type': await sign({ typ: 'JWT' }),
      'unknown session': await sign({ sid: randomUUID() }),
      'another user': await sign({ sub: admin.id }),
      'tampered payload': `${u.token.split('.')[0]}.${b64({ ...claims, sub: admin.id })}.${u.token.split('.')[2]}`,
    };
    for (const [what, token] of Object.entries(forged)) {
      const res = await me(token);
      expect(res.statusCode, what).toBe(401);
      expect(res.json().error.code, what).toBe('unauthorized');
    }
    const expired = await me(await sign({ iat: now - 3600, exp: now - 60 }));
    expectError(expired, 401, 'token_expired');
    // And none of them reached the admin API.
    for (const token of Object.values(forged)) {
      expect((await send(t, { method: 'GET', url: '/admin/users' }, token)).statusCode).toBe(401);
    }
  });
});

describe('5xx answers', () => {
  it('never leak the error: internal_error with a generic message, logged with the request id', async () => {
    const broken = await createTestApp();
    try {
      const u = await broken.userWithToken('sales_rep');
      await broken.container.database.close();
      const res = await send(broken, { method: 'GET', url: '/auth/me' }, u.token);
      const error = expectError(res, 500, 'internal_error');
      expect(error.message).toBe('internal server error');
      expect(res.body).not.toMatch(/pglite|pool|closed|kysely|select|stack|\.ts/i);
      expect(error.details).toBeUndefined();
      // The real cause is in the log, under the same request id.
      const logged = broken.logs.lines.find(
        (l) => l.includes(error.request_id) && l.includes('"level":50'),
      );
      expect(logged).toBeDefined();
      // Still answering: health says the database is down, it does not crash.
      const health = await broken.app.inject({ method: 'GET', url: '/health' });
      expect(health.statusCode).toBe(503);
      const login = await post(
        broken,
        '/auth/login',
        JSON.stringify({ email: u.email, password: STRONG_PASSWORD }),
        JSON_TYPE,
      );
      expectError(login, 500, 'internal_error');
    } finally {
      await broken.close();
    }
  });
});

describe('login lockout', () => {
  const login = (app: TestApp, email: string, password: string, ip?: string) =>
    post(app, '/auth/login', JSON.stringify({ email, password }), {
      ...JSON_TYPE,
      ...(ip ? { 'x-forwarded-for': ip } : {}),
    });

  it('locks an (account, IP) after 5 failures: 429 with Retry-After, even for the right password', async () => {
    const u = await t.createUser('sales_rep');
    const other = await t.createUser('sales_rep');
    for (let i = 0; i < 5; i++) {
      expectError(await login(t, u.email, `Wrong-Pass-${i}`), 401, 'invalid_credentials');
    }
    for (const password of ['Wrong-Pass-9', STRONG_PASSWORD]) {
      const res = await login(t, u.email, password);
      const error = expectError(res, 429, 'account_locked');
      const retryAfter = Number(res.headers['retry-after']);
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(900);
      expect(error.details).toEqual({ retry_after_s: retryAfter });
    }
    // In another case the e-mail is the same account.
    expectError(await login(t, u.email.toUpperCase(), STRONG_PASSWORD), 429, 'account_locked');
    // Another account from the same IP is not affected.
    expect((await login(t, other.email, STRONG_PASSWORD)).statusCode).toBe(200);
  });

  it('a burst of parallel guesses cannot outrun the lockout', async () => {
    const u = await t.createUser('sales_rep');
    const burst = await Promise.all(
      Array.from({ length: 30 }, (_, i) => login(t, u.email, `Wrong-Pass-${i}`)),
    );
    const statuses = burst.map((r) => r.statusCode);
    // Only as many passwords are tried as the policy allows; the rest are refused unseen.
    expect(statuses.filter((s) => s === 401).length, statuses.join(',')).toBeLessThanOrEqual(5);
    expect(statuses.filter((s) => s !== 401 && s !== 429)).toEqual([]);
    expectError(await login(t, u.email, STRONG_PASSWORD), 429, 'account_locked');
  });

  it('a successful login clears the failures', async () => {
    const u = await t.createUser('sales_rep');
    for (let i = 0; i < 4; i++) await login(t, u.email, `Wrong-Pass-${i}`);
    expect((await login(t, u.email, STRONG_PASSWORD)).statusCode).toBe(200);
    for (let i = 0; i < 4; i++) await login(t, u.email, `Wrong-Pass-${i}`);
    expect((await login(t, u.email, STRONG_PASSWORD)).statusCode).toBe(200);
  });

  it('locks the account across IPs at account_max_failures, and unlocks after lock_s', async () => {
    const u = await tuned.createUser('support_agent');
    const bystander = await tuned.createUser('support_agent');
    for (let i = 1; i <= 3; i++) {
      expectError(
        await login(tuned, u.email, 'Wrong-Pass-1', `198.51.100.${i}`),
        401,
        'invalid_credentials',
      );
    }
    const locked = await login(tuned, u.email, STRONG_PASSWORD, '198.51.100.77');
    expectError(locked, 429, 'account_locked');
    expect(Number(locked.headers['retry-after'])).toBe(900);
    // Other accounts from those IPs are fine.
    expect((await login(tuned, bystander.email, STRONG_PASSWORD, '198.51.100.1')).statusCode).toBe(
      200,
    );

    now = new Date(now.getTime() + 600_000);
    const later = await login(tuned, u.email, STRONG_PASSWORD, '198.51.100.78');
    expectError(later, 429, 'account_locked');
    expect(Number(later.headers['retry-after'])).toBe(300);

    now = new Date(now.getTime() + 301_000);
    const open = await login(tuned, u.email, STRONG_PASSWORD, '198.51.100.79');
    expect(open.statusCode, open.body).toBe(200);
    const token = (open.json() as LoginResponse).access_token;
    expect((await send(tuned, { method: 'GET', url: '/auth/me' }, token)).statusCode).toBe(200);
  });
});
