/**
 * The statements at either end of a chat turn, shared by the turns ready at the same time.
 *
 * Turns' answers stored together (chat.repository.ts insertAnswersAndEndTurns, and the group
 * commit in chat/turn-statements.ts): one statement stores several sessions' answers with their
 * usage rows, gives back each lease its answer's token still holds, and sets or keeps each
 * session's agent; the writer sends the answers ready at the same time in one statement, never
 * two of one session together, splits at maxBatch, runs at most maxInFlight statements at once,
 * and a bad answer fails only its own turn.
 *
 * Turns' leases taken together (leaseAndInsertUserMessages, and createLeaseTaker): one
 * statement takes several sessions' free leases, inserts each user message and returns each
 * session's own earlier messages; a busy, deleted or other user's session is left alone and
 * gets nothing stored; two takes of one session never share a statement.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AnswerValues,
  insertAnswersAndEndTurns,
  insertAnswersStatement,
  insertSession,
  type LeaseInsertValues,
  leaseAndInsertStatement,
  leaseAndInsertUserMessages,
  releaseSession,
} from '../src/chat/chat.repository.ts';
import { createAnswerWriter, createLeaseTaker } from '../src/chat/turn-statements.ts';
import type { Database } from '../src/db/database.ts';
import type { UsageRow } from '../src/llm/usage.repository.ts';
import { createTestDatabase, insertSalesRep, type TestDatabase } from './helpers/test-database.ts';

let testDb: TestDatabase;
let database: Database;
let owner: string;
let stranger: string;

const LEASE_MS = 60_000;

beforeAll(async () => {
  testDb = await createTestDatabase();
  database = testDb.database;
  owner = await insertSalesRep(database, 'answers@mezzofy.test');
  stranger = await insertSalesRep(database, 'answers-stranger@mezzofy.test');
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

/** A session with no lease held, and `earlier` user messages in it. */
async function freeSession(earlier: string[], userId = owner): Promise<string> {
  const token = randomUUID();
  const row = await insertSession(database.db, {
    user_id: userId,
    title: 'Leases',
    agent: 'sales',
    turn_token: token,
    leaseMs: LEASE_MS,
  });
  for (const content of earlier)
    await database.db
      .insertInto('conversations')
      .values({ user_id: userId, session_id: row.id, role: 'user', content, metadata: '{}' })
      .execute();
  await releaseSession(database.db, row.id, token);
  return row.id;
}

const userMessage = (
  sessionId: string,
  content: string,
  extra: Partial<LeaseInsertValues> = {},
): LeaseInsertValues => ({
  user_id: owner,
  session_id: sessionId,
  content,
  client_message_id: null,
  metadata: { agent: 'sales' },
  token: randomUUID(),
  leaseMs: LEASE_MS,
  ...extra,
});

async function messagesOf(id: string): Promise<string[]> {
  const rows = await database.db
    .selectFrom('conversations')
    .select('content')
    .where('session_id', '=', id)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map((r) => r.content);
}

describe('leaseAndInsertUserMessages', () => {
  it('leases several sessions, inserts each message and returns each session’s own history', async () => {
    const a = await freeSession(['a1', 'a2']);
    const b = await freeSession([]);
    const c = await freeSession(['c1']);
    const items = [
      userMessage(a, 'a3'),
      userMessage(b, 'b1', { client_message_id: 'cm-b1' }),
      userMessage(c, 'c2'),
    ];
    const turns = await leaseAndInsertUserMessages(database.db, items);
    expect([...turns.keys()].sort()).toEqual([a, b, c].sort());
    expect(turns.get(a)?.earlier.map((m) => m.content)).toEqual(['a1', 'a2']);
    expect(turns.get(a)?.message).toMatchObject({ role: 'user', content: 'a3' });
    expect(turns.get(b)?.earlier).toEqual([]);
    expect(turns.get(b)?.message).toMatchObject({ content: 'b1', client_message_id: 'cm-b1' });
    expect(turns.get(c)?.earlier.map((m) => m.content)).toEqual(['c1']);
    for (const [i, id] of [a, b, c].entries()) {
      const session = turns.get(id)!.session;
      expect(session).toMatchObject({ id, user_id: owner, turn_token: items[i]!.token });
      expect(session.turn_expires_at).toBeInstanceOf(Date);
      expect((await sessionRow(id)).turn_token).toBe(items[i]!.token);
    }
    expect(await messagesOf(a)).toEqual(['a1', 'a2', 'a3']);
  });

  it('leaves busy, deleted and other users’ sessions alone, storing nothing there', async () => {
    const free = await freeSession(['f1']);
    const busyToken = randomUUID();
    const busy = await session(busyToken);
    const deleted = await freeSession(['d1']);
    await database.db
      .updateTable('chat_sessions')
      .set({ deleted_at: new Date() })
      .where('id', '=', deleted)
      .execute();
    const theirs = await freeSession(['t1'], stranger);
    const turns = await leaseAndInsertUserMessages(database.db, [
      userMessage(free, 'f2'),
      userMessage(busy, 'not now'),
      userMessage(deleted, 'gone'),
      userMessage(theirs, 'not mine'),
    ]);
    expect([...turns.keys()]).toEqual([free]);
    expect(await messagesOf(free)).toEqual(['f1', 'f2']);
    expect(await messagesOf(busy)).toEqual([]);
    expect((await sessionRow(busy)).turn_token).toBe(busyToken);
    expect(await messagesOf(deleted)).toEqual(['d1']);
    expect(await messagesOf(theirs)).toEqual(['t1']);
    expect((await sessionRow(theirs)).turn_token).toBeNull();
  });

  it('holds the lease but inserts nothing for a client_message_id sent before', async () => {
    const id = await freeSession([]);
    const first = userMessage(id, 'once', { client_message_id: 'cm-dup' });
    const turns1 = await leaseAndInsertUserMessages(database.db, [first]);
    expect(turns1.get(id)?.message?.content).toBe('once');
    await releaseSession(database.db, id, first.token);
    const again = userMessage(id, 'once', { client_message_id: 'cm-dup' });
    const turns2 = await leaseAndInsertUserMessages(database.db, [again]);
    expect(turns2.get(id)?.message).toBeUndefined();
    expect(turns2.get(id)?.earlier.map((m) => m.content)).toEqual(['once']);
    expect((await sessionRow(id)).turn_token).toBe(again.token);
  });
});

