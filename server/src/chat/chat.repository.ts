/** Chat sessions and their messages (`chat_sessions`, `conversations`). */
import { type OnConflictBuilder, sql } from 'kysely';
import type { Executor } from '../db/executor.ts';
import { cursorShapes, decodeCursor, timeKey } from '../db/pagination.ts';
import { prepare, runPrepared } from '../db/prepared.ts';
import type { DB } from '../db/schema.ts';
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

/**
 * Takes the lease: the user's own, not deleted session whose lease is free or expired (its
 * holder died or overran).
 */
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

/** A client_message_id this user sent before: nothing is inserted (idempotent sends). */
const skipSentBefore = (oc: OnConflictBuilder<DB, 'conversations'>) =>
  oc
    .columns(['user_id', 'client_message_id'])
    .where('client_message_id', 'is not', null)
    .doNothing();

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
        .onConflict(skipSentBefore)
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
  values: UserMessageValues,
): Promise<StoredUserMessage> {
  const rows = await runPrepared(db, insertUserMessageStatement, userMessageParams(values));
  return splitMessages(rows, (row) => row.inserted);
}

export interface UserMessageValues {
  user_id: string;
  session_id: string;
  content: string;
  client_message_id: string | null;
  metadata: Record<string, unknown>;
}

/** The user message as stored (undefined: sent before), and the session's earlier messages. */
interface StoredUserMessage {
  message: MessageRow | undefined;
  earlier: MessageRow[];
}

const userMessageParams = (values: UserMessageValues) => ({
  userId: values.user_id,
  sessionId: values.session_id,
  content: values.content,
  clientMessageId: values.client_message_id,
  metadata: JSON.stringify(values.metadata),
});

/** Message rows of a statement, each either the inserted message or an earlier one. */
function splitMessages<R extends MessageRow>(
  rows: readonly R[],
  isNew: (row: R) => boolean,
): StoredUserMessage {
  let message: MessageRow | undefined;
  const earlier: MessageRow[] = [];
  for (const row of rows) {
    const { id, role, content, metadata, client_message_id, created_at } = row;
    const plain = { id, role, content, metadata, client_message_id, created_at };
    if (isNew(row)) message = plain;
    else earlier.push(plain);
  }
  return { message, earlier };
}

/** One row of the lease-and-insert statement: the session (part 0) or a message. */
type LeaseInsertRow = MessageRow & {
  /** 0: the leased session (in `session`), 1: an earlier message, 2: the inserted one. */
  part: 0 | 1 | 2;
  session: Record<string, unknown> | null;
};

/** A session id as PostgreSQL writes it: the key of the batch statements' results. */
export const sessionKey = (id: string) => id.toLowerCase();

/**
 * Several turns' items for one statement: at most one per session (it would take one of them
 * arbitrarily), ordered by user then session, so that statements running at once lock the rows
 * they share (users by the foreign keys, sessions) in the same order.
 */
