/**
 * Turns' answers stored together (chat.repository.ts insertAnswersAndEndTurns, and the group
 * commit in chat/answer-writer.ts): one statement stores several sessions' answers with their
 * usage rows, gives back each lease its answer's token still holds, and sets or keeps each
 * session's agent; the writer sends the answers ready at the same time in one statement, never
 * two of one session together, splits at maxBatch, runs at most maxInFlight statements at once,
 * and a bad answer fails only its own turn.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAnswerWriter } from '../src/chat/answer-writer.ts';
import {
  type AnswerValues,
  insertAnswersAndEndTurns,
  insertSession,
} from '../src/chat/chat.repository.ts';
import type { Database } from '../src/db/database.ts';
import type { UsageRow } from '../src/llm/usage.repository.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';

let testDb: TestDatabase;
let database: Database;
let owner: string;

const LEASE_MS = 60_000;

beforeAll(async () => {
  testDb = await createTestDatabase();
  database = testDb.database;
  const row = await database.db
    .insertInto('users')
    .values({
      email: 'answers@mezzofy.test',
      password_hash: 'x',
      name: 'Answers',
      department: 'sales',
      role: 'sales_rep',
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  owner = row.id;
});

afterAll(async () => {
  await testDb?.drop();
});

/** A session whose lease `token` holds. */
async function session(token: string, agent = 'sales'): Promise<string> {
  const row = await insertSession(database.db, {
    user_id: owner,
    title: 'Answers',
    agent,
    turn_token: token,
    leaseMs: LEASE_MS,
  });
  return row.id;
}

function usage(sessionId: string, callId = randomUUID()): UsageRow {
  return {
    provider: 'anthropic',
    model: 'claude-test',
    purpose: 'chat',
    department: 'sales',
    userId: owner,
    source: 'chat',
    sessionId,
    callId,
    attempt: 1,
    status: 'ok',
    errorKind: null,
    errorMessage: null,
    fallbackReason: null,
    inputTokens: 10,
    outputTokens: 5,
    costUsd: '0.000100',
    latencyMs: 3,
    ttfbMs: null,
    createdAt: new Date(),
  };
}

const answer = (
  sessionId: string,
  token: string,
  content: string,
  extra: Partial<AnswerValues> = {},
) =>
  ({
    user_id: owner,
    session_id: sessionId,
    content,
    metadata: { reply_to: randomUUID(), agent: 'sales' },
    token,
    ...extra,
  }) satisfies AnswerValues;

async function sessionRow(id: string) {
  return database.db
    .selectFrom('chat_sessions')
    .select(['agent', 'turn_token', 'turn_expires_at', 'updated_at', 'created_at'])
    .where('id', '=', id)
    .executeTakeFirstOrThrow();
}

async function answersOf(id: string): Promise<string[]> {
  const rows = await database.db
    .selectFrom('conversations')
    .select('content')
    .where('session_id', '=', id)
    .where('role', '=', 'assistant')
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map((r) => r.content);
}

async function usageCount(id: string): Promise<number> {
  const rows = await database.db
    .selectFrom('llm_usage')
    .select('call_id')
    .where('session_id', '=', id)
    .execute();
  return rows.length;
}

describe('insertAnswersAndEndTurns', () => {
  it('stores several sessions’ answers and usage rows in one statement, keyed by session', async () => {
    const [t1, t2, t3] = [randomUUID(), randomUUID(), randomUUID()];
    const [s1, s2, s3] = [await session(t1), await session(t2), await session(t3, 'finance')];
    const stored = await insertAnswersAndEndTurns(database.db, [
      answer(s1, t1, 'one', { usage: [usage(s1), usage(s1)] }),
      answer(s2, t2, 'two', { agent: 'marketing', usage: [usage(s2)] }),
      answer(s3, t3, 'three'),
    ]);
    expect([...stored.keys()].sort()).toEqual([s1, s2, s3].sort());
    expect(stored.get(s1)).toMatchObject({
      role: 'assistant',
      content: 'one',
      client_message_id: null,
    });
    expect(stored.get(s2)?.content).toBe('two');
    expect(stored.get(s3)?.created_at).toBeInstanceOf(Date);
    expect(stored.get(s2)?.metadata).toMatchObject({ agent: 'sales' });
    expect(await answersOf(s1)).toEqual(['one']);
    expect(await answersOf(s3)).toEqual(['three']);
    expect([await usageCount(s1), await usageCount(s2), await usageCount(s3)]).toEqual([2, 1, 0]);
    // Every lease given back; a named agent is set, none keeps the session's.
    const [r1, r2, r3] = [await sessionRow(s1), await sessionRow(s2), await sessionRow(s3)];
    expect([r1.turn_token, r2.turn_token, r3.turn_token]).toEqual([null, null, null]);
    expect([r1.turn_expires_at, r2.turn_expires_at, r3.turn_expires_at]).toEqual([
      null,
      null,
      null,
    ]);
    expect([r1.agent, r2.agent, r3.agent]).toEqual(['sales', 'marketing', 'finance']);
    expect(r1.updated_at.getTime()).toBeGreaterThanOrEqual(r1.created_at.getTime());
  });

  it('gives a lease back only where the answer’s token still holds it', async () => {
    const [held, taken] = [randomUUID(), randomUUID()];
    const [s1, s2] = [await session(held), await session(taken)];
    // s2's lease moved on to another turn (its own expired and was taken over).
    const stored = await insertAnswersAndEndTurns(database.db, [
      answer(s1, held, 'mine'),
      answer(s2, randomUUID(), 'late'),
    ]);
    expect(stored.size).toBe(2);
    expect((await sessionRow(s1)).turn_token).toBeNull();
    const other = await sessionRow(s2);
    expect(other.turn_token).toBe(taken);
    expect(other.turn_expires_at).toBeInstanceOf(Date);
    expect(await answersOf(s2)).toEqual(['late']);
  });
});

