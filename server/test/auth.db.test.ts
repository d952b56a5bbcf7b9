import type { LoginResponse, TokenPair } from '@mezzofy/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, STRONG_PASSWORD, type TestApp } from './helpers/test-app.ts';

let t: TestApp;
beforeAll(async () => {
  t = await createTestApp();
});
afterAll(async () => {
  await t.close();
});

describe('login', () => {
  it('returns tokens and the user, case-insensitively on e-mail, and audits it', async () => {
    const user = await t.createUser('finance_manager');
    const res = await t.login(user.email.toUpperCase());
    expect(res.statusCode).toBe(200);
    const body = res.json() as LoginResponse;
    expect(body.token_type).toBe('Bearer');
    expect(body.expires_in).toBe(900);
    expect(body.user).toMatchObject({
      id: user.id,
      role: 'finance_manager',
      department: 'finance',
      timezone: 'Asia/Singapore',
      locale: 'en',
    });
    expect(body.user.permissions).toContain('agent:finance');
    const audit = await t.db
      .selectFrom('audit_log')
      .selectAll()
      .where('user_id', '=', user.id)
      .where('action', '=', 'auth.login')
      .execute();
    expect(audit).toHaveLength(1);
    expect(audit[0]!.ip_address).toBe('127.0.0.1');
  });

  it('answers a wrong password and an unknown user the same way', async () => {
    const user = await t.createUser();
    const wrong = await t.login(user.email, 'Not-The-Password-1');
    const unknown = await t.login('nobody-here@mezzofy.test', 'Not-The-Password-1');
    expect(wrong.statusCode).toBe(401);
    expect(unknown.statusCode).toBe(401);
    expect(wrong.json().error.code).toBe('invalid_credentials');
    expect(unknown.json().error.message).toBe(wrong.json().error.message);
    const failures = await t.db
      .selectFrom('audit_log')
      .select('details')
      .where('action', '=', 'auth.login_failed')
      .execute();
    expect(failures.length).toBeGreaterThanOrEqual(2);
  });

  it('spends Argon2id time on unknown users too', async () => {
    const user = await t.createUser();
    const time = async (email: string) => {
      const start = performance.now();
      await t.login(email, 'Not-The-Password-1');
      return performance.now() - start;
    };
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 3; i++) {
      known.push(await time(user.email));
      unknown.push(await time(`ghost${i}@mezzofy.test`));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[1]!;
    // Both pay for one Argon2id verify (≈10 ms at the OWASP cost); no fast path for unknown.
    expect(median(unknown)).toBeGreaterThan(median(known) * 0.5);
  });

  it('refuses a deactivated account with the right password', async () => {
    const user = await t.createUser('sales_rep', { is_active: false });
    const res = await t.login(user.email);
    expect(res.statusCode).toBe(403);
    expect(res.json().error.code).toBe('account_inactive');
  });
});

describe('me and access tokens', () => {
  it('GET /auth/me returns the caller', async () => {
    const u = await t.userWithToken('support_agent');
    const res = await t.inject(u.token, { method: 'GET', url: '/auth/me' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      id: u.id,
      email: u.email,
      role: 'support_agent',
      department: 'support',
    });
    expect(res.headers['x-request-id']).toBeTruthy();
  });

  it('rejects a missing, malformed, or refresh token used as access token with 401', async () => {
    const u = await t.userWithToken();
    for (const headers of [
      {},
      { authorization: 'Basic abc' },
      { authorization: `Bearer ${u.refresh}` },
      { authorization: 'Bearer a.b.c' },
    ]) {
      const res = await t.app.inject({ method: 'GET', url: '/auth/me', headers });
      expect(res.statusCode).toBe(401);
      expect(res.json().error).toMatchObject({ code: 'unauthorized' });
      expect(res.json().error.request_id).toBe(res.headers['x-request-id']);
    }
  });
});

