import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../src/db/database.ts';
import { MIGRATIONS_DIR, MigrationError, migrate, readMigrations } from '../src/db/migrate.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';

let t: TestDatabase;
let dir: string;

beforeAll(async () => {
  t = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'mz-migrations-'));
  cpSync(MIGRATIONS_DIR, dir, { recursive: true });
});
afterAll(async () => {
  await t.drop();
});

const tableExists = async (db: Database, name: string) =>
  (
    await sql<{
      n: number;
    }>`select count(*)::int as n from information_schema.tables where table_name = ${name} and table_schema = current_schema()`.execute(
      db.db,
    )
  ).rows[0]!.n === 1;

describe('migrations', () => {
  it('created every table and index of the seed, plus auth tables', async () => {
    for (const table of [
      'users',
      'conversations',
      'sales_leads',
      'artifacts',
      'audit_log',
      'llm_usage',
      'email_log',
      'scheduled_jobs',
      'webhook_events',
      'auth_sessions',
      'refresh_tokens',
      'push_devices',
      'chat_sessions',
      'login_failures',
    ]) {
      expect(await tableExists(t.database, table), table).toBe(true);
    }
    const indexes = (
      await sql<{
        indexname: string;
      }>`select indexname from pg_indexes where schemaname = current_schema()`.execute(
        t.database.db,
      )
    ).rows.map((r) => r.indexname);
    for (const index of [
      'idx_conversations_session',
      'idx_conversations_user',
      'idx_leads_status',
      'idx_leads_company',
      'idx_leads_followup',
      'idx_artifacts_user',
      'idx_audit_user',
      'idx_audit_action',
      'idx_scheduled_active',
      'idx_webhook_events_source',
      'idx_webhook_events_status',
      'users_email_lower_key',
    ]) {
      expect(indexes, index).toContain(index);
    }
  });

  it('e-mail is unique whatever its case; users default to Asia/Singapore and en', async () => {
    await sql`insert into users (email, password_hash, name, department, role) values ('Case@Mezzofy.test', 'x', 'A', 'sales', 'sales_rep')`.execute(
      t.database.db,
    );
    await expect(
      sql`insert into users (email, password_hash, name, department, role) values ('case@mezzofy.test', 'x', 'B', 'sales', 'sales_rep')`.execute(
        t.database.db,
      ),
    ).rejects.toThrow();
    const row = (
      await sql<{
        timezone: string;
        locale: string;
      }>`select timezone, locale from users where email = 'Case@Mezzofy.test'`.execute(
        t.database.db,
      )
    ).rows[0]!;
    expect(row).toEqual({ timezone: 'Asia/Singapore', locale: 'en' });
    await expect(
      sql`insert into users (email, password_hash, name, department, role, locale) values ('l@mezzofy.test', 'x', 'B', 'sales', 'sales_rep', 'fr')`.execute(
        t.database.db,
      ),
    ).rejects.toThrow();
  });

  it('applies a new migration once and never again', async () => {
    writeFileSync(
      join(dir, '0900_test_extra.sql'),
      'CREATE TABLE test_extra (id INT PRIMARY KEY);\nINSERT INTO test_extra VALUES (1);\n',
    );
    const first = await migrate(t.database, readMigrations(dir));
    expect(first.applied).toEqual(['0900_test_extra.sql']);
    const second = await migrate(t.database, readMigrations(dir));
    expect(second.applied).toEqual([]);
    const rows = (
      await sql<{ n: number }>`select count(*)::int as n from test_extra`.execute(t.database.db)
    ).rows[0]!;
    expect(rows.n).toBe(1);
  });

  it('refuses to run when an applied migration was edited', async () => {
    writeFileSync(
      join(dir, '0900_test_extra.sql'),
      'CREATE TABLE test_extra (id INT PRIMARY KEY, changed TEXT);\n',
    );
    await expect(migrate(t.database, readMigrations(dir))).rejects.toThrow(
      /0900_test_extra\.sql was edited after it was applied/,
    );
    writeFileSync(
      join(dir, '0900_test_extra.sql'),
      'CREATE TABLE test_extra (id INT PRIMARY KEY);\nINSERT INTO test_extra VALUES (1);\n',
    );
    await expect(migrate(t.database, readMigrations(dir))).resolves.toMatchObject({ applied: [] });
  });

  it('rolls a failing migration back completely', async () => {
    writeFileSync(
      join(dir, '0901_broken.sql'),
      'CREATE TABLE half_done (id INT);\nSELECT * FROM no_such_table;\n',
    );
    const error = await migrate(t.database, readMigrations(dir)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationError);
    expect((error as Error).message).toMatch(/0901_broken\.sql failed and was rolled back/);
    expect(await tableExists(t.database, 'half_done')).toBe(false);
    const versions = (
      await sql<{ version: number }>`select version from schema_migrations`.execute(t.database.db)
    ).rows.map((r) => r.version);
    expect(versions).not.toContain(901);
  });

  it('refuses a database newer than the code', async () => {
    const known = readMigrations(dir).filter((m) => m.version !== 901 && m.version !== 900);
    await expect(migrate(t.database, known)).rejects.toThrow(
      /database has migration 900 .* that this code does not know/,
    );
  });

  it('two runners starting at once apply each migration exactly once', async () => {
    const migrations = readMigrations(dir).filter((m) => m.version !== 901);
    migrations.push({
      version: 902,
      name: 'race',
      file: '0902_race.sql',
      sql: 'CREATE TABLE race_table (id INT);',
      checksum: 'race-checksum',
    });
    let other: Database = t.database;
    if (t.url) other = await createDatabase({ url: t.url, schema: t.schema, poolMax: 2 });
    try {
      const results = await Promise.all([
        migrate(t.database, migrations),
        migrate(other, migrations),
      ]);
      expect(results.flatMap((r) => r.applied)).toEqual(['0902_race.sql']);
    } finally {
      if (other !== t.database) await other.close();
    }
  });
});
