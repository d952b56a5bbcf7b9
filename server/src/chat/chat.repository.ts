/** Chat sessions and their messages (`chat_sessions`, `conversations`). */
import { sql } from 'kysely';
import type { Executor } from '../db/executor.ts';
import { cursorShapes, decodeCursor, timeKey } from '../db/pagination.ts';
import { prepare, runPrepared } from '../db/prepared.ts';
import {
  USAGE_COLUMNS,
  type UsageRow,
  usageColumns,
  usageRowsFromJson,
} from '../llm/usage.repository.ts';

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

const SESSION_COLUMNS = [
  'id',
  'user_id',
  'title',
  'agent',
  'created_at',
  'updated_at',
  'deleted_at',
  'turn_token',
  'turn_expires_at',
  'summary',
  'summary_through',
] as const;

const MESSAGE_COLUMNS = [
  'id',
  'role',
  'content',
  'metadata',
  'client_message_id',
  'created_at',
] as const;

const leaseStatement = prepare<SessionRow, 'userId' | 'sessionId' | 'token' | 'leaseMs'>(
  'chat_lease_session',
  (db, p) =>
    db
      .updateTable('chat_sessions')
      .set({
        turn_token: p('token'),
        turn_expires_at: leaseEnd(p<number>('leaseMs')),
      })
      .where('id', '=', p('sessionId'))
      .where('user_id', '=', p('userId'))
      .where('deleted_at', 'is', null)
      .where((eb) =>
        eb.or([eb('turn_token', 'is', null), eb('turn_expires_at', '<', sql<Date>`now()`)]),
      )
      .returning(SESSION_COLUMNS),
);

/**
 * Takes the session's turn lease (one turn per session across processes): the user's own,
 * not deleted session whose lease is free or expired. Undefined when it is not the user's
 * (or deleted) or another turn holds it; `sessionBusy` tells the two apart.
 */
export async function leaseSession(
  db: Executor,
  userId: string,
  sessionId: string,
  token: string,
  leaseMs: number,
): Promise<SessionRow | undefined> {
  const rows = await runPrepared(db, leaseStatement, { userId, sessionId, token, leaseMs });
  return rows[0];
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

const listMessagesStatement = prepare<MessageRow, 'sessionId'>('chat_list_messages', (db, p) =>
  db
    .selectFrom('conversations')
    .select(MESSAGE_COLUMNS)
    .where('session_id', '=', p('sessionId'))
    .orderBy('created_at', 'asc')
    .orderBy('id', 'asc'),
);

/** A session's messages in order (user and assistant). */
export function listMessages(db: Executor, sessionId: string): Promise<MessageRow[]> {
  return runPrepared(db, listMessagesStatement, { sessionId });
}

const insertUserMessageStatement = prepare<
  MessageRow & { inserted: boolean },
  'userId' | 'sessionId' | 'content' | 'clientMessageId' | 'metadata'
>('chat_insert_user_message', (db, p) =>
  db
    .with('ins', (db) =>
      db
        .insertInto('conversations')
        .values({
          user_id: p('userId'),
          session_id: p('sessionId'),
          role: 'user',
          content: p('content'),
          client_message_id: p('clientMessageId'),
          metadata: p('metadata'),
        })
        .onConflict((oc) =>
          oc
            .columns(['user_id', 'client_message_id'])
            .where('client_message_id', 'is not', null)
            .doNothing(),
        )
        .returning(MESSAGE_COLUMNS),
    )
    .selectFrom('ins')
    .select(sql<boolean>`true`.as('inserted'))
    .select(MESSAGE_COLUMNS)
    // The session's earlier messages: the main query does not see the CTE's insert.
    .unionAll((eb) =>
      eb
        .selectFrom('conversations')
        .select(sql<boolean>`false`.as('inserted'))
        .select(MESSAGE_COLUMNS)
        .where('session_id', '=', p('sessionId')),
    )
    .orderBy('inserted')
    .orderBy('created_at')
    .orderBy('id'),
);

/**
 * Inserts a user message and returns it with the session's earlier messages, in order, in
 * one statement. With a client_message_id that this user already sent, inserts nothing and
 * `message` is undefined (the unique index decides, across processes too).
 */
export async function insertUserMessage(
  db: Executor,
  values: {
    user_id: string;
    session_id: string;
    content: string;
    client_message_id: string | null;
    metadata: Record<string, unknown>;
  },
): Promise<{ message: MessageRow | undefined; earlier: MessageRow[] }> {
  const rows = await runPrepared(db, insertUserMessageStatement, {
    userId: values.user_id,
    sessionId: values.session_id,
    content: values.content,
    clientMessageId: values.client_message_id,
    metadata: JSON.stringify(values.metadata),
  });
  let message: MessageRow | undefined;
  const earlier: MessageRow[] = [];
  for (const { inserted, ...row } of rows) {
    if (inserted) message = row;
    else earlier.push(row);
  }
  return { message, earlier };
}

const insertAnswerStatement = prepare<
  MessageRow,
  'userId' | 'sessionId' | 'content' | 'metadata' | 'agent' | 'token' | 'usage'
>('chat_insert_answer_end_turn', (db, p) =>
  db
    // The turn's last llm_usage rows (deferred by the model call), stored with the answer.
    .with('usage', (db) =>
      db
        .insertInto('llm_usage')
        .columns(USAGE_COLUMNS)
        .expression((eb) =>
          eb.selectFrom(usageRowsFromJson(p('usage')).as('u')).select(USAGE_COLUMNS),
        ),
    )
    .with('ended', (db) =>
      db
        .updateTable('chat_sessions')
        .set((eb) => {
          // Cleared only while this turn's token still holds the lease.
          const released = <C extends 'turn_token' | 'turn_expires_at'>(column: C) =>
            eb.case().when('turn_token', '=', p('token')).then(null).else(eb.ref(column)).end();
          return {
            // A null agent keeps the session's.
            agent: sql<string>`coalesce(${p<string | null>('agent')}, agent)`,
            updated_at: sql<Date>`now()`,
            turn_token: released('turn_token'),
            turn_expires_at: released('turn_expires_at'),
          };
        })
        .where('id', '=', p('sessionId')),
    )
    .insertInto('conversations')
    .values({
      user_id: p('userId'),
      session_id: p('sessionId'),
      role: 'assistant',
      content: p('content'),
      metadata: p('metadata'),
    })
    .returning(MESSAGE_COLUMNS),
);

/**
 * Stores a turn's answer and ends the turn in one statement: data-modifying CTEs write the
 * turn's deferred llm_usage rows and touch the session (and its agent), giving the lease back
 * if `token` still holds it, so the session is never left holding a lease its stored answer
 * no longer needs.
 */
export async function insertAnswerAndEndTurn(
  db: Executor,
  values: {
    user_id: string;
    session_id: string;
    content: string;
    metadata: Record<string, unknown>;
  },
  end: { agent?: string; token: string },
  usage: readonly UsageRow[] = [],
): Promise<MessageRow> {
  const rows = await runPrepared(db, insertAnswerStatement, {
    usage: JSON.stringify(usage.map(usageColumns)),
    userId: values.user_id,
    sessionId: values.session_id,
    content: values.content,
    metadata: JSON.stringify(values.metadata),
    agent: end.agent ?? null,
    token: end.token,
  });
  if (!rows[0]) throw new Error('answer not stored');
  return rows[0];
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