function forOneStatement<T extends { user_id: string; session_id: string }>(
  items: readonly T[],
): T[] {
  const sessions = new Set(items.map((i) => sessionKey(i.session_id)));
  if (sessions.size !== items.length) throw new Error('one item per session in a statement');
  const key = (i: T) => `${i.user_id.toLowerCase()} ${sessionKey(i.session_id)}`;
  return [...items].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/**
 * Text as jsonb takes it: a lone UTF-16 surrogate (which a text parameter would have turned into
 * U+FFFD) is refused inside a JSON document, so it becomes U+FFFD here.
 */
const wellFormed = (text: string) => (text as string & { toWellFormed(): string }).toWellFormed();

/** A turn's user message, with the lease its turn takes (`leaseAndInsertUserMessages`). */
export type LeaseInsertValues = UserMessageValues & { token: string; leaseMs: number };

/** The lease taken: the session, the user message as stored and the earlier messages. */
export type LeasedTurn = StoredUserMessage & { session: SessionRow };

interface LeaseInsertColumns {
  session_id: string;
  user_id: string;
  token: string;
  lease_ms: number;
  content: string;
  client_message_id: string | null;
  metadata: Record<string, unknown>;
}

/**
 * The sessions of a statement's items (CTE `a`), for `chat_sessions.id = any(…)`. The planner
 * guesses 100 rows for a JSON array, and for a join with that many it can prefer reading the
 * whole chat_sessions table (a hash join; seen in the generic plan of the answers' update at
 * 20,000 sessions). Matched against an array, the rows are found through the primary key.
 */
const byPrimaryKey = sql<string>`any(array(select a.session_id from a))`;

/** Turns' user messages given as one JSON array parameter, one row each. */
const leaseItemsFromJson = (json: unknown) =>
  sql<LeaseInsertColumns>`jsonb_to_recordset(${json}::jsonb)`.as<'a'>(
    sql`a(session_id uuid, user_id uuid, token uuid, lease_ms integer, content text, client_message_id text, metadata jsonb)`,
  );

/** Exported for the plan test (server/test/turn-statements.db.test.ts). */
export const leaseAndInsertStatement = prepare<LeaseInsertRow & { session_key: string }, 'items'>(
  'chat_lease_insert_user_messages',
  (db, p) =>
    db
      .with('a', (db) =>
        db
          .selectFrom(leaseItemsFromJson(p('items')))
          .select([
            'session_id',
            'user_id',
            'token',
            'lease_ms',
            'content',
            'client_message_id',
            'metadata',
          ]),
      )
      // Free leases only. Taking an expired one may wait for its late holder's commit (the
      // answer), which this statement's snapshot would not see in the history below; that
      // case goes through leaseSession and insertUserMessage, two statements, two snapshots.
      .with('lease', (db) =>
        db
          .updateTable('chat_sessions')
          .from('a')
          .set((eb) => ({
            turn_token: eb.ref('a.token'),
            turn_expires_at: sql<Date>`now() + a.lease_ms * interval '1 millisecond'`,
          }))
          .whereRef('chat_sessions.id', '=', 'a.session_id')
          .where('chat_sessions.id', '=', byPrimaryKey)
          .whereRef('chat_sessions.user_id', '=', 'a.user_id')
          .where('chat_sessions.deleted_at', 'is', null)
          .where('chat_sessions.turn_token', 'is', null)
          .returning(SESSION_COLUMNS.map((c) => `chat_sessions.${c}` as const)),
      )
      // Only into the sessions just leased: nothing is stored where the lease is not taken.
      .with('ins', (db) =>
        db
          .insertInto('conversations')
          .columns(['user_id', 'session_id', 'role', 'content', 'client_message_id', 'metadata'])
          .expression((eb) =>
            eb
              .selectFrom('lease')
              .innerJoin('a', 'a.session_id', 'lease.id')
              .select([
                'lease.user_id',
                'lease.id',
                sql<string>`'user'`.as('role'),
                'a.content',
                'a.client_message_id',
                'a.metadata',
              ]),
          )
          .onConflict(skipSentBefore)
          .returning([...MESSAGE_COLUMNS, 'session_id']),
      )
      .selectFrom('lease')
      .select([
        sql<number>`0`.as('part'),
        'lease.id as session_key',
        sql<Record<string, unknown> | null>`json_build_object(${sql.join(
          SESSION_COLUMNS.map((c) => sql`${sql.lit(c)}, ${sql.ref(`lease.${c}`)}`),
        )})`.as('session'),
        sql<string>`null::uuid`.as('id'),
        sql<string>`null::text`.as('role'),
        sql<string>`null::text`.as('content'),
        sql<Record<string, unknown> | null>`null::jsonb`.as('metadata'),
        sql<string | null>`null::text`.as('client_message_id'),
        sql<Date>`null::timestamptz`.as('created_at'),
      ])
      // The leased sessions' earlier messages (the main query does not see the CTE's insert).
      .unionAll((eb) =>
        eb
          .selectFrom('conversations')
          .select([
            sql<number>`1`.as('part'),
            'conversations.session_id as session_key',
            sql<null>`null::json`.as('session'),
          ])
          .select(MESSAGE_COLUMNS)
          .where('conversations.session_id', 'in', eb.selectFrom('lease').select('lease.id')),
      )
      .unionAll((eb) =>
        eb
          .selectFrom('ins')
          .select([
            sql<number>`2`.as('part'),
            'ins.session_id as session_key',
            sql<null>`null::json`.as('session'),
          ])
          .select(MESSAGE_COLUMNS),
      )
      .orderBy('session_key')
      .orderBy('part')
      .orderBy('created_at')
      .orderBy('id'),
);

const SESSION_DATES = [
  'created_at',
  'updated_at',
  'deleted_at',
  'turn_expires_at',
  'summary_through',
] as const;

/** A session row read back from JSON: its timestamps as Dates again, as pg gives them. */
function sessionFromJson(json: Record<string, unknown>): SessionRow {
  const row = { ...json } as Record<string, unknown>;
  for (const key of SESSION_DATES) {
    const value = row[key];
    row[key] = typeof value === 'string' ? new Date(value) : null;
  }
  return row as unknown as SessionRow;
}

/**
 * Takes each session's free turn lease and, once it is held, inserts the user message and
 * returns the session's earlier messages: leaseSession and insertUserMessage in one
 * statement, for turns whose agent is known before the session is read (named by the
 * request), several sessions at once (one item per session, or it throws). The result holds the
 * sessions whose lease was taken; for the others (not the user's, deleted, busy, or an expired
 * lease: see the statement) nothing is stored. `message` is undefined when this user already
 * sent the client_message_id.
 */
export async function leaseAndInsertUserMessages(
  db: Executor,
  items: readonly LeaseInsertValues[],
): Promise<Map<string, LeasedTurn>> {
  const rows = await runPrepared(db, leaseAndInsertStatement, {
    items: JSON.stringify(
      forOneStatement(items).map(
        (v): LeaseInsertColumns => ({
          session_id: v.session_id,
          user_id: v.user_id,
          token: v.token,
          lease_ms: v.leaseMs,
          content: wellFormed(v.content),
          client_message_id: v.client_message_id,
          metadata: v.metadata,
        }),
      ),
    ),
  });
  const turns = new Map<string, LeasedTurn>();
  // Ordered by session, then the session row (part 0) before its messages.
  for (let i = 0; i < rows.length; ) {
    const first = rows[i]!;
    let end = i + 1;
    while (end < rows.length && rows[end]!.session_key === first.session_key) end += 1;
    if (first.part === 0 && first.session) {
      const stored = splitMessages(rows.slice(i + 1, end), (row) => row.part === 2);
      turns.set(first.session_key, { session: sessionFromJson(first.session), ...stored });
    }
    i = end;
  }
  return turns;
}

/** A turn's answer, as `insertAnswersAndEndTurns` stores it. */
export interface AnswerValues {
  user_id: string;
  session_id: string;
  content: string;
  metadata: Record<string, unknown>;
  /** The session's agent from now on; undefined keeps the session's. */
  agent?: string | undefined;
  /** The turn's lease token: the lease is given back if it still holds it. */
  token: string;
  /** The turn's deferred llm_usage rows, stored with the answer. */
  usage?: readonly UsageRow[];
}

interface AnswerColumns {
  session_id: string;
  user_id: string;
  content: string;
  metadata: Record<string, unknown>;
  agent: string | null;
  token: string;
}

/** Answers given as one JSON array parameter, one row each. */
const answersFromJson = (json: unknown) =>
  sql<AnswerColumns>`jsonb_to_recordset(${json}::jsonb)`.as<'a'>(
    sql`a(session_id uuid, user_id uuid, content text, metadata jsonb, agent text, token uuid)`,
  );

/** Exported for the plan test (server/test/turn-statements.db.test.ts). */
export const insertAnswersStatement = prepare<
  MessageRow & { session_id: string },
  'answers' | 'usage'
>('chat_insert_answers_end_turns', (db, p) =>
  db
    .with('a', (db) =>
      db
        .selectFrom(answersFromJson(p('answers')))
        .select(['session_id', 'user_id', 'content', 'metadata', 'agent', 'token']),
    )
    // The turns' last llm_usage rows (deferred by the model call), stored with the answers.
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
        .from('a')
        .set((eb) => {
          // Cleared only while the answer's token still holds the lease.
          const released = <C extends 'turn_token' | 'turn_expires_at'>(column: C) =>
            eb
              .case()
              .when('chat_sessions.turn_token', '=', eb.ref('a.token'))
              .then(null)
              .else(eb.ref(`chat_sessions.${column}`))
              .end();
          return {
            // A null agent keeps the session's.
            agent: sql<string>`coalesce(a.agent, chat_sessions.agent)`,
            updated_at: sql<Date>`now()`,
            turn_token: released('turn_token'),
            turn_expires_at: released('turn_expires_at'),
          };
        })
        .whereRef('chat_sessions.id', '=', 'a.session_id')
        .where('chat_sessions.id', '=', byPrimaryKey),
    )
    .insertInto('conversations')
    .columns(['user_id', 'session_id', 'role', 'content', 'metadata'])
    .expression((eb) =>
      eb
        .selectFrom('a')
        .select(['user_id', 'session_id', sql.lit('assistant').as('role'), 'content', 'metadata']),
    )
    .returning([...MESSAGE_COLUMNS, 'session_id']),
);

/**
 * Stores turns' answers and ends the turns in one statement: data-modifying CTEs write the
 * turns' deferred llm_usage rows and touch each session (and its agent), giving its lease back
 * if the answer's token still holds it, so a session is never left holding a lease its stored
 * answer no longer needs. One answer per session, or it throws (a session runs one turn at a
 * time); the rows come back keyed by session id as PostgreSQL writes it (lower case).
 */
export async function insertAnswersAndEndTurns(
  db: Executor,
  answers: readonly AnswerValues[],
): Promise<Map<string, MessageRow>> {
  const rows = await runPrepared(db, insertAnswersStatement, {
    answers: JSON.stringify(
      forOneStatement(answers).map(
        (a): AnswerColumns => ({
          session_id: a.session_id,
          user_id: a.user_id,
          content: wellFormed(a.content),
          metadata: a.metadata,
          agent: a.agent ?? null,
          token: a.token,
        }),
      ),
    ),
    usage: JSON.stringify(answers.flatMap((a) => (a.usage ?? []).map(usageColumns))),
  });
  const stored = new Map<string, MessageRow>();
  for (const { session_id, ...row } of rows) stored.set(session_id, row);
  return stored;
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
