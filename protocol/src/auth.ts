/** Auth endpoints: login, refresh, logout, me, change-password. */
import { z } from 'zod';
import { Department, Locale, Timestamp, Uuid } from './common.ts';

export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 128;

export const Email = z.string().trim().max(254).pipe(z.email());
/** Length rules are checked by the server's password policy so the error names the rule. */
export const PasswordInput = z.string().min(1).max(1024);

export const LoginRequest = z.strictObject({
  email: z.string().trim().min(1).max(254),
  password: PasswordInput,
});
export type LoginRequest = z.infer<typeof LoginRequest>;

export const RefreshRequest = z.strictObject({ refresh_token: z.string().min(1).max(512) });
export type RefreshRequest = z.infer<typeof RefreshRequest>;

export const ChangePasswordRequest = z.strictObject({
  current_password: PasswordInput,
  new_password: PasswordInput,
});
export type ChangePasswordRequest = z.infer<typeof ChangePasswordRequest>;

export const UserView = z
  .object({
    id: Uuid,
    email: z.string(),
    name: z.string(),
    department: Department,
    role: z.string(),
    permissions: z.array(z.string()),
    is_active: z.boolean(),
    timezone: z.string(),
    locale: Locale,
    created_at: Timestamp,
  })
  .meta({ id: 'User' });
export type UserView = z.infer<typeof UserView>;

export const TokenPair = z.object({
  access_token: z.string(),
  token_type: z.literal('Bearer'),
  expires_in: z.number().int(),
  refresh_token: z.string(),
  refresh_expires_at: Timestamp,
});
export type TokenPair = z.infer<typeof TokenPair>;

export const LoginResponse = TokenPair.extend({ user: UserView });
export type LoginResponse = z.infer<typeof LoginResponse>;
