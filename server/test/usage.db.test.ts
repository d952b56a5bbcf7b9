/**
 * GET /admin/usage: grouping by department, user, model and day; days and the default
 * range in the billing time zone; filters; validation; usage:read only.
 */
import type { UsageReport } from '@mezzofy/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from './helpers/test-app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';

let testDb: TestDatabase;
let t: TestApp;
let utc: TestApp;
let admin: Awaited<ReturnType<TestApp['userWithToken']>>;
let salesUser: string;
let financeUser: string;

// "Now" for the app: 20 June 2025, 12:00 in Singapore.
const NOW = new Date('2025-06-20T04:00:00Z');

async function usage(
  at: string,
  row: {
    department: string;
    userId: string | null;
    cost: number;
    provider?: string;
    model?: string;
    status?: string;
    input?: number | null;
    output?: number | null;
  },
) {
  await t.db
    .insertInto('llm_usage')
    .values({
      provider: row.provider ?? 'anthropic',
      model: row.model ?? 'claude-sonnet-5-5',
      department: row.department,
      user_id: row.userId,
      cost_usd: row.cost.toFixed(6),
      status: row.status ?? 'ok',
      input_tokens: row.input === undefined ? 100 : row.input,
      output_tokens: row.output === undefined ? 10 : row.output,
      purpose: 'chat',
      source: 'mobile',
      created_at: new Date(at),
    })
    .execute();
}

beforeAll(async () => {
  testDb = await createTestDatabase();
  t = await createTestApp({ testDatabase: testDb, clock: () => NOW });
  utc = await createTestApp({
    testDatabase: testDb,
    clock: () => NOW,
    overrides: { llm: { budgets: { billing_timezone: 'UTC' } } },
  });
  admin = await t.userWithToken('admin');
  salesUser = (await t.createUser('sales_rep')).id;
  financeUser = (await t.createUser('finance_viewer')).id;
  // 9 June 23:59:59 and 10 June 00:00:00 in Singapore (UTC+8).
  await usage('2025-06-09T15:59:59Z', { department: 'sales', userId: salesUser, cost: 1 });
  await usage('2025-06-09T16:00:00Z', {
    department: 'sales',
    userId: salesUser,
    cost: 2,
    input: 200,
    output: 20,
  });
  await usage('2025-06-10T03:00:00Z', {
    department: 'sales',
    userId: salesUser,
    cost: 0.5,
    provider: 'moonshot',
    model: 'kimi-k2-0905-preview',
    status: 'error',
    input: null,
    output: null,
  });
  await usage('2025-06-10T10:00:00Z', { department: 'finance', userId: financeUser, cost: 0.25 });
  // 31 May 23:59:59 and 1 June 00:00 in Singapore.
  await usage('2025-05-31T15:59:59Z', { department: 'finance', userId: financeUser, cost: 64 });
  await usage('2025-05-31T16:00:00Z', { department: 'finance', userId: null, cost: 0.125 });
  // 1 July in Singapore: after the range.
  await usage('2025-06-30T16:00:00Z', { department: 'sales', userId: salesUser, cost: 32 });
});
afterAll(async () => {
  await utc.close();
  await t.close();
  await testDb.drop();
});

async function report(query: string, app = t, token = admin.token) {
  const res = await app.inject(token, { method: 'GET', url: `/admin/usage${query}` });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as UsageReport;
}

