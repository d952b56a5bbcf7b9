import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoginResponse, UserView } from '@mezzofy/protocol';
import type { LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVER_ROOT } from '../src/config/load-config.ts';
import { createTestApp, STRONG_PASSWORD, type TestApp } from './helpers/test-app.ts';

let t: TestApp;
let admin: Awaited<ReturnType<TestApp['userWithToken']>>;

beforeAll(async () => {
  t = await createTestApp();
  admin = await t.userWithToken('admin');
});
afterAll(async () => {
  await t.close();
});

const marker = () => `mk${randomBytes(4).toString('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectError(res: LightMyRequestResponse, status: number, code: string) {
  expect(res.statusCode, res.body).toBe(status);
  const body = res.json();
  expect(body.error.code, res.body).toBe(code);
  expect(typeof body.error.message).toBe('string');
  expect(body.error.request_id).toBe(res.headers['x-request-id']);
}

const get = (app: TestApp, token: string, url: string) => app.inject(token, { method: 'GET', url });
const me = (app: TestApp, token: string) => get(app, token, '/auth/me');
const refresh = (app: TestApp, refreshToken: string) =>
  app.app.inject({
    method: 'POST',
    url: '/auth/refresh',
    payload: { refresh_token: refreshToken },
  });

async function createViaApi(
  app: TestApp,
  token: string,
  payload: Record<string, unknown>,
): Promise<UserView> {
  const res = await app.inject(token, { method: 'POST', url: '/admin/users', payload });
  expect(res.statusCode, res.body).toBe(201);
  return res.json() as UserView;
}

async function auditRows(app: TestApp, action: string, targetId: string) {
  const rows = await app.db
    .selectFrom('audit_log')
    .selectAll()
    .where('action', '=', action)
    .orderBy('id')
    .execute();
  return rows.filter((r) => r.details?.target_user_id === targetId);
}

/** Every page of GET `url` (which already has its filters), following next_cursor. */
async function walk<T extends { id: string | number }>(token: string, url: string, limit = 2) {
  const seen: T[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 1000; page++) {
    const sep = url.includes('?') ? '&' : '?';
    const res = await get(
      t,
      token,
      `${url}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    );
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { items: T[]; next_cursor: string | null };
    expect(body.items.length).toBeLessThanOrEqual(limit);
    seen.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) return seen;
  }
  throw new Error('pagination did not end');
}

