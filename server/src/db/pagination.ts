/** Opaque keyset cursors: base64url JSON of the last row's sort key. */
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

export function decodeCursor(raw: string | undefined): KeysetCursor | undefined {
  if (raw === undefined) return undefined;
  try {
    const value = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as KeysetCursor;
    const okKey = typeof value.k === 'string' || typeof value.k === 'number';
    const okId = typeof value.id === 'string' || typeof value.id === 'number';
    if (!okKey || !okId) throw new Error('shape');
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
