/** Admin API: users, roles, audit log. */
import { z } from 'zod';
import { Email, PASSWORD_MAX_LENGTH, PasswordInput, UserView } from './auth.ts';
import { Department, Locale, PageQuery, pageOf, Timestamp, TimeZone, Uuid } from './common.ts';

export const UserListQuery = PageQuery.extend({
  q: z.string().trim().max(200).optional(),
  department: Department.optional(),
  role: z.string().max(64).optional(),
  is_active: z
    .enum(['true', 'false'])
    .transform((v) => v === 'true')
    .optional(),
});
export const UserList = pageOf(UserView);

export const CreateUserRequest = z.strictObject({
  email: Email,
  name: z.string().trim().min(1).max(200),
  password: PasswordInput.max(PASSWORD_MAX_LENGTH * 8),
  department: Department,
  role: z.string().min(1).max(64),
  timezone: TimeZone.optional(),
  locale: Locale.optional(),
});
export type CreateUserRequest = z.infer<typeof CreateUserRequest>;

export const UpdateUserRequest = z
  .strictObject({
    name: z.string().trim().min(1).max(200).optional(),
    department: Department.optional(),
    role: z.string().min(1).max(64).optional(),
    is_active: z.boolean().optional(),
    timezone: TimeZone.optional(),
    locale: Locale.optional(),
  })
  .refine((v) => Object.keys(v).length > 0, 'at least one field is required');
export type UpdateUserRequest = z.infer<typeof UpdateUserRequest>;

export const ResetPasswordRequest = z.strictObject({ new_password: PasswordInput });

export const UserIdParams = z.strictObject({ id: Uuid });

export const RoleView = z.object({
  name: z.string(),
  description: z.string(),
  department: Department,
  permissions: z.array(z.string()),
});
export const RoleList = z.object({ items: z.array(RoleView) });

export const AuditQuery = PageQuery.extend({
  user_id: Uuid.optional(),
  action: z.string().max(100).optional(),
  from: Timestamp.optional(),
  to: Timestamp.optional(),
});
export type AuditQuery = z.infer<typeof AuditQuery>;

export const AuditEntry = z.object({
  id: z.number().int(),
  user_id: Uuid.nullable(),
  department: z.string().nullable(),
  action: z.string(),
  source: z.string(),
  details: z.record(z.string(), z.unknown()).nullable(),
  ip_address: z.string().nullable(),
  created_at: Timestamp,
});
export const AuditList = pageOf(AuditEntry);
