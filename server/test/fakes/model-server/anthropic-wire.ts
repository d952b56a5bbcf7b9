/**
 * The Anthropic Messages API wire format for the fake model server: JSON messages, SSE
 * streams with an `event:` line per event, and `{"type":"error","error":{…}}` errors.
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
import type { WireFormat } from './wire-format.ts';

const STOP_REASONS = { stop: 'end_turn', 'tool-calls': 'tool_use', length: 'max_tokens' } as const;

function sse(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function errorBody(type: FakeErrorType, message: string) {
  return { type: 'error', error: { type, message } };
}

function requestHeaders(): Record<string, string> {
  return { 'request-id': fakeId('req_') };
}

function streamFrames(reply: NormalisedReply, model: string): Frame[] {
  const frames: Frame[] = [];
  frames.push({
    data: sse('message_start', {
      type: 'message_start',
      message: {
        id: fakeId('msg_'),
        type: 'message',
        role: 'assistant',
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: reply.usage.inputTokens, output_tokens: 1 },
      },
    }),
  });
  frames.push({ data: sse('ping', { type: 'ping' }) });
  let index = 0;
  if (reply.textChunks.length > 0) {
    frames.push({
      data: sse('content_block_start', {
        type: 'content_block_start',
        index,
        content_block: { type: 'text', text: '' },
      }),
    });
    for (const text of reply.textChunks) {
      frames.push({
        content: true,
        data: sse('content_block_delta', {
          type: 'content_block_delta',
          index,
          delta: { type: 'text_delta', text },
        }),
      });
    }
    frames.push({ data: sse('content_block_stop', { type: 'content_block_stop', index }) });
    index += 1;
  }
  for (const call of reply.toolCalls) {
    frames.push({
      data: sse('content_block_start', {
        type: 'content_block_start',
        index,
        content_block: { type: 'tool_use', id: call.id, name: call.name, input: {} },
      }),
    });
    for (const piece of call.pieces) {
      frames.push({
        content: true,
        data: sse('content_block_delta', {
          type: 'content_block_delta',
          index,
          delta: { type: 'input_json_delta', partial_json: piece },
        }),
      });
    }
    frames.push({ data: sse('content_block_stop', { type: 'content_block_stop', index }) });
    index += 1;
  }
  frames.push({
    data: sse('message_delta', {
      type: 'message_delta',
      delta: { stop_reason: STOP_REASONS[reply.finish], stop_sequence: null },
      usage: { output_tokens: reply.usage.outputTokens },
    }),
  });
  frames.push({ data: sse('message_stop', { type: 'message_stop' }) });
  return frames;
}

function message(reply: NormalisedReply, model: string) {
  const content: unknown[] = [];
  if (reply.textChunks.length > 0) content.push({ type: 'text', text: reply.textChunks.join('') });
  for (const call of reply.toolCalls) {
    let input: unknown;
    try {
      input = JSON.parse(call.arguments || '{}');
    } catch {
      input = call.arguments;
    }
    content.push({ type: 'tool_use', id: call.id, name: call.name, input });
  }
  return {
    id: fakeId('msg_'),
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: STOP_REASONS[reply.finish],
    stop_sequence: null,
    usage: { input_tokens: reply.usage.inputTokens, output_tokens: reply.usage.outputTokens },
  };
}

export const anthropicWire: WireFormat = {
  api: 'anthropic',

  errorResponse(error: FakeHttpError): WirePlan {
    const type = error.type ?? errorTypeForStatus(error.status);
    const headers: Record<string, string> = {
      ...requestHeaders(),
      'content-type': 'application/json',
    };
    if (error.retryAfter !== undefined) headers['retry-after'] = String(error.retryAfter);
    const body = errorBody(type, error.message ?? `Fake ${type}`);
    return { status: error.status, headers, frames: [{ data: JSON.stringify(body) }] };
  },

  success(reply, { model, stream }): WirePlan {
    if (!stream) {
      return {
        status: 200,
        headers: { ...requestHeaders(), 'content-type': 'application/json' },
        frames: [{ data: JSON.stringify(message(reply, model)) }],
      };
    }
    return {
      status: 200,
      headers: {
        ...requestHeaders(),
        'content-type': 'text/event-stream',
        'cache-control': 'no-cache',
      },
      frames: streamFrames(reply, model),
    };
  },

  midStreamError(type: FakeErrorType, text: string): string {
    return sse('error', errorBody(type, text));
  },

  malformed(kind, reply, { model, stream }): WirePlan {
    if (kind === 'garbage') {
      return {
        status: 200,
        headers: { 'content-type': 'text/html' },
        frames: [{ data: '<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>\n' }],
      };
    }
    const plan = this.success(reply, { model, stream, includeUsage: false });
    if (!stream) {
      const body = plan.frames[0]?.data ?? '{}';
      return { ...plan, frames: [{ data: body.slice(0, Math.floor(body.length / 2)) }] };
    }
    const start = plan.frames.slice(0, 2);
    if (kind === 'truncated') return { ...plan, frames: start };
    return {
      ...plan,
      frames: [
        ...start,
        { data: 'event: content_block_start\ndata: {"type":"content_block_st\n\n' },
      ],
    };
  },
};
