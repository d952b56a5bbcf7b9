/**
 * Response serialization: fastify-type-provider-zod's (validate against the route's zod
 * schema, then JSON.stringify), plus a memo for values registered with immutable(): such a
 * value is validated and serialized once per route and status code, and its JSON reused
 * while it lives, since it cannot have changed. Every other value goes through zod each time.
 */
import { serializerCompiler as zodSerializerCompiler } from 'fastify-type-provider-zod';
import { isImmutable } from '../immutable.ts';

export const serializerCompiler: typeof zodSerializerCompiler = (route) => {
  const serialize = zodSerializerCompiler(route);
  const validated = new WeakMap<object, string>();
  return (data) => {
    if (typeof data !== 'object' || data === null || !isImmutable(data)) return serialize(data);
    let json = validated.get(data);
    if (json === undefined) {
      json = serialize(data);
      validated.set(data, json);
    }
    return json;
  };
};
