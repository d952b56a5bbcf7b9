import { describe, expect, it } from 'vitest';
import { type BreakerSettings, CircuitBreaker } from './circuit-breaker.ts';

const settings: BreakerSettings = {
  failures: 3,
  windowMs: 60_000,
  cooldownMs: 30_000,
  probeLeaseMs: 45_000,
};

/** A breaker on a clock the test moves. */
function setup(overrides: Partial<BreakerSettings> = {}) {
  let now = 1_000_000;
  const breaker = new CircuitBreaker({ ...settings, ...overrides }, () => now);
  const fail = (n = 1) => {
    for (let i = 0; i < n; i++) breaker.tryAcquire()!.failure();
  };
  return {
    breaker,
    fail,
    advance(ms: number) {
      now += ms;
    },
  };
}

describe('CircuitBreaker', () => {
  it('stays closed below F failures, and opens at the F-th within the window', () => {
    const { breaker, fail } = setup();
    fail(2);
    expect(breaker.state).toBe('closed');
    expect(breaker.tryAcquire()).not.toBeNull();
    fail(1);
    expect(breaker.state).toBe('open');
    expect(breaker.tryAcquire()).toBeNull();
  });

  it('forgets failures older than the window', () => {
    const { breaker, fail, advance } = setup();
    fail(2);
    advance(60_001);
    fail(2);
    expect(breaker.state).toBe('closed');
    fail(1);
    expect(breaker.state).toBe('open');
  });

  it('counts failures, not calls: successes in between do not reset the window', () => {
    const { breaker, fail } = setup();
    fail(1);
    breaker.tryAcquire()!.success();
    fail(1);
    breaker.tryAcquire()!.success();
    fail(1);
    expect(breaker.state).toBe('open');
  });

  it('releases (400/401/abort) do not count as failures', () => {
    const { breaker, fail } = setup();
    fail(2);
    for (let i = 0; i < 5; i++) breaker.tryAcquire()!.release();
    expect(breaker.state).toBe('closed');
  });

  it('after the cooldown lets exactly one probe through; success closes it', () => {
    const { breaker, fail, advance } = setup();
    fail(3);
    advance(29_999);
    expect(breaker.tryAcquire()).toBeNull();
    expect(breaker.retryInMs()).toBe(1);
    advance(1);
    expect(breaker.state).toBe('half_open');
    const probe = breaker.tryAcquire();
    expect(probe?.probe).toBe(true);
    // Everyone else keeps skipping while the probe is out.
    expect(breaker.tryAcquire()).toBeNull();
    expect(breaker.tryAcquire()).toBeNull();
    probe!.success();
    expect(breaker.state).toBe('closed');
    const next = breaker.tryAcquire();
    expect(next?.probe).toBe(false);
    // Closed again with a clean window: F more failures to re-open.
    next!.failure();
    fail(1);
    expect(breaker.state).toBe('closed');
  });

  it('a failed probe re-opens it for a whole new cooldown', () => {
    const { breaker, fail, advance } = setup();
    fail(3);
    advance(30_000);
    breaker.tryAcquire()!.failure();
    expect(breaker.state).toBe('open');
    advance(29_999);
    expect(breaker.tryAcquire()).toBeNull();
    advance(1);
    expect(breaker.tryAcquire()?.probe).toBe(true);
  });

  it('a probe released without a verdict lets the next caller probe at once', () => {
    const { breaker, fail, advance } = setup();
    fail(3);
    advance(30_000);
    breaker.tryAcquire()!.release();
    expect(breaker.tryAcquire()?.probe).toBe(true);
  });

  it('a probe that never reports back stops blocking after its lease', () => {
    const { breaker, fail, advance } = setup();
    fail(3);
    advance(30_000);
    expect(breaker.tryAcquire()?.probe).toBe(true);
    advance(44_999);
    expect(breaker.tryAcquire()).toBeNull();
    advance(1);
    expect(breaker.tryAcquire()?.probe).toBe(true);
  });

  it('reports each permit once; late failures of calls begun before it opened add nothing', () => {
    const { breaker, fail, advance } = setup();
    const early = breaker.tryAcquire()!;
    fail(3);
    early.failure();
    early.failure();
    advance(30_000);
    const probe = breaker.tryAcquire()!;
    probe.success();
    probe.failure();
    expect(breaker.state).toBe('closed');
  });

  it('recordFailure counts a mid-stream failure in the closed window', () => {
    const { breaker, fail } = setup();
    fail(2);
    breaker.recordFailure();
    expect(breaker.state).toBe('open');
  });
});