describe('GET /admin/users', () => {
  it('searches name and e-mail case-insensitively, with % and _ taken literally', async () => {
    const m = marker();
    const pct = await createViaApi(t, admin.token, {
      email: `pct-${m}@mezzofy.test`,
      name: `${m} Growth 100% Sure`,
      password: STRONG_PASSWORD,
      department: 'sales',
      role: 'sales_rep',
    });
    const noPct = await createViaApi(t, admin.token, {
      email: `nopct-${m}@mezzofy.test`,
      name: `${m} Growth 1000 Sure`,
      password: STRONG_PASSWORD,
      department: 'sales',
      role: 'sales_rep',
    });
    const under = await createViaApi(t, admin.token, {
      email: `under-${m}@mezzofy.test`,
      name: `${m} Ann_Lee`,
      password: STRONG_PASSWORD,
      department: 'finance',
      role: 'finance_viewer',
    });
    const noUnder = await createViaApi(t, admin.token, {
      email: `nounder-${m}@mezzofy.test`,
      name: `${m} AnnXLee`,
      password: STRONG_PASSWORD,
      department: 'finance',
      role: 'finance_viewer',
    });
    const search = async (q: string) => {
      const res = await get(t, admin.token, `/admin/users?q=${encodeURIComponent(q)}&limit=100`);
      expect(res.statusCode, res.body).toBe(200);
      return (res.json().items as UserView[]).map((u) => u.id).sort();
    };
    expect(await search(m.toUpperCase())).toEqual([pct.id, noPct.id, under.id, noUnder.id].sort());
    expect(await search(`${m} growth 100%`)).toEqual([pct.id]);
    expect(await search('100% sure')).toContain(pct.id);
    expect(await search('100% sure')).not.toContain(noPct.id);
    expect(await search(`${m} ann_lee`)).toEqual([under.id]);
    // By e-mail, in any case.
    expect(await search(`NOUNDER-${m}@MEZZOFY`)).toEqual([noUnder.id]);
    expect(await search(`zz-no-such-user-${m}`)).toEqual([]);
  });

  it('filters by department, role and is_active', async () => {
    const m = marker();
    const base = { password: STRONG_PASSWORD };
    const fm = await createViaApi(t, admin.token, {
      ...base,
      email: `fm-${m}@mezzofy.test`,
      name: `${m} fm`,
      department: 'finance',
      role: 'finance_manager',
    });
    const fv = await createViaApi(t, admin.token, {
      ...base,
      email: `fv-${m}@mezzofy.test`,
      name: `${m} fv`,
      department: 'finance',
      role: 'finance_viewer',
    });
    const sa = await createViaApi(t, admin.token, {
      ...base,
      email: `sa-${m}@mezzofy.test`,
      name: `${m} sa`,
      department: 'support',
      role: 'support_agent',
    });
    const del = await t.inject(admin.token, { method: 'DELETE', url: `/admin/users/${fv.id}` });
    expect(del.statusCode).toBe(200);

    const ids = async (query: string) => {
      const res = await get(t, admin.token, `/admin/users?q=${m}&limit=100&${query}`);
      expect(res.statusCode, res.body).toBe(200);
      return (res.json().items as UserView[]).map((u) => u.id).sort();
    };
    expect(await ids('department=finance')).toEqual([fm.id, fv.id].sort());
    expect(await ids('department=support')).toEqual([sa.id]);
    expect(await ids('role=finance_manager')).toEqual([fm.id]);
    expect(await ids('is_active=false')).toEqual([fv.id]);
    expect(await ids('is_active=true')).toEqual([fm.id, sa.id].sort());
    expect(await ids('department=finance&is_active=true')).toEqual([fm.id]);
    expect(await ids('role=no_such_role')).toEqual([]);

    expectError(await get(t, admin.token, '/admin/users?department=hr'), 400, 'validation_failed');
    expectError(await get(t, admin.token, '/admin/users?is_active=yes'), 400, 'validation_failed');
    expectError(await get(t, admin.token, '/admin/users?color=red'), 400, 'validation_failed');
  });

  it('walks every page with limit 2: each user exactly once, newest first', async () => {
    // Users created in one statement (an import) share one created_at to the microsecond.
    const m = marker();
    await t.db
      .insertInto('users')
      .values(
        Array.from({ length: 5 }, (_, i) => ({
          email: `bulk${i}-${m}@mezzofy.test`,
          name: `${m} bulk ${i}`,
          password_hash: 'not-a-hash',
          department: 'sales',
          role: 'sales_rep',
        })),
      )
      .execute();
    for (let i = 0; i < 3; i++) await t.createUser('support_agent');

    const all = await t.db.selectFrom('users').select('id').execute();
    const seen = await walk<UserView>(admin.token, '/admin/users', 2);
    const ids = seen.map((u) => u.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.sort()).toEqual(all.map((u) => u.id).sort());
    const times = seen.map((u) => u.created_at);
    // (ids were sorted in place above; the times keep the page order)
    expect([...times].sort().reverse()).toEqual(times);

    // Filtered walk: only the bulk users, each once.
    const bulk = await walk<UserView>(admin.token, `/admin/users?q=${m}`, 2);
    expect(bulk.map((u) => u.name).sort()).toEqual([0, 1, 2, 3, 4].map((i) => `${m} bulk ${i}`));
  });

  it('rejects limit over 100 and a garbage cursor with 400', async () => {
    expectError(await get(t, admin.token, '/admin/users?limit=101'), 400, 'validation_failed');
    expectError(await get(t, admin.token, '/admin/users?limit=0'), 400, 'validation_failed');
    expect((await get(t, admin.token, '/admin/users?limit=100')).statusCode).toBe(200);
    const forged = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    for (const cursor of [
      'garbage!!',
      'bm90IGpzb24',
      forged({ k: 'yesterday', id: randomUUID() }),
      forged({ k: new Date().toISOString(), id: 'not-a-uuid' }),
      forged({ k: 12, id: {} }),
      forged(null),
    ]) {
      const res = await get(t, admin.token, `/admin/users?cursor=${encodeURIComponent(cursor)}`);
      expectError(res, 400, 'bad_request');
    }
  });

  it('GET /admin/users/:id returns one user', async () => {
    const u = await t.createUser('marketing_staff');
    const res = await get(t, admin.token, `/admin/users/${u.id}`);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      id: u.id,
      email: u.email,
      role: 'marketing_staff',
      department: 'marketing',
      is_active: true,
    });
    expect(res.json().permissions).toContain('content:write');
    expect(res.json()).not.toHaveProperty('password_hash');
  });
});

