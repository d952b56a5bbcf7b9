/**
 * The session's turn lease taken together with the user message (chat.repository.ts
 * leaseAndInsertUserMessages, one turn at a time here): one statement leases, inserts and
 * returns the earlier messages; it stores nothing when the lease is not taken (busy, expired, another user's, deleted); it
 * gives the session back exactly as leaseSession does (timestamps as Dates, in any time zone);
 * a client_message_id sent before inserts nothing but the lease is held.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  findOwnSession,
  insertSession,
  type LeasedTurn,
  leaseAndInsertUserMessages,
  leaseSession,
  releaseSession,
  sessionKey,
  type UserMessageValues,
} from '../src/chat/chat.repository.ts';
import type { Database } from '../src/db/database.ts';
import type { Executor } from '../src/db/executor.ts';
import { createTestDatabase, insertSalesRep, type TestDatabase } from './helpers/test-database.ts';

let testDb: TestDatabase;
let database: Database;
let owner: string;
let stranger: string;
let sessionId: string;

const LEASE_MS = 60_000;

/** One turn of leaseAndInsertUserMessages: undefined when the lease is not taken. */
async function leaseAndInsertUserMessage(
  db: Executor,
  lease: { token: string; leaseMs: number },
  values: UserMessageValues,
): Promise<LeasedTurn | undefined> {
  const turns = await leaseAndInsertUserMessages(db, [{ ...values, ...lease }]);
  return turns.get(sessionKey(values.session_id));
}
/** Lease tokens are UUIDs. */
const tok = {
  evil: randomUUID(),
  holder: randomUUID(),
  setup: randomUUID(),
  stale: randomUUID(),
  t1: randomUUID(),
  t2: randomUUID(),
  t3: randomUUID(),
  t4: randomUUID(),
  t5: randomUUID(),
  t6: randomUUID(),
  t7: randomUUID(),
  t8: randomUUID(),
  t9: randomUUID(),
};

const message = (content: string, clientMessageId: string | null = null, userId = owner) => ({
  user_id: userId,
  session_id: sessionId,
  content,
  client_message_id: clientMessageId,
  metadata: { agent: 'sales', ...(clientMessageId ? { client_message_id: clientMessageId } : {}) },
});

