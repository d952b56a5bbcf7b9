/**
 * Who pays for a skill's model calls: the acting user's department for a quick action, the
 * department that owns the schedule or webhook running it otherwise (llm_usage.department),
 * whichever agent or user the work runs as.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toPrincipal } from '../src/auth/principal.ts';
import type { SkillContext } from '../src/skills/skill.ts';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let fake: FakeModelServer;
let t: TestApp;

beforeAll(async () => {
  fake = await startFakeModelServer();
  t = await createTestApp({
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
  });
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
});

async function runAs(role: string, extra: Partial<SkillContext>) {
  const user = await t.createUser(role);
  const c = t.container;
  const row = await t.db
    .selectFrom('users')
    .selectAll()
    .where('id', '=', user.id)
    .executeTakeFirstOrThrow();
  const principal = toPrincipal(row, 'no-login-session', c.roles);
  fake.script('anthropic', 'Spring offer: two coffees for one at [merchant name].');
  const result = await c.skills.run(
    'content_generation',
    { brief: 'Spring coffee offer', channel: 'push' },
    {
      principal,
      agent: null,
      sessionId: null,
      source: 'api',
      signal: new AbortController().signal,
      llm: c.llm,
      tools: c.tools.executor,
      knowledge: c.knowledge,
      clock: c.clock,
      log: c.loggers.app,
      ...extra,
    },
  );
  expect(result.status).toBe('ok');
  return t.db
    .selectFrom('llm_usage')
    .select(['department', 'source', 'user_id'])
    .where('user_id', '=', user.id)
    .execute();
}

describe('skill runs: who pays', () => {
  it("a quick action: the user's department", async () => {
    expect(await runAs('sales_rep', {})).toEqual([
      expect.objectContaining({ department: 'sales', source: 'api' }),
    ]);
  });

  it('a schedule owned by marketing, run as a sales rep: marketing', async () => {
    expect(await runAs('sales_rep', { source: 'scheduler', department: 'marketing' })).toEqual([
      expect.objectContaining({ department: 'marketing', source: 'scheduler' }),
    ]);
  });

  it('a webhook owned by support: support', async () => {
    expect(await runAs('executive', { source: 'webhook', department: 'support' })).toEqual([
      expect.objectContaining({ department: 'support', source: 'webhook' }),
    ]);
  });
});