describe('POST /admin/users', () => {
  it('creates a user who can log in, and audits it', async () => {
    const m = marker();
    const res = await t.inject(admin.token, {
      method: 'POST',
      url: '/admin/users',
      payload: {
        email: `New.Person-${m}@Mezzofy.test`,
        name: 'New Person',
        password: 'Plenty-Long-Passphrase-7',
        department: 'support',
        role: 'support_manager',
        timezone: 'Europe/London',
        locale: 'ms',
      },
    });
    expect(res.statusCode, res.body).toBe(201);
    const user = res.json() as UserView;
    expect(user).toMatchObject({
      email: `new.person-${m}@mezzofy.test`,
      name: 'New Person',
      department: 'support',
      role: 'support_manager',
      is_active: true,
      timezone: 'Europe/London',
      locale: 'ms',
    });
    expect(user.permissions).toContain('tickets:write');
    const login = await t.login(user.email, 'Plenty-Long-Passphrase-7');
    expect(login.statusCode).toBe(200);

    const audit = await auditRows(t, 'admin.user_created', user.id);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      user_id: admin.id,
      department: 'management',
      ip_address: '127.0.0.1',
    });
  });

  it('refuses a duplicate e-mail in another case with 409 conflict', async () => {
    const m = marker();
    const payload = {
      email: `dup-${m}@mezzofy.test`,
      name: 'Dup',
      password: STRONG_PASSWORD,
      department: 'sales',
      role: 'sales_rep',
    };
    await createViaApi(t, admin.token, payload);
    const again = await t.inject(admin.token, {
      method: 'POST',
      url: '/admin/users',
      payload: { ...payload, email: `DUP-${m}@MEZZOFY.TEST` },
    });
    expectError(again, 409, 'conflict');
    // Two at once: exactly one wins, the other is a clean 409.
    const race = await Promise.all(
      [0, 1].map(() =>
        t.inject(admin.token, {
          method: 'POST',
          url: '/admin/users',
          payload: { ...payload, email: `race-${m}@mezzofy.test` },
        }),
      ),
    );
    expect(race.map((r) => r.statusCode).sort()).toEqual([201, 409]);
    expectError(race.find((r) => r.statusCode === 409)!, 409, 'conflict');
  });

  it('refuses unknown roles, weak passwords and unknown fields, creating nothing', async () => {
    const m = marker();
    const payload = {
      email: `bad-${m}@mezzofy.test`,
      name: 'Bad',
      password: STRONG_PASSWORD,
      department: 'sales',
      role: 'sales_rep',
    };
    const post = (p: Record<string, unknown>) =>
      t.inject(admin.token, { method: 'POST', url: '/admin/users', payload: p });
    const role = await post({ ...payload, role: 'overlord' });
    expectError(role, 400, 'validation_failed');
    for (const password of ['password123', 'short', 'x'.repeat(129), `bad-${m}@mezzofy.test`]) {
      expectError(await post({ ...payload, password }), 400, 'weak_password');
    }
    const extra = await post({ ...payload, is_admin: true });
    expectError(extra, 400, 'validation_failed');
    expect(extra.json().error.details).toBeDefined();
    expectError(await post({ ...payload, department: 'hr' }), 400, 'validation_failed');
    expectError(await post({ ...payload, email: 'not-an-email' }), 400, 'validation_failed');
    expectError(await post({ ...payload, timezone: 'Mars/Olympus' }), 400, 'validation_failed');
    const { name: _name, ...noName } = payload;
    expectError(await post(noName), 400, 'validation_failed');
    const stored = await t.db
      .selectFrom('users')
      .select('id')
      .where('email', '=', payload.email)
      .execute();
    expect(stored).toHaveLength(0);
  });

  it('stores SQL metacharacters verbatim', async () => {
    const m = marker();
    const name = `Robert'); DROP TABLE users;-- ${m} "quoted" \\ back`;
    const user = await createViaApi(t, admin.token, {
      email: `bobby-${m}@mezzofy.test`,
      name,
      password: STRONG_PASSWORD,
      department: 'sales',
      role: 'sales_rep',
    });
    expect(user.name).toBe(name);
    const read = await get(t, admin.token, `/admin/users/${user.id}`);
    expect(read.json().name).toBe(name);
    const found = await get(
      t,
      admin.token,
      `/admin/users?q=${encodeURIComponent("Robert'); DROP")}`,
    );
    expect((found.json().items as UserView[]).map((u) => u.id)).toContain(user.id);
    expect((await t.db.selectFrom('users').select('id').execute()).length).toBeGreaterThan(1);
  });
});