describe('createAnswerWriter', () => {
  /** The statement, counting its calls, the answers of each, and how many ran at once. */
  function counted() {
    const calls: number[] = [];
    let running = 0;
    let maxRunning = 0;
    const insert: typeof insertAnswersAndEndTurns = async (db, answers) => {
      calls.push(answers.length);
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      try {
        return await insertAnswersAndEndTurns(db, answers);
      } finally {
        running -= 1;
      }
    };
    return { insert, calls, maxRunning: () => maxRunning };
  }

  it('sends the answers ready at the same time in one statement', async () => {
    const { insert, calls } = counted();
    const writer = createAnswerWriter(database.db, { insert, maxInFlight: 1 });
    const tokens = Array.from({ length: 6 }, () => randomUUID());
    const sessions = await Promise.all(tokens.map((t) => session(t)));
    const rows = await Promise.all(
      sessions.map((s, i) => writer.store(answer(s, tokens[i]!, `a${i}`, { usage: [usage(s)] }))),
    );
    expect(calls).toEqual([6]);
    expect(rows.map((r) => r.content)).toEqual(['a0', 'a1', 'a2', 'a3', 'a4', 'a5']);
    for (const s of sessions) {
      expect(await usageCount(s)).toBe(1);
      expect((await sessionRow(s)).turn_token).toBeNull();
    }
  });

  it('stores a lone answer without waiting for others', async () => {
    const { insert, calls } = counted();
    const writer = createAnswerWriter(database.db, { insert });
    const token = randomUUID();
    const s = await session(token);
    const row = await writer.store(answer(s, token, 'alone'));
    expect(row.content).toBe('alone');
    expect(calls).toEqual([1]);
  });

  it('splits at maxBatch and runs at most maxInFlight statements at once', async () => {
    const { insert, calls, maxRunning } = counted();
    const writer = createAnswerWriter(database.db, { insert, maxBatch: 4, maxInFlight: 2 });
    const tokens = Array.from({ length: 11 }, () => randomUUID());
    const sessions = await Promise.all(tokens.map((t) => session(t)));
    const rows = await Promise.all(
      sessions.map((s, i) => writer.store(answer(s, tokens[i]!, `b${i}`))),
    );
    expect(rows.map((r) => r.content)).toEqual(sessions.map((_, i) => `b${i}`));
    expect(calls.reduce((a, b) => a + b, 0)).toBe(11);
    expect(Math.max(...calls)).toBeLessThanOrEqual(4);
    expect(calls.slice(0, 2)).toEqual([4, 4]);
    expect(maxRunning()).toBeLessThanOrEqual(2);
    for (const s of sessions) expect(await answersOf(s)).toHaveLength(1);
  });

  it('never puts two answers of one session in one statement', async () => {
    const { insert, calls } = counted();
    const writer = createAnswerWriter(database.db, { insert, maxInFlight: 1 });
    const [first, second, other] = [randomUUID(), randomUUID(), randomUUID()];
    const s = await session(first);
    const o = await session(other);
    const done = await Promise.all([
      writer.store(answer(s, first, 'earlier')),
      writer.store(answer(o, other, 'other')),
      writer.store(answer(s, second, 'later')),
    ]);
    expect(done.map((r) => r.content)).toEqual(['earlier', 'other', 'later']);
    expect(calls).toEqual([2, 1]);
    expect(await answersOf(s)).toEqual(['earlier', 'later']);
    expect((await sessionRow(s)).turn_token).toBeNull();
  });

  it('fails only the bad answer of a statement: the others are stored', async () => {
    const { insert, calls } = counted();
    const writer = createAnswerWriter(database.db, { insert, maxInFlight: 1 });
    const [t1, t2] = [randomUUID(), randomUUID()];
    const [s1, s2] = [await session(t1), await session(t2)];
    const missing = randomUUID(); // no such session: the foreign key refuses the row
    const results = await Promise.allSettled([
      writer.store(answer(s1, t1, 'good one', { usage: [usage(s1)] })),
      writer.store(answer(missing, randomUUID(), 'bad')),
      writer.store(answer(s2, t2, 'good two')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    // The statement of three failed as a whole, then each answer was tried alone.
    expect(calls[0]).toBe(3);
    expect(calls.slice(1).sort()).toEqual([1, 1, 1]);
    expect(await answersOf(s1)).toEqual(['good one']);
    expect(await answersOf(s2)).toEqual(['good two']);
    expect(await usageCount(s1)).toBe(1);
    expect((await sessionRow(s1)).turn_token).toBeNull();
  });

  it('refuses limits below one', () => {
    expect(() => createAnswerWriter(database.db, { maxBatch: 0 })).toThrow(/limits/);
    expect(() => createAnswerWriter(database.db, { maxInFlight: 0 })).toThrow(/limits/);
  });
});
