/** Opaque keyset cursors: base64url JSON of the last row's sort key. */
import { type RawBuilder, type SelectQueryBuilder, sql } from 'kysely';
import { AppError } from '../errors.ts';

export interface KeysetCursor {
  /** Sort value of the last row (ISO time or number). */
  k: string | number;
  /** Tie-breaker id of the last row. */
  id: string | number;
}

export function encodeCursor(cursor: KeysetCursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

/**
 * A timestamptz column as UTC ISO-8601 text to the microsecond, for cursor keys: a JS Date
 * keeps only milliseconds, and a truncated key would skip rows of the same millisecond.
 */
export function timeKey(column: string): RawBuilder<string> {
  return sql<string>`to_char(${sql.ref(column)} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
}

const TIME_KEY = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What a cursor's key and id must look like, so a forged one is a 400, not a SQL error. */
export const cursorShapes = {
  timeKey: (k: unknown) =>
    typeof k === 'string' && TIME_KEY.test(k) && !Number.isNaN(Date.parse(k)),
  uuid: (id: unknown) => typeof id === 'string' && UUID.test(id),
  integer: (id: unknown) => Number.isSafeInteger(id),
};

export function decodeCursor(
  raw: string | undefined,
  shape?: { k: (k: unknown) => boolean; id: (id: unknown) => boolean },
): KeysetCursor | undefined {
  if (raw === undefined) return undefined;
  try {
    const value = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as KeysetCursor;
    const okKey = typeof value.k === 'string' || typeof value.k === 'number';
    const okId = typeof value.id === 'string' || typeof value.id === 'number';
    if (!okKey || !okId) throw new Error('shape');
    if (shape && !(shape.k(value.k) && shape.id(value.id))) throw new Error('shape');
    return value;
  } catch {
    throw new AppError(
      'bad_request',
      'cursor is not valid; pass the next_cursor of a previous page',
    );
  }
}

/** Fetch limit+1 rows, then call this to split the page and compute the next cursor. */
export function toPage<R, V>(
  rows: R[],
  limit: number,
  key: (row: R) => KeysetCursor,
  view: (row: R) => V,
) {
  const more = rows.length > limit;
  const items = more ? rows.slice(0, limit) : rows;
  const last = items.at(-1);
  return { items: items.map(view), next_cursor: more && last ? encodeCursor(key(last)) : null };
}

/**
 * A list newest first, keyed by (created_at, id uuid): rows after `cursor`, one more than
 * `limit` (so toPage knows whether there is a next page). The query must select
 * `timeKey('created_at').as('cursor_key')` for the next cursor.
 */
// biome-ignore lint/suspicious/noExplicitAny: any table that has created_at and a uuid id
export function newestFirst<QB extends SelectQueryBuilder<any, any, any>>(
  query: QB,
  cursorText: string | undefined,
  limit: number,
): QB {
  const cursor = decodeCursor(cursorText, { k: cursorShapes.timeKey, id: cursorShapes.uuid });
  const after = cursor
    ? query.where(
        sql<boolean>`(created_at, id) < (${String(cursor.k)}::timestamptz, ${String(cursor.id)}::uuid)`,
      )
    : query;
  return after
    .orderBy(sql`created_at`, 'desc')
    .orderBy(sql`id`, 'desc')
    .limit(limit + 1) as QB;
}