describe('PATCH /admin/users/:id', () => {
  it('updates name, department, role, is_active, timezone and locale, and audits it', async () => {
    const u = await t.createUser('sales_rep');
    const res = await t.inject(admin.token, {
      method: 'PATCH',
      url: `/admin/users/${u.id}`,
      payload: {
        name: 'Renamed Person',
        department: 'marketing',
        role: 'marketing_manager',
        timezone: 'America/New_York',
        locale: 'zh',
      },
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({
      id: u.id,
      name: 'Renamed Person',
      department: 'marketing',
      role: 'marketing_manager',
      timezone: 'America/New_York',
      locale: 'zh',
      is_active: true,
    });
    expect(res.json().permissions).toContain('content:write');
    const audit = await auditRows(t, 'admin.user_updated', u.id);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      user_id: admin.id,
      department: 'management',
      ip_address: '127.0.0.1',
    });
    expect(audit[0]!.details).toMatchObject({
      changes: { role: { from: 'sales_rep', to: 'marketing_manager' } },
    });

    const off = await t.inject(admin.token, {
      method: 'PATCH',
      url: `/admin/users/${u.id}`,
      payload: { is_active: false },
    });
    expect(off.statusCode).toBe(200);
    expect(off.json().is_active).toBe(false);
    expect(await auditRows(t, 'admin.user_deactivated', u.id)).toHaveLength(1);
    const on = await t.inject(admin.token, {
      method: 'PATCH',
      url: `/admin/users/${u.id}`,
      payload: { is_active: true },
    });
    expect(on.json().is_active).toBe(true);
    expect((await t.login(u.email)).statusCode).toBe(200);
  });

  it('refuses an invalid time zone, locale, role, empty or unknown fields with 400', async () => {
    const u = await t.createUser('sales_rep');
    const patch = (payload: Record<string, unknown>) =>
      t.inject(admin.token, { method: 'PATCH', url: `/admin/users/${u.id}`, payload });
    expectError(await patch({ timezone: 'Not/AZone' }), 400, 'validation_failed');
    expectError(await patch({ locale: 'fr' }), 400, 'validation_failed');
    expectError(await patch({ role: 'overlord' }), 400, 'validation_failed');
    expectError(await patch({ is_active: 'no' }), 400, 'validation_failed');
    expectError(await patch({}), 400, 'validation_failed');
    expectError(await patch({ email: 'x@y.test' }), 400, 'validation_failed');
    const row = await t.db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', u.id)
      .executeTakeFirst();
    expect(row).toMatchObject({ role: 'sales_rep', timezone: 'Asia/Singapore', locale: 'en' });
    expect(await auditRows(t, 'admin.user_updated', u.id)).toHaveLength(0);
  });

  it('an admin cannot change their own role, department or active state', async () => {
    const self = await t.userWithToken('admin');
    const patch = (payload: Record<string, unknown>) =>
      t.inject(self.token, { method: 'PATCH', url: `/admin/users/${self.id}`, payload });
    expectError(await patch({ role: 'sales_rep' }), 403, 'forbidden');
    expectError(await patch({ department: 'sales' }), 403, 'forbidden');
    expectError(await patch({ is_active: false }), 403, 'forbidden');
    expectError(
      await t.inject(self.token, { method: 'DELETE', url: `/admin/users/${self.id}` }),
      403,
      'forbidden',
    );
    // Their own name and preferences are fine.
    const ok = await patch({ name: 'Self Renamed', locale: 'zh' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ role: 'admin', is_active: true, name: 'Self Renamed' });
  });
});

