/** auth_sessions (refresh-token families) and refresh_tokens (stored as SHA-256). */
import type { Executor } from '../db/executor.ts';

export async function insertSession(
  db: Executor,
  s: { userId: string; expiresAt: Date; ip: string | null; userAgent: string | null },
): Promise<string> {
  const row = await db
    .insertInto('auth_sessions')
    .values({
      user_id: s.userId,
      expires_at: s.expiresAt,
      ip_address: s.ip,
      user_agent: s.userAgent,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

export async function insertRefreshToken(
  db: Executor,
  t: { sessionId: string; tokenHash: string; expiresAt: Date },
): Promise<string> {
  const row = await db
    .insertInto('refresh_tokens')
    .values({ session_id: t.sessionId, token_hash: t.tokenHash, expires_at: t.expiresAt })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

/**
 * Marks an unused, unexpired, unrevoked token as used — atomically, so of two concurrent
 * refreshes with one token exactly one gets the row.
 */
export function claimRefreshToken(db: Executor, tokenHash: string, now: Date) {
  return db
    .updateTable('refresh_tokens')
    .set({ used_at: now })
    .where('token_hash', '=', tokenHash)
    .where('used_at', 'is', null)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', now)
    .returning(['id', 'session_id'])
    .executeTakeFirst();
}

export function findRefreshToken(db: Executor, tokenHash: string) {
  return db
    .selectFrom('refresh_tokens')
    .innerJoin('auth_sessions', 'auth_sessions.id', 'refresh_tokens.session_id')
    .select([
      'refresh_tokens.id',
      'refresh_tokens.session_id',
      'refresh_tokens.used_at',
      'refresh_tokens.revoked_at',
      'refresh_tokens.expires_at',
      'refresh_tokens.replaced_by',
      'auth_sessions.user_id',
      'auth_sessions.revoked_at as session_revoked_at',
    ])
    .where('refresh_tokens.token_hash', '=', tokenHash)
    .executeTakeFirst();
}

export function findSession(db: Executor, id: string) {
  return db.selectFrom('auth_sessions').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function markReplaced(
  db: Executor,
  tokenId: string,
  replacedBy: string,
  sessionId: string,
  now: Date,
) {
  await db
    .updateTable('refresh_tokens')
    .set({ replaced_by: replacedBy })
    .where('id', '=', tokenId)
    .execute();
  await db
    .updateTable('auth_sessions')
    .set({ last_used_at: now })
    .where('id', '=', sessionId)
    .execute();
}

export async function revokeSession(
  db: Executor,
  sessionId: string,
  reason: string,
  now: Date,
): Promise<void> {
  await db
    .updateTable('auth_sessions')
    .set({ revoked_at: now, revoke_reason: reason })
    .where('id', '=', sessionId)
    .where('revoked_at', 'is', null)
    .execute();
  await db
    .updateTable('refresh_tokens')
    .set({ revoked_at: now })
    .where('session_id', '=', sessionId)
    .where('revoked_at', 'is', null)
    .execute();
}

export async function revokeUserSessions(
  db: Executor,
  userId: string,
  reason: string,
  now: Date,
): Promise<number> {
  const sessions = await db
    .updateTable('auth_sessions')
    .set({ revoked_at: now, revoke_reason: reason })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .returning('id')
    .execute();
  if (sessions.length) {
    await db
      .updateTable('refresh_tokens')
      .set({ revoked_at: now })
      .where(
        'session_id',
        'in',
        sessions.map((s) => s.id),
      )
      .where('revoked_at', 'is', null)
      .execute();
  }
  return sessions.length;
}

export async function activeSessionIds(db: Executor, userId: string, now: Date): Promise<string[]> {
  const rows = await db
    .selectFrom('auth_sessions')
    .select('id')
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', now)
    .execute();
  return rows.map((r) => r.id);
}

/**
 * Deletes expired refresh tokens, sessions ended longer ago than the retention, and lockout
 * counters whose window has passed and that lock nothing.
 */
export async function purgeExpired(
  db: Executor,
  now: Date,
  retentionSeconds: number,
  lockoutWindowSeconds: number,
) {
  const tokens = await db
    .deleteFrom('refresh_tokens')
    .where('expires_at', '<', now)
    .executeTakeFirst();
  const cutoff = new Date(now.getTime() - retentionSeconds * 1000);
  const sessions = await db
    .deleteFrom('auth_sessions')
    .where((eb) => eb.or([eb('expires_at', '<', cutoff), eb('revoked_at', '<', cutoff)]))
    .executeTakeFirst();
  const windowStart = new Date(now.getTime() - lockoutWindowSeconds * 1000);
  const failures = await db
    .deleteFrom('login_failures')
    .where('window_started_at', '<', windowStart)
    .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<', now)]))
    .executeTakeFirst();
  return {
    refreshTokens: Number(tokens.numDeletedRows),
    sessions: Number(sessions.numDeletedRows),
    loginFailures: Number(failures.numDeletedRows),
  };
}
