/** The authenticated caller of a request, as routes and services see it. */
import type { Department, Locale, UserView } from '@mezzofy/protocol';
import type { RoleTable } from '../config/roles.ts';
import type { UserRow } from '../db/schema.ts';

export interface Principal {
  id: string;
  email: string;
  name: string;
  role: string;
  department: Department;
  permissions: ReadonlySet<string>;
  /** The login session (refresh-token family) this access token belongs to. */
  sessionId: string;
  timezone: string;
  locale: Locale;
}

export function toPrincipal(user: UserRow, sessionId: string, roles: RoleTable): Principal {
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    role: user.role,
    department: user.department as Department,
    permissions: roles.get(user.role)?.permissions ?? new Set(),
    sessionId,
    timezone: user.timezone,
    locale: user.locale as Locale,
  };
}

export function toUserView(user: UserRow, roles: RoleTable): UserView {
  return {
    id: user.id,
    email: user.email,
    name: user.name,
    department: user.department as Department,
    role: user.role,
    permissions: [...(roles.get(user.role)?.permissions ?? [])].sort(),
    is_active: user.is_active,
    timezone: user.timezone,
    locale: user.locale as Locale,
    created_at: user.created_at.toISOString(),
  };
}
