/**
 * Prepared statements (db/prepared.ts): compiled once with named parameters; bound by name;
 * named server-side statements on PostgreSQL, plain SQL on PGlite and inside transactions;
 * a column added after a statement was prepared does not break it.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseApplicationName } from '../src/container.ts';
import { createDatabase, type Database } from '../src/db/database.ts';
import { prepare, runPrepared } from '../src/db/prepared.ts';
import { createTestDatabase, type TestDatabase, testEngine } from './helpers/test-database.ts';

let testDb: TestDatabase;
let database: Database;
let userId: string;

const insertSession = prepare<{ id: string; title: string | null }, 'userId' | 'title'>(
  'test_insert_session',
  (db, p) =>
    db
      .insertInto('chat_sessions')
      .values({ user_id: p('userId'), title: p('title'), agent: 'sales' })
      .returning(['id', 'title']),
);

const sessionsOf = prepare<{ id: string; title: string | null; agent: string | null }, 'userId'>(
  'test_sessions_of',
  (db, p) =>
    db
      .selectFrom('chat_sessions')
      .select(['id', 'title', 'agent'])
      .where('user_id', '=', p('userId'))
      .orderBy('created_at'),
);

beforeAll(async () => {
  testDb = await createTestDatabase();
  database = testDb.database;
  const user = await database.db
    .insertInto('users')
    .values({
      email: 'prepared@mezzofy.test',
      password_hash: 'x',
      name: 'Prepared',
      department: 'sales',
      role: 'sales_rep',
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  userId = user.id;
});

afterAll(async () => {
  await testDb?.drop();
});

describe('prepare', () => {
  it('compiles once: named parameters become slots, literals stay constants', () => {
    expect(insertSession.sql).toBe(
      'insert into "chat_sessions" ("user_id", "title", "agent") values ($1, $2, $3) returning "id", "title"',
    );
    expect(insertSession.slots).toEqual([{ key: 'userId' }, { key: 'title' }, { value: 'sales' }]);
  });

  it('refuses a parameter used as SQL text (it would end up in the statement)', () => {
    expect(() =>
      prepare<{ id: string }, 'column'>('test_param_as_text', (db, p) =>
        db.selectFrom('users').select(sql.ref<string>(p('column')).as('id')),
      ),
    ).toThrow(/a parameter is used as SQL text/);
  });

  it('refuses * (a column added by a migration would change what it returns)', () => {
    expect(() => prepare('test_star', (db) => db.selectFrom('chat_sessions').selectAll())).toThrow(
      /list the columns/,
    );
    expect(() =>
      prepare('test_star_returning', (db) =>
        db.updateTable('chat_sessions').set({ title: 'x' }).returningAll(),
      ),
    ).toThrow(/list the columns/);
    // Multiplication is not a star column.
    expect(() =>
      prepare('test_times', (db) =>
        db.selectFrom('llm_usage').select(sql<number>`input_tokens * 2`.as('double')),
      ),
    ).not.toThrow();
  });

  it('refuses a name defined twice', () => {
    expect(() => prepare('test_sessions_of', (db) => db.selectFrom('users').select('id'))).toThrow(
      /defined twice/,
    );
  });
});

describe('runPrepared', () => {
  it('binds parameters by name and returns the rows', async () => {
    const [row] = await runPrepared(database.db, insertSession, { userId, title: 'First' });
    expect(row).toMatchObject({ title: 'First' });
    const rows = await runPrepared(database.db, sessionsOf, { userId });
    expect(rows).toEqual([{ id: row!.id, title: 'First', agent: 'sales' }]);
  });

  it('passes null, and refuses a missing parameter before touching the database', async () => {
    const [row] = await runPrepared(database.db, insertSession, { userId, title: null });
    expect(row!.title).toBeNull();
    await expect(
      runPrepared(database.db, insertSession, { userId } as { userId: string; title: string }),
    ).rejects.toThrow('test_insert_session: parameter title missing');
  });

  it('runs inside a transaction, on its connection (a rollback undoes it)', async () => {
    const before = (await runPrepared(database.db, sessionsOf, { userId })).length;
    await expect(
      database.db.transaction().execute(async (trx) => {
        await runPrepared(trx, insertSession, { userId, title: 'Rolled back' });
        const inside = await runPrepared(trx, sessionsOf, { userId });
        expect(inside.map((r) => r.title)).toContain('Rolled back');
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await runPrepared(database.db, sessionsOf, { userId })).toHaveLength(before);
  });

  it('keeps working after a migration adds a column to the table it reads', async () => {
    await runPrepared(database.db, sessionsOf, { userId });
    await sql`alter table chat_sessions add column prepared_test_extra text`.execute(database.db);
    try {
      const rows = await runPrepared(database.db, sessionsOf, { userId });
      expect(rows.length).toBeGreaterThan(0);
      expect(Object.keys(rows[0]!)).toEqual(['id', 'title', 'agent']);
    } finally {
      await sql`alter table chat_sessions drop column prepared_test_extra`.execute(database.db);
    }
  });
});

describe('a migration under running statements', () => {
  it('changing the type of a returned column: the next run still answers', async () => {
    const titles = prepare<{ title: string | null }, 'userId'>('test_titles', (db, p) =>
      db.selectFrom('chat_sessions').select('title').where('user_id', '=', p('userId')),
    );
    // One connection, so the run after the change is on the connection that cached the plan.
    const single =
      testEngine() === 'postgres'
        ? await createDatabase({ url: testDb.url!, schema: testDb.schema!, poolMax: 1 })
        : undefined;
    const on = single?.db ?? database.db;
    try {
      const before = await runPrepared(on, titles, { userId });
      await sql`alter table chat_sessions alter column title type varchar(500)`.execute(on);
      expect(await runPrepared(on, titles, { userId })).toEqual(before);
    } finally {
      await sql`alter table chat_sessions alter column title type text`.execute(on);
      await single?.close();
    }
  });
});

describe('where it runs', () => {
  it('PostgreSQL: a named statement on the connection; PGlite: plain SQL', async () => {
    const held = async (db: Database['db']) =>
      (
        await sql<{
          name: string;
        }>`select name from pg_prepared_statements where name = ${sessionsOf.name}`.execute(db)
      ).rows;
    if (testEngine() !== 'postgres') {
      await runPrepared(database.db, sessionsOf, { userId });
      expect(await held(database.db)).toEqual([]);
      return;
    }
    // One connection, so the check sees the session that ran the statement.
    const single = await createDatabase({ url: testDb.url!, schema: testDb.schema!, poolMax: 1 });
    try {
      expect(await held(single.db)).toEqual([]);
      const first = await runPrepared(single.db, sessionsOf, { userId });
      expect(await held(single.db)).toEqual([{ name: 'test_sessions_of' }]);
      // Run again on the same connection: same rows, still one statement (not parsed anew).
      expect(await runPrepared(single.db, sessionsOf, { userId })).toEqual(first);
      expect(await held(single.db)).toHaveLength(1);
    } finally {
      await single.close();
    }
  });

  it('PostgreSQL: each connection names the process that holds it (application_name)', async () => {
    if (testEngine() !== 'postgres') return;
    const name = databaseApplicationName('api', 4242);
    expect(name).toBe('mezzofy-api:4242');
    const named = await createDatabase({
      url: testDb.url!,
      schema: testDb.schema!,
      applicationName: name,
    });
    try {
      const { rows } = await sql<{
        application_name: string;
      }>`select application_name from pg_stat_activity where pid = pg_backend_pid()`.execute(
        named.db,
      );
      expect(rows).toEqual([{ application_name: name }]);
    } finally {
      await named.close();
    }
  });
});
