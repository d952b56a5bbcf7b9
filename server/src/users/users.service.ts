/**
 * Admin work on users: list, create, update, reset password, deactivate. Every change is
 * audited in its own transaction and announced so it takes effect on every process at once.
 */
import type { CreateUserRequest, UpdateUserRequest, UserView } from '@mezzofy/protocol';
import { writeAudit } from '../audit/audit.repository.ts';
import type { RequestMeta } from '../auth/auth.service.ts';
import { checkPasswordPolicy, type PasswordHasher } from '../auth/passwords.ts';
import { type Principal, toUserView } from '../auth/principal.ts';
import { revokeUserSessions } from '../auth/sessions.repository.ts';
import type { UserStateCache } from '../auth/user-state-cache.ts';
import type { RoleTable } from '../config/roles.ts';
import type { Database } from '../db/database.ts';
import { toPage } from '../db/pagination.ts';
import type { UserUpdate } from '../db/schema.ts';
import { AppError, notFound } from '../errors.ts';
import type { Clock } from '../infra/clock.ts';
import {
  findUserByEmail,
  findUserById,
  insertUser,
  listUsers,
  lockActiveAdmins,
  type UserListFilter,
  updateUser,
} from './users.repository.ts';

export const ADMIN_ROLE = 'admin';

export interface UsersServiceDeps {
  database: Database;
  roles: RoleTable;
  passwords: PasswordHasher;
  cache: UserStateCache;
  clock: Clock;
}

export type UsersService = ReturnType<typeof createUsersService>;

function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23505';
}

export function createUsersService(deps: UsersServiceDeps) {
  const { database, roles, passwords, cache, clock } = deps;
  const { db } = database;

  const assertRole = (role: string) => {
    if (!roles.has(role)) {
      throw new AppError('validation_failed', `unknown role '${role}'`, {
        details: { field: 'role', roles: roles.list().map((r) => r.name) },
      });
    }
  };

  return {
    async list(actor: Principal, filter: UserListFilter) {
      void actor;
      const rows = await listUsers(db, filter);
      return toPage(
        rows,
        filter.limit,
        (r) => ({ k: r.cursor_key, id: r.id }),
        (r) => toUserView(r, roles),
      );
    },

    async get(actor: Principal, id: string): Promise<UserView> {
      void actor;
      const user = await findUserById(db, id);
      if (!user) throw notFound('user');
      return toUserView(user, roles);
    },

    async create(actor: Principal, input: CreateUserRequest, meta: RequestMeta): Promise<UserView> {
      assertRole(input.role);
      checkPasswordPolicy(input.password, input.email);
      if (await findUserByEmail(db, input.email))
        throw new AppError('conflict', 'a user with this e-mail already exists');
      const passwordHash = await passwords.hash(input.password);
      try {
        const user = await db.transaction().execute(async (trx) => {
          const user = await insertUser(trx, {
            email: input.email.toLowerCase(),
            name: input.name,
            password_hash: passwordHash,
            department: input.department,
            role: input.role,
            ...(input.timezone ? { timezone: input.timezone } : {}),
            ...(input.locale ? { locale: input.locale } : {}),
          });
          await writeAudit(trx, {
            userId: actor.id,
            department: actor.department,
            action: 'admin.user_created',
            source: meta.source,
            details: {
              target_user_id: user.id,
              email: user.email,
              role: user.role,
              department: user.department,
            },
            ip: meta.ip,
          });
          return user;
        });
        return toUserView(user, roles);
      } catch (err) {
        if (isUniqueViolation(err))
          throw new AppError('conflict', 'a user with this e-mail already exists');
        throw err;
      }
    },

    async update(
      actor: Principal,
      id: string,
      input: UpdateUserRequest,
      meta: RequestMeta,
    ): Promise<UserView> {
      if (input.role !== undefined) assertRole(input.role);
      if (
        id === actor.id &&
        (input.role !== undefined ||
          input.department !== undefined ||
          input.is_active !== undefined)
      ) {
        throw new AppError(
          'forbidden',
          'you cannot change your own role, department or active state',
        );
      }
      const user = await db.transaction().execute(async (trx) => {
        const before = await findUserById(trx, id);
        if (!before) throw notFound('user');
        const losesAdmin =
          before.role === ADMIN_ROLE &&
          before.is_active &&
          ((input.role !== undefined && input.role !== ADMIN_ROLE) || input.is_active === false);
        if (losesAdmin) {
          const admins = await lockActiveAdmins(trx, ADMIN_ROLE);
          if (admins.filter((a) => a !== id).length === 0) {
            throw new AppError(
              'last_admin',
              'the last active admin cannot be demoted or deactivated',
            );
          }
        }
        const patch: UserUpdate = {};
        const changes: Record<string, { from: unknown; to: unknown }> = {};
        for (const key of [
          'name',
          'department',
          'role',
          'is_active',
          'timezone',
          'locale',
        ] as const) {
          const value = input[key];
          if (value !== undefined && value !== before[key]) {
            (patch as Record<string, unknown>)[key] = value;
            changes[key] = { from: before[key], to: value };
          }
        }
        if (input.is_active === false && before.is_active) patch.deactivated_at = clock();
        if (input.is_active === true && !before.is_active) patch.deactivated_at = null;
        if (!Object.keys(changes).length) return before;
        const after = (await updateUser(trx, id, patch))!;
        if (input.is_active === false && before.is_active)
          await revokeUserSessions(trx, id, 'deactivated', clock());
        await writeAudit(trx, {
          userId: actor.id,
          department: actor.department,
          action:
            input.is_active === false && before.is_active
              ? 'admin.user_deactivated'
              : 'admin.user_updated',
          source: meta.source,
          details: { target_user_id: id, changes },
          ip: meta.ip,
        });
        return after;
      });
      await cache.invalidate(id);
      return toUserView(user, roles);
    },

    async deactivate(actor: Principal, id: string, meta: RequestMeta): Promise<UserView> {
      return this.update(actor, id, { is_active: false }, meta);
    },

    /** Sets a new password and ends all of the user's sessions and access tokens. */
    async resetPassword(
      actor: Principal,
      id: string,
      newPassword: string,
      meta: RequestMeta,
    ): Promise<void> {
      const user = await findUserById(db, id);
      if (!user) throw notFound('user');
      checkPasswordPolicy(newPassword, user.email);
      const hashed = await passwords.hash(newPassword);
      await db.transaction().execute(async (trx) => {
        const now = clock();
        await updateUser(trx, id, { password_hash: hashed, password_changed_at: now });
        const revoked = await revokeUserSessions(trx, id, 'password_reset', now);
        await writeAudit(trx, {
          userId: actor.id,
          department: actor.department,
          action: 'admin.password_reset',
          source: meta.source,
          details: { target_user_id: id, sessions_revoked: revoked },
          ip: meta.ip,
        });
      });
      await cache.invalidate(id);
    },
  };
}
