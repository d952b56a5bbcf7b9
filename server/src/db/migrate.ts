/**
 * Versioned SQL migrations with checksums. Each file runs in its own transaction under a
 * lock (advisory lock on PostgreSQL; PGlite has a single owner process), is recorded in
 * schema_migrations and never re-applied. An applied file whose text changed is refused.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Database } from './database.ts';

export const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'migrations');
const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/;

export class MigrationError extends Error {
  override name = 'MigrationError';
}

export interface Migration {
  version: number;
  name: string;
  file: string;
  sql: string;
  checksum: string;
}

export function readMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const migrations = readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((file) => {
      const match = FILE_PATTERN.exec(file);
      if (!match)
        throw new MigrationError(`migration file name ${file} must look like 0001_name.sql`);
      const text = readFileSync(join(dir, file), 'utf8').replaceAll('\r\n', '\n');
      return {
        version: Number(match[1]),
        name: match[2]!,
        file,
        sql: text,
        checksum: createHash('sha256').update(text).digest('hex'),
      };
    });
  const seen = new Set<number>();
  for (const m of migrations) {
    if (seen.has(m.version)) throw new MigrationError(`two migrations share version ${m.version}`);
    seen.add(m.version);
  }
  return migrations;
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
}

/** The engine-specific primitives the runner needs. */
interface MigrationSession {
  query<T>(text: string, params?: unknown[]): Promise<T[]>;
  /** Runs a multi-statement script and the bookkeeping insert in one transaction. */
  applyInTransaction(script: string, record: Migration): Promise<void>;
}

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INTEGER PRIMARY KEY,
  name       TEXT NOT NULL,
  checksum   TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
)`;
const INSERT_RECORD = 'INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)';

/** PGlite has one owner process; within it, migration runs are serialised here. */
const pgliteRuns = new WeakMap<object, Promise<unknown>>();

async function withSession<T>(
  database: Database,
  fn: (s: MigrationSession) => Promise<T>,
): Promise<T> {
  if (database.raw.kind === 'pglite') {
    const { pglite } = database.raw;
    const run = (pgliteRuns.get(pglite) ?? Promise.resolve())
      .catch(() => {})
      .then(() =>
        fn({
          query: async (text, params) => (await pglite.query(text, params)).rows as never,
          applyInTransaction: async (script, m) => {
            await pglite.transaction(async (tx) => {
              await tx.exec(script);
              await tx.query(INSERT_RECORD, [m.version, m.name, m.checksum]);
            });
          },
        }),
      );
    pgliteRuns.set(pglite, run);
    return run;
  }

  const client = await database.raw.pool.connect();
  try {
    // One lock per schema, so test schemas in one database do not wait for each other.
    await client.query(`SELECT pg_advisory_lock(hashtext('mezzofy:migrate:' || current_schema()))`);
    try {
      return await fn({
        query: async (text, params) => (await client.query(text, params)).rows,
        applyInTransaction: async (script, m) => {
          await client.query('BEGIN');
          try {
            await client.query(script);
            await client.query(INSERT_RECORD, [m.version, m.name, m.checksum]);
            await client.query('COMMIT');
          } catch (err) {
            await client.query('ROLLBACK');
            throw err;
          }
        },
      });
    } finally {
      await client.query(
        `SELECT pg_advisory_unlock(hashtext('mezzofy:migrate:' || current_schema()))`,
      );
    }
  } finally {
    client.release();
  }
}

export interface MigrateResult {
  applied: string[];
  current: number;
}

export async function migrate(
  database: Database,
  migrations = readMigrations(),
): Promise<MigrateResult> {
  return withSession(database, async (session) => {
    await session.query(CREATE_TABLE);
    const rows = await session.query<AppliedRow>(
      'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
    );
    const byVersion = new Map(migrations.map((m) => [m.version, m]));
    for (const row of rows) {
      const file = byVersion.get(row.version);
      if (!file) {
        throw new MigrationError(
          `database has migration ${row.version} (${row.name}) that this code does not know; deploy the newer code`,
        );
      }
      if (file.checksum !== row.checksum) {
        throw new MigrationError(
          `migration ${file.file} was edited after it was applied (checksum differs); restore it and add a new migration instead`,
        );
      }
    }
    const done = new Set(rows.map((r) => r.version));
    const applied: string[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      try {
        await session.applyInTransaction(m.sql, m);
      } catch (err) {
        throw new MigrationError(
          `migration ${m.file} failed and was rolled back: ${(err as Error).message}`,
        );
      }
      applied.push(m.file);
    }
    return { applied, current: migrations.at(-1)?.version ?? 0 };
  });
}
