/**
 * The request guard on a bare Fastify app with a stub authenticator: the synchronous path
 * (token and user state in memory) and the asynchronous one must give the same answers,
 * with the rate limit counted before any refusal, and route facts fixed at registration.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import type { Principal } from '../../auth/principal.ts';
import { AppError } from '../../errors.ts';
import { createRateLimiter, type RateLimiter } from '../../infra/rate-limiter.ts';
import { registerErrorHandler } from './error-handler.ts';
import { registerRequestGuard } from './request-guard.ts';

const principal = (id: string, permissions: string[]): Principal => ({
  id,
  email: `${id}@x.test`,
  name: id,
  role: 'r',
  department: 'sales',
  permissions: new Set(permissions),
  sessionId: 's',
  timezone: 'UTC',
  locale: 'en',
});

/** Tokens: "mem-<id>" is in memory (sync path), "db-<id>" needs a load, "expired", else invalid. */
function stubAuth() {
  const calls = { cached: 0, async: 0 };
  const lookup = (token: string): Principal => {
    if (token === 'expired') throw new AppError('token_expired', 'access token has expired');
    const id = token.slice(token.indexOf('-') + 1);
    if (!/^(mem|db)-/.test(token)) throw new AppError('unauthorized', 'access token is invalid');
    return principal(id, id.startsWith('reader') ? ['things:read'] : []);
  };
  return {
    calls,
    authenticateCached(token: string) {
      calls.cached++;
      return token.startsWith('db-') ? undefined : lookup(token);
    },
    async authenticate(token: string) {
      calls.async++;
      await new Promise((r) => setTimeout(r, 1));
      return lookup(token);
    },
  };
}

let app: FastifyInstance;
afterEach(async () => {
  await app?.close();
});

async function build(
  options: { limiter?: RateLimiter; early?: boolean; rateLimitEnabled?: boolean } = {},
) {
  app = Fastify();
  const auth = stubAuth();
  const limiter =
    options.limiter ?? createRateLimiter({ user_points: 100, ip_points: 100, window_s: 60 });
  registerErrorHandler(app);
  if (options.early) {
    // Registered before the guard: it never saw this route, yet must not let it through.
    app.get('/early', { config: { permission: 'things:read' } }, async () => ({ ok: true }));
  }
  registerRequestGuard(app, {
    auth,
    rateLimiter: limiter,
    rateLimitEnabled: options.rateLimitEnabled ?? true,
  });
  await app.register(async (p) => {
    p.get('/things', { config: { permission: 'things:read' } }, async (req) => ({
      who: req.principal?.id,
    }));
    p.get('/health', { config: { rateLimit: false } }, async () => ({ ok: true }));
    p.post('/auth/login', async () => ({ ok: true }));
  });
  await app.ready();
  return { auth, limiter };
}

const get = (url: string, token?: string, method: 'GET' | 'HEAD' = 'GET') =>
  app.inject({ method, url, headers: token ? { authorization: `Bearer ${token}` } : {} });

describe('request guard', () => {
  it('lets a caller in from memory without the asynchronous path, with the usual headers', async () => {
    const { auth } = await build();
    const res = await get('/things', 'mem-reader1');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ who: 'reader1' });
    expect(auth.calls).toEqual({ cached: 1, async: 0 });
    expect(res.headers['x-request-id']).toBeTruthy();
    expect(res.headers['x-ratelimit-limit']).toBe('100');
    expect(res.headers['x-ratelimit-remaining']).toBe('99');
  });

  it('falls back to authenticate() when the caller is not in memory, with the same answers', async () => {
    const { auth } = await build();
    const ok = await get('/things', 'db-reader2');
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ who: 'reader2' });
    expect(auth.calls).toEqual({ cached: 1, async: 1 });
    for (const prefix of ['mem', 'db']) {
      const forbidden = await get('/things', `${prefix}-writer`);
      expect(forbidden.statusCode).toBe(403);
      expect(forbidden.json().error.code).toBe('forbidden');
      expect(forbidden.json().error.request_id).toBe(forbidden.headers['x-request-id']);
    }
  });

  it('answers 401 without a token, with a malformed header, a bad or an expired token', async () => {
    await build();
    const cases: Array<[Record<string, string>, string]> = [
      [{}, 'unauthorized'],
      [{ authorization: 'Basic abc' }, 'unauthorized'],
      [{ authorization: 'Bearer junk' }, 'unauthorized'],
      [{ authorization: 'Bearer expired' }, 'token_expired'],
    ];
    for (const [headers, code] of cases) {
      const res = await app.inject({ method: 'GET', url: '/things', headers });
      expect(res.statusCode).toBe(401);
      expect(res.json().error.code).toBe(code);
      expect(res.headers['x-request-id']).toBeTruthy();
    }
    const head = await get('/things', undefined, 'HEAD');
    expect(head.statusCode).toBe(401);
  });

  it('counts every request before refusing it: per user, else per IP; never /health', async () => {
    const limiter = createRateLimiter({ user_points: 2, ip_points: 2, window_s: 60 });
    await build({ limiter });
    const user = [1, 2, 3].map(() => get('/things', 'mem-reader3'));
    expect((await Promise.all(user)).map((r) => r.statusCode)).toEqual([200, 200, 429]);
    const limited = await get('/things', 'db-reader3');
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['retry-after']).toBeTruthy();
    // Unauthenticated calls count against the IP, 401 or 404 alike.
    const anon = [await get('/things'), await get('/nowhere'), await get('/nowhere')];
    expect(anon.map((r) => r.statusCode)).toEqual([401, 404, 429]);
    expect(anon[1]!.headers['x-ratelimit-remaining']).toBe('0');
    for (let i = 0; i < 3; i++) expect((await get('/health')).statusCode).toBe(200);
  });

  it('serves public routes without a token, and ignores a stale one there', async () => {
    const { auth } = await build();
    expect((await app.inject({ method: 'POST', url: '/auth/login' })).statusCode).toBe(200);
    expect((await get('/health', 'junk')).statusCode).toBe(200);
    expect(auth.calls).toEqual({ cached: 0, async: 0 });
  });

  it('still guards a route it did not see registered', async () => {
    await build({ early: true, rateLimitEnabled: false });
    expect((await get('/early')).statusCode).toBe(401);
    expect((await get('/early', 'mem-writer')).statusCode).toBe(403);
    expect((await get('/early', 'mem-reader4')).statusCode).toBe(200);
  });

  it('answers 500 (not 401) when authentication fails unexpectedly', async () => {
    app = Fastify();
    registerErrorHandler(app);
    registerRequestGuard(app, {
      auth: {
        authenticateCached: () => {
          throw new Error('cache exploded');
        },
        authenticate: async () => principal('x', []),
      },
      rateLimiter: createRateLimiter({ user_points: 9, ip_points: 9, window_s: 60 }),
      rateLimitEnabled: false,
    });
    app.get('/things', { config: { permission: 'things:read' } }, async () => ({}));
    await app.ready();
    const res = await get('/things', 'mem-x');
    expect(res.statusCode).toBe(500);
    expect(res.json().error.code).toBe('internal_error');
  });
});