describe('changes take effect on the very next request', () => {
  it('a promoted user can use the admin API at once; a demoted admin is refused at once', async () => {
    const rep = await t.userWithToken('sales_rep');
    expectError(await get(t, rep.token, '/admin/users'), 403, 'forbidden');
    const up = await t.inject(admin.token, {
      method: 'PATCH',
      url: `/admin/users/${rep.id}`,
      payload: { role: 'admin' },
    });
    expect(up.statusCode).toBe(200);
    expect((await get(t, rep.token, '/admin/users')).statusCode).toBe(200);
    expect((await me(t, rep.token)).json().role).toBe('admin');

    const down = await t.inject(admin.token, {
      method: 'PATCH',
      url: `/admin/users/${rep.id}`,
      payload: { role: 'sales_rep' },
    });
    expect(down.statusCode).toBe(200);
    expectError(await get(t, rep.token, '/admin/users'), 403, 'forbidden');
    // Still signed in: a role change does not end the session.
    expect((await me(t, rep.token)).statusCode).toBe(200);
  });

  it('a change to a user while their requests are in flight never fails those requests', async () => {
    const u = await t.userWithToken('support_agent');
    for (let round = 0; round < 5; round++) {
      const [change, ...mine] = await Promise.all([
        t.inject(admin.token, {
          method: 'PATCH',
          url: `/admin/users/${u.id}`,
          payload: { name: `Busy ${round}` },
        }),
        ...Array.from({ length: 8 }, () => me(t, u.token)),
      ]);
      expect(change!.statusCode).toBe(200);
      expect(mine.map((r) => r.statusCode)).toEqual(mine.map(() => 200));
      // The next request sees the change.
      expect((await me(t, u.token)).json().name).toBe(`Busy ${round}`);
    }
  });

  it('DELETE deactivates (soft): tokens end at once, the row and its history remain', async () => {
    const u = await t.userWithToken('support_agent');
    expect((await me(t, u.token)).statusCode).toBe(200);
    const res = await t.inject(admin.token, { method: 'DELETE', url: `/admin/users/${u.id}` });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ id: u.id, is_active: false });

    expectError(await me(t, u.token), 401, 'unauthorized');
    expectError(await refresh(t, u.refresh), 401, 'unauthorized');
    expectError(await t.login(u.email), 403, 'account_inactive');

    const row = await t.db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', u.id)
      .executeTakeFirst();
    expect(row).toMatchObject({ is_active: false });
    expect(row!.deactivated_at).toBeInstanceOf(Date);
    const history = await t.db
      .selectFrom('audit_log')
      .select('action')
      .where('user_id', '=', u.id)
      .execute();
    expect(history.map((h) => h.action)).toContain('auth.login');
    const sessions = await t.db
      .selectFrom('auth_sessions')
      .selectAll()
      .where('user_id', '=', u.id)
      .execute();
    expect(sessions.length).toBeGreaterThan(0);
    expect(sessions.every((s) => s.revoke_reason === 'deactivated')).toBe(true);

    const audit = await auditRows(t, 'admin.user_deactivated', u.id);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      user_id: admin.id,
      department: 'management',
      ip_address: '127.0.0.1',
    });
    // Still listed, as inactive.
    expect((await get(t, admin.token, `/admin/users/${u.id}`)).json().is_active).toBe(false);
    // Deleting again changes nothing and is not audited twice.
    const again = await t.inject(admin.token, { method: 'DELETE', url: `/admin/users/${u.id}` });
    expect(again.statusCode).toBe(200);
    expect(await auditRows(t, 'admin.user_deactivated', u.id)).toHaveLength(1);
  });

  it('reset-password: the old password stops, every session ends, the new one works', async () => {
    const u = await t.userWithToken('finance_viewer');
    const second = (await t.login(u.email)).json() as LoginResponse;
    const newPassword = 'Freshly-Reset-Pass-314';
    const res = await t.inject(admin.token, {
      method: 'POST',
      url: `/admin/users/${u.id}/reset-password`,
      payload: { new_password: newPassword },
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ ok: true });

    expectError(await me(t, u.token), 401, 'unauthorized');
    expectError(await me(t, second.access_token), 401, 'unauthorized');
    expectError(await refresh(t, u.refresh), 401, 'unauthorized');
    expectError(await refresh(t, second.refresh_token), 401, 'unauthorized');
    expectError(await t.login(u.email, STRONG_PASSWORD), 401, 'invalid_credentials');
    const fresh = await t.login(u.email, newPassword);
    expect(fresh.statusCode).toBe(200);
    expect((await me(t, fresh.json().access_token)).statusCode).toBe(200);

    const audit = await auditRows(t, 'admin.password_reset', u.id);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      user_id: admin.id,
      department: 'management',
      ip_address: '127.0.0.1',
    });
    expect(JSON.stringify(audit[0]!.details)).not.toContain(newPassword);

    expectError(
      await t.inject(admin.token, {
        method: 'POST',
        url: `/admin/users/${u.id}/reset-password`,
        payload: { new_password: 'password123' },
      }),
      400,
      'weak_password',
    );
  });
});

