import { describe, expect, it } from 'vitest';
import { costUsd, usdText } from './pricing.ts';
import { abortableSleep, backoffDelay, decideRetry, type RetryPolicy } from './retry.ts';

const policy: RetryPolicy = {
  max_attempts: 3,
  base_delay_ms: 500,
  max_delay_ms: 4_000,
  max_retry_after_ms: 10_000,
};
const retryable = (retryAfterMs?: number) => ({ retryable: true, retryAfterMs });

describe('backoffDelay', () => {
  it('doubles per attempt, up to the cap, with equal jitter', () => {
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy, () => 0))).toEqual([
      250, 500, 1000, 2000, 2000,
    ]);
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy, () => 0.999_999))).toEqual([
      500, 1000, 2000, 4000, 4000,
    ]);
    expect(backoffDelay(2, policy, () => 0.5)).toBe(750);
  });
});

describe('decideRetry', () => {
  it('retries retryable errors with backoff until max_attempts, then fails over', () => {
    expect(decideRetry(retryable(), 1, policy, () => 0)).toEqual({ action: 'retry', delayMs: 250 });
    expect(decideRetry(retryable(), 2, policy, () => 0)).toEqual({ action: 'retry', delayMs: 500 });
    expect(decideRetry(retryable(), 3, policy, () => 0)).toEqual({ action: 'failover' });
  });

  it('waits exactly the retry-after when it is within the cap', () => {
    expect(decideRetry(retryable(7_000), 1, policy)).toEqual({ action: 'retry', delayMs: 7_000 });
    expect(decideRetry(retryable(10_000), 1, policy)).toEqual({ action: 'retry', delayMs: 10_000 });
  });

  it('fails over at once when the retry-after is above the cap', () => {
    expect(decideRetry(retryable(10_001), 1, policy)).toEqual({ action: 'failover' });
  });

  it('never retries or fails over a non-retryable error', () => {
    expect(decideRetry({ retryable: false, retryAfterMs: undefined }, 1, policy)).toEqual({
      action: 'fail',
    });
  });

  it('with max_attempts 1, fails over after the first failure', () => {
    expect(decideRetry(retryable(), 1, { ...policy, max_attempts: 1 })).toEqual({
      action: 'failover',
    });
  });
});

describe('abortableSleep', () => {
  it('rejects with the signal reason when aborted', async () => {
    const controller = new AbortController();
    const sleeping = abortableSleep(60_000, controller.signal);
    controller.abort(new Error('stop'));
    await expect(sleeping).rejects.toThrow('stop');
    await expect(abortableSleep(10, controller.signal)).rejects.toThrow('stop');
  });
});

describe('costUsd', () => {
  it('prices tokens per million, to the micro-dollar', () => {
    const sonnet = { input_per_mtok: 3, output_per_mtok: 15 };
    expect(costUsd(sonnet, { inputTokens: 1000, outputTokens: 500 })).toBe(0.0105);
    expect(costUsd(sonnet, { inputTokens: 1_000_000, outputTokens: 1_000_000 })).toBe(18);
    const kimi = { input_per_mtok: 0.6, output_per_mtok: 2.5 };
    expect(costUsd(kimi, { inputTokens: 1234, outputTokens: 1 })).toBe(0.000743);
    expect(usdText(costUsd(kimi, { inputTokens: 1, outputTokens: 0 }))).toBe('0.000001');
    expect(costUsd(kimi, { inputTokens: 0, outputTokens: 0 })).toBe(0);
  });
});
