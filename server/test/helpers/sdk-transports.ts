/** The transports the model SDKs can be given: their default (global fetch) and ours. */
import { createHttpFetch } from '../../src/llm/providers/http-fetch.ts';

/** Provider tests run over each: `describe.each(SDK_TRANSPORTS)('over %s', ...)`. */
export const SDK_TRANSPORTS = [
  ['the global fetch', undefined],
  ['node:http (http-fetch.ts)', createHttpFetch()],
] as const;
