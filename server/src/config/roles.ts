/** roles.yaml → a validated role table. Every role is tied to one department. */
import { readFileSync } from 'node:fs';
import { Department } from '@mezzofy/protocol';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './load-config.ts';

export const PERMISSION_PATTERN = /^[a-z_]+:[a-z_]+$/;

const RolesFile = z.strictObject({
  roles: z.record(
    z.string().regex(/^[a-z][a-z0-9_]*$/),
    z.strictObject({
      description: z.string().default(''),
      department: Department,
      permissions: z.array(z.string().regex(PERMISSION_PATTERN)).min(1),
    }),
  ),
});

export interface Role {
  name: string;
  description: string;
  department: Department;
  permissions: ReadonlySet<string>;
}

export class RoleTable {
  readonly #roles: Map<string, Role>;
  constructor(roles: Role[]) {
    this.#roles = new Map(roles.map((r) => [r.name, r]));
  }
  get(name: string): Role | undefined {
    return this.#roles.get(name);
  }
  has(name: string): boolean {
    return this.#roles.has(name);
  }
  list(): Role[] {
    return [...this.#roles.values()];
  }
  can(roleName: string, permission: string): boolean {
    return this.#roles.get(roleName)?.permissions.has(permission) ?? false;
  }
}

export const REQUIRED_ROLES = [
  'admin',
  'executive',
  'finance_manager',
  'finance_viewer',
  'sales_manager',
  'sales_rep',
  'marketing_manager',
  'marketing_staff',
  'support_manager',
  'support_agent',
] as const;

export function loadRoles(file: string): RoleTable {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(
      `config error: roles file ${file}: ${(err as Error).message.split('\n')[0]}`,
    );
  }
  const parsed = RolesFile.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(
      `config error: roles file ${file}: ${issue.path.join('.')}: ${issue.message}`,
    );
  }
  const missing = REQUIRED_ROLES.filter((r) => !(r in parsed.data.roles));
  if (missing.length)
    throw new ConfigError(
      `config error: roles file ${file}: missing role(s) ${missing.join(', ')}`,
    );
  if (!parsed.data.roles.admin?.permissions.includes('users:write')) {
    throw new ConfigError(`config error: roles file ${file}: roles.admin must hold users:write`);
  }
  return new RoleTable(
    Object.entries(parsed.data.roles).map(([name, r]) => ({
      name,
      description: r.description,
      department: r.department,
      permissions: new Set(r.permissions),
    })),
  );
}
