/** Chat sessions and their messages (`chat_sessions`, `conversations`). */
import { sql } from 'kysely';
import type { Executor } from '../db/executor.ts';
import { cursorShapes, decodeCursor, timeKey } from '../db/pagination.ts';

export interface SessionRow {
  id: string;
  user_id: string;
  title: string | null;
  agent: string | null;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
  turn_token: string | null;
  turn_expires_at: Date | null;
  summary: string | null;
  summary_through: Date | null;
}

export interface MessageRow {
  id: string;
  role: string;
  content: string;
  metadata: Record<string, unknown> | null;
  client_message_id: string | null;
  created_at: Date;
}

const LAST_MESSAGE_CHARS = 200;

/** The user's own, not deleted session; undefined otherwise. */
export function findOwnSession(
  db: Executor,
  userId: string,
  sessionId: string,
): Promise<SessionRow | undefined> {
  return db
    .selectFrom('chat_sessions')
    .selectAll()
    .where('id', '=', sessionId)
    .where('user_id', '=', userId)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
}

/** A new session, its turn lease already held by `turn_token` for `leaseMs`. */
export function insertSession(
  db: Executor,
  values: { user_id: string; title: string; agent: string; turn_token: string; leaseMs: number },
): Promise<SessionRow> {
  const { leaseMs, ...row } = values;
  return db
    .insertInto('chat_sessions')
    .values({ ...row, turn_expires_at: leaseEnd(leaseMs) })
    .returningAll()
    .executeTakeFirstOrThrow();
}

const leaseEnd = (ms: number) => sql<Date>`now() + ${ms} * interval '1 millisecond'`;

/**
 * Takes the session's turn lease (one turn per session across processes): the user's own,
 * not deleted session whose lease is free or expired. Undefined when it is not the user's
 * (or deleted) or another turn holds it; `sessionBusy` tells the two apart.
 */
export function leaseSession(
  db: Executor,
  userId: string,
  sessionId: string,
  token: string,
  leaseMs: number,
): Promise<SessionRow | undefined> {
  return db
    .updateTable('chat_sessions')
    .set({ turn_token: token, turn_expires_at: leaseEnd(leaseMs) })
    .where('id', '=', sessionId)
    .where('user_id', '=', userId)
    .where('deleted_at', 'is', null)
    .where((eb) =>
      eb.or([eb('turn_token', 'is', null), eb('turn_expires_at', '<', sql<Date>`now()`)]),
    )
    .returningAll()
    .executeTakeFirst();
}

