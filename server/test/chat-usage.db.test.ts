/**
 * The llm_usage rows of chat turns: a turn's final answer writes its row in the statement that
 * stores the answer (deferred by the model call), tool-calling steps write theirs as they
 * happen, a department with a budget writes at once (its alerts read the row), and a row is
 * never lost when the answer cannot be stored.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let fake: FakeModelServer;
let t: TestApp;

beforeAll(async () => {
  fake = await startFakeModelServer();
  t = await createTestApp({
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
    // Finance has a budget; sales has none.
    overrides: { llm: { budgets: { departments: { finance: { monthly_usd: 1_000 } } } } },
  });
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
});

const usageOf = (userId: string) =>
  t.db
    .selectFrom('llm_usage')
    .select(['status', 'purpose', 'department', 'session_id', 'input_tokens', 'output_tokens'])
    .select('cost_usd')
    .where('user_id', '=', userId)
    .orderBy('id')
    .execute();

/** Whether the user's last usage row and last answer were written by one transaction. */
async function sameTransaction(userId: string): Promise<boolean> {
  const { rows } = await sql<{ same: boolean }>`
    select (select xmin::text from llm_usage where user_id = ${userId} order by id desc limit 1)
         = (select xmin::text from conversations where user_id = ${userId} and role = 'assistant'
            order by created_at desc limit 1) as same`.execute(t.db);
  return rows[0]!.same;
}

const send = (token: string, payload: Record<string, unknown>) =>
  t.inject(token, { method: 'POST', url: '/chat/send', payload });

describe('llm_usage of chat turns', () => {
  it('a turn without tools: one row, stored with the answer, charged to the user', async () => {
    const user = await t.userWithToken('sales_rep');
    fake.clear();
    fake.script('anthropic', {
      text: 'Three leads are due.',
      usage: { inputTokens: 1200, outputTokens: 8 },
    });
    const res = await send(user.token, { message: 'Which leads are due?', agent: 'sales' });
    expect(res.statusCode, res.body).toBe(200);
    const rows = await usageOf(user.id);
    expect(rows).toEqual([
      expect.objectContaining({
        status: 'ok',
        purpose: 'chat',
        department: 'sales',
        session_id: res.json().session_id,
        input_tokens: 1200,
        output_tokens: 8,
      }),
    ]);
    expect(Number(rows[0]!.cost_usd)).toBeGreaterThan(0);
    expect(await sameTransaction(user.id)).toBe(true);
  });

  it('a tool loop: the tool-calling step is written as it happens, the answer with the answer', async () => {
    const user = await t.userWithToken('sales_rep');
    fake.clear();
    fake.script('anthropic', { toolCalls: [{ name: 'search_leads', input: { query: 'Acme' } }] });
    fake.script('anthropic', 'Acme is in the pipeline.');
    const res = await send(user.token, { message: 'Find Acme', agent: 'sales' });
    expect(res.statusCode, res.body).toBe(200);
    expect(fake.requests).toHaveLength(2);
    expect((await usageOf(user.id)).map((r) => r.status)).toEqual(['ok', 'ok']);
  });

  it('a department with a budget writes the row at once (the same row)', async () => {
    const user = await t.userWithToken('finance_manager');
    fake.clear();
    fake.script('anthropic', 'Revenue is up.');
    const res = await send(user.token, { message: 'Revenue?', agent: 'finance' });
    expect(res.statusCode, res.body).toBe(200);
    expect(await usageOf(user.id)).toEqual([
      expect.objectContaining({ status: 'ok', department: 'finance' }),
    ]);
    expect(await sameTransaction(user.id)).toBe(false);
  });

  it('the answer cannot be stored: the turn fails, the paid call is still in llm_usage', async () => {
    const user = await t.userWithToken('sales_rep');
    // Storing this answer fails inside the database (a trigger stands in for any failure).
    await sql`create function refuse_answer() returns trigger language plpgsql as $$
      begin
        if new.role = 'assistant' and new.content like '%REFUSED%' then
          raise exception 'answer refused by test trigger';
        end if;
        return new;
      end $$`.execute(t.db);
    await sql`create trigger refuse_answer before insert on conversations
      for each row execute function refuse_answer()`.execute(t.db);
    try {
      fake.clear();
      fake.script('anthropic', 'This answer is REFUSED by the database.');
      const res = await send(user.token, { message: 'Say it', agent: 'sales' });
      expect(res.statusCode).toBe(500);
      expect(fake.requests).toHaveLength(1);
      expect(await usageOf(user.id)).toEqual([expect.objectContaining({ status: 'ok' })]);
      // The session is not left leased: the next turn runs.
      fake.script('anthropic', 'Fine now.');
      const next = await send(user.token, {
        message: 'Again',
        agent: 'sales',
        session_id: (
          await t.db
            .selectFrom('chat_sessions')
            .select('id')
            .where('user_id', '=', user.id)
            .executeTakeFirstOrThrow()
        ).id,
      });
      expect(next.statusCode, next.body).toBe(200);
      expect(await usageOf(user.id)).toHaveLength(2);
    } finally {
      await sql`drop trigger refuse_answer on conversations`.execute(t.db);
      await sql`drop function refuse_answer()`.execute(t.db);
    }
  });
});
