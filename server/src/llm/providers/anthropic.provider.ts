/**
 * The Anthropic Messages API as a ChatModelProvider, through the official SDK. Our messages
 * become Anthropic content blocks, the SSE stream becomes StreamEvents, and every failure a
 * ProviderError. The SDK never retries: the LLM manager owns retries and failover.
 */
import { createHash } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';
import type {
  ChatMessage,
  ChatModelProvider,
  ChatRequest,
  ContentPart,
  StreamEvent,
} from '../types.ts';
import { type ErrorContext, parseToolArguments, providerError, toProviderError } from './errors.ts';

/** Until the response headers arrive (the SDK's timeout); a stream may then run longer. */
export const DEFAULT_ANTHROPIC_TIMEOUT_MS = 60_000;
/** Anthropic requires `max_tokens`; used when the request does not set one. */
export const DEFAULT_ANTHROPIC_MAX_OUTPUT_TOKENS = 4096;

export interface AnthropicProviderOptions {
  /** The provider's config name, e.g. `anthropic`. */
  name: string;
  apiKey: string;
  /**
   * The API root WITHOUT `/v1`, as the SDK takes it (`https://api.anthropic.com`); a
   * configured URL ending in `/v1` is accepted and trimmed.
   */
  baseURL: string;
  fetch?: typeof globalThis.fetch;
  /** Time allowed until the response headers arrive, in ms. */
  timeoutMs?: number;
  defaultMaxOutputTokens?: number;
}

type UserSideBlock = Anthropic.ContentBlockParam;

const FINISH_REASONS: Record<string, Extract<StreamEvent, { type: 'finish' }>['reason']> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  tool_use: 'tool-calls',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
};

/** `https://host/v1/` → `https://host`: the SDK appends `/v1/messages` itself. */
export function normaliseAnthropicBaseURL(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/v1$/, '');
}

