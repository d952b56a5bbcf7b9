/** users: lookups, writes and the admin list. E-mail is matched case-insensitively. */
import { sql } from 'kysely';
import type { Executor } from '../db/executor.ts';
import { newestFirst, timeKey } from '../db/pagination.ts';
import type { NewUser, UserRow, UserUpdate } from '../db/schema.ts';

export function findUserByEmail(db: Executor, email: string): Promise<UserRow | undefined> {
  return db
    .selectFrom('users')
    .selectAll()
    .where(sql<string>`lower(email)`, '=', email.trim().toLowerCase())
    .executeTakeFirst();
}

export function findUserById(db: Executor, id: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
}

export function insertUser(db: Executor, user: NewUser): Promise<UserRow> {
  return db.insertInto('users').values(user).returningAll().executeTakeFirstOrThrow();
}

export function updateUser(
  db: Executor,
  id: string,
  patch: UserUpdate,
): Promise<UserRow | undefined> {
  return db
    .updateTable('users')
    .set({ ...patch, updated_at: new Date() })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
}

export async function countUsers(db: Executor): Promise<number> {
  const row = await db
    .selectFrom('users')
    .select(sql<number>`count(*)::int`.as('n'))
    .executeTakeFirstOrThrow();
  return row.n;
}

/** Active admins, row-locked so two concurrent demotions cannot both pass the last-admin check. */
export async function lockActiveAdmins(db: Executor, adminRole: string): Promise<string[]> {
  const rows = await db
    .selectFrom('users')
    .select('id')
    .where('role', '=', adminRole)
    .where('is_active', '=', true)
    // In id order, as every statement that locks several users rows (docs/adr/0009).
    .orderBy('id')
    .forUpdate()
    .execute();
  return rows.map((r) => r.id);
}

export interface UserListFilter {
  limit: number;
  cursor?: string | undefined;
  q?: string | undefined;
  department?: string | undefined;
  role?: string | undefined;
  is_active?: boolean | undefined;
}

/** Each row carries `cursor_key`, its created_at to the microsecond, for the next cursor. */
export function listUsers(
  db: Executor,
  filter: UserListFilter,
): Promise<(UserRow & { cursor_key: string })[]> {
  let q = db.selectFrom('users').selectAll().select(timeKey('created_at').as('cursor_key'));
  if (filter.q) {
    const like = `%${filter.q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    q = q.where((eb) => eb.or([eb('email', 'ilike', like), eb('name', 'ilike', like)]));
  }
  if (filter.department) q = q.where('department', '=', filter.department);
  if (filter.role) q = q.where('role', '=', filter.role);
  if (filter.is_active !== undefined) q = q.where('is_active', '=', filter.is_active);
  return newestFirst(q, filter.cursor, filter.limit).execute();
}
