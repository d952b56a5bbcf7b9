/**
 * The OpenAI Chat Completions wire format (also Moonshot Kimi and other OpenAI-compatible
 * servers) for the fake model server: JSON completions, `data:` chunk streams ending in
 * `data: [DONE]`, and `{"error":{"message","type","code"}}` errors.
 */
import {
  errorTypeForStatus,
  type FakeErrorType,
  type FakeHttpError,
  type Frame,
  fakeId,
  type NormalisedReply,
  type WirePlan,
} from './reply.ts';
import type { WireFormat, WireRequest } from './wire-format.ts';

const FINISH_REASONS = { stop: 'stop', 'tool-calls': 'tool_calls', length: 'length' } as const;

/** OpenAI's (and Moonshot's) type and code for each error. */
const ERROR_SHAPES: Record<FakeErrorType, { type: string; code: string | null }> = {
  overloaded_error: { type: 'engine_overloaded_error', code: null },
  rate_limit_error: { type: 'requests', code: 'rate_limit_exceeded' },
  api_error: { type: 'server_error', code: null },
  invalid_request_error: { type: 'invalid_request_error', code: null },
  authentication_error: { type: 'invalid_request_error', code: 'invalid_api_key' },
  permission_error: { type: 'invalid_request_error', code: 'permission_denied' },
  not_found_error: { type: 'invalid_request_error', code: 'model_not_found' },
};

function errorBody(type: FakeErrorType, message: string) {
  return { error: { message, ...ERROR_SHAPES[type], param: null } };
}

function data(value: unknown): string {
  return `data: ${JSON.stringify(value)}\n\n`;
}

function usageOf(reply: NormalisedReply) {
  const { inputTokens, outputTokens } = reply.usage;
  return {
    prompt_tokens: inputTokens,
    completion_tokens: outputTokens,
    total_tokens: inputTokens + outputTokens,
  };
}

/** Argument pieces as `[toolIndex, piece, first]`, in order or interleaved by index. */
function argumentPieces(reply: NormalisedReply): [number, string, boolean][] {
  const perCall = reply.toolCalls.map((call, i) =>
    call.pieces.map((piece, p): [number, string, boolean] => [i, piece, p === 0]),
  );
  if (!reply.interleaveToolCalls) return perCall.flat();
  const out: [number, string, boolean][] = [];
  const longest = Math.max(0, ...perCall.map((p) => p.length));
  for (let p = 0; p < longest; p += 1) {
    for (const pieces of perCall) {
      const piece = pieces[p];
      if (piece) out.push(piece);
    }
  }
  return out;
}

function streamFrames(reply: NormalisedReply, request: WireRequest): Frame[] {
  const id = fakeId('chatcmpl-');
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({
    id,
    object: 'chat.completion.chunk',
    created,
    model: request.model,
    choices,
    ...(request.includeUsage ? { usage: null } : {}),
    ...extra,
  });
  const delta = (d: Record<string, unknown>, finish: string | null = null) =>
    chunk([{ index: 0, delta: d, logprobs: null, finish_reason: finish }]);

  const frames: Frame[] = [{ data: data(delta({ role: 'assistant', content: '' })) }];
  for (const text of reply.textChunks) {
    frames.push({ content: true, data: data(delta({ content: text })) });
  }
  for (const [index, piece, first] of argumentPieces(reply)) {
    const call = reply.toolCalls[index]!;
    const toolDelta = first
      ? { index, id: call.id, type: 'function', function: { name: call.name, arguments: piece } }
      : { index, function: { arguments: piece } };
    frames.push({ content: true, data: data(delta({ tool_calls: [toolDelta] })) });
  }
  frames.push({ data: data(delta({}, FINISH_REASONS[reply.finish])) });
  if (request.includeUsage) frames.push({ data: data(chunk([], { usage: usageOf(reply) })) });
  frames.push({ data: 'data: [DONE]\n\n' });
  return frames;
}

function completion(reply: NormalisedReply, model: string) {
  const text = reply.textChunks.join('');
  const toolCalls = reply.toolCalls.map((call) => ({
    id: call.id,
    type: 'function',
    function: { name: call.name, arguments: call.arguments },
  }));
  return {
    id: fakeId('chatcmpl-'),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: text.length > 0 || toolCalls.length === 0 ? text : null,
          ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
        },
        logprobs: null,
        finish_reason: FINISH_REASONS[reply.finish],
      },
    ],
    usage: usageOf(reply),
  };
}

function requestHeaders(): Record<string, string> {
  return { 'x-request-id': fakeId('req_') };
}

export const openAiWire: WireFormat = {
  api: 'openai',

  errorResponse(error: FakeHttpError): WirePlan {
    const type = error.type ?? errorTypeForStatus(error.status);
    const headers: Record<string, string> = {
      ...requestHeaders(),
      'content-type': 'application/json',
    };
    if (error.retryAfter !== undefined) headers['retry-after'] = String(error.retryAfter);
    const body = errorBody(type, error.message ?? `Fake ${ERROR_SHAPES[type].type}`);
    return { status: error.status, headers, frames: [{ data: JSON.stringify(body) }] };
  },

  success(reply, request): WirePlan {
    if (!request.stream) {
      return {
        status: 200,
        headers: { ...requestHeaders(), 'content-type': 'application/json' },
        frames: [{ data: JSON.stringify(completion(reply, request.model)) }],
      };
    }
    return {
      status: 200,
      headers: {
        ...requestHeaders(),
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
      },
      frames: streamFrames(reply, request),
    };
  },

  midStreamError(type: FakeErrorType, message: string): string {
    return data(errorBody(type, message));
  },

  malformed(kind, reply, request): WirePlan {
    if (kind === 'garbage') {
      return {
        status: 200,
        headers: { 'content-type': 'text/html' },
        frames: [{ data: '<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>\n' }],
      };
    }
    const plan = this.success(reply, request);
    if (!request.stream) {
      const body = plan.frames[0]?.data ?? '{}';
      return { ...plan, frames: [{ data: body.slice(0, Math.floor(body.length / 2)) }] };
    }
    const start = plan.frames.slice(0, 1);
    if (kind === 'truncated') return { ...plan, frames: start };
    return {
      ...plan,
      frames: [...start, { data: 'data: {"id":"chatcmpl-x","choices":[{"ind\n\n' }],
    };
  },
};