describe('createLeaseTaker', () => {
  function counted() {
    const calls: number[] = [];
    const lease: typeof leaseAndInsertUserMessages = (db, items) => {
      calls.push(items.length);
      return leaseAndInsertUserMessages(db, items);
    };
    return { lease, calls };
  }

  it('takes the leases asked for at the same time in one statement', async () => {
    const { lease, calls } = counted();
    const taker = createLeaseTaker(database.db, { lease, maxInFlight: 1 });
    const sessions = await Promise.all(['x', 'y', 'z', 'w'].map((h) => freeSession([h])));
    const turns = await Promise.all(sessions.map((s, i) => taker.take(userMessage(s, `m${i}`))));
    expect(calls).toEqual([4]);
    expect(turns.map((t) => t?.message?.content)).toEqual(['m0', 'm1', 'm2', 'm3']);
    expect(turns.map((t) => t?.earlier.map((m) => m.content))).toEqual([
      ['x'],
      ['y'],
      ['z'],
      ['w'],
    ]);
  });

  it('never puts two takes of one session in one statement: the second finds it busy', async () => {
    const { lease, calls } = counted();
    const taker = createLeaseTaker(database.db, { lease, maxInFlight: 1 });
    const id = await freeSession([]);
    const [first, second] = await Promise.all([
      taker.take(userMessage(id, 'first')),
      taker.take(userMessage(id, 'second')),
    ]);
    expect(calls).toEqual([1, 1]);
    expect(first?.message?.content).toBe('first');
    expect(second).toBeUndefined();
    expect(await messagesOf(id)).toEqual(['first']);
  });

  it('finds the turn of a session id written in capitals (the API accepts them)', async () => {
    const taker = createLeaseTaker(database.db);
    const id = await freeSession(['before']);
    const turn = await taker.take(userMessage(id.toUpperCase(), 'shouting'));
    expect(turn?.message?.content).toBe('shouting');
    expect(turn?.earlier.map((m) => m.content)).toEqual(['before']);
    const writer = createAnswerWriter(database.db);
    const row = await writer.store(answer(id.toUpperCase(), turn!.session.turn_token!, 'calm'));
    expect(row.content).toBe('calm');
    expect((await sessionRow(id)).turn_token).toBeNull();
  });
});

describe('both statements', () => {
  it('store a lone UTF-16 surrogate as U+FFFD instead of failing the turn', async () => {
    const id = await freeSession([]);
    const item = userMessage(id, 'broken \ud83d emoji');
    const turns = await leaseAndInsertUserMessages(database.db, [item]);
    expect(turns.get(id)?.message?.content).toBe('broken \ufffd emoji');
    const stored = await insertAnswersAndEndTurns(database.db, [
      answer(id, item.token, 'half \udc00 a pair'),
    ]);
    expect(stored.get(id)?.content).toBe('half \ufffd a pair');
  });

  it('refuse two items of one session', async () => {
    const id = await freeSession([]);
    await expect(
      leaseAndInsertUserMessages(database.db, [
        userMessage(id, 'a'),
        userMessage(id.toUpperCase(), 'b'),
      ]),
    ).rejects.toThrow(/one item per session/);
    await expect(
      insertAnswersAndEndTurns(database.db, [
        answer(id, randomUUID(), 'a'),
        answer(id, randomUUID(), 'b'),
      ]),
    ).rejects.toThrow(/one item per session/);
    expect(await messagesOf(id)).toEqual([]);
  });

  it('find the sessions through the primary key in their generic plans, not by reading the table', async () => {
    const rollback = new Error('rollback');
    const plans: Record<string, string> = {};
    await database.db
      .transaction()
      .execute(async (trx) => {
        await sql`insert into chat_sessions (user_id) select ${owner}::uuid from generate_series(1, 20000)`.execute(
          trx,
        );
        await sql`analyze chat_sessions`.execute(trx);
        await sql`set local plan_cache_mode = force_generic_plan`.execute(trx);
        for (const [name, statement, args] of [
          ['t_answers', insertAnswersStatement, `'[]', '[]'`],
          ['t_leases', leaseAndInsertStatement, `'[]'`],
        ] as const) {
          await sql.raw(`prepare ${name} as ${statement.sql}`).execute(trx);
          const rows = await sql
            .raw<{ 'QUERY PLAN': string }>(`explain execute ${name}(${args})`)
            .execute(trx);
          plans[name] = rows.rows.map((r) => r['QUERY PLAN']).join('\n');
          await sql.raw(`deallocate ${name}`).execute(trx);
        }
        throw rollback;
      })
      .catch((err: unknown) => {
        if (err !== rollback) throw err;
      });
    for (const plan of Object.values(plans)) {
      expect(plan).toMatch(/Update on chat_sessions/);
      expect(plan).not.toMatch(/Seq Scan on chat_sessions/);
      expect(plan).toMatch(/chat_sessions_pkey/);
    }
  });
});
