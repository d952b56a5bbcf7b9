/**
 * Runs one validated tool call under the limits every call gets: a time limit (the tool's
 * signal aborts when it passes, and the call is answered without waiting for a tool that
 * ignores it), a cap on the result's size, and failures turned into text the model can read
 * — never a stack trace, never a secret.
 */
import type { z } from 'zod';
import { AppError } from '../errors.ts';
import { isResultWithArtifacts, type ToolContext, type ToolOutcome } from './tool.ts';
import type { AnyTool } from './tool-registry.ts';

export interface RunLimits {
  timeoutMs: number;
  resultMaxBytes: number;
}

/** What an approved external tool additionally learns: the pending action it runs for. */
export interface ApprovedToolContext extends ToolContext {
  approvalId?: string | undefined;
}

const MAX_ERROR_CHARS = 500;
const MAX_ISSUES = 8;

/** Bearer tokens, key=value secrets, connection-string passwords and long key-like strings. */
const SECRET_PATTERNS: [RegExp, string][] = [
  [/\b(Bearer|Basic)\s+[A-Za-z0-9\-_.~+/=]{8,}/gi, '$1 [redacted]'],
  [
    /\b(password|passwd|pwd|secret|token|api[_-]?key|authorization)(["']?\s*[:=]\s*["']?)[^\s"',;&]+/gi,
    '$1$2[redacted]',
  ],
  [/(\w+:\/\/[^:/\s]+:)[^@\s]+@/g, '$1[redacted]@'],
  [/\b(sk|pk|rk|xox[abpr])-[A-Za-z0-9\-_]{12,}/g, '[redacted]'],
];

export function redactSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

/** A thrown value as one readable line: its message, secrets removed, bounded. */
export function readableError(err: unknown): string {
  let message: string;
  if (err instanceof AppError) message = err.message;
  else if (err instanceof Error && err.message) message = err.message;
  else if (typeof err === 'string' && err) message = err;
  else message = 'the tool failed';
  const firstLine = message.split('\n')[0]!.trim() || 'the tool failed';
  const clean = redactSecrets(firstLine);
  return clean.length > MAX_ERROR_CHARS ? `${clean.slice(0, MAX_ERROR_CHARS)}…` : clean;
}

/** zod issues as `path: message` lines the model can fix its call from. */
export function formatIssues(error: z.ZodError): string {
  const lines = error.issues.slice(0, MAX_ISSUES).map((issue) => {
    const path = issue.path.length ? issue.path.map(String).join('.') : '(input)';
    return `- ${path}: ${issue.message}`;
  });
  const more = error.issues.length - MAX_ISSUES;
  if (more > 0) lines.push(`- and ${more} more`);
  return lines.join('\n');
}

/** The result as text: strings as they are, anything else as JSON. */
export function resultText(result: unknown): string {
  if (typeof result === 'string') return result;
  if (result === undefined) return 'done';
  try {
    return JSON.stringify(result) ?? 'done';
  } catch {
    return String(result);
  }
}

/** Cuts `text` to at most `maxBytes` of UTF-8 (marker included), on a character boundary. */
export function capText(text: string, maxBytes: number): string {
  const size = Buffer.byteLength(text, 'utf8');
  if (size <= maxBytes) return text;
  const marker = `\n…[truncated: the result was ${size} bytes; only the first part is shown]`;
  const budget = Math.max(0, maxBytes - Buffer.byteLength(marker, 'utf8'));
  let head = Buffer.from(text, 'utf8').subarray(0, budget).toString('utf8');
  // A multi-byte character cut in half decodes to U+FFFD; drop it.
  if (head.endsWith('\uFFFD')) head = head.slice(0, -1);
  return head + marker;
}

class ToolTimeout extends Error {}

export async function runTool(
  tool: AnyTool,
  input: unknown,
  ctx: ApprovedToolContext,
  limits: RunLimits,
): Promise<ToolOutcome> {
  if (ctx.signal.aborted) {
    return { status: 'error', output: `${tool.name} was not run: the request was cancelled` };
  }
  const timeoutMs = tool.timeoutMs ?? limits.timeoutMs;
  const timer = new AbortController();
  const signal = AbortSignal.any([ctx.signal, timer.signal]);
  let handle: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stopped = new Promise<never>((_, reject) => {
    handle = setTimeout(() => {
      const err = new ToolTimeout();
      timer.abort(err);
    }, timeoutMs);
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  stopped.catch(() => {});
  try {
    const result = await Promise.race([tool.execute(input, { ...ctx, signal }), stopped]);
    if (isResultWithArtifacts(result))
      return {
        status: 'ok',
        output: capText(resultText(result.data), limits.resultMaxBytes),
        ...(result.artifacts.length ? { artifacts: result.artifacts } : {}),
      };
    return { status: 'ok', output: capText(resultText(result), limits.resultMaxBytes) };
  } catch (err) {
    if (timer.signal.aborted) {
      const seconds = Math.round(timeoutMs / 100) / 10;
      return {
        status: 'error',
        output: `${tool.name} timed out after ${seconds} s and was stopped; try a narrower request`,
      };
    }
    if (ctx.signal.aborted) {
      return { status: 'error', output: `${tool.name} was stopped: the request was cancelled` };
    }
    ctx.log.warn({ tool: tool.name, err }, 'tool call failed');
    return {
      status: 'error',
      output: capText(`${tool.name} failed: ${readableError(err)}`, limits.resultMaxBytes),
    };
  } finally {
    clearTimeout(handle);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}
