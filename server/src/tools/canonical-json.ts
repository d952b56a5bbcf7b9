/**
 * Canonical arguments: the validated value as JSON with object keys sorted at every depth,
 * so the same arguments always give the same text and SHA-256 whatever order the model wrote
 * them in. The hash is what a person approves.
 */
import { createHash } from 'node:crypto';

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value instanceof Date) return value.toISOString();
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/** The value with keys sorted recursively and `undefined` fields dropped, as JSON text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value)) ?? 'null';
}

/** The canonical value itself (what is stored as the pending action's arguments). */
export function canonicalValue(value: unknown): unknown {
  return JSON.parse(canonicalJson(value));
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
