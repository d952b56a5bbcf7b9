import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let t: TestApp;
beforeAll(async () => {
  t = await createTestApp();
});
afterAll(async () => {
  await t.close();
});

describe('GET /health', () => {
  it('reports database, redis, queue, rate limiter and tools without a token', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/health' });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.status).toBe('ok');
    expect(body.checks.database).toMatchObject({ status: 'ok', engine: t.engine });
    expect(body.checks.redis.status).toBe('disabled');
    expect(body.checks.queue).toEqual({ status: 'ok', engine: 'in-process' });
    expect(body.checks.rate_limit).toEqual({ status: 'ok', store: 'memory' });
    expect(body.tools).toEqual({});
    expect(res.headers['cache-control']).toBe('no-store');
  });

  it('answers 503 while draining', async () => {
    t.container.draining.value = true;
    try {
      const res = await t.app.inject({ method: 'GET', url: '/health' });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ status: 'unavailable', draining: true });
    } finally {
      t.container.draining.value = false;
    }
  });
});

describe('API docs', () => {
  it('serves an OpenAPI document generated from the route schemas', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/docs/json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toMatch(/^3\./);
    for (const path of [
      '/auth/login',
      '/auth/refresh',
      '/auth/me',
      '/admin/users',
      '/admin/users/{id}',
      '/admin/audit',
      '/health',
    ]) {
      expect(Object.keys(doc.paths), path).toContain(path);
    }
    expect(
      doc.paths['/auth/login'].post.requestBody.content['application/json'].schema.properties,
    ).toHaveProperty('email');
    const page = await t.app.inject({ method: 'GET', url: '/docs' });
    expect([200, 302]).toContain(page.statusCode);
  });
});

describe('database down', () => {
  it('answers 503 on /health and 5xx with a hidden message elsewhere', async () => {
    const own = await createTestApp();
    const login = await own.userWithToken('admin');
    await own.container.database.close();
    try {
      const health = await own.app.inject({ method: 'GET', url: '/health' });
      expect(health.statusCode).toBe(503);
      expect(health.json().checks.database.status).toBe('down');
      const res = await own.inject(login.token, { method: 'GET', url: '/admin/users' });
      expect(res.statusCode).toBe(500);
      expect(res.json().error).toMatchObject({
        code: 'internal_error',
        message: 'internal server error',
      });
    } finally {
      await own.close().catch(() => {});
    }
  });
});
