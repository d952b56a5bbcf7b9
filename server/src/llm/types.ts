/**
 * The model-facing contract every provider adapter implements, and the one the LLM manager,
 * agents and tests speak. Provider wire formats (Anthropic Messages, OpenAI Chat
 * Completions) stay inside `providers/`; nothing above them sees an SDK type.
 */

/**
 * What a model is used for; config picks the models per purpose. `summary`: summarising a
 * chat session's older turns (defaults to the routing models, then the chat models).
 */
export type ModelPurpose = 'chat' | 'vision' | 'routing' | 'long_document' | 'summary';

export type ContentPart =
  | { type: 'text'; text: string }
  /** An image sent to a vision-capable model. `data` is base64, without a data: prefix. */
  | {
      type: 'image';
      mediaType: 'image/jpeg' | 'image/png' | 'image/gif' | 'image/webp';
      data: string;
    }
  /** A tool call the model made (assistant messages). `input` is the parsed JSON object. */
  | { type: 'tool-call'; id: string; name: string; input: Record<string, unknown> }
  /** The result of a tool call (tool messages). `output` is text the model reads. */
  | { type: 'tool-result'; id: string; name: string; output: string; isError?: boolean };

export interface ChatMessage {
  role: 'user' | 'assistant' | 'tool';
  content: ContentPart[];
}

/** A tool offered to the model; `inputSchema` is a JSON Schema object (from zod). */
export interface ToolSpec {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
}

export interface ChatRequest {
  /** The provider's own model id, e.g. `claude-sonnet-5-5` or `kimi-k2`. */
  model: string;
  system?: string;
  messages: ChatMessage[];
  tools?: ToolSpec[];
  maxOutputTokens?: number;
  temperature?: number;
  /**
   * false: ask for the whole answer in one response instead of a stream, for a turn nobody
   * reads as it is written (REST). The events are the same, all at once. Default true.
   */
  stream?: boolean;
  /** Aborting cancels the upstream HTTP request. */
  signal?: AbortSignal;
}

/** Streamed events, noun-then-action as in the Vercel AI SDK. */
export type StreamEvent =
  | { type: 'text-delta'; text: string }
  /** A complete tool call (arguments fully received and parsed). */
  | { type: 'tool-call'; id: string; name: string; input: Record<string, unknown> }
  | { type: 'usage'; inputTokens: number; outputTokens: number }
  | { type: 'finish'; reason: 'stop' | 'tool-calls' | 'length' | 'other' };

/** One configured provider endpoint (Anthropic, Moonshot Kimi, any OpenAI-compatible server). */
export interface ChatModelProvider {
  /** Config name of the provider, e.g. `anthropic`, `moonshot`, `openai`, `ollama`. */
  readonly name: string;
  /** The wire API it speaks. */
  readonly api: 'anthropic' | 'openai';
  /**
   * Streams one model call. Throws ProviderError (before or during the stream) for every
   * failure; the SDK's own retries are off: the manager owns retries and failover.
   */
  stream(request: ChatRequest): AsyncIterable<StreamEvent>;
}

export type ProviderErrorKind =
  | 'rate_limited' // 429
  | 'overloaded' // 529 / "overloaded_error"
  | 'server' // other 5xx
  | 'timeout' // no first byte in time, or the request timed out
  | 'connection' // refused, reset, DNS
  | 'bad_request' // 400, 404, 422: our bug
  | 'auth' // 401, 403: our key
  | 'malformed' // the provider answered something we cannot parse
  | 'aborted'; // the caller cancelled

/** One error class for every provider failure; `retryable` drives retry and failover. */
export class ProviderError extends Error {
  override name = 'ProviderError';
  readonly kind: ProviderErrorKind;
  readonly provider: string;
  readonly status: number | undefined;
  /** From a `retry-after` header, in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(
    kind: ProviderErrorKind,
    message: string,
    options: { provider: string; status?: number; retryAfterMs?: number; cause?: unknown },
  ) {
    super(message, { cause: options.cause });
    this.kind = kind;
    this.provider = options.provider;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
  }

  /** Worth retrying or failing over: rate limits, overload, 5xx, timeouts, connection errors. */
  get retryable(): boolean {
    return ['rate_limited', 'overloaded', 'server', 'timeout', 'connection'].includes(this.kind);
  }
}
