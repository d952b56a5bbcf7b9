/**
 * The OpenAI Chat Completions API as a ChatModelProvider, through the official SDK: OpenAI,
 * Moonshot Kimi and any OpenAI-compatible server (vLLM, Ollama, LM Studio…). Our messages
 * become chat messages, the `data:` chunk stream becomes StreamEvents, and every failure a
 * ProviderError. The SDK never retries: the LLM manager owns retries and failover.
 */
import OpenAI from 'openai';
import type {
  ChatCompletionContentPart,
  ChatCompletionCreateParamsStreaming,
  ChatCompletionMessageParam,
} from 'openai/resources/chat/completions';
import type { ChatMessage, ChatModelProvider, ChatRequest, StreamEvent } from '../types.ts';
import { type ErrorContext, parseToolArguments, providerError, toProviderError } from './errors.ts';

/** Until the response headers arrive (the SDK's timeout); a stream may then run longer. */
export const DEFAULT_OPENAI_TIMEOUT_MS = 60_000;
/** Sent when no key is configured: the SDK insists on one, local servers ignore it. */
const PLACEHOLDER_API_KEY = 'no-key';

export interface OpenAiCompatibleProviderOptions {
  /** The provider's config name, e.g. `moonshot`, `openai`, `ollama`. */
  name: string;
  /** May be empty for local servers that take no key. */
  apiKey: string;
  /**
   * The API root INCLUDING the version path, taken exactly as configured: the SDK appends
   * `/chat/completions`. E.g. `https://api.openai.com/v1`, `https://api.moonshot.ai/v1`,
   * `http://localhost:11434/v1`. Servers differ (some mount the API elsewhere), so nothing
   * is added or removed.
   */
  baseURL: string;
  fetch?: typeof globalThis.fetch;
  /** Time allowed until the response headers arrive, in ms. */
  timeoutMs?: number;
}

const FINISH_REASONS: Record<string, Extract<StreamEvent, { type: 'finish' }>['reason']> = {
  stop: 'stop',
  tool_calls: 'tool-calls',
  function_call: 'tool-calls',
  length: 'length',
};

export function createOpenAiCompatibleProvider(
  options: OpenAiCompatibleProviderOptions,
): ChatModelProvider {
  const apiKey = options.apiKey || PLACEHOLDER_API_KEY;
  const client = new OpenAI({
    apiKey,
    baseURL: options.baseURL,
    // Explicit nulls keep the SDK from reading OPENAI_ORG_ID / OPENAI_PROJECT_ID.
    organization: null,
    project: null,
    maxRetries: 0,
    timeout: options.timeoutMs ?? DEFAULT_OPENAI_TIMEOUT_MS,
    logLevel: 'off',
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });

  return {
    name: options.name,
    api: 'openai',
    async *stream(request: ChatRequest): AsyncIterable<StreamEvent> {
      const context: ErrorContext = {
        provider: options.name,
        apiKey: options.apiKey,
        signal: request.signal,
        sdk: OpenAI,
      };
      const body: ChatCompletionCreateParamsStreaming = {
        model: request.model,
        messages: toOpenAiMessages(request.system, request.messages, context),
        stream: true,
        stream_options: { include_usage: true },
        // `max_tokens` rather than `max_completion_tokens`: every compatible server knows it.
        ...(request.maxOutputTokens !== undefined ? { max_tokens: request.maxOutputTokens } : {}),
        ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
        ...(request.tools?.length
          ? {
              tools: request.tools.map((tool) => ({
                type: 'function' as const,
                function: {
                  name: tool.name,
                  description: tool.description,
                  parameters: tool.inputSchema,
                },
              })),
            }
          : {}),
      };

      if (request.stream === false) {
        const { stream: _, stream_options: __, ...rest } = body;
        let completion: OpenAI.ChatCompletion;
        try {
          completion = await client.chat.completions.create(
            { ...rest, stream: false },
            { signal: request.signal },
          );
        } catch (error) {
          throw toProviderError(error, context);
        }
        if (request.signal?.aborted) throw providerError('aborted', undefined, context);
        const choice = completion.choices?.[0];
        if (!choice?.finish_reason) {
          throw providerError(
            'malformed',
            'the answer has no choice with a finish_reason',
            context,
          );
        }
        if (choice.message?.content) yield { type: 'text-delta', text: choice.message.content };
        let index = 0;
        for (const call of choice.message?.tool_calls ?? []) {
          // Some compatible servers leave `type` out; anything but a function call is unknown.
          const type = (call as { type?: string }).type;
          if (type !== undefined && type !== 'function')
            throw providerError(
              'malformed',
              `tool call ${index} is of unknown type ${type}`,
              context,
            );
          if (!('function' in call) || !call.function?.name)
            throw providerError('malformed', `tool call ${index} has no name`, context);
          yield {
            type: 'tool-call',
            id: call.id || `call_${index}`,
            name: call.function.name,
            input: parseToolArguments(call.function.arguments ?? '', call.function.name, context),
          };
          index += 1;
        }
        if (completion.usage) {
          yield {
            type: 'usage',
            inputTokens: completion.usage.prompt_tokens,
            outputTokens: completion.usage.completion_tokens,
          };
        }
        yield { type: 'finish', reason: FINISH_REASONS[choice.finish_reason] ?? 'other' };
        return;
      }

      const toolCalls = new Map<number, { id: string; name: string; arguments: string }>();
      let usage: { inputTokens: number; outputTokens: number } | undefined;
      let finishReason: string | undefined;
      try {
        const chunks = await client.chat.completions.create(body, { signal: request.signal });
        for await (const chunk of chunks) {
          // Nothing more once the caller has aborted, even events already buffered.
          if (request.signal?.aborted) break;
          if (chunk.usage) {
            usage = {
              inputTokens: chunk.usage.prompt_tokens,
              outputTokens: chunk.usage.completion_tokens,
            };
          }
          const choice = chunk.choices?.[0];
          if (!choice) continue;
          const text = choice.delta?.content;
          if (text) yield { type: 'text-delta', text };
          for (const delta of choice.delta?.tool_calls ?? []) {
            const index = delta.index ?? 0;
            const call = toolCalls.get(index) ?? { id: '', name: '', arguments: '' };
            if (delta.id) call.id = delta.id;
            if (delta.function?.name) call.name = delta.function.name;
            call.arguments += delta.function?.arguments ?? '';
            toolCalls.set(index, call);
          }
          if (choice.finish_reason) finishReason = choice.finish_reason;
        }
      } catch (error) {
        throw toProviderError(error, context);
      }
      // The SDK ends an aborted stream quietly; the caller must still learn it was cut short.
      if (request.signal?.aborted) throw providerError('aborted', undefined, context);
      if (!finishReason) {
        throw providerError('malformed', 'the stream ended without a finish_reason', context);
      }
      const indexes = [...toolCalls.keys()].sort((a, b) => a - b);
      for (const index of indexes) {
        const call = toolCalls.get(index)!;
        if (!call.name) throw providerError('malformed', `tool call ${index} has no name`, context);
        yield {
          type: 'tool-call',
          id: call.id || `call_${index}`,
          name: call.name,
          input: parseToolArguments(call.arguments, call.name, context),
        };
      }
      if (usage) yield { type: 'usage', ...usage };
      yield { type: 'finish', reason: FINISH_REASONS[finishReason] ?? 'other' };
    },
  };
}

