/**
 * Login, refresh-token rotation with reuse detection, logout, password change, and the
 * per-request authentication of access tokens.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { LoginResponse, TokenPair, UserView } from '@mezzofy/protocol';
import { type AuditSource, writeAudit } from '../audit/audit.repository.ts';
import type { Config } from '../config/config.schema.ts';
import type { RoleTable } from '../config/roles.ts';
import type { Database } from '../db/database.ts';
import type { Executor } from '../db/executor.ts';
import type { UserRow } from '../db/schema.ts';
import { AppError } from '../errors.ts';
import { immutable } from '../immutable.ts';
import type { Clock } from '../infra/clock.ts';
import type { Logger } from '../logging/logger.ts';
import { findUserByEmail, findUserById, updateUser } from '../users/users.repository.ts';
import type { AccessTokens } from './access-tokens.ts';
import type { Lockout } from './lockout.ts';
import { checkPasswordPolicy, type PasswordHasher } from './passwords.ts';
import { type Principal, toPrincipal, toUserView } from './principal.ts';
import {
  activeSessionIds,
  claimRefreshToken,
  findRefreshToken,
  findSession,
  insertRefreshToken,
  insertSession,
  markReplaced,
  revokeSession,
  revokeUserSessions,
} from './sessions.repository.ts';
import type { UserState, UserStateCache } from './user-state-cache.ts';

export interface RequestMeta {
  ip: string;
  userAgent: string | null;
  source?: AuditSource;
}

export const hashRefreshToken = (token: string) => createHash('sha256').update(token).digest('hex');
const newRefreshToken = () => randomBytes(32).toString('base64url');

export interface AuthServiceDeps {
  database: Database;
  config: Pick<Config, 'auth'>;
  roles: RoleTable;
  passwords: PasswordHasher;
  tokens: AccessTokens;
  lockout: Lockout;
  cache: UserStateCache;
  clock: Clock;
  log: Logger;
}

export type AuthService = ReturnType<typeof createAuthService>;

/** Loads what the per-request check needs; the user-state cache calls this on a miss. */
export async function loadUserState(
  db: Executor,
  userId: string,
  now: Date,
): Promise<UserState | undefined> {
  const user = await findUserById(db, userId);
  if (!user) return undefined;
  return { user, sessions: new Set(await activeSessionIds(db, userId, now)) };
}

