/**
 * A fresh, migrated database for one test file: its own PostgreSQL schema (TEST_DB=postgres)
 * or its own PGlite copied from the migrated template (TEST_DB=pglite).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sql } from 'kysely';
import { inject } from 'vitest';
import { createDatabase, type Database } from '../../src/db/database.ts';
import { migrate } from '../../src/db/migrate.ts';

export type TestEngine = 'postgres' | 'pglite';

export function testEngine(): TestEngine {
  return process.env.TEST_DB === 'postgres' ? 'postgres' : 'pglite';
}

export interface TestDatabase {
  database: Database;
  /** For PostgreSQL: the URL and schema, so other processes can use the same data. */
  url?: string;
  schema?: string;
  drop(): Promise<void>;
}

export async function createPostgresSchema(
  url: string,
): Promise<{ schema: string; drop: () => Promise<void> }> {
  const schema = `t_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = await createDatabase({ url, poolMax: 1 });
  await sql`create schema ${sql.id(schema)}`.execute(admin.db);
  await admin.close();
  return {
    schema,
    async drop() {
      const a = await createDatabase({ url, poolMax: 1 });
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(a.db);
      await a.close();
    },
  };
}

export async function createTestDatabase(engine: TestEngine = testEngine()): Promise<TestDatabase> {
  if (engine === 'postgres') {
    const url = process.env.TEST_DATABASE_URL;
    if (!url) throw new Error('TEST_DATABASE_URL is not set');
    const { schema, drop } = await createPostgresSchema(url);
    const database = await createDatabase({ url, schema, poolMax: 10 });
    await migrate(database);
    return {
      database,
      url,
      schema,
      async drop() {
        await database.close();
        await drop();
      },
    };
  }
  const template = inject('pgliteTemplate');
  const database = await createDatabase({ pgliteLoadDataDir: new Blob([readFileSync(template)]) });
  await migrate(database);
  return { database, drop: () => database.close() };
}

/** A `sales_rep` user of the sales department with this email; its id. */
export async function insertSalesRep(database: Database, email: string): Promise<string> {
  const row = await database.db
    .insertInto('users')
    .values({ email, password_hash: 'x', name: email, department: 'sales', role: 'sales_rep' })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}
