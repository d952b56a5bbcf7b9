import { describe, expect, it } from 'vitest';
import { canonicalJson, canonicalValue, sha256Hex } from './canonical-json.ts';

describe('canonicalJson', () => {
  it('gives the same text and hash whatever order the keys came in, at every depth', () => {
    const a = { to: ['x@a.test'], body: 'hi', meta: { b: 1, a: [{ z: 1, y: 2 }] } };
    const b = { meta: { a: [{ y: 2, z: 1 }], b: 1 }, body: 'hi', to: ['x@a.test'] };
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(canonicalJson(a)).toBe(
      '{"body":"hi","meta":{"a":[{"y":2,"z":1}],"b":1},"to":["x@a.test"]}',
    );
    expect(sha256Hex(canonicalJson(a))).toBe(sha256Hex(canonicalJson(b)));
    expect(sha256Hex(canonicalJson(a))).toMatch(/^[0-9a-f]{64}$/);
  });

  it('keeps array order, drops undefined fields and changes hash with any value change', () => {
    expect(canonicalJson({ to: ['a', 'b'] })).not.toBe(canonicalJson({ to: ['b', 'a'] }));
    expect(canonicalJson({ a: 1, b: undefined })).toBe('{"a":1}');
    const base = sha256Hex(canonicalJson({ to: ['ceo@evil.test'], subject: 's' }));
    expect(sha256Hex(canonicalJson({ to: ['ceo@evil.test'], subject: 's ' }))).not.toBe(base);
    expect(canonicalValue({ b: 1, a: 2 })).toEqual({ a: 2, b: 1 });
    expect(Object.keys(canonicalValue({ b: 1, a: 2 }) as object)).toEqual(['a', 'b']);
  });
});
