/**
 * Circuit breaker, one per provider/model (see docs/adr/0004): after `failures` failures
 * within `windowMs` it opens and callers skip that model; after `cooldownMs` exactly one
 * caller gets a half-open probe (the others keep skipping); the probe's success closes the
 * circuit, its failure re-opens it for another cooldown. Per process, in memory.
 *
 * Time comes from the injected clock, so tests move it instead of sleeping.
 */

export interface BreakerSettings {
  failures: number;
  windowMs: number;
  cooldownMs: number;
  /**
   * A probe that never reports back (a leaked permit) stops blocking after this long, and
   * another caller may probe. Longer than any attempt's first-byte timeout.
   */
  probeLeaseMs: number;
}

export type BreakerState = 'closed' | 'open' | 'half_open';

/** Leave to call the model; report the outcome exactly once (later reports are ignored). */
export interface Permit {
  readonly probe: boolean;
  /** The model answered (its first event arrived). */
  success(): void;
  /** A failure that says the model is unhealthy (rate limit, 5xx, overload, timeout, connection). */
  failure(): void;
  /** An outcome that says nothing about its health (our bad request, bad key, caller abort). */
  release(): void;
}

export class CircuitBreaker {
  #state: BreakerState = 'closed';
  /** Failure times within the window, oldest first (closed state). */
  #failures: number[] = [];
  #openedAt = 0;
  #probeAt = 0;

  constructor(
    readonly settings: BreakerSettings,
    private readonly now: () => number,
  ) {}

  /** The state as a caller would find it now (an expired cooldown reads as half_open). */
  get state(): BreakerState {
    if (this.#state === 'open' && this.now() - this.#openedAt >= this.settings.cooldownMs)
      return 'half_open';
    return this.#state;
  }

  /** Milliseconds until a probe may be tried (0 when closed or ready). */
  retryInMs(): number {
    if (this.#state === 'closed') return 0;
    const now = this.now();
    if (this.#state === 'open') return Math.max(0, this.#openedAt + this.settings.cooldownMs - now);
    return Math.max(0, this.#probeAt + this.settings.probeLeaseMs - now);
  }

  /** A permit to call, or null while open (and while another caller holds the probe). */
  tryAcquire(): Permit | null {
    const now = this.now();
    if (this.#state === 'closed') return this.#permit(false);
    if (this.#state === 'open') {
      if (now - this.#openedAt < this.settings.cooldownMs) return null;
      this.#state = 'half_open';
      this.#probeAt = now;
      return this.#permit(true);
    }
    if (now - this.#probeAt < this.settings.probeLeaseMs) return null;
    this.#probeAt = now;
    return this.#permit(true);
  }

  /**
   * A failure outside a permit's life: an answer that broke off after its first event had
   * already reported success. Counts like any failure in the closed window.
   */
  recordFailure(): void {
    this.#onFailure(false);
  }

  #permit(probe: boolean): Permit {
    let settled = false;
    const once = (fn: () => void) => () => {
      if (settled) return;
      settled = true;
      fn();
    };
    return {
      probe,
      success: once(() => this.#onSuccess(probe)),
      failure: once(() => this.#onFailure(probe)),
      release: once(() => this.#onRelease(probe)),
    };
  }

  #onSuccess(probe: boolean) {
    if (probe && this.#state === 'half_open') {
      this.#state = 'closed';
      this.#failures = [];
    }
  }

  #onFailure(probe: boolean) {
    const now = this.now();
    if (probe) {
      if (this.#state === 'half_open') this.#open(now);
      return;
    }
    // A call that started before the circuit opened adds nothing once it is open.
    if (this.#state !== 'closed') return;
    const since = now - this.settings.windowMs;
    this.#failures = this.#failures.filter((t) => t > since);
    this.#failures.push(now);
    if (this.#failures.length >= this.settings.failures) this.#open(now);
  }

  #onRelease(probe: boolean) {
    // Back to open with the old opening time: the next caller may probe at once.
    if (probe && this.#state === 'half_open') this.#state = 'open';
  }

  #open(now: number) {
    this.#state = 'open';
    this.#openedAt = now;
    this.#failures = [];
  }
}

/** One breaker per key (provider/model), created on first use. */
export class BreakerRegistry {
  readonly #breakers = new Map<string, CircuitBreaker>();
  constructor(
    private readonly settings: BreakerSettings,
    private readonly now: () => number,
  ) {}

  get(key: string): CircuitBreaker {
    let breaker = this.#breakers.get(key);
    if (!breaker) {
      breaker = new CircuitBreaker(this.settings, this.now);
      this.#breakers.set(key, breaker);
    }
    return breaker;
  }

  /** Current state of every breaker used so far (for health and tests). */
  states(): Record<string, BreakerState> {
    return Object.fromEntries([...this.#breakers].map(([k, b]) => [k, b.state]));
  }
}