export function createAuthService(deps: AuthServiceDeps) {
  const { database, roles, passwords, tokens, lockout, cache, clock, log } = deps;
  const { db } = database;
  const auth = deps.config.auth;

  /** Profiles by cached user row (the GET /auth/me hot path). */
  const views = new WeakMap<UserRow, UserView>();

  const refreshUnauthorized = () =>
    new AppError('unauthorized', 'refresh token is invalid or expired; log in again');

  async function issuePair(
    trx: Executor,
    sessionId: string,
    userId: string,
    sessionExpiresAt: Date,
  ): Promise<{ pair: TokenPair; tokenId: string }> {
    const now = clock();
    const refresh = newRefreshToken();
    const expiresAt = new Date(
      Math.min(now.getTime() + auth.refresh_ttl_s * 1000, sessionExpiresAt.getTime()),
    );
    const tokenId = await insertRefreshToken(trx, {
      sessionId,
      tokenHash: hashRefreshToken(refresh),
      expiresAt,
    });
    const access = await tokens.sign(userId, sessionId);
    const pair: TokenPair = {
      access_token: access.token,
      token_type: 'Bearer',
      expires_in: access.expiresIn,
      refresh_token: refresh,
      refresh_expires_at: expiresAt.toISOString(),
    };
    return { pair, tokenId };
  }

  async function startSession(trx: Executor, user: UserRow, meta: RequestMeta): Promise<TokenPair> {
    const expiresAt = new Date(clock().getTime() + auth.session_max_age_s * 1000);
    const sessionId = await insertSession(trx, {
      userId: user.id,
      expiresAt,
      ip: meta.ip,
      userAgent: meta.userAgent?.slice(0, 512) ?? null,
    });
    return (await issuePair(trx, sessionId, user.id, expiresAt)).pair;
  }

  return {
    async login(emailInput: string, password: string, meta: RequestMeta): Promise<LoginResponse> {
      const email = emailInput.trim().toLowerCase();
      await lockout.assertNotLocked(db, email, meta.ip);
      // Counted before the password check, so parallel guesses cannot outrun the lockout.
      await lockout.recordAttempt(db, email, meta.ip);
      const user = await findUserByEmail(db, email);
      let ok = false;
      if (user) ok = await passwords.verify(user.password_hash, password);
      else await passwords.verifyDummy(password); // same cost as a real verify
      if (!user || !ok) {
        await writeAudit(db, {
          userId: user?.id ?? null,
          department: user?.department ?? null,
          action: 'auth.login_failed',
          source: meta.source,
          details: { email, reason: user ? 'wrong_password' : 'unknown_user' },
          ip: meta.ip,
        });
        throw new AppError('invalid_credentials', 'e-mail or password is wrong');
      }
      if (!user.is_active) {
        await writeAudit(db, {
          userId: user.id,
          department: user.department,
          action: 'auth.login_failed',
          source: meta.source,
          details: { email, reason: 'inactive' },
          ip: meta.ip,
        });
        throw new AppError('account_inactive', 'this account is deactivated; ask an administrator');
      }
      const pair = await db.transaction().execute(async (trx) => {
        await lockout.reset(trx, email, meta.ip);
        const pair = await startSession(trx, user, meta);
        await writeAudit(trx, {
          userId: user.id,
          department: user.department,
          action: 'auth.login',
          source: meta.source,
          ip: meta.ip,
        });
        return pair;
      });
      return { ...pair, user: toUserView(user, roles) };
    },

    async refresh(refreshToken: string, meta: RequestMeta): Promise<TokenPair> {
      const tokenHash = hashRefreshToken(refreshToken);
      const now = clock();
      const outcome = await db.transaction().execute(async (trx) => {
        const claimed = await claimRefreshToken(trx, tokenHash, now);
        if (claimed) {
          const session = await findSession(trx, claimed.session_id);
          if (!session || session.revoked_at || session.expires_at <= now)
            return { kind: 'invalid' as const };
          const user = await findUserById(trx, session.user_id);
          if (!user?.is_active) return { kind: 'invalid' as const };
          const { pair, tokenId } = await issuePair(trx, session.id, user.id, session.expires_at);
          await markReplaced(trx, claimed.id, tokenId, session.id, now);
          return { kind: 'ok' as const, pair };
        }
        const known = await findRefreshToken(trx, tokenHash);
        if (
          !known ||
          known.revoked_at ||
          known.session_revoked_at ||
          known.expires_at <= now ||
          !known.used_at
        ) {
          return { kind: 'invalid' as const };
        }
        // Already rotated. Just now, and its successor unused: a concurrent refresh lost the race.
        const ageMs = now.getTime() - known.used_at.getTime();
        if (ageMs <= auth.refresh_reuse_grace_s * 1000) {
          const successor = known.replaced_by
            ? await trx
                .selectFrom('refresh_tokens')
                .select('used_at')
                .where('id', '=', known.replaced_by)
                .executeTakeFirst()
            : undefined;
          if (!successor?.used_at) return { kind: 'invalid' as const };
        }
        // Reuse of a rotated token: assume it was stolen and end the whole family.
        await revokeSession(trx, known.session_id, 'refresh_token_reuse', now);
        await writeAudit(trx, {
          userId: known.user_id,
          department: null,
          action: 'auth.refresh_reuse_detected',
          source: meta.source,
          details: { session_id: known.session_id },
          ip: meta.ip,
        });
        return { kind: 'reused' as const, userId: known.user_id };
      });
      if (outcome.kind === 'ok') return outcome.pair;
      if (outcome.kind === 'reused') {
        log.warn({ userId: outcome.userId }, 'refresh token reuse detected; session revoked');
        await cache.invalidate(outcome.userId);
      }
      throw refreshUnauthorized();
    },

    async logout(principal: Principal, meta: RequestMeta): Promise<void> {
      await db.transaction().execute(async (trx) => {
        await revokeSession(trx, principal.sessionId, 'logout', clock());
        await writeAudit(trx, {
          userId: principal.id,
          department: principal.department,
          action: 'auth.logout',
          source: meta.source,
          ip: meta.ip,
        });
      });
      await cache.invalidate(principal.id);
    },

    /** Ends every session of the user (access tokens included) and starts a fresh one. */
    async changePassword(
      principal: Principal,
      current: string,
      next: string,
      meta: RequestMeta,
    ): Promise<TokenPair> {
      const user = await findUserById(db, principal.id);
      if (!user) throw new AppError('unauthorized', 'user no longer exists');
      if (!(await passwords.verify(user.password_hash, current))) {
        await writeAudit(db, {
          userId: user.id,
          department: user.department,
          action: 'auth.change_password_failed',
          source: meta.source,
          ip: meta.ip,
        });
        throw new AppError('invalid_credentials', 'current password is wrong');
      }
      checkPasswordPolicy(next, user.email);
      if (current === next)
        throw new AppError('weak_password', 'new password must differ from the current one', {
          details: { rule: 'reused' },
        });
      const hashed = await passwords.hash(next);
      const pair = await db.transaction().execute(async (trx) => {
        const now = clock();
        await updateUser(trx, user.id, { password_hash: hashed, password_changed_at: now });
        await revokeUserSessions(trx, user.id, 'password_changed', now);
        await writeAudit(trx, {
          userId: user.id,
          department: user.department,
          action: 'auth.password_changed',
          source: meta.source,
          ip: meta.ip,
        });
        return startSession(trx, user, meta);
      });
      await cache.invalidate(user.id);
      return pair;
    },

    /** The caller's profile, from the user-state cache (fresh: changes invalidate it everywhere). */
    async me(principal: Principal) {
      const state = await cache.get(principal.id);
      if (!state) throw new AppError('unauthorized', 'user no longer exists');
      // Cached rows are never modified: a change replaces the row, and with it this view.
      // Immutable, so its validated JSON is reused too (api/serializer.ts).
      let view = views.get(state.user);
      if (!view) {
        view = immutable(toUserView(state.user, roles));
        views.set(state.user, view);
      }
      return view;
    },

    /**
     * authenticate(), synchronously, when it needs no I/O: the token was verified before and
     * the user's state is cached with this session in it. Undefined otherwise (then call
     * authenticate, which verifies, loads and reloads as needed). Throws the same errors.
     */
    authenticateCached(accessToken: string): Principal | undefined {
      const claims = tokens.verifyMemoised(accessToken);
      if (!claims) return undefined;
      const state = cache.peek(claims.sub);
      if (!state?.sessions.has(claims.sid)) return undefined;
      if (!state.user.is_active) throw new AppError('unauthorized', 'account is deactivated');
      return toPrincipal(state.user, claims.sid, roles);
    },

    /** The hot path: verify the JWT, then check user and session state from the cache. */
    async authenticate(accessToken: string): Promise<Principal> {
      const claims = await tokens.verify(accessToken);
      let state = await cache.get(claims.sub);
      if (state && !state.sessions.has(claims.sid)) state = await cache.reload(claims.sub);
      if (!state?.sessions.has(claims.sid)) {
        throw new AppError('unauthorized', 'session has ended; log in again');
      }
      if (!state.user.is_active) throw new AppError('unauthorized', 'account is deactivated');
      return toPrincipal(state.user, claims.sid, roles);
    },
  };
}
