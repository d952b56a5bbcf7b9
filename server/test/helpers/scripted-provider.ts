/**
 * An in-memory ChatModelProvider that plays a script: each call takes the next step (or the
 * fallback step once the script is used up) and answers, fails before its first event,
 * fails after some events, or waits before its first event. It counts calls, keeps every
 * request, and honours the request's abort signal like a real adapter (ProviderError
 * 'aborted'), so the manager's retries, failover, timeouts and circuit breaker can be
 * tested by call counts.
 */
import {
  type ChatModelProvider,
  type ChatRequest,
  ProviderError,
  type ProviderErrorKind,
  type StreamEvent,
} from '../../src/llm/types.ts';

export interface Step {
  /** Events to yield; default a short text answer with usage and finish. */
  events?: StreamEvent[];
  /** Throw this error kind before the first event... */
  error?: ProviderErrorKind;
  /** ...or after this many events were yielded. */
  errorAfter?: number;
  status?: number;
  retryAfterMs?: number;
  /** Wait this long (real time, abortable) before the first event or the error. */
  delayMs?: number;
}

const STATUS: Partial<Record<ProviderErrorKind, number>> = {
  rate_limited: 429,
  overloaded: 529,
  server: 503,
  bad_request: 400,
  auth: 401,
};

export function answer(text = 'Hello there', inputTokens = 1000, outputTokens = 500): Step {
  return {
    events: [
      { type: 'text-delta', text: text.slice(0, 5) },
      { type: 'text-delta', text: text.slice(5) },
      { type: 'usage', inputTokens, outputTokens },
      { type: 'finish', reason: 'stop' },
    ],
  };
}

export const fail = (
  kind: ProviderErrorKind,
  extra: Pick<Step, 'status' | 'retryAfterMs' | 'delayMs'> = {},
): Step => ({ error: kind, ...extra });

/** Yields `after` events of a normal answer (usage first), then fails with `kind`. */
export function failMidStream(kind: ProviderErrorKind, after = 2): Step {
  return {
    events: [
      { type: 'usage', inputTokens: 1000, outputTokens: 0 },
      { type: 'text-delta', text: 'Partial ' },
      { type: 'text-delta', text: 'answer' },
      { type: 'finish', reason: 'stop' },
    ],
    error: kind,
    errorAfter: after,
  };
}

/** Never answers on its own: only an abort (first-byte timeout, caller) ends it. */
export const hang = (): Step => ({ delayMs: 600_000 });

export interface ScriptedProvider extends ChatModelProvider {
  /** Calls made so far. */
  readonly calls: number;
  /** Calls that ended because their signal aborted. */
  readonly aborted: number;
  readonly requests: ChatRequest[];
  /** Queue steps for the next calls, in order. */
  script(...steps: Step[]): ScriptedProvider;
  /** What every call does once the script is used up (default: answer()). */
  otherwise(step: Step): ScriptedProvider;
}

function abortable(ms: number, signal: AbortSignal | undefined, provider: string) {
  return new Promise<void>((resolve, reject) => {
    const abort = () => {
      clearTimeout(timer);
      reject(new ProviderError('aborted', 'request aborted', { provider }));
    };
    if (signal?.aborted) return abort();
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', abort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', abort, { once: true });
  });
}

export function createScriptedProvider(
  name: string,
  api: 'anthropic' | 'openai' = name === 'anthropic' ? 'anthropic' : 'openai',
): ScriptedProvider {
  const queue: Step[] = [];
  let fallback: Step = answer();
  let calls = 0;
  let aborted = 0;
  const requests: ChatRequest[] = [];

  const error = (step: Step) =>
    new ProviderError(step.error!, `scripted ${step.error}`, {
      provider: name,
      ...((step.status ?? STATUS[step.error!])
        ? { status: step.status ?? STATUS[step.error!] }
        : {}),
      ...(step.retryAfterMs === undefined ? {} : { retryAfterMs: step.retryAfterMs }),
    });

  const provider: ScriptedProvider = {
    name,
    api,
    get calls() {
      return calls;
    },
    get aborted() {
      return aborted;
    },
    requests,
    script(...steps) {
      queue.push(...steps);
      return provider;
    },
    otherwise(step) {
      fallback = step;
      return provider;
    },
    async *stream(request) {
      calls += 1;
      requests.push(request);
      const step = queue.shift() ?? fallback;
      const signal = request.signal;
      try {
        if (step.delayMs) await abortable(step.delayMs, signal, name);
        if (step.error && step.errorAfter === undefined) throw error(step);
        const events = step.events ?? answer().events!;
        for (const [i, event] of events.entries()) {
          if (signal?.aborted)
            throw new ProviderError('aborted', 'request aborted', { provider: name });
          if (step.error && i === step.errorAfter) throw error(step);
          // A real stream reads the network between events.
          await new Promise((r) => setImmediate(r));
          yield event;
        }
      } catch (err) {
        if (err instanceof ProviderError && err.kind === 'aborted') aborted += 1;
        throw err;
      }
    },
  };
  return provider;
}
