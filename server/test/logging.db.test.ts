import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoginResponse, TokenPair } from '@mezzofy/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { safeUrl } from '../src/api/plugins/access-log.ts';
import { createLoggers } from '../src/logging/logger.ts';
import {
  createTestApp,
  STRONG_PASSWORD,
  TEST_JWT_SECRET,
  type TestApp,
} from './helpers/test-app.ts';

let t: TestApp;
beforeAll(async () => {
  t = await createTestApp({ env: { LOG_LEVEL: 'trace' } });
});
afterAll(async () => {
  await t.close();
});

describe('logs', () => {
  it('never contain a password, token or signing key, across every auth and admin flow', async () => {
    const secrets: string[] = [TEST_JWT_SECRET, STRONG_PASSWORD];
    const admin = await t.userWithToken('admin');
    secrets.push(admin.token, admin.refresh);
    const newPassword = 'Brand-New-Secret-77';
    const created = await t.inject(admin.token, {
      method: 'POST',
      url: '/admin/users',
      payload: {
        email: 'logcheck@mezzofy.test',
        name: 'Log Check',
        password: newPassword,
        department: 'sales',
        role: 'sales_rep',
      },
    });
    expect(created.statusCode).toBe(201);
    secrets.push(newPassword);
    const wrongPassword = 'Wrong-Password-For-Log-1';
    secrets.push(wrongPassword);
    expect((await t.login('logcheck@mezzofy.test', wrongPassword)).statusCode).toBe(401);
    const login = (await t.login('logcheck@mezzofy.test', newPassword)).json() as LoginResponse;
    secrets.push(login.access_token, login.refresh_token);
    const refreshed = (
      await t.app.inject({
        method: 'POST',
        url: '/auth/refresh',
        payload: { refresh_token: login.refresh_token },
      })
    ).json() as TokenPair;
    secrets.push(refreshed.access_token, refreshed.refresh_token);
    const changed = 'Changed-Secret-Pass-88';
    secrets.push(changed);
    const afterChange = await t.inject(refreshed.access_token, {
      method: 'POST',
      url: '/auth/change-password',
      payload: { current_password: newPassword, new_password: changed },
    });
    expect(afterChange.statusCode).toBe(200);
    const reset = 'Reset-By-Admin-Pass-99';
    secrets.push(reset);
    await t.inject(admin.token, {
      method: 'POST',
      url: `/admin/users/${created.json().id}/reset-password`,
      payload: { new_password: reset },
    });
    // A token in a query string, and a bad bearer token, are not echoed either.
    await t.app.inject({
      method: 'GET',
      url: `/auth/me?access_token=${login.access_token}`,
      headers: { authorization: `Bearer ${login.access_token}x` },
    });
    await t.inject(admin.token, { method: 'POST', url: '/auth/logout' });

    const text = t.logs.text();
    expect(t.logs.lines.length).toBeGreaterThanOrEqual(9);
    for (const secret of secrets) expect(text).not.toContain(secret);
    // Every access line carries the request id.
    const access = t.logs.lines.map((l) => JSON.parse(l)).filter((l) => l.log === 'access');
    expect(access.length).toBeGreaterThanOrEqual(9);
    for (const line of access) expect(line.reqId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('writes app.log, error.log and access.log when a log folder is set', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mz-logs-'));
    const loggers = createLoggers({ level: 'info', dir, stdout: { write: () => {} } as never });
    loggers.app.info('hello app');
    loggers.app.error({ password: 'hunter2-secret' }, 'boom');
    loggers.access.info({ url: '/x' }, 'access line');
    await new Promise((r) => setTimeout(r, 100));
    loggers.flush();
    for (const f of ['app.log', 'error.log', 'access.log'])
      expect(existsSync(join(dir, f))).toBe(true);
    expect(readFileSync(join(dir, 'app.log'), 'utf8')).toContain('hello app');
    const errors = readFileSync(join(dir, 'error.log'), 'utf8');
    expect(errors).toContain('boom');
    expect(errors).not.toContain('hello app');
    expect(errors).not.toContain('hunter2-secret');
    expect(readFileSync(join(dir, 'access.log'), 'utf8')).toContain('access line');
  });

  it('removes sensitive query values from logged URLs', () => {
    expect(safeUrl('/x?access_token=abc&page=2')).toBe('/x?access_token=%5Bredacted%5D&page=2');
    expect(safeUrl('/plain')).toBe('/plain');
  });
});