export function createAnthropicProvider(options: AnthropicProviderOptions): ChatModelProvider {
  const client = new Anthropic({
    apiKey: options.apiKey,
    baseURL: normaliseAnthropicBaseURL(options.baseURL),
    maxRetries: 0,
    timeout: options.timeoutMs ?? DEFAULT_ANTHROPIC_TIMEOUT_MS,
    logLevel: 'off',
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const maxOutputTokens = options.defaultMaxOutputTokens ?? DEFAULT_ANTHROPIC_MAX_OUTPUT_TOKENS;

  return {
    name: options.name,
    api: 'anthropic',
    async *stream(request: ChatRequest): AsyncIterable<StreamEvent> {
      const context: ErrorContext = {
        provider: options.name,
        apiKey: options.apiKey,
        signal: request.signal,
        sdk: Anthropic,
      };
      const body: Anthropic.MessageCreateParamsStreaming = {
        model: request.model,
        max_tokens: request.maxOutputTokens ?? maxOutputTokens,
        messages: toAnthropicMessages(request.messages, context),
        stream: true,
        ...(request.system !== undefined ? { system: request.system } : {}),
        ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
        ...(request.tools?.length
          ? {
              tools: request.tools.map((tool) => ({
                name: tool.name,
                description: tool.description,
                input_schema: tool.inputSchema as Anthropic.Tool.InputSchema,
              })),
            }
          : {}),
      };

      if (request.stream === false) {
        let message: Anthropic.Message;
        try {
          message = await client.messages.create(
            { ...body, stream: false },
            { signal: request.signal },
          );
        } catch (error) {
          throw toProviderError(error, context);
        }
        if (request.signal?.aborted) throw providerError('aborted', undefined, context);
        yield* messageEvents(message, context);
        return;
      }

      const toolBlocks = new Map<
        number,
        { id: string; name: string; json: string; input: unknown }
      >();
      let inputTokens = 0;
      let outputTokens = 0;
      let stopReason: string | null = null;
      let stopped = false;
      try {
        const events = await client.messages.create(body, { signal: request.signal });
        for await (const event of events) {
          // Nothing more once the caller has aborted, even events already buffered.
          if (request.signal?.aborted) break;
          switch (event.type) {
            case 'message_start': {
              const usage = event.message.usage;
              inputTokens =
                usage.input_tokens +
                (usage.cache_creation_input_tokens ?? 0) +
                (usage.cache_read_input_tokens ?? 0);
              outputTokens = usage.output_tokens;
              break;
            }
            case 'content_block_start': {
              const block = event.content_block;
              if (block.type === 'text' && block.text)
                yield { type: 'text-delta', text: block.text };
              if (block.type === 'tool_use') {
                toolBlocks.set(event.index, {
                  id: block.id,
                  name: block.name,
                  json: '',
                  input: block.input,
                });
              }
              break;
            }
            case 'content_block_delta': {
              const delta = event.delta;
              if (delta.type === 'text_delta' && delta.text)
                yield { type: 'text-delta', text: delta.text };
              if (delta.type === 'input_json_delta') {
                const block = toolBlocks.get(event.index);
                if (!block)
                  throw providerError('malformed', 'arguments for an unknown tool call', context);
                block.json += delta.partial_json;
              }
              break;
            }
            case 'content_block_stop': {
              const block = toolBlocks.get(event.index);
              if (block) {
                toolBlocks.delete(event.index);
                const input = parseToolArguments(block.json, block.name, context, block.input);
                yield { type: 'tool-call', id: block.id, name: block.name, input };
              }
              break;
            }
            case 'message_delta': {
              stopReason = event.delta.stop_reason ?? stopReason;
              outputTokens = event.usage.output_tokens;
              if (event.usage.input_tokens != null) {
                inputTokens =
                  event.usage.input_tokens +
                  (event.usage.cache_creation_input_tokens ?? 0) +
                  (event.usage.cache_read_input_tokens ?? 0);
              }
              break;
            }
            case 'message_stop':
              stopped = true;
              break;
          }
        }
      } catch (error) {
        throw toProviderError(error, context);
      }
      // The SDK ends an aborted stream quietly; the caller must still learn it was cut short.
      if (request.signal?.aborted) throw providerError('aborted', undefined, context);
      if (!stopped)
        throw providerError('malformed', 'the stream ended before message_stop', context);
      yield { type: 'usage', inputTokens, outputTokens };
      yield { type: 'finish', reason: (stopReason && FINISH_REASONS[stopReason]) || 'other' };
    },
  };
}

/** A whole (non-streamed) Message as the events its stream would have given. */
function* messageEvents(message: Anthropic.Message, context: ErrorContext): Generator<StreamEvent> {
  for (const block of message.content) {
    if (block.type === 'text' && block.text) yield { type: 'text-delta', text: block.text };
    else if (block.type === 'tool_use') {
      const input = parseToolArguments('', block.name, context, block.input);
      yield { type: 'tool-call', id: block.id, name: block.name, input };
    }
  }
  const usage = message.usage;
  yield {
    type: 'usage',
    inputTokens:
      usage.input_tokens +
      (usage.cache_creation_input_tokens ?? 0) +
      (usage.cache_read_input_tokens ?? 0),
    outputTokens: usage.output_tokens,
  };
  yield {
    type: 'finish',
    reason: (message.stop_reason && FINISH_REASONS[message.stop_reason]) || 'other',
  };
}

const ANTHROPIC_TOOL_ID = /^[a-zA-Z0-9_-]+$/;

/**
 * Anthropic takes tool_use ids of `[a-zA-Z0-9_-]` only and answers 400 to any other, but a
 * transcript may hold another provider's ids: a step or an earlier turn answered by a
 * fallback (Kimi names its calls `functions.search_leads:0`). Such an id is rewritten the same
 * way wherever it appears, so a tool_use and the tool_result answering it stay paired, with a
 * hash of the original so two ids never become one. Valid ids are sent unchanged.
 */
export function anthropicToolId(id: string): string {
  if (ANTHROPIC_TOOL_ID.test(id)) return id;
  const hash = createHash('sha256').update(id).digest('hex').slice(0, 12);
  return `${id.replace(/[^a-zA-Z0-9_-]/g, '_')}_${hash}`;
}

function toBlock(
  part: ContentPart,
  role: ChatMessage['role'],
  context: ErrorContext,
): UserSideBlock {
  const misplaced = () =>
    providerError('bad_request', `a ${part.type} part cannot be in a ${role} message`, context);
  switch (part.type) {
    case 'text':
      return { type: 'text', text: part.text };
    case 'image':
      if (role === 'assistant') throw misplaced();
      return {
        type: 'image',
        source: { type: 'base64', media_type: part.mediaType, data: part.data },
      };
    case 'tool-call':
      if (role !== 'assistant') throw misplaced();
      return { type: 'tool_use', id: anthropicToolId(part.id), name: part.name, input: part.input };
    case 'tool-result':
      if (role === 'assistant') throw misplaced();
      return {
        type: 'tool_result',
        tool_use_id: anthropicToolId(part.id),
        content: part.output,
        ...(part.isError ? { is_error: true } : {}),
      };
  }
}

/**
 * Tool messages become user messages of `tool_result` blocks; consecutive tool messages are
 * merged into one, since Anthropic wants every result of one assistant turn in the next
 * user message.
 */
export function toAnthropicMessages(
  messages: ChatMessage[],
  context: ErrorContext,
): Anthropic.MessageParam[] {
  const out: { role: 'user' | 'assistant'; content: UserSideBlock[] }[] = [];
  let previousRole: ChatMessage['role'] | undefined;
  for (const message of messages) {
    const content = message.content.map((part) => toBlock(part, message.role, context));
    const last = out.at(-1);
    if (message.role === 'tool' && previousRole === 'tool' && last) {
      last.content.push(...content);
    } else {
      out.push({ role: message.role === 'assistant' ? 'assistant' : 'user', content });
    }
    previousRole = message.role;
  }
  return out;
}