async function contents(): Promise<string[]> {
  const rows = await database.db
    .selectFrom('conversations')
    .select('content')
    .where('session_id', '=', sessionId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map((r) => r.content);
}

async function leaseToken(): Promise<string | null> {
  const row = await database.db
    .selectFrom('chat_sessions')
    .select('turn_token')
    .where('id', '=', sessionId)
    .executeTakeFirstOrThrow();
  return row.turn_token;
}

beforeAll(async () => {
  testDb = await createTestDatabase();
  database = testDb.database;
  owner = await insertSalesRep(database, 'lease-owner@mezzofy.test');
  stranger = await insertSalesRep(database, 'lease-stranger@mezzofy.test');
});

afterAll(async () => {
  await testDb?.drop();
});

beforeEach(async () => {
  const session = await insertSession(database.db, {
    user_id: owner,
    title: 'Leases',
    agent: 'sales',
    turn_token: tok.setup,
    leaseMs: LEASE_MS,
  });
  sessionId = session.id;
  await releaseSession(database.db, sessionId, tok.setup);
});

describe('leaseAndInsertUserMessage', () => {
  it('leases, inserts and returns the earlier messages in order, in one statement', async () => {
    const first = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t1, leaseMs: LEASE_MS },
      message('first'),
    );
    expect(first?.message).toMatchObject({ role: 'user', content: 'first' });
    expect(first?.message?.created_at).toBeInstanceOf(Date);
    expect(first?.earlier).toEqual([]);
    expect(await leaseToken()).toBe(tok.t1);
    await releaseSession(database.db, sessionId, tok.t1);

    const second = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t2, leaseMs: LEASE_MS },
      message('second', 'cm-2'),
    );
    expect(second?.earlier.map((m) => m.content)).toEqual(['first']);
    expect(second?.message).toMatchObject({
      content: 'second',
      client_message_id: 'cm-2',
      metadata: { agent: 'sales', client_message_id: 'cm-2' },
    });
    expect(second?.session).toMatchObject({ id: sessionId, user_id: owner, turn_token: tok.t2 });
    expect(await contents()).toEqual(['first', 'second']);
  });

  it('gives the session back as leaseSession does: same fields, timestamps as Dates', async () => {
    await database.db
      .updateTable('chat_sessions')
      .set({ summary: 'Earlier: pelicans.', summary_through: sql<Date>`now() - interval '1 hour'` })
      .where('id', '=', sessionId)
      .execute();
    const taken = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t3, leaseMs: LEASE_MS },
      message('with a summary'),
    );
    await releaseSession(database.db, sessionId, tok.t3);
    const viaLease = await leaseSession(database.db, owner, sessionId, tok.t3, LEASE_MS);
    expect(taken?.session).toBeDefined();
    expect(viaLease).toBeDefined();
    const session = taken!.session;
    expect(Object.keys(session).sort()).toEqual(Object.keys(viaLease!).sort());
    for (const key of ['created_at', 'updated_at', 'summary_through', 'turn_expires_at'] as const)
      expect(session[key], key).toBeInstanceOf(Date);
    expect(session.deleted_at).toBeNull();
    expect(session.summary).toBe('Earlier: pelicans.');
    // The same instants (the JSON keeps microseconds; Dates hold milliseconds, as pg's do).
    expect(session.summary_through!.getTime()).toBe(viaLease!.summary_through!.getTime());
    expect(session.created_at.getTime()).toBe(viaLease!.created_at.getTime());
    expect(session.turn_expires_at!.getTime()).toBeGreaterThan(Date.now() + LEASE_MS / 2);
  });

  it('stores nothing while another turn holds the lease, and proceeds once it is free', async () => {
    await leaseSession(database.db, owner, sessionId, tok.holder, LEASE_MS);
    const refused = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t4, leaseMs: LEASE_MS },
      message('too early'),
    );
    expect(refused).toBeUndefined();
    expect(await contents()).toEqual([]);
    expect(await leaseToken()).toBe(tok.holder);

    await releaseSession(database.db, sessionId, tok.holder);
    const taken = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t4, leaseMs: LEASE_MS },
      message('in turn'),
    );
    expect(taken?.message?.content).toBe('in turn');
    expect(await contents()).toEqual(['in turn']);
  });

  it('leaves an expired lease to leaseSession: nothing stored, the holder untouched', async () => {
    await leaseSession(database.db, owner, sessionId, tok.stale, 1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const refused = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t5, leaseMs: LEASE_MS },
      message('after expiry'),
    );
    expect(refused).toBeUndefined();
    expect(await contents()).toEqual([]);
    expect(await leaseToken()).toBe(tok.stale);
    expect(await leaseSession(database.db, owner, sessionId, tok.t5, LEASE_MS)).toBeDefined();
    expect(await leaseToken()).toBe(tok.t5);
  });

  it('timestamps read back from JSON are the same instants in any session time zone', async () => {
    await database.db
      .updateTable('chat_sessions')
      .set({ summary_through: sql<Date>`now() - interval '1 hour'` })
      .where('id', '=', sessionId)
      .execute();
    const taken = await database.db.transaction().execute(async (trx) => {
      await sql`set local timezone = 'Asia/Kathmandu'`.execute(trx);
      return leaseAndInsertUserMessage(trx, { token: tok.t5, leaseMs: LEASE_MS }, message('tz'));
    });
    await releaseSession(database.db, sessionId, tok.t5);
    const stored = await database.db
      .selectFrom('chat_sessions')
      .select(['created_at', 'summary_through'])
      .where('id', '=', sessionId)
      .executeTakeFirstOrThrow();
    expect(taken!.session.created_at.getTime()).toBe(stored.created_at.getTime());
    expect(taken!.session.summary_through!.getTime()).toBe(stored.summary_through!.getTime());
  });

  it("another user's or a deleted session: nothing leased, stored or read", async () => {
    const { earlier } = (await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t6, leaseMs: LEASE_MS },
      message('private'),
    ))!;
    expect(earlier).toEqual([]);
    await releaseSession(database.db, sessionId, tok.t6);

    const hijack = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.evil, leaseMs: LEASE_MS },
      message('hijack', null, stranger),
    );
    expect(hijack).toBeUndefined();
    expect(await leaseToken()).toBeNull();

    await database.db
      .updateTable('chat_sessions')
      .set({ deleted_at: sql<Date>`now()` })
      .where('id', '=', sessionId)
      .execute();
    const deleted = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t7, leaseMs: LEASE_MS },
      message('after delete'),
    );
    expect(deleted).toBeUndefined();
    expect(await contents()).toEqual(['private']);
    expect(await findOwnSession(database.db, owner, sessionId)).toBeUndefined();
  });

  it('taking the lease on a full table is a HOT update: no new index entries (fillfactor)', async () => {
    const { rows } = await sql<{
      reloptions: string[] | null;
    }>`select reloptions from pg_class where oid = 'chat_sessions'::regclass`.execute(database.db);
    expect(rows[0]!.reloptions).toContain('fillfactor=70');
    // Enough new sessions to fill several pages: one from the middle is on a page of new
    // rows only (no dead versions whose space an update could reuse).
    const batch = await database.db
      .insertInto('chat_sessions')
      .values(
        Array.from({ length: 300 }, (_, i) => ({ user_id: owner, title: `s${i}`, agent: 'sales' })),
      )
      .returning('id')
      .execute();
    const first = batch[150]!;
    const updates = await database.db.transaction().execute(async (trx) => {
      // This connection's counts not yet reported (earlier statements included): before, after.
      const counts = async () =>
        (
          await sql<{
            hot: number;
            all: number;
          }>`select pg_stat_get_xact_tuples_hot_updated('chat_sessions'::regclass)::int as hot,
                    pg_stat_get_xact_tuples_updated('chat_sessions'::regclass)::int as all`.execute(
            trx,
          )
        ).rows[0]!;
      const before = await counts();
      const leased = await leaseSession(trx, owner, first.id, tok.t9, LEASE_MS);
      expect(leased?.id).toBe(first.id);
      const after = await counts();
      return { hot: after.hot - before.hot, all: after.all - before.all };
    });
    expect(updates).toEqual({ hot: 1, all: 1 });
  });

  it('a client_message_id sent before: the lease is held, nothing is inserted', async () => {
    await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t8, leaseMs: LEASE_MS },
      message('once', 'cm-once'),
    );
    await releaseSession(database.db, sessionId, tok.t8);
    const again = await leaseAndInsertUserMessage(
      database.db,
      { token: tok.t9, leaseMs: LEASE_MS },
      message('once', 'cm-once'),
    );
    expect(again).toBeDefined();
    expect(again?.message).toBeUndefined();
    expect(again?.earlier.map((m) => m.content)).toEqual(['once']);
    expect(await leaseToken()).toBe(tok.t9);
    expect(await contents()).toEqual(['once']);
  });
});