describe('GET /admin/usage', () => {
  it('defaults to this month so far, by department, in the billing time zone', async () => {
    const body = await report('');
    expect(body).toMatchObject({
      from: '2025-06-01',
      to: '2025-06-20',
      timezone: 'Asia/Singapore',
      group_by: ['department'],
    });
    expect(body.items).toEqual([
      {
        department: 'finance',
        calls: 2,
        errors: 0,
        input_tokens: 200,
        output_tokens: 20,
        cost_usd: 0.375,
      },
      {
        department: 'sales',
        calls: 3,
        errors: 1,
        input_tokens: 300,
        output_tokens: 30,
        cost_usd: 3.5,
      },
    ]);
    expect(body.totals).toEqual({
      calls: 5,
      errors: 1,
      input_tokens: 500,
      output_tokens: 50,
      cost_usd: 3.875,
    });
  });

  it('buckets days at midnight in the billing time zone', async () => {
    const body = await report('?group_by=day&from=2025-06-09&to=2025-06-10');
    expect(body.items.map((i) => [i.day, i.calls, i.cost_usd])).toEqual([
      ['2025-06-09', 1, 1],
      ['2025-06-10', 3, 2.75],
    ]);
    expect(Object.keys(body.items[0]!).sort()).toEqual(
      ['calls', 'cost_usd', 'day', 'errors', 'input_tokens', 'output_tokens'].sort(),
    );
    // from/to are whole days there too: 31 May 23:59:59 SGT is outside June.
    const first = await report('?group_by=day&from=2025-06-01&to=2025-06-01');
    expect(first.items.map((i) => [i.day, i.cost_usd])).toEqual([['2025-06-01', 0.125]]);
    const may = await report('?group_by=day&from=2025-05-31&to=2025-05-31');
    expect(may.items.map((i) => [i.day, i.cost_usd])).toEqual([['2025-05-31', 64]]);
  });

  it('with UTC as the billing time zone the same rows fall on other days', async () => {
    const body = await report('?group_by=day&from=2025-06-09&to=2025-06-10', utc);
    expect(body.timezone).toBe('UTC');
    expect(body.items.map((i) => [i.day, i.calls, i.cost_usd])).toEqual([
      ['2025-06-09', 2, 3],
      ['2025-06-10', 2, 0.75],
    ]);
  });

  it('groups by several keys, comma-separated or repeated', async () => {
    const expected = [
      { department: 'finance', day: '2025-06-10', cost_usd: 0.25 },
      { department: 'sales', day: '2025-06-09', cost_usd: 1 },
      { department: 'sales', day: '2025-06-10', cost_usd: 2.5 },
    ];
    for (const q of ['group_by=department,day', 'group_by=department&group_by=day']) {
      const body = await report(`?${q}&from=2025-06-09&to=2025-06-10`);
      expect(body.group_by).toEqual(['department', 'day']);
      expect(
        body.items.map((i) => ({ department: i.department, day: i.day, cost_usd: i.cost_usd })),
      ).toEqual(expected);
    }
  });

  it('groups by model (provider and model) and by user, with filters', async () => {
    const models = await report('?group_by=model&from=2025-06-01&to=2025-06-30');
    expect(models.items.map((i) => [i.provider, i.model, i.calls, i.errors])).toEqual([
      ['anthropic', 'claude-sonnet-5-5', 4, 0],
      ['moonshot', 'kimi-k2-0905-preview', 1, 1],
    ]);
    const users = await report('?group_by=user&department=sales');
    expect(users.items).toEqual([
      {
        user_id: salesUser,
        calls: 3,
        errors: 1,
        input_tokens: 300,
        output_tokens: 30,
        cost_usd: 3.5,
      },
    ]);
    const one = await report(`?group_by=department,user,model,day&user_id=${financeUser}`);
    expect(one.items).toEqual([
      {
        department: 'finance',
        user_id: financeUser,
        provider: 'anthropic',
        model: 'claude-sonnet-5-5',
        day: '2025-06-10',
        calls: 1,
        errors: 0,
        input_tokens: 100,
        output_tokens: 10,
        cost_usd: 0.25,
      },
    ]);
    const empty = await report('?from=2024-01-01&to=2024-01-31');
    expect(empty.items).toEqual([]);
    expect(empty.totals.calls).toBe(0);
  });

  it('refuses bad queries with 400', async () => {
    for (const q of [
      '?group_by=team',
      '?from=2025-06-31',
      '?from=June',
      '?from=2025-06-10&to=2025-06-09',
      '?from=2024-01-01&to=2025-06-01',
      '?department=legal',
      '?user_id=nope',
      '?limit=5',
    ]) {
      const res = await t.inject(admin.token, { method: 'GET', url: `/admin/usage${q}` });
      expect(res.statusCode, `${q}: ${res.body}`).toBe(400);
      expect(res.json().error.code).toBe('validation_failed');
    }
  });

  it('is for usage:read: finance_manager and executive may, a sales rep may not (403)', async () => {
    for (const role of ['executive', 'finance_manager']) {
      const user = await t.userWithToken(role);
      expect((await report('', t, user.token)).items.length).toBeGreaterThan(0);
    }
    const rep = await t.userWithToken('sales_rep');
    const res = await t.inject(rep.token, { method: 'GET', url: '/admin/usage' });
    expect(res.statusCode).toBe(403);
    expect(res.json().error.code).toBe('forbidden');
    expect(res.json().error.message).toContain('usage:read');
    const anonymous = await t.app.inject({ method: 'GET', url: '/admin/usage' });
    expect(anonymous.statusCode).toBe(401);
  });
});
