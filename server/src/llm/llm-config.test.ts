import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../config/load-config.ts';
import { DEFAULT_MODELS, DEFAULT_PRICES, refKey } from './llm-config.ts';

const llm = (env: Record<string, string> = {}, overrides?: Record<string, unknown>) =>
  parseConfig({ env, ignoreFile: true, ...(overrides ? { overrides: { llm: overrides } } : {}) })
    .config.llm;

const enabled = (c: ReturnType<typeof llm>) =>
  Object.values(c.providers)
    .filter((p) => p.enabled)
    .map((p) => p.name)
    .sort();

/** The one-line ConfigError a config gives, or a failure if it parses. */
function configError(env: Record<string, string>, overrides?: Record<string, unknown>): string {
  try {
    llm(env, overrides);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error(`expected a config error for ${JSON.stringify({ env, overrides })}`);
}

describe('llm config', () => {
  it('without keys: no provider is enabled, defaults are still valid', () => {
    const c = llm();
    expect(enabled(c)).toEqual([]);
    expect(c.models.chat.map(refKey)).toEqual(DEFAULT_MODELS.chat);
    expect(c.retry).toEqual({
      max_attempts: 2,
      base_delay_ms: 500,
      max_delay_ms: 8000,
      max_retry_after_ms: 10000,
    });
    expect(c.first_byte_timeout_ms).toBe(30_000);
    expect(c.circuit_breaker).toEqual({ failures: 5, window_s: 60, cooldown_s: 30 });
    expect(c.budgets.billing_timezone).toBe('Asia/Singapore');
    expect(c.budgets.warn_percent).toBe(80);
    expect(c.budgets.departments).toEqual({});
  });

  it('takes the usual env names; a provider exists when its key is set', () => {
    const c = llm({
      ANTHROPIC_API_KEY: 'sk-ant-test',
      MOONSHOT_API_KEY: 'sk-moon-test',
      MOONSHOT_BASE_URL: 'https://api.moonshot.cn/v1',
    });
    expect(enabled(c)).toEqual(['anthropic', 'moonshot']);
    expect(c.providers.anthropic).toMatchObject({
      api: 'anthropic',
      api_key: 'sk-ant-test',
      base_url: 'https://api.anthropic.com',
      key_env: 'ANTHROPIC_API_KEY',
    });
    expect(c.providers.moonshot).toMatchObject({
      api: 'openai',
      base_url: 'https://api.moonshot.cn/v1',
    });
    expect(c.providers.openai?.enabled).toBe(false);
    // Claude primary, Kimi secondary (OpenAI listed too, skipped while it has no key).
    expect(c.models.chat.slice(0, 2).map(refKey)).toEqual([
      'anthropic/claude-sonnet-5-5',
      'moonshot/kimi-k2-0905-preview',
    ]);
  });

  it('ANTHROPIC_BASE_URL is taken without /v1 (a trailing /v1 is dropped); OPENAI_BASE_URL as is', () => {
    const c = llm({
      ANTHROPIC_API_KEY: 'k',
      ANTHROPIC_BASE_URL: 'https://proxy.example.com/v1/',
      OPENAI_API_KEY: 'k',
      OPENAI_BASE_URL: 'https://gateway.example.com/openai/v1',
    });
    expect(c.providers.anthropic?.base_url).toBe('https://proxy.example.com');
    expect(c.providers.openai?.base_url).toBe('https://gateway.example.com/openai/v1');
  });

  it('a self-hosted OpenAI-compatible server needs no key', () => {
    expect(enabled(llm({ OPENAI_BASE_URL: 'http://127.0.0.1:11434/v1' }))).toEqual(['openai']);
    const c = llm(
      {},
      {
        providers: { ollama: { base_url: 'http://127.0.0.1:11434/v1' } },
        models: { chat: ['ollama/llama3.1:8b'] },
        prices: { 'ollama/llama3.1:8b': { input_per_mtok: 0, output_per_mtok: 0 } },
      },
    );
    expect(c.providers.ollama).toMatchObject({ api: 'openai', enabled: true, api_key: undefined });
    expect(c.models.chat).toEqual([{ provider: 'ollama', model: 'llama3.1:8b' }]);
    // The hosted URL without a key stays off; `enabled: false` switches a provider off.
    expect(enabled(llm({ MOONSHOT_BASE_URL: 'https://api.moonshot.ai/v1' }))).toEqual([]);
    expect(
      enabled(llm({ ANTHROPIC_API_KEY: 'k' }, { providers: { anthropic: { enabled: false } } })),
    ).toEqual([]);
  });

  it('models per purpose: lists of {provider, model} or "provider/model", or a comma list from env', () => {
    const c = llm(
      {
        ANTHROPIC_API_KEY: 'k',
        MEZZOFY__llm__models__routing: 'openai/gpt-4.1-mini, anthropic/claude-haiku-5-5',
      },
      {
        models: {
          chat: [
            { provider: 'moonshot', model: 'kimi-k2-0905-preview' },
            'anthropic/claude-sonnet-5-5',
          ],
        },
      },
    );
    expect(c.models.chat.map(refKey)).toEqual([
      'moonshot/kimi-k2-0905-preview',
      'anthropic/claude-sonnet-5-5',
    ]);
    expect(c.models.routing.map(refKey)).toEqual([
      'openai/gpt-4.1-mini',
      'anthropic/claude-haiku-5-5',
    ]);
    expect(c.models_configured).toMatchObject({ chat: true, routing: true, vision: false });
    expect(c.models.vision.map(refKey)).toEqual(DEFAULT_MODELS.vision);
  });

  it('summary: unset, the routing models then the chat models; or its own list', () => {
    const c = llm();
    expect(c.models.summary.map(refKey)).toEqual([
      ...DEFAULT_MODELS.routing,
      ...DEFAULT_MODELS.chat.filter((m) => !DEFAULT_MODELS.routing.includes(m)),
    ]);
    expect(c.models_configured.summary).toBe(false);
    // It follows a configured routing (and chat) list.
    const own = llm(
      {},
      {
        providers: { ollama: { base_url: 'http://127.0.0.1:11434/v1' } },
        models: { routing: ['ollama/qwen3:4b'], chat: ['anthropic/claude-sonnet-5-5'] },
        prices: { 'ollama/qwen3:4b': { input_per_mtok: 0, output_per_mtok: 0 } },
      },
    );
    expect(own.models.summary.map(refKey)).toEqual([
      'ollama/qwen3:4b',
      'anthropic/claude-sonnet-5-5',
    ]);
    // Routing configured empty: the chat models.
    expect(llm({}, { models: { routing: [] } }).models.summary.map(refKey)).toEqual(
      DEFAULT_MODELS.chat,
    );
    const set = llm({ MEZZOFY__llm__models__summary: 'openai/gpt-4.1-mini' });
    expect(set.models.summary.map(refKey)).toEqual(['openai/gpt-4.1-mini']);
    expect(set.models_configured.summary).toBe(true);
    // The other purposes are as before.
    expect(set.models.routing.map(refKey)).toEqual(DEFAULT_MODELS.routing);
    expect(configError({}, { models: { summary: ['openai/gpt-9o'] } })).toMatch(
      /^config error: llm\.models\.summary\.0: openai\/gpt-9o has no price/,
    );
  });

  it('every default model has a list price', () => {
    for (const refs of Object.values(DEFAULT_MODELS))
      for (const ref of refs) expect(DEFAULT_PRICES[ref], ref).toBeDefined();
    expect(DEFAULT_PRICES['anthropic/claude-sonnet-5-5']).toEqual({
      input_per_mtok: 2,
      output_per_mtok: 10,
    });
  });

  it('configured prices override and extend the defaults', () => {
    const c = llm(
      {},
      {
        prices: {
          'anthropic/claude-sonnet-5-5': { input_per_mtok: 2.5, output_per_mtok: 12 },
          'openai/gpt-5': { input_per_mtok: '1.25', output_per_mtok: '10' },
        },
        models: { chat: ['openai/gpt-5'] },
      },
    );
    expect(c.prices['anthropic/claude-sonnet-5-5']).toEqual({
      input_per_mtok: 2.5,
      output_per_mtok: 12,
    });
    expect(c.prices['openai/gpt-5']).toEqual({ input_per_mtok: 1.25, output_per_mtok: 10 });
  });

  it('a configured model without a price stops start-up with one line naming it', () => {
    expect(configError({}, { models: { chat: ['anthropic/claude-opus-9'] } })).toMatch(
      /^config error: llm\.models\.chat\.0: anthropic\/claude-opus-9 has no price; add llm\.prices\."anthropic\/claude-opus-9"/,
    );
    // Even from the environment, and even while its provider has no key.
    expect(
      configError({ MEZZOFY__llm__models__vision: 'anthropic/claude-sonnet-5-5,openai/gpt-9o' }),
    ).toMatch(/^config error: llm\.models\.vision\.1: openai\/gpt-9o has no price/);
    expect(
      configError(
        {},
        {
          budgets: {
            departments: {
              sales: {
                monthly_usd: 100,
                on_exceed: 'downgrade',
                downgrade_to: 'moonshot/kimi-mini',
              },
            },
          },
        },
      ),
    ).toMatch(
      /^config error: llm\.budgets\.departments\.sales\.downgrade_to: moonshot\/kimi-mini has no price/,
    );
  });

  it('names the key for other mistakes', () => {
    const cases: Array<[Record<string, string>, Record<string, unknown> | undefined, RegExp]> = [
      [
        {},
        { models: { chat: ['azure/gpt-4.1'] } },
        /^config error: llm\.models\.chat\.0: unknown provider 'azure'/,
      ],
      [{}, { models: { chat: ['claude-sonnet-5-5'] } }, /^config error: llm\.models\.chat\.0: /],
      [
        {},
        { providers: { local: { api: 'openai' } } },
        /^config error: llm\.providers\.local\.base_url: required/,
      ],
      [
        { OPENAI_BASE_URL: 'not a url' },
        undefined,
        /^config error: llm\.providers\.openai\.base_url: .*\(from OPENAI_BASE_URL\)$/,
      ],
      [
        {},
        { providers: { Bad: { base_url: 'http://x' } } },
        /^config error: llm\.providers\.Bad: /,
      ],
      [
        {},
        { budgets: { billing_timezone: 'Mars/Olympus' } },
        /^config error: llm\.budgets\.billing_timezone: unknown time zone/,
      ],
      [
        {},
        { budgets: { departments: { legal: { monthly_usd: 10 } } } },
        /^config error: unknown key llm\.budgets\.departments\.legal/,
      ],
      [
        {},
        { budgets: { departments: { sales: { monthly_usd: 0 } } } },
        /^config error: llm\.budgets\.departments\.sales\.monthly_usd: /,
      ],
      [
        {},
        { budgets: { departments: { sales: { monthly_usd: 50, on_exceed: 'downgrade' } } } },
        /^config error: llm\.budgets\.departments\.sales\.downgrade_to: required when on_exceed is 'downgrade'/,
      ],
      [
        { MEZZOFY__llm__retry__max_attempts: '0' },
        undefined,
        /^config error: llm\.retry\.max_attempts: .*\(from MEZZOFY__llm__retry__max_attempts\)$/,
      ],
      [
        {},
        { circuit_breaker: { failures: -1 } },
        /^config error: llm\.circuit_breaker\.failures: /,
      ],
      [{}, { temperature: 1 }, /^config error: unknown key llm\.temperature/],
    ];
    for (const [env, overrides, pattern] of cases) {
      expect(configError(env, overrides), JSON.stringify({ env, overrides })).toMatch(pattern);
    }
  });

  it('budgets: per department, with refuse as the default policy', () => {
    const c = llm(
      {},
      {
        budgets: {
          billing_timezone: 'Asia/Kuala_Lumpur',
          warn_percent: 75,
          departments: {
            sales: { monthly_usd: 200 },
            support: {
              monthly_usd: '50',
              on_exceed: 'downgrade',
              downgrade_to: 'moonshot/kimi-k2-0905-preview',
            },
          },
        },
      },
    );
    expect(c.budgets.billing_timezone).toBe('Asia/Kuala_Lumpur');
    expect(c.budgets.warn_percent).toBe(75);
    expect(c.budgets.departments.sales).toEqual({ monthly_usd: 200, on_exceed: 'refuse' });
    expect(c.budgets.departments.support).toEqual({
      monthly_usd: 50,
      on_exceed: 'downgrade',
      downgrade_to: { provider: 'moonshot', model: 'kimi-k2-0905-preview' },
    });
  });

  it('reads the llm section from a YAML file, with keys from the environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mz-llm-config-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(
      file,
      [
        'llm:',
        '  models:',
        '    chat:',
        '      - { provider: anthropic, model: claude-sonnet-5-5 }',
        '      - moonshot/kimi-k2-0905-preview',
        '  circuit_breaker: { failures: 3, window_s: 30, cooldown_s: 10 }',
        '',
      ].join('\n'),
    );
    const { config } = parseConfig({
      env: { CONFIG_FILE: file, ANTHROPIC_API_KEY: 'k1', MOONSHOT_API_KEY: 'k2' },
    });
    expect(config.llm.models.chat.map(refKey)).toEqual([
      'anthropic/claude-sonnet-5-5',
      'moonshot/kimi-k2-0905-preview',
    ]);
    expect(config.llm.circuit_breaker).toEqual({ failures: 3, window_s: 30, cooldown_s: 10 });
    expect(enabled(config.llm)).toEqual(['anthropic', 'moonshot']);
  });

  it('a model with no price in the YAML file names the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mz-llm-config-'));
    const file = join(dir, 'config.yaml');
    writeFileSync(file, 'llm:\n  models:\n    routing: [openai/o9-mini]\n');
    expect(() => parseConfig({ env: { CONFIG_FILE: file } })).toThrow(
      /^config error: llm\.models\.routing\.0: openai\/o9-mini has no price.* \(in .*config\.yaml\)$/,
    );
  });
});
