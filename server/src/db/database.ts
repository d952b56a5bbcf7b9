/**
 * One Kysely instance over PostgreSQL (`pg` pool, production) or PGlite (embedded, under
 * DATA_DIR). Code above this module does not know which engine it has.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import pg from 'pg';
import { registerPool } from './prepared.ts';
import type { DB } from './schema.ts';

// int8 (count(*), bigserial) as a JS number, as PGlite already does. Values stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number.parseInt(v, 10));

export type Engine = 'postgres' | 'pglite';

export type RawConnection =
  | { kind: 'postgres'; pool: pg.Pool }
  | { kind: 'pglite'; pglite: PGlite };

export interface Database {
  db: Kysely<DB>;
  engine: Engine;
  raw: RawConnection;
  /** Round trip to the database, bounded by `timeoutMs`. */
  ping(timeoutMs: number): Promise<number>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  url?: string | undefined;
  /** PGlite data folder when no URL is given; omit for an in-memory database. */
  pgliteDir?: string | undefined;
  /** Load a PGlite data folder dumped by `dumpDataDir` (tests start from a migrated template). */
  pgliteLoadDataDir?: Blob | undefined;
  poolMax?: number;
  statementTimeoutMs?: number;
  /** PostgreSQL schema to use (tests isolate each file in its own schema). */
  schema?: string | undefined;
  /** Shown in pg_stat_activity: which process holds a connection. */
  applicationName?: string | undefined;
}

export async function createDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.url) {
    const runtime = [`-c statement_timeout=${options.statementTimeoutMs ?? 15_000}`];
    if (options.schema) runtime.push(`-c search_path=${options.schema}`);
    const pool = new pg.Pool({
      connectionString: options.url,
      ...(options.applicationName ? { application_name: options.applicationName } : {}),
      max: options.poolMax ?? 10,
      options: runtime.join(' '),
      connectionTimeoutMillis: 5_000,
      idleTimeoutMillis: 30_000,
    });
    // An idle client losing its connection must not crash the process.
    pool.on('error', () => {});
    const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
    registerPool(db, pool);
    return wrap(db, 'postgres', { kind: 'postgres', pool });
  }
  let dataDir: string | undefined;
  if (options.pgliteDir) {
    mkdirSync(options.pgliteDir, { recursive: true });
    dataDir = join(options.pgliteDir);
  }
  const pglite = await PGlite.create({
    ...(dataDir ? { dataDir } : {}),
    ...(options.pgliteLoadDataDir ? { loadDataDir: options.pgliteLoadDataDir } : {}),
  });
  const db = new Kysely<DB>({ dialect: new PGliteDialect(pglite) });
  return wrap(db, 'pglite', { kind: 'pglite', pglite });
}

function wrap(db: Kysely<DB>, engine: Engine, raw: RawConnection): Database {
  let closed = false;
  return {
    db,
    engine,
    raw,
    async ping(timeoutMs) {
      const started = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('database ping timed out')), timeoutMs);
      });
      try {
        await Promise.race([sql`select 1`.execute(db), timeout]);
      } finally {
        clearTimeout(timer);
      }
      return performance.now() - started;
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
}
