/**
 * Generated from the app's own route table and roles.yaml: every route that needs a
 * permission is refused without a token (401) and to every role lacking it (403), and is
 * let through for every role holding it. A new route or role is covered without editing this.
 */
import { randomUUID } from 'node:crypto';
import { ERROR_CODES, type LoginResponse } from '@mezzofy/protocol';
import Fastify, {
  type FastifyInstance,
  type HTTPMethods,
  type LightMyRequestResponse,
} from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerRequestGuard } from '../src/api/plugins/request-guard.ts';
import { isPublicRoute, PUBLIC_ROUTES } from '../src/api/public-routes.ts';
import type { RouteEntry } from '../src/app.ts';
import { AppError } from '../src/errors.ts';
import { createRateLimiter } from '../src/infra/rate-limiter.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let t: TestApp;
/** One signed-in user per role in roles.yaml (e-mail, password, token). */
const byRole = new Map<string, { id: string; email: string; password: string; token: string }>();
let guarded: RouteEntry[];

beforeAll(async () => {
  t = await createTestApp();
  for (const role of t.container.roles.list()) {
    byRole.set(role.name, await t.userWithToken(role.name));
  }
  guarded = t.app.routeTable.filter(
    (r) => r.permission && !isPublicRoute(r.method, r.url) && !r.url.startsWith('/docs'),
  );
});
afterAll(async () => {
  await t.close();
});

/** The route's URL with every `:param` replaced by a random uuid. */
const concrete = (url: string) => url.replace(/:[A-Za-z_]+/g, () => randomUUID());
const label = (r: RouteEntry) => `${r.method} ${r.url}`;

function call(route: RouteEntry, headers: Record<string, string> = {}) {
  return t.app.inject({
    method: route.method as HTTPMethods,
    url: concrete(route.url),
    headers,
  });
}

/** What is wrong with an error answer, or null if it is a proper envelope of `code`. */
function envelopeProblem(res: LightMyRequestResponse, status: number, code: string) {
  if (res.statusCode !== status) return `status ${res.statusCode}, expected ${status}: ${res.body}`;
  let body: { error?: { code?: string; message?: unknown; request_id?: string } };
  try {
    body = res.json();
  } catch {
    return `not JSON: ${res.body}`;
  }
  if (body.error?.code !== code) return `code ${body.error?.code}, expected ${code}`;
  if (!(ERROR_CODES as readonly string[]).includes(code)) return `unknown code ${code}`;
  if (typeof body.error.message !== 'string') return 'no message';
  if (!body.error.request_id || body.error.request_id !== res.headers['x-request-id'])
    return 'request_id missing or not the x-request-id header';
  return null;
}

describe('the route table', () => {
  it('covers the API: every guarded route names a permission some role holds', () => {
    const labels = guarded.map(label);
    for (const known of [
      'GET /auth/me',
      'POST /auth/logout',
      'POST /auth/change-password',
      'GET /admin/users',
      'POST /admin/users',
      'GET /admin/users/:id',
      'PATCH /admin/users/:id',
      'DELETE /admin/users/:id',
      'POST /admin/users/:id/reset-password',
      'GET /admin/roles',
      'GET /admin/audit',
    ]) {
      expect(labels).toContain(known);
    }
    const roles = t.container.roles.list();
    expect(roles.length).toBeGreaterThanOrEqual(10);
    for (const route of guarded) {
      expect(
        roles.some((r) => t.container.roles.can(r.name, route.permission!)),
        `${label(route)} needs ${route.permission}, which no role holds`,
      ).toBe(true);
    }
  });

  it('has no route without a permission except the public allow-list and /docs', () => {
    const open = t.app.routeTable.filter((r) => !r.permission && !r.url.startsWith('/docs'));
    expect(open.map(label).sort()).toEqual([...PUBLIC_ROUTES].sort());
  });
});

