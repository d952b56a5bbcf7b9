/**
 * Failed-login lockout, kept in the database so every process sees the same counters.
 * Attempts are counted per account and per (account, IP) in a fixed window, before the
 * password is checked, so a burst of parallel guesses cannot outrun the count; a successful
 * login clears them. Reaching the limit locks that key for lock_s, during which even the
 * right password gets 429.
 */
import { sql } from 'kysely';
import type { Executor } from '../db/executor.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../infra/clock.ts';

export interface LockoutPolicy {
  account_max_failures: number;
  account_ip_max_failures: number;
  window_s: number;
  lock_s: number;
}

const accountKey = (email: string) => `account:${email}`;
const accountIpKey = (email: string, ip: string) => `account_ip:${email}|${ip}`;

export interface Lockout {
  /** Throws account_locked (429 + Retry-After) while either key is locked. */
  assertNotLocked(db: Executor, email: string, ip: string): Promise<void>;
  /** Counts an attempt before its password is checked; throws account_locked past the limit. */
  recordAttempt(db: Executor, email: string, ip: string): Promise<void>;
  reset(db: Executor, email: string, ip: string): Promise<void>;
}

function locked(until: Date, now: Date): AppError {
  const retryAfter = Math.max(1, Math.ceil((until.getTime() - now.getTime()) / 1000));
  return new AppError('account_locked', 'too many failed logins; try again later', {
    headers: { 'retry-after': String(retryAfter) },
    details: { retry_after_s: retryAfter },
  });
}

export function createLockout(policy: LockoutPolicy, clock: Clock): Lockout {
  async function bump(db: Executor, key: string, max: number): Promise<void> {
    const now = clock();
    const windowStart = new Date(now.getTime() - policy.window_s * 1000);
    const row = await db
      .insertInto('login_failures')
      .values({ key, failures: 1, window_started_at: now, locked_until: null })
      .onConflict((oc) =>
        oc.column('key').doUpdateSet({
          // Attempts refused while locked are not counted toward the next window.
          failures: sql`CASE WHEN login_failures.window_started_at < ${windowStart} THEN 1 WHEN login_failures.locked_until > ${now} THEN login_failures.failures ELSE login_failures.failures + 1 END`,
          window_started_at: sql`CASE WHEN login_failures.window_started_at < ${windowStart} THEN ${now}::timestamptz ELSE login_failures.window_started_at END`,
        }),
      )
      .returning(['failures', 'locked_until'])
      .executeTakeFirstOrThrow();
    // Locked, or past the limit while the attempt that reached it is locking: not tried.
    if (row.locked_until && row.locked_until > now) throw locked(row.locked_until, now);
    if (row.failures > max) throw locked(new Date(now.getTime() + policy.lock_s * 1000), now);
    // The attempt that reaches the limit is still tried; the next ones are not.
    if (row.failures === max) {
      await db
        .updateTable('login_failures')
        .set({
          locked_until: new Date(now.getTime() + policy.lock_s * 1000),
          failures: 0,
          window_started_at: now,
        })
        .where('key', '=', key)
        .execute();
    }
  }

  return {
    async assertNotLocked(db, email, ip) {
      const now = clock();
      const rows = await db
        .selectFrom('login_failures')
        .select(['locked_until'])
        .where('key', 'in', [accountKey(email), accountIpKey(email, ip)])
        .where('locked_until', '>', now)
        .execute();
      if (!rows.length) return;
      throw locked(new Date(Math.max(...rows.map((r) => r.locked_until!.getTime()))), now);
    },
    async recordAttempt(db, email, ip) {
      await bump(db, accountKey(email), policy.account_max_failures);
      await bump(db, accountIpKey(email, ip), policy.account_ip_max_failures);
    },
    async reset(db, email, ip) {
      await db
        .deleteFrom('login_failures')
        .where('key', 'in', [accountKey(email), accountIpKey(email, ip)])
        .execute();
    },
  };
}
