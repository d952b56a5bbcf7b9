import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { immutable } from '../immutable.ts';
import { serializerCompiler } from './serializer.ts';

let validations = 0;
const Schema = z.object({ id: z.string(), tags: z.array(z.string()) }).refine(() => {
  validations += 1;
  return true;
});
const compile = () =>
  serializerCompiler({ schema: Schema, method: 'GET', url: '/x', httpStatus: '200' } as never);

describe('serializerCompiler', () => {
  it('validates and strips like fastify-type-provider-zod', () => {
    const serialize = compile();
    expect(serialize({ id: 'a', tags: ['t'], secret: 'no' })).toBe('{"id":"a","tags":["t"]}');
    expect(() => serialize({ id: 1, tags: [] })).toThrow();
  });

  it('validates an immutable value once, then reuses its JSON', () => {
    const serialize = compile();
    const value = immutable({ id: 'a', tags: ['t'] });
    const before = validations;
    const first = serialize(value);
    expect(validations).toBe(before + 1);
    expect(serialize(value)).toBe(first);
    expect(serialize(value)).toBe(first);
    expect(validations).toBe(before + 1);
    // A mutable value with the same content is validated every time.
    serialize({ id: 'a', tags: ['t'] });
    serialize({ id: 'a', tags: ['t'] });
    expect(validations).toBe(before + 3);
  });

  it('never caches a value that failed validation', () => {
    const serialize = compile();
    const bad = immutable({ id: 'a', tags: [1] as unknown as string[] });
    expect(() => serialize(bad)).toThrow();
    expect(() => serialize(bad)).toThrow();
  });
});

describe('immutable', () => {
  it('deep-freezes plain data and refuses anything that could change behind a freeze', () => {
    const v = immutable({ a: { b: [1, 2] } });
    expect(Object.isFrozen(v.a.b)).toBe(true);
    expect(() => immutable({ when: new Date() })).toThrow(TypeError);
    expect(() => immutable({ m: new Map() })).toThrow(TypeError);
  });
});