describe('refresh rotation', () => {
  it('rotates: the new pair works, the old refresh token is spent', async () => {
    const u = await t.userWithToken();
    const res = await t.app.inject({
      method: 'POST',
      url: '/auth/refresh',
      payload: { refresh_token: u.refresh },
    });
    expect(res.statusCode).toBe(200);
    const pair = res.json() as TokenPair;
    expect(pair.refresh_token).not.toBe(u.refresh);
    const me = await t.inject(pair.access_token, { method: 'GET', url: '/auth/me' });
    expect(me.statusCode).toBe(200);
    const stored = await t.db.selectFrom('refresh_tokens').select('token_hash').execute();
    expect(stored.map((r) => r.token_hash)).not.toContain(u.refresh);
  });

  it('two concurrent refreshes with one token: exactly one wins and its tokens keep working', async () => {
    const u = await t.userWithToken();
    const results = await Promise.all(
      [0, 1].map(() =>
        t.app.inject({
          method: 'POST',
          url: '/auth/refresh',
          payload: { refresh_token: u.refresh },
        }),
      ),
    );
    const codes = results.map((r) => r.statusCode).sort();
    expect(codes).toEqual([200, 401]);
    const winner = results.find((r) => r.statusCode === 200)!.json() as TokenPair;
    expect(
      (await t.inject(winner.access_token, { method: 'GET', url: '/auth/me' })).statusCode,
    ).toBe(200);
    const again = await t.app.inject({
      method: 'POST',
      url: '/auth/refresh',
      payload: { refresh_token: winner.refresh_token },
    });
    expect(again.statusCode).toBe(200);
  });

  it('reuse of an already-rotated token revokes the whole family, access tokens included', async () => {
    const clockApp = await createTestApp({ overrides: { auth: { refresh_reuse_grace_s: 0 } } });
    try {
      const u = await clockApp.userWithToken();
      const first = (
        await clockApp.app.inject({
          method: 'POST',
          url: '/auth/refresh',
          payload: { refresh_token: u.refresh },
        })
      ).json() as TokenPair;
      const reuse = await clockApp.app.inject({
        method: 'POST',
        url: '/auth/refresh',
        payload: { refresh_token: u.refresh },
      });
      expect(reuse.statusCode).toBe(401);
      expect(
        (await clockApp.inject(first.access_token, { method: 'GET', url: '/auth/me' })).statusCode,
      ).toBe(401);
      const next = await clockApp.app.inject({
        method: 'POST',
        url: '/auth/refresh',
        payload: { refresh_token: first.refresh_token },
      });
      expect(next.statusCode).toBe(401);
      const audit = await clockApp.db
        .selectFrom('audit_log')
        .select('action')
        .where('user_id', '=', u.id)
        .execute();
      expect(audit.map((a) => a.action)).toContain('auth.refresh_reuse_detected');
    } finally {
      await clockApp.close();
    }
  });

  it('rejects an unknown refresh token', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: '/auth/refresh',
      payload: { refresh_token: 'nope' },
    });
    expect(res.statusCode).toBe(401);
  });
});

describe('logout and password change', () => {
  it('logout ends the session at once: access and refresh token both stop working', async () => {
    const u = await t.userWithToken();
    const out = await t.inject(u.token, { method: 'POST', url: '/auth/logout' });
    expect(out.statusCode).toBe(200);
    expect((await t.inject(u.token, { method: 'GET', url: '/auth/me' })).statusCode).toBe(401);
    const refresh = await t.app.inject({
      method: 'POST',
      url: '/auth/refresh',
      payload: { refresh_token: u.refresh },
    });
    expect(refresh.statusCode).toBe(401);
  });

  it('logout of one session leaves the user’s other sessions alive', async () => {
    const u = await t.userWithToken();
    const other = (await t.login(u.email)).json() as LoginResponse;
    await t.inject(u.token, { method: 'POST', url: '/auth/logout' });
    expect(
      (await t.inject(other.access_token, { method: 'GET', url: '/auth/me' })).statusCode,
    ).toBe(200);
  });

  it('change-password revokes every session and returns a fresh pair', async () => {
    const u = await t.userWithToken();
    const other = (await t.login(u.email)).json() as LoginResponse;
    const res = await t.inject(u.token, {
      method: 'POST',
      url: '/auth/change-password',
      payload: { current_password: STRONG_PASSWORD, new_password: 'Another-Strong-Pass-42' },
    });
    expect(res.statusCode).toBe(200);
    const pair = res.json() as TokenPair;
    expect((await t.inject(u.token, { method: 'GET', url: '/auth/me' })).statusCode).toBe(401);
    expect(
      (await t.inject(other.access_token, { method: 'GET', url: '/auth/me' })).statusCode,
    ).toBe(401);
    expect((await t.inject(pair.access_token, { method: 'GET', url: '/auth/me' })).statusCode).toBe(
      200,
    );
    expect((await t.login(u.email, STRONG_PASSWORD)).statusCode).toBe(401);
    expect((await t.login(u.email, 'Another-Strong-Pass-42')).statusCode).toBe(200);
  });

  it('change-password enforces the policy and the current password', async () => {
    const u = await t.userWithToken();
    const cases = [
      {
        current_password: 'wrong-current-1',
        new_password: 'Another-Strong-Pass-42',
        status: 401,
        code: 'invalid_credentials',
      },
      {
        current_password: STRONG_PASSWORD,
        new_password: 'short',
        status: 400,
        code: 'weak_password',
      },
      {
        current_password: STRONG_PASSWORD,
        new_password: 'password123',
        status: 400,
        code: 'weak_password',
      },
      {
        current_password: STRONG_PASSWORD,
        new_password: 'x'.repeat(129),
        status: 400,
        code: 'weak_password',
      },
    ];
    for (const { status, code, ...payload } of cases) {
      const res = await t.inject(u.token, {
        method: 'POST',
        url: '/auth/change-password',
        payload,
      });
      expect(res.statusCode, JSON.stringify(payload)).toBe(status);
      expect(res.json().error.code).toBe(code);
    }
    // A long passphrase of 128 characters is fine.
    const ok = await t.inject(u.token, {
      method: 'POST',
      url: '/auth/change-password',
      payload: { current_password: STRONG_PASSWORD, new_password: `${'a1B-'.repeat(32)}` },
    });
    expect(ok.statusCode).toBe(200);
  });
});
