/**
 * Builds one adapter per enabled provider in the `llm` config: the Anthropic Messages API
 * or any OpenAI-compatible Chat Completions endpoint (Moonshot Kimi, OpenAI, Ollama, ...).
 * The manager owns retries; the adapters' own SDK retries are off.
 */
import type { LlmConfig } from './llm-config.ts';
import { createAnthropicProvider } from './providers/anthropic.provider.ts';
import { sharedHttpFetch } from './providers/http-fetch.ts';
import { createOpenAiCompatibleProvider } from './providers/openai.provider.ts';
import type { ChatModelProvider } from './types.ts';

export function createProviders(
  config: LlmConfig,
  options: { fetch?: typeof globalThis.fetch } = {},
): Map<string, ChatModelProvider> {
  const providers = new Map<string, ChatModelProvider>();
  const fetch = options.fetch ?? (config.http_client === 'node' ? sharedHttpFetch() : undefined);
  for (const p of Object.values(config.providers)) {
    if (!p.enabled) continue;
    const common = {
      name: p.name,
      apiKey: p.api_key ?? '',
      baseURL: p.base_url,
      // A backstop behind the manager's own first-byte and response timeouts, which fire first.
      timeoutMs: Math.max(config.first_byte_timeout_ms, config.response_timeout_ms) + 1_000,
      ...(fetch ? { fetch } : {}),
    };
    providers.set(
      p.name,
      p.api === 'anthropic'
        ? createAnthropicProvider(common)
        : createOpenAiCompatibleProvider(common),
    );
  }
  return providers;
}
