/**
 * Prepared statements for the hot path (the statements every chat turn runs).
 *
 * A statement is written with the Kysely builder, so it is type-checked against the schema
 * like every other query, but compiled once, when the module loads: its parameters are named
 * placeholders (`p('userId')`), bound by name at each run. On PostgreSQL it runs as a named
 * statement (node-postgres `name`): parsed and planned once per pooled connection instead of on
 * every call, and Kysely builds nothing per call. On PGlite, and inside a transaction, it runs
 * as the same SQL through Kysely, unnamed.
 *
 * Rules for a prepared statement (ADR 0006): list the columns it returns (no `*`: a column
 * added by a later migration would change the result type of a statement other processes
 * already prepared, which PostgreSQL refuses); a statement name is global to the process.
 */
import {
  type Compilable,
  CompiledQuery,
  DummyDriver,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
} from 'kysely';
import type pg from 'pg';
import type { Executor } from './executor.ts';
import type { DB } from './schema.ts';

/** Builds SQL only; never connects. */
const compiler = new Kysely<DB>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});

/** The pool under each PostgreSQL Kysely instance (database.ts registers it). */
const pools = new WeakMap<object, pg.Pool>();

export function registerPool(db: Kysely<DB>, pool: pg.Pool): void {
  pools.set(db, pool);
}

const MARK = '\u0000mezzofy-param:';

type Slot<K extends string> = { key: K } | { value: unknown };

export interface Prepared<R, K extends string> {
  readonly name: string;
  readonly sql: string;
  readonly slots: readonly Slot<K>[];
  /** Row type carrier only. */
  readonly _row?: R;
}

/** A placeholder for the parameter `key`, typed as the value the builder expects there. */
export type Param<K extends string> = <T = string>(key: K) => T;

const names = new Set<string>();

/** feature_not_supported: "cached plan must not change result type". */
const CACHED_PLAN_CHANGED = '0A000';

/**
 * Compiles `build` once. Values written in the builder as literals stay constants of the
 * statement; each `p(key)` becomes a parameter bound at run time.
 */
export function prepare<R, K extends string>(
  name: string,
  build: (db: Kysely<DB>, p: Param<K>) => Compilable<R>,
): Prepared<R, K> {
  if (names.has(name)) throw new Error(`prepared statement ${name} is defined twice`);
  names.add(name);
  const p = (<T>(key: K) => `${MARK}${key}` as unknown as T) as Param<K>;
  const compiled = build(compiler, p).compile();
  // A placeholder used where Kysely writes SQL text (sql.raw, sql.lit, an identifier) and not
  // a parameter would end up in the statement itself.
  if (compiled.sql.includes(MARK))
    throw new Error(`prepared statement ${name}: a parameter is used as SQL text`);
  // Its result type must not change when a migration adds a column (see the header).
  if (/(\bselect|\breturning|,)\s+\*(?=\s|,|$)|"[^"]+"\.\*/i.test(compiled.sql))
    throw new Error(`prepared statement ${name}: list the columns it returns instead of *`);
  const slots = compiled.parameters.map(
    (value): Slot<K> =>
      typeof value === 'string' && value.startsWith(MARK)
        ? { key: value.slice(MARK.length) as K }
        : { value },
  );
  return { name, sql: compiled.sql, slots };
}

/** Runs a prepared statement with its parameters; the rows it returns. */
export async function runPrepared<R, K extends string>(
  db: Executor,
  statement: Prepared<R, K>,
  params: Record<K, unknown>,
): Promise<R[]> {
  const values = statement.slots.map((slot) => {
    if (!('key' in slot)) return slot.value;
    const value = params[slot.key];
    if (value === undefined) throw new Error(`${statement.name}: parameter ${slot.key} missing`);
    return value;
  });
  const pool = pools.get(db);
  if (pool) {
    const query = { name: statement.name, text: statement.sql, values };
    try {
      return (await pool.query(query)).rows as R[];
    } catch (err) {
      // A migration changed the type of a column the statement returns: PostgreSQL refuses
      // the plan it cached on this connection once, then plans again. Run it once more.
      if ((err as { code?: string }).code !== CACHED_PLAN_CHANGED) throw err;
      return (await pool.query(query)).rows as R[];
    }
  }
  const result = await db.executeQuery<R>(CompiledQuery.raw(statement.sql, values));
  return result.rows as R[];
}