/**
 * System first; tool results become `role: 'tool'` messages (OpenAI has no error flag, so
 * a failed result's text is prefixed `Error: `); images become `image_url` parts with a
 * data: URL; a user message of one text part is sent as a plain string, which every
 * compatible server accepts.
 */
export function toOpenAiMessages(
  system: string | undefined,
  messages: ChatMessage[],
  context: ErrorContext,
): ChatCompletionMessageParam[] {
  const out: ChatCompletionMessageParam[] = [];
  if (system !== undefined) out.push({ role: 'system', content: system });
  for (const message of messages) {
    const misplaced = (type: string) =>
      providerError(
        'bad_request',
        `a ${type} part cannot be in a ${message.role} message`,
        context,
      );
    const userParts: ChatCompletionContentPart[] = [];
    let text = '';
    const toolCalls: {
      id: string;
      type: 'function';
      function: { name: string; arguments: string };
    }[] = [];
    for (const part of message.content) {
      if (part.type === 'tool-result') {
        if (message.role === 'assistant') throw misplaced(part.type);
        const content = part.isError ? `Error: ${part.output}` : part.output;
        out.push({ role: 'tool', tool_call_id: part.id, content });
      } else if (message.role === 'tool') {
        throw misplaced(part.type);
      } else if (part.type === 'tool-call') {
        if (message.role !== 'assistant') throw misplaced(part.type);
        toolCalls.push({
          id: part.id,
          type: 'function',
          function: { name: part.name, arguments: JSON.stringify(part.input) },
        });
      } else if (part.type === 'text') {
        text += part.text;
        userParts.push({ type: 'text', text: part.text });
      } else {
        if (message.role === 'assistant') throw misplaced(part.type);
        const url = `data:${part.mediaType};base64,${part.data}`;
        userParts.push({ type: 'image_url', image_url: { url } });
      }
    }
    if (message.role === 'assistant') {
      out.push({
        role: 'assistant',
        content: text === '' && toolCalls.length > 0 ? null : text,
        ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
      });
    } else if (message.role === 'user' && userParts.length > 0) {
      const only = userParts.length === 1 ? userParts[0] : undefined;
      out.push({ role: 'user', content: only?.type === 'text' ? only.text : userParts });
    }
  }
  return out;
}
