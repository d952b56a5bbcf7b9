/**
 * The brand and company context every agent and writing skill gets: the Markdown files in
 * knowledge/brand/. Re-read when a file changes (checked at most once per `checkEveryMs`),
 * so an edited guideline applies within a second without a directory listing per turn.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Context is added to every prompt: keep it bounded. */
const MAX_KNOWLEDGE_CHARS = 12_000;

export function createKnowledge(
  dir: string,
  checkEveryMs = 1_000,
  now: () => number = Date.now,
): () => string {
  let cacheKey = '';
  let cached = '';
  let checkedAt = Number.NEGATIVE_INFINITY;
  return () => {
    if (now() - checkedAt < checkEveryMs) return cached;
    checkedAt = now();
    let files: string[];
    try {
      files = readdirSync(dir)
        .filter((f) => f.endsWith('.md'))
        .sort();
    } catch {
      return '';
    }
    const stamps = files.map((f) => `${f}:${statSync(join(dir, f)).mtimeMs}`).join('|');
    if (stamps !== cacheKey) {
      cacheKey = stamps;
      cached = files
        .map((f) => readFileSync(join(dir, f), 'utf8').trim())
        .join('\n\n')
        .slice(0, MAX_KNOWLEDGE_CHARS);
    }
    return cached;
  };
}
