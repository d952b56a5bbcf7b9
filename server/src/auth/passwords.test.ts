import { describe, expect, it } from 'vitest';
import { AppError } from '../errors.ts';
import { checkPasswordPolicy, createPasswordHasher } from './passwords.ts';

const rule = (password: string, email?: string) => {
  try {
    checkPasswordPolicy(password, email);
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return ((err as AppError).details as { rule: string }).rule;
  }
};

describe('password policy', () => {
  it('needs 8 to 128 characters, counted as characters not bytes', () => {
    expect(rule('Ab1-xyz')).toBe('min_length');
    expect(rule('Zq8#vLp2')).toBe('ok');
    expect(rule('é'.repeat(128))).toBe('ok');
    expect(rule('é'.repeat(129))).toBe('max_length');
  });

  it('refuses common passwords whatever their case, and the e-mail', () => {
    expect(rule('password1')).toBe('common');
    expect(rule('QWERTYUIOP')).toBe('common');
    expect(rule('iloveyou123')).toBe('common');
    expect(rule('jane.doe@mezzofy.com', 'Jane.Doe@mezzofy.com')).toBe('matches_email');
    expect(rule('jane.doe1', 'jane.doe1@mezzofy.com')).toBe('matches_email');
  });
});

describe('Argon2id hasher', () => {
  it('hashes with the configured cost and verifies', async () => {
    const hasher = await createPasswordHasher({ memory_kib: 19456, iterations: 2, parallelism: 1 });
    const hashed = await hasher.hash('Zq8#vLp2-long');
    expect(hashed).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await hasher.verify(hashed, 'Zq8#vLp2-long')).toBe(true);
    expect(await hasher.verify(hashed, 'Zq8#vLp2-lonG')).toBe(false);
    expect(await hasher.verify('not-a-hash', 'x')).toBe(false);
    await expect(hasher.verifyDummy('anything')).resolves.toBeUndefined();
  });
});
