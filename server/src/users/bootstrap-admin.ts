/**
 * First start: with no users at all, create the first admin from ADMIN_EMAIL/ADMIN_PASSWORD,
 * or with a generated password that is shown once on the terminal (not through the logger,
 * so it never reaches a log file).
 */
import { randomBytes } from 'node:crypto';
import { writeAudit } from '../audit/audit.repository.ts';
import { checkPasswordPolicy, type PasswordHasher } from '../auth/passwords.ts';
import type { Config } from '../config/config.schema.ts';
import type { Database } from '../db/database.ts';
import { countUsers, insertUser } from './users.repository.ts';
import { ADMIN_ROLE } from './users.service.ts';

export const DEFAULT_ADMIN_EMAIL = 'admin@mezzofy.local';

export interface BootstrapResult {
  created: boolean;
  email?: string;
  /** Set only when the password was generated; the caller shows it once. */
  generatedPassword?: string;
}

export async function bootstrapAdmin(
  database: Database,
  passwords: PasswordHasher,
  admin: Config['admin'],
): Promise<BootstrapResult> {
  if ((await countUsers(database.db)) > 0) return { created: false };
  const email = (admin.email ?? DEFAULT_ADMIN_EMAIL).toLowerCase();
  const generated = admin.password ? undefined : randomBytes(18).toString('base64url');
  const password = admin.password ?? generated!;
  checkPasswordPolicy(password, email);
  const hashed = await passwords.hash(password);
  const bootstrap = database.db.transaction().execute(async (trx) => {
    // Another process may have bootstrapped meanwhile; the unique e-mail index settles it.
    if ((await countUsers(trx)) > 0) return false;
    const user = await insertUser(trx, {
      email,
      name: admin.name,
      password_hash: hashed,
      department: 'management',
      role: ADMIN_ROLE,
    });
    await writeAudit(trx, {
      userId: user.id,
      department: 'management',
      action: 'admin.bootstrap_admin_created',
      source: 'system',
      details: { email, generated_password: Boolean(generated) },
    });
    return true;
  });
  const created = await bootstrap.catch((err: unknown) => {
    // Lost the race: the other process's admin is the first admin.
    if ((err as { code?: string }).code === '23505') return false;
    throw err;
  });
  if (!created) return { created: false };
  return { created: true, email, ...(generated ? { generatedPassword: generated } : {}) };
}
