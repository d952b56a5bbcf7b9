/**
 * Argon2id hashing with explicit cost (OWASP minimum m=19 MiB, t=2, p=1 or stronger) and
 * the password policy: 8–128 characters, not a common password, not the e-mail.
 */
import { randomBytes } from 'node:crypto';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '@mezzofy/protocol';
import { hash, verify } from '@node-rs/argon2';
import { dictionary } from '@zxcvbn-ts/language-common';
import { AppError } from '../errors.ts';

export interface Argon2Cost {
  memory_kib: number;
  iterations: number;
  parallelism: number;
}

/** The common-password list of zxcvbn (about 18,000 entries of 8+ characters). */
const COMMON_PASSWORDS: ReadonlySet<string> = new Set(
  (dictionary['passwords-common'] as string[]).filter((p) => p.length >= PASSWORD_MIN_LENGTH),
);

export function checkPasswordPolicy(password: string, email?: string): void {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH) {
    throw new AppError(
      'weak_password',
      `password must be at least ${PASSWORD_MIN_LENGTH} characters`,
      {
        details: { rule: 'min_length', min: PASSWORD_MIN_LENGTH },
      },
    );
  }
  if (length > PASSWORD_MAX_LENGTH) {
    throw new AppError(
      'weak_password',
      `password must be at most ${PASSWORD_MAX_LENGTH} characters`,
      {
        details: { rule: 'max_length', max: PASSWORD_MAX_LENGTH },
      },
    );
  }
  const lower = password.toLowerCase();
  if (COMMON_PASSWORDS.has(lower)) {
    throw new AppError('weak_password', 'this password is too common; choose another', {
      details: { rule: 'common' },
    });
  }
  if (email) {
    const e = email.trim().toLowerCase();
    if (lower === e || lower === e.split('@')[0]) {
      throw new AppError('weak_password', 'password must not be your e-mail address', {
        details: { rule: 'matches_email' },
      });
    }
  }
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(hashed: string, password: string): Promise<boolean>;
  /** Same cost as a real verify, for unknown accounts, so timing does not tell them apart. */
  verifyDummy(password: string): Promise<void>;
}

export async function createPasswordHasher(cost: Argon2Cost): Promise<PasswordHasher> {
  const options = {
    algorithm: 2 as const, // Algorithm.Argon2id (a const enum, not importable under verbatimModuleSyntax)
    memoryCost: cost.memory_kib,
    timeCost: cost.iterations,
    parallelism: cost.parallelism,
  };
  const dummyHash = await hash(randomBytes(16).toString('hex'), options);
  return {
    hash: (password) => hash(password, options),
    async verify(hashed, password) {
      try {
        return await verify(hashed, password);
      } catch {
        return false;
      }
    },
    async verifyDummy(password) {
      await verify(dummyHash, password).catch(() => false);
    },
  };
}
