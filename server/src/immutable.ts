/**
 * Values registered here are deep-frozen plain JSON data and can never change, so work done
 * on one (validating and serializing a response) holds for as long as the value lives.
 */
const registry = new WeakSet<object>();

function deepFreeze(value: unknown): void {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return;
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== Array.prototype && proto !== null) {
    // A Date, Map or class instance can change behind a freeze: not plain data.
    throw new TypeError('immutable(): only plain objects, arrays and primitives');
  }
  Object.freeze(value);
  for (const v of Object.values(value)) deepFreeze(v);
}

/** Deep-freezes `value` and records it as immutable; returns it. */
export function immutable<T extends object>(value: T): T {
  deepFreeze(value);
  registry.add(value);
  return value;
}

export function isImmutable(value: object): boolean {
  return registry.has(value);
}
