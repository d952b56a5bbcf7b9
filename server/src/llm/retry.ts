/**
 * The retry policy of one candidate model: exponential backoff with jitter, retry-after
 * honoured up to a cap, and when to give up on the candidate and fail over. Pure functions,
 * so they are tested without a clock.
 */
import type { ProviderError } from './types.ts';

export interface RetryPolicy {
  /** Tries per candidate, the first included. */
  max_attempts: number;
  base_delay_ms: number;
  max_delay_ms: number;
  /** A retry-after above this is not waited for: fail over at once. */
  max_retry_after_ms: number;
}

/**
 * Delay before try `attempt + 1` after try `attempt` (1-based) failed: base·2^(attempt-1),
 * capped at max_delay_ms, "equal jitter" (half fixed, half random) so many callers that
 * failed together do not retry together, yet never retry immediately.
 */
export function backoffDelay(attempt: number, policy: RetryPolicy, random = Math.random): number {
  const exp = Math.min(policy.max_delay_ms, policy.base_delay_ms * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

export type RetryDecision =
  | { action: 'retry'; delayMs: number }
  /** Stop trying this candidate; try the next one. */
  | { action: 'failover' }
  /** Do not retry and do not fail over: the request or our key is at fault. */
  | { action: 'fail' };

/** What to do after try `attempt` (1-based) of a candidate failed, before its first event. */
export function decideRetry(
  error: Pick<ProviderError, 'retryable' | 'retryAfterMs'>,
  attempt: number,
  policy: RetryPolicy,
  random = Math.random,
): RetryDecision {
  if (!error.retryable) return { action: 'fail' };
  if (attempt >= policy.max_attempts) return { action: 'failover' };
  const after = error.retryAfterMs;
  if (after !== undefined && after > 0) {
    // The provider said when; waiting longer than the cap is worse than another provider.
    if (after > policy.max_retry_after_ms) return { action: 'failover' };
    return { action: 'retry', delayMs: after };
  }
  return { action: 'retry', delayMs: backoffDelay(attempt, policy, random) };
}

/** A sleep that ends early, rejecting with the signal's reason, when `signal` aborts. */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