describe('every guarded route', () => {
  it('answers 401 with the error envelope without a token, or with a bad one', async () => {
    const problems: string[] = [];
    for (const route of guarded) {
      for (const headers of [
        {} as Record<string, string>,
        { authorization: 'Bearer not-a-jwt' },
        { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` },
      ]) {
        const problem = envelopeProblem(await call(route, headers), 401, 'unauthorized');
        if (problem) problems.push(`${label(route)} ${JSON.stringify(headers)}: ${problem}`);
      }
      if (route.method === 'GET') {
        const head = await t.app.inject({ method: 'HEAD', url: concrete(route.url) });
        if (head.statusCode !== 401) problems.push(`HEAD ${route.url}: ${head.statusCode}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('answers 403 forbidden to every role that lacks its permission', async () => {
    const problems: string[] = [];
    let checked = 0;
    for (const route of guarded) {
      for (const [role, user] of byRole) {
        if (t.container.roles.can(role, route.permission!)) continue;
        checked += 1;
        const res = await call(route, { authorization: `Bearer ${user.token}` });
        const problem = envelopeProblem(res, 403, 'forbidden');
        if (problem) problems.push(`${label(route)} as ${role}: ${problem}`);
      }
    }
    expect(problems).toEqual([]);
    // The admin API alone is refused to nine roles on each of its user routes.
    expect(checked).toBeGreaterThan(50);
  });

  it('lets every role that holds its permission through (no 401/403)', async () => {
    const problems: string[] = [];
    let checked = 0;
    for (const route of guarded) {
      for (const [role, user] of byRole) {
        if (!t.container.roles.can(role, route.permission!)) continue;
        checked += 1;
        // A fresh session per call: some routes (logout) end the session they are called with.
        const login = await t.login(user.email, user.password);
        if (login.statusCode !== 200) {
          problems.push(`${role} could not log in: ${login.statusCode}`);
          continue;
        }
        const token = (login.json() as LoginResponse).access_token;
        const res = await call(route, { authorization: `Bearer ${token}` });
        if (res.statusCode === 401 || res.statusCode === 403 || res.statusCode >= 500)
          problems.push(`${label(route)} as ${role}: ${res.statusCode} ${res.body}`);
      }
    }
    expect(problems).toEqual([]);
    expect(checked).toBeGreaterThanOrEqual(guarded.length);
  });

  it('keeps each role’s permissions as roles.yaml states them (spot checks)', async () => {
    const can = (role: string, permission: string) => t.container.roles.can(role, permission);
    expect(can('admin', 'users:write')).toBe(true);
    expect(can('executive', 'users:read')).toBe(false);
    expect(can('executive', 'roles:read')).toBe(true);
    expect(can('finance_viewer', 'audit:read')).toBe(false);
    for (const role of t.container.roles.list()) expect(can(role.name, 'account:self')).toBe(true);
  });
});

describe('public routes', () => {
  it('answer without a token', async () => {
    const user = byRole.get('sales_rep')!;
    const health = await t.app.inject({ method: 'GET', url: '/health' });
    expect(health.statusCode).toBe(200);
    const login = await t.login(user.email, user.password);
    expect(login.statusCode).toBe(200);
    const refresh = await t.app.inject({
      method: 'POST',
      url: '/auth/refresh',
      payload: { refresh_token: (login.json() as LoginResponse).refresh_token },
    });
    expect(refresh.statusCode).toBe(200);
    // A stale Authorization header on a public route does not get in the way.
    const withJunk = await t.app.inject({
      method: 'GET',
      url: '/health',
      headers: { authorization: 'Bearer junk' },
    });
    expect(withJunk.statusCode).toBe(200);
    const docs = await t.app.inject({ method: 'GET', url: '/docs/json' });
    expect(docs.statusCode).toBe(200);
  });
});

describe('the request guard', () => {
  const stubGuard = () => ({
    auth: {
      authenticate: async () => {
        throw new AppError('unauthorized', 'no');
      },
    },
    rateLimiter: createRateLimiter({ user_points: 10, ip_points: 10, window_s: 60 }),
    rateLimitEnabled: false,
  });

  /**
   * A fresh guarded app with `routes` registered the way the app registers its own (a plugin),
   * started; the error it refused to start with, if any.
   */
  async function start(routes: (app: FastifyInstance) => void) {
    const app = Fastify();
    registerRequestGuard(app, stubGuard());
    app.register(async (plugin) => routes(plugin));
    try {
      await app.ready();
      return undefined;
    } catch (err) {
      return err as Error;
    } finally {
      await app.close().catch(() => {});
    }
  }

  it('refuses to start (ready() rejects) when a route declares no permission', async () => {
    const app = Fastify();
    registerRequestGuard(app, stubGuard());
    app.register(async (plugin) => {
      plugin.get('/secret', async () => ({ secret: true }));
    });
    await expect(app.ready()).rejects.toThrow(/GET \/secret declares no permission/);
    await app.close().catch(() => {});
  });

  it('refuses a route hidden in a plugin, and a route with an empty permission', async () => {
    const nested = await start((app) => {
      app.register(async (p) => {
        p.post('/nested/thing', async () => ({}));
      });
    });
    expect(nested?.message).toMatch(/POST \/nested\/thing declares no permission/);
    const empty = await start((app) => {
      app.get('/empty', { config: { permission: '' } }, async () => ({}));
    });
    expect(empty?.message).toMatch(/declares no permission/);
    // A public method on a public path does not open another method on it.
    const otherMethod = await start((app) => {
      app.delete('/health', async () => ({}));
    });
    expect(otherMethod?.message).toMatch(/DELETE \/health declares no permission/);
  });

  it('starts when every route has a permission or is on the allow-list', async () => {
    const err = await start((app) => {
      app.get('/health', async () => ({ ok: true }));
      app.get('/thing', { config: { permission: 'users:read' } }, async () => ({ ok: true }));
    });
    expect(err).toBeUndefined();
  });
});