/** The lease token of the turn running in the session now; null if none. */
export async function sessionBusy(db: Executor, sessionId: string): Promise<string | null> {
  const row = await db
    .selectFrom('chat_sessions')
    .select('turn_token')
    .where('id', '=', sessionId)
    .where('turn_token', 'is not', null)
    .where('turn_expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
  return row?.turn_token ?? null;
}

/** Ends a turn: touches the session (and its agent) and gives the lease back if still held. */
function endTurnQuery(db: Executor, sessionId: string, values: { agent?: string }, token: string) {
  return db
    .updateTable('chat_sessions')
    .set((eb) => ({
      ...values,
      updated_at: sql<Date>`now()`,
      turn_token: eb
        .case()
        .when('turn_token', '=', token)
        .then(null)
        .else(eb.ref('turn_token'))
        .end(),
      turn_expires_at: eb
        .case()
        .when('turn_token', '=', token)
        .then(null)
        .else(eb.ref('turn_expires_at'))
        .end(),
    }))
    .where('id', '=', sessionId);
}

/** Gives the lease back without touching the session (a turn that stored nothing). */
export async function releaseSession(
  db: Executor,
  sessionId: string,
  token: string,
): Promise<void> {
  await db
    .updateTable('chat_sessions')
    .set({ turn_token: null, turn_expires_at: null })
    .where('id', '=', sessionId)
    .where('turn_token', '=', token)
    .execute();
}

export async function softDeleteSession(
  db: Executor,
  userId: string,
  sessionId: string,
): Promise<boolean> {
  const res = await db
    .updateTable('chat_sessions')
    .set({ deleted_at: sql<Date>`now()` })
    .where('id', '=', sessionId)
    .where('user_id', '=', userId)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
  return res.numUpdatedRows > 0n;
}

/** Removes a session that has no messages (one a losing duplicate send created). */
export async function deleteEmptySession(db: Executor, sessionId: string): Promise<void> {
  await db
    .deleteFrom('chat_sessions')
    .where('id', '=', sessionId)
    .where((eb) =>
      eb.not(
        eb.exists(eb.selectFrom('conversations').select('id').where('session_id', '=', sessionId)),
      ),
    )
    .execute();
}

/** A session's messages in order (user and assistant). */
export function listMessages(db: Executor, sessionId: string): Promise<MessageRow[]> {
  return db
    .selectFrom('conversations')
    .select(['id', 'role', 'content', 'metadata', 'client_message_id', 'created_at'])
    .where('session_id', '=', sessionId)
    .orderBy('created_at', 'asc')
    .orderBy('id', 'asc')
    .execute();
}

/**
 * Inserts a user message; with a client_message_id that this user already sent, inserts
 * nothing and returns undefined (the unique index decides, across processes too).
 */
export function insertUserMessage(
  db: Executor,
  values: {
    user_id: string;
    session_id: string;
    content: string;
    client_message_id: string | null;
    metadata: Record<string, unknown>;
  },
): Promise<MessageRow | undefined> {
  return db
    .insertInto('conversations')
    .values({ ...values, role: 'user', metadata: JSON.stringify(values.metadata) })
    .onConflict((oc) =>
      oc
        .columns(['user_id', 'client_message_id'])
        .where('client_message_id', 'is not', null)
        .doNothing(),
    )
    .returning(['id', 'role', 'content', 'metadata', 'client_message_id', 'created_at'])
    .executeTakeFirst();
}

/**
 * Stores a turn's answer and ends the turn in one statement: a data-modifying
 * CTE, so the session is never left holding a lease its stored answer no longer needs.
 */
export function insertAnswerAndEndTurn(
  db: Executor,
  values: {
    user_id: string;
    session_id: string;
    content: string;
    metadata: Record<string, unknown>;
  },
  end: { agent?: string; token: string },
): Promise<MessageRow> {
  const { token, ...touched } = end;
  return db
    .with('ended', () => endTurnQuery(db, values.session_id, touched, token))
    .insertInto('conversations')
    .values({ ...values, role: 'assistant', metadata: JSON.stringify(values.metadata) })
    .returning(['id', 'role', 'content', 'metadata', 'client_message_id', 'created_at'])
    .executeTakeFirstOrThrow();
}

/** Replaces a message's metadata (e.g. a tool result arriving after an approval). */
export async function updateMessageMetadata(
  db: Executor,
  id: string,
  metadata: Record<string, unknown>,
): Promise<void> {
  await db
    .updateTable('conversations')
    .set({ metadata: JSON.stringify(metadata) })
    .where('id', '=', id)
    .execute();
}

/** The user's earlier message with this client_message_id, with its session. */
export function findByClientMessageId(
  db: Executor,
  userId: string,
  clientMessageId: string,
): Promise<(MessageRow & { session_id: string }) | undefined> {
  return db
    .selectFrom('conversations')
    .select(['id', 'role', 'content', 'metadata', 'client_message_id', 'created_at', 'session_id'])
    .where('user_id', '=', userId)
    .where('client_message_id', '=', clientMessageId)
    .executeTakeFirst();
}

/** The assistant row answering a user message (metadata.reply_to), if stored yet. */
export function findReplyTo(
  db: Executor,
  sessionId: string,
  userMessageId: string,
): Promise<MessageRow | undefined> {
  return db
    .selectFrom('conversations')
    .select(['id', 'role', 'content', 'metadata', 'client_message_id', 'created_at'])
    .where('session_id', '=', sessionId)
    .where('role', '=', 'assistant')
    .where(sql<boolean>`metadata->>'reply_to' = ${userMessageId}`)
    .executeTakeFirst();
}

export interface SessionListRow extends SessionRow {
  last_message: string | null;
  cursor_key: string;
}

/** The user's sessions, most recently updated first; `q` searches titles and messages. */
export function listSessions(
  db: Executor,
  userId: string,
  query: { limit: number; cursor?: string | undefined; q?: string | undefined },
): Promise<SessionListRow[]> {
  const cursor = decodeCursor(query.cursor, { k: cursorShapes.timeKey, id: cursorShapes.uuid });
  let q = db
    .selectFrom('chat_sessions as s')
    .selectAll('s')
    .select(timeKey('s.updated_at').as('cursor_key'))
    .select((eb) =>
      eb
        .selectFrom('conversations as c')
        .select(sql<string>`left(c.content, ${sql.lit(LAST_MESSAGE_CHARS)})`.as('content'))
        .whereRef('c.session_id', '=', 's.id')
        .orderBy('c.created_at', 'desc')
        .orderBy('c.id', 'desc')
        .limit(1)
        .as('last_message'),
    )
    .where('s.user_id', '=', userId)
    .where('s.deleted_at', 'is', null);
  if (query.q) {
    const like = `%${query.q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    q = q.where((eb) =>
      eb.or([
        eb('s.title', 'ilike', like),
        eb.exists(
          eb
            .selectFrom('conversations as m')
            .select(sql`1`.as('one'))
            .whereRef('m.session_id', '=', 's.id')
            .where('m.content', 'ilike', like),
        ),
      ]),
    );
  }
  if (cursor)
    q = q.where(
      sql<boolean>`(s.updated_at, s.id) < (${String(cursor.k)}::timestamptz, ${String(cursor.id)}::uuid)`,
    );
  return q
    .orderBy('s.updated_at', 'desc')
    .orderBy('s.id', 'desc')
    .limit(query.limit + 1)
    .execute() as Promise<SessionListRow[]>;
}