describe('unknown and malformed ids', () => {
  it('answers 404 for an unknown uuid and 400 for a non-uuid, on every user route', async () => {
    const unknown = randomUUID();
    const calls = (id: string) => [
      { method: 'GET' as const, url: `/admin/users/${id}` },
      { method: 'PATCH' as const, url: `/admin/users/${id}`, payload: { name: 'Nobody' } },
      { method: 'DELETE' as const, url: `/admin/users/${id}` },
      {
        method: 'POST' as const,
        url: `/admin/users/${id}/reset-password`,
        payload: { new_password: 'Freshly-Reset-Pass-314' },
      },
    ];
    for (const call of calls(unknown)) {
      expectError(await t.inject(admin.token, call), 404, 'not_found');
    }
    for (const id of ['123', 'not-a-uuid', `${unknown}x`, "1' OR '1'='1"]) {
      for (const call of calls(encodeURIComponent(id))) {
        expectError(await t.inject(admin.token, call), 400, 'validation_failed');
      }
    }
  });
});

describe('GET /admin/roles', () => {
  it('lists every role with its department and permissions', async () => {
    const res = await get(t, admin.token, '/admin/roles');
    expect(res.statusCode).toBe(200);
    const items = res.json().items as {
      name: string;
      department: string;
      permissions: string[];
    }[];
    const byName = new Map(items.map((r) => [r.name, r]));
    for (const [name, department] of [
      ['admin', 'management'],
      ['executive', 'management'],
      ['finance_manager', 'finance'],
      ['finance_viewer', 'finance'],
      ['sales_manager', 'sales'],
      ['sales_rep', 'sales'],
      ['marketing_manager', 'marketing'],
      ['marketing_staff', 'marketing'],
      ['support_manager', 'support'],
      ['support_agent', 'support'],
    ]) {
      const role = byName.get(name!);
      expect(role, name).toBeDefined();
      expect(role!.department).toBe(department);
      expect(role!.permissions.length).toBeGreaterThan(0);
      expect(role!.permissions).toContain('account:self');
    }
    expect(byName.get('admin')!.permissions).toEqual(
      expect.arrayContaining(['users:read', 'users:write', 'roles:read', 'audit:read']),
    );
  });
});

