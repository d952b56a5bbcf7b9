/**
 * What a test scripts the fake model server to answer, and the normalised form the wire
 * writers (Anthropic Messages, OpenAI Chat Completions) turn into bytes.
 */

/** The wire API a request spoke, from its path. */
export type FakeApi = 'anthropic' | 'openai';

export interface FakeToolCall {
  /** Defaults to a generated `toolu_…` / `call_…` id. */
  id?: string;
  name: string;
  /** The arguments; a string is sent verbatim (e.g. invalid JSON, to test parsing). */
  input: Record<string, unknown> | string;
}

/** Error types of the Anthropic API (the OpenAI writer maps them to OpenAI's). */
export type FakeErrorType =
  | 'overloaded_error'
  | 'rate_limit_error'
  | 'api_error'
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error';

export interface FakeHttpError {
  status: number;
  /** Defaults from the status (429 → rate_limit_error, 529 → overloaded_error, …). */
  type?: FakeErrorType;
  message?: string;
  /** `retry-after` header: seconds, or a string sent verbatim (an HTTP date). */
  retryAfter?: number | string;
}

export interface FakeReply {
  /** The answer's text; a string is streamed in word-sized chunks, an array chunk by chunk. */
  text?: string | string[];
  /** Tool calls after the text; their JSON arguments are streamed in pieces. */
  toolCalls?: FakeToolCall[];
  /** How many pieces each tool call's arguments are split into (default 3). */
  argumentChunks?: number;
  /** OpenAI only: send the argument pieces of parallel tool calls interleaved by index. */
  interleaveToolCalls?: boolean;
  /** Defaults: input from the request size, output from the answer size. */
  usage?: { inputTokens: number; outputTokens: number };
  /** Default: 'tool-calls' when there are tool calls, else 'stop'. */
  finish?: 'stop' | 'tool-calls' | 'length';
  /** Answer with this HTTP error instead (JSON in the API's error shape). */
  error?: FakeHttpError;
  /** Wait this long before the first byte (status line and headers). */
  delayMs?: number;
  /** Wait this long between streamed chunks. */
  chunkDelayMs?: number;
  /**
   * Fail after this many content chunks (text pieces and argument pieces): `error-event`
   * sends the API's mid-stream error (Anthropic `event: error`, OpenAI `data: {"error":…}`)
   * and ends the response; `disconnect` destroys the connection.
   */
  failAfterChunks?: { chunks: number; mode: 'error-event' | 'disconnect'; type?: FakeErrorType };
  /**
   * Answer 200 with output the client cannot use: `invalid-json` (a truncated JSON event or
   * body), `garbage` (an HTML page instead of SSE or JSON), `truncated` (a clean end of the
   * stream before its final event).
   */
  malformed?: 'invalid-json' | 'garbage' | 'truncated';
}

/** A scripted reply: a string is shorthand for `{ text }`. */
export type FakeReplyInput = FakeReply | string;

export interface NormalisedToolCall {
  id: string;
  name: string;
  /** The arguments as JSON text, and the pieces they are streamed in. */
  arguments: string;
  pieces: string[];
}

export interface NormalisedReply {
  textChunks: string[];
  toolCalls: NormalisedToolCall[];
  usage: { inputTokens: number; outputTokens: number };
  finish: 'stop' | 'tool-calls' | 'length';
  interleaveToolCalls: boolean;
}

let counter = 0;
/** A short unique id with the API's usual prefix. */
export function fakeId(prefix: string): string {
  counter += 1;
  return `${prefix}${Date.now().toString(36)}${counter.toString(36).padStart(4, '0')}`;
}

/** Word-sized pieces that join back to the text exactly. */
export function splitText(text: string): string[] {
  const pieces = text.match(/\s*\S+\s*/g);
  return pieces && pieces.join('') === text ? pieces : [text];
}

/** `count` pieces of roughly equal length that join back to `text`. */
export function splitInto(text: string, count: number): string[] {
  if (text.length === 0) return [''];
  const n = Math.max(1, Math.min(count, text.length));
  const size = Math.ceil(text.length / n);
  const pieces: string[] = [];
  for (let i = 0; i < text.length; i += size) pieces.push(text.slice(i, i + size));
  return pieces;
}

export function normaliseReply(
  reply: FakeReplyInput,
  api: FakeApi,
  requestBytes: number,
): NormalisedReply {
  const r: FakeReply = typeof reply === 'string' ? { text: reply } : reply;
  const textChunks = r.text === undefined ? [] : Array.isArray(r.text) ? r.text : splitText(r.text);
  const toolCalls = (r.toolCalls ?? []).map((call) => {
    const args = typeof call.input === 'string' ? call.input : JSON.stringify(call.input);
    return {
      id: call.id ?? fakeId(api === 'anthropic' ? 'toolu_' : 'call_'),
      name: call.name,
      arguments: args,
      pieces: splitInto(args, r.argumentChunks ?? 3),
    };
  });
  const outputChars =
    textChunks.join('').length + toolCalls.reduce((n, c) => n + c.arguments.length, 0);
  return {
    textChunks,
    toolCalls,
    usage: r.usage ?? {
      inputTokens: Math.max(1, Math.ceil(requestBytes / 4)),
      outputTokens: Math.max(1, Math.ceil(outputChars / 4)),
    },
    finish: r.finish ?? (toolCalls.length > 0 ? 'tool-calls' : 'stop'),
    interleaveToolCalls: r.interleaveToolCalls ?? false,
  };
}

/** The Anthropic error type a status usually carries. */
export function errorTypeForStatus(status: number): FakeErrorType {
  if (status === 529) return 'overloaded_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

/** One piece of a response body; `content` marks text and argument pieces (for failures). */
export interface Frame {
  data: string;
  content?: boolean;
}

/** What a wire writer produces for one reply: status, headers and body frames. */
export interface WirePlan {
  status: number;
  headers: Record<string, string>;
  frames: Frame[];
}
