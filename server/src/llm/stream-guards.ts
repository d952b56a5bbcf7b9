/**
 * Guards around an adapter's stream: wait for its next event no longer than a timeout or
 * the caller's abort, close it without waiting, and turn anything it throws into a
 * ProviderError.
 */
import { ProviderError } from './types.ts';

/** What the manager acts on; a non-ProviderError from an adapter is a bug (not retried). */
export function toProviderError(
  raw: unknown,
  provider: string,
  signal?: AbortSignal,
): ProviderError {
  if (signal?.aborted)
    return new ProviderError('aborted', 'the caller cancelled the call', { provider, cause: raw });
  if (raw instanceof ProviderError) return raw;
  return new ProviderError(
    'malformed',
    `the ${provider} adapter failed unexpectedly: ${(raw as Error)?.message ?? String(raw)}`,
    { provider, cause: raw },
  );
}

/**
 * `p`, unless `ms` pass first (a timeout ProviderError; null: no limit) or the caller
 * aborts (rejects with the signal's reason), whether or not the adapter honours the abort.
 */
export function within<T>(
  p: Promise<T>,
  ms: number | null,
  provider: string,
  signal?: AbortSignal,
  what = 'first-byte timeout',
) {
  p.catch(() => {}); // We may stop waiting for it; its late rejection must not go unhandled.
  if (ms === null && !signal) return p;
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      cleanup();
      reject(signal!.reason);
    };
    if (signal?.aborted) return onAbort();
    if (ms !== null) {
      timer = setTimeout(() => {
        cleanup();
        reject(
          new ProviderError('timeout', `no answer within ${ms} ms (${what})`, {
            provider,
          }),
        );
      }, ms);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        cleanup();
        resolve(v);
      },
      (e) => {
        cleanup();
        reject(e);
      },
    );
  });
}

export function closeQuietly(iterator: AsyncIterator<unknown> | undefined) {
  if (!iterator?.return) return;
  Promise.resolve()
    .then(() => iterator.return?.())
    .catch(() => {});
}