describe('GET /admin/audit', () => {
  it('filters by user, action and time range, and pages with a cursor', async () => {
    const actor = await t.userWithToken('admin');
    const m = marker();
    const created = await createViaApi(t, actor.token, {
      email: `audited-${m}@mezzofy.test`,
      name: 'Audited',
      password: STRONG_PASSWORD,
      department: 'sales',
      role: 'sales_rep',
    });
    await sleep(15);
    const upd = await t.inject(actor.token, {
      method: 'PATCH',
      url: `/admin/users/${created.id}`,
      payload: { name: 'Audited Again' },
    });
    expect(upd.statusCode).toBe(200);
    await sleep(15);
    const reset = await t.inject(actor.token, {
      method: 'POST',
      url: `/admin/users/${created.id}/reset-password`,
      payload: { new_password: 'Freshly-Reset-Pass-314' },
    });
    expect(reset.statusCode).toBe(200);
    await sleep(15);
    const del = await t.inject(actor.token, {
      method: 'DELETE',
      url: `/admin/users/${created.id}`,
    });
    expect(del.statusCode).toBe(200);

    type Entry = {
      id: number;
      user_id: string;
      action: string;
      created_at: string;
      ip_address: string;
      department: string;
      details: Record<string, unknown>;
    };
    const list = async (query: string) => {
      const res = await get(t, admin.token, `/admin/audit?${query}`);
      expect(res.statusCode, res.body).toBe(200);
      return res.json().items as Entry[];
    };
    const mine = (await list(`user_id=${actor.id}&limit=100`)).filter((e) =>
      e.action.startsWith('admin.'),
    );
    expect(mine.map((e) => e.action)).toEqual([
      'admin.user_deactivated',
      'admin.password_reset',
      'admin.user_updated',
      'admin.user_created',
    ]);
    for (const e of mine) {
      expect(e).toMatchObject({
        user_id: actor.id,
        department: 'management',
        ip_address: '127.0.0.1',
      });
      expect(e.details.target_user_id).toBe(created.id);
    }

    const byAction = await list(`action=admin.password_reset&user_id=${actor.id}`);
    expect(byAction.map((e) => e.action)).toEqual(['admin.password_reset']);
    const allResets = await list('action=admin.password_reset&limit=100');
    expect(allResets.every((e) => e.action === 'admin.password_reset')).toBe(true);
    expect(allResets.length).toBeGreaterThanOrEqual(1);

    const [deactivated, resetRow, updated, createdRow] = mine;
    const range = await list(
      `user_id=${actor.id}&from=${updated!.created_at}&to=${deactivated!.created_at}`,
    );
    expect(range.map((e) => e.action)).toEqual(['admin.password_reset', 'admin.user_updated']);
    const since = await list(`user_id=${actor.id}&from=${resetRow!.created_at}`);
    expect(since.map((e) => e.action)).toEqual(['admin.user_deactivated', 'admin.password_reset']);
    const before = await list(`user_id=${actor.id}&to=${updated!.created_at}`);
    expect(before.map((e) => e.action)).toContain('admin.user_created');
    expect(before.map((e) => e.action)).not.toContain('admin.user_updated');
    expect(createdRow).toBeDefined();
    const future = new Date(Date.now() + 3600_000).toISOString();
    expect(await list(`user_id=${actor.id}&from=${future}`)).toEqual([]);

    // Paging one at a time gives the same rows, each once, in the same order.
    const paged = await walk<Entry>(admin.token, `/admin/audit?user_id=${actor.id}`, 1);
    const all = await list(`user_id=${actor.id}&limit=100`);
    expect(paged.map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(new Set(paged.map((e) => e.id)).size).toBe(paged.length);
  });

  it('refuses from after to, bad times and a garbage cursor with 400', async () => {
    expectError(
      await get(t, admin.token, '/admin/audit?from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z'),
      400,
      'validation_failed',
    );
    // Half a second later, written with a fraction: still after.
    expectError(
      await get(
        t,
        admin.token,
        '/admin/audit?from=2025-01-01T00:00:00.500Z&to=2025-01-01T00:00:00Z',
      ),
      400,
      'validation_failed',
    );
    expect(
      (
        await get(
          t,
          admin.token,
          '/admin/audit?from=2025-01-01T00:00:00Z&to=2025-01-01T00:00:00.500Z',
        )
      ).statusCode,
    ).toBe(200);
    expectError(await get(t, admin.token, '/admin/audit?from=yesterday'), 400, 'validation_failed');
    expectError(await get(t, admin.token, '/admin/audit?user_id=bob'), 400, 'validation_failed');
    expectError(await get(t, admin.token, '/admin/audit?limit=1000'), 400, 'validation_failed');
    const forged = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    for (const cursor of [
      'garbage!!',
      forged({ k: 'soon', id: 1 }),
      forged({ k: new Date().toISOString(), id: 'abc' }),
    ]) {
      expectError(
        await get(t, admin.token, `/admin/audit?cursor=${encodeURIComponent(cursor)}`),
        400,
        'bad_request',
      );
    }
  });

  it('is refused to non-admins', async () => {
    const exec = await t.userWithToken('executive');
    expectError(await get(t, exec.token, '/admin/audit'), 403, 'forbidden');
    expectError(await get(t, exec.token, '/admin/users'), 403, 'forbidden');
    expect((await get(t, exec.token, '/admin/roles')).statusCode).toBe(200);
    const rep = await t.userWithToken('sales_rep');
    expectError(
      await t.inject(rep.token, {
        method: 'POST',
        url: '/admin/users',
        payload: {
          email: `sneaky-${marker()}@mezzofy.test`,
          name: 'Sneaky',
          password: STRONG_PASSWORD,
          department: 'sales',
          role: 'admin',
        },
      }),
      403,
      'forbidden',
    );
    expectError(
      await t.inject(rep.token, {
        method: 'PATCH',
        url: `/admin/users/${rep.id}`,
        payload: { role: 'admin' },
      }),
      403,
      'forbidden',
    );
    expect((await me(t, rep.token)).json().role).toBe('sales_rep');
  });
});

describe('the last active admin', () => {
  // A deployment may delegate user management to a non-admin role; the last admin is still
  // protected from it. Its own app, so the number of admins is known.
  let la: TestApp;
  beforeAll(async () => {
    const roles = readFileSync(join(SERVER_ROOT, 'config', 'roles.yaml'), 'utf8');
    const dir = mkdtempSync(join(tmpdir(), 'mz-roles-'));
    const file = join(dir, 'roles.yaml');
    writeFileSync(
      file,
      `${roles}\n  user_manager:\n    description: Manages accounts.\n    department: management\n    permissions: [account:self, users:read, users:write]\n`,
    );
    la = await createTestApp({ env: { ROLES_FILE: file } });
  });
  afterAll(async () => {
    await la.close();
  });

  const activeAdmins = async () =>
    (
      await la.db
        .selectFrom('users')
        .select(sql<number>`count(*)::int`.as('n'))
        .where('role', '=', 'admin')
        .where('is_active', '=', true)
        .executeTakeFirstOrThrow()
    ).n;

  it('cannot be demoted or deactivated (409), but can once a second admin exists', async () => {
    const a = await la.userWithToken('admin');
    const manager = await la.userWithToken('user_manager');
    const patch = (id: string, payload: Record<string, unknown>) =>
      la.inject(manager.token, { method: 'PATCH', url: `/admin/users/${id}`, payload });

    expectError(await patch(a.id, { role: 'executive' }), 409, 'last_admin');
    expectError(await patch(a.id, { is_active: false }), 409, 'last_admin');
    expectError(
      await la.inject(manager.token, { method: 'DELETE', url: `/admin/users/${a.id}` }),
      409,
      'last_admin',
    );
    // Renaming the last admin is fine.
    expect((await patch(a.id, { name: 'Still Admin' })).statusCode).toBe(200);
    // Nothing changed, and the refused changes left no audit row (same transaction).
    expect((await me(la, a.token)).json()).toMatchObject({ role: 'admin', is_active: true });
    expect(
      (await auditRows(la, 'admin.user_updated', a.id)).filter(
        (r) => (r.details?.changes as Record<string, unknown>)?.role,
      ),
    ).toHaveLength(0);
    expect(await auditRows(la, 'admin.user_deactivated', a.id)).toHaveLength(0);

    const b = await la.createUser('executive');
    expect((await patch(b.id, { role: 'admin' })).statusCode).toBe(200);
    const demote = await patch(a.id, { role: 'executive' });
    expect(demote.statusCode, demote.body).toBe(200);
    expect(await auditRows(la, 'admin.user_updated', a.id)).toHaveLength(2);
    expectError(await get(la, a.token, '/admin/users'), 403, 'forbidden');
    // Now b is the last one.
    expectError(await patch(b.id, { is_active: false }), 409, 'last_admin');
    expect(await activeAdmins()).toBe(1);
  });

  it('two admins demoting each other at once: at most one succeeds', async () => {
    for (let round = 0; round < 3; round++) {
      // Leave exactly two active admins, x and y.
      const x = await la.userWithToken('admin');
      const y = await la.userWithToken('admin');
      await la.db
        .updateTable('users')
        .set({ role: 'executive' })
        .where('role', '=', 'admin')
        .where('id', 'not in', [x.id, y.id])
        .execute();
      expect(await activeAdmins()).toBe(2);
      const demote = (actor: typeof x, target: typeof x, payload: object) =>
        la.inject(actor.token, {
          method: 'PATCH',
          url: `/admin/users/${target.id}`,
          payload,
        });
      const payload = round === 1 ? { is_active: false } : { role: 'executive' };
      const results = await Promise.all([demote(x, y, payload), demote(y, x, payload)]);
      const ok = results.filter((r) => r.statusCode === 200);
      expect(ok.length, results.map((r) => r.body).join('\n')).toBeLessThanOrEqual(1);
      for (const r of results.filter((r) => r.statusCode !== 200)) {
        expect([403, 409, 401]).toContain(r.statusCode);
      }
      expect(await activeAdmins()).toBeGreaterThanOrEqual(1);
    }
  });
});
