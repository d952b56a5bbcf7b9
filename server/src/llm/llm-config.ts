/**
 * The `llm` config section: providers, models per purpose (primary, then fallbacks), prices,
 * retry and failover limits, the circuit breaker and department budgets. Validated with the
 * rest of the config at boot; a model without a price, an unknown provider or a missing
 * downgrade target stops start-up with one `config error:` line naming it.
 */
import { Department, TimeZone } from '@mezzofy/protocol';
import { z } from 'zod';
import type { ModelPurpose } from './types.ts';

export const MODEL_PURPOSES = ['chat', 'vision', 'routing', 'long_document', 'summary'] as const;

/** Providers known by name: their wire API, hosted endpoint and the env var of their key. */
export const WELL_KNOWN_PROVIDERS = {
  anthropic: {
    api: 'anthropic',
    base_url: 'https://api.anthropic.com',
    key_env: 'ANTHROPIC_API_KEY',
    label: 'Claude',
  },
  moonshot: {
    api: 'openai',
    base_url: 'https://api.moonshot.ai/v1',
    key_env: 'MOONSHOT_API_KEY',
    label: 'Kimi',
  },
  openai: {
    api: 'openai',
    base_url: 'https://api.openai.com/v1',
    key_env: 'OPENAI_API_KEY',
    label: 'OpenAI',
  },
} as const;
type WellKnown = keyof typeof WELL_KNOWN_PROVIDERS;
const isWellKnown = (name: string): name is WellKnown => Object.hasOwn(WELL_KNOWN_PROVIDERS, name);

/** Purposes whose default is other purposes' lists (as resolved, configured or not). */
export const DERIVED_PURPOSES = {
  // Summaries of older chat turns: the cheap routing models first, then the chat models.
  summary: ['routing', 'chat'],
} as const satisfies Partial<Record<ModelPurpose, readonly ModelPurpose[]>>;
type BasePurpose = Exclude<ModelPurpose, keyof typeof DERIVED_PURPOSES>;

/**
 * Used when `llm.models.<purpose>` is not set; entries whose provider is not enabled are
 * skipped at call time, so with both keys set chat is Claude then Kimi.
 */
export const DEFAULT_MODELS: Record<BasePurpose, string[]> = {
  chat: ['anthropic/claude-sonnet-5-5', 'moonshot/kimi-k2-0905-preview', 'openai/gpt-4.1'],
  // Kimi K2 reads text only; Claude and GPT-4.1 read images.
  vision: ['anthropic/claude-sonnet-5-5', 'openai/gpt-4.1'],
  routing: ['anthropic/claude-haiku-5-5', 'moonshot/kimi-k2-0905-preview', 'openai/gpt-4.1-mini'],
  long_document: ['anthropic/claude-sonnet-5-5', 'moonshot/kimi-k2-0905-preview', 'openai/gpt-4.1'],
};

/**
 * List prices in USD per million tokens (standard tier, no caching) of the default models and
 * their predecessors. Haiku 5.5 costs more for prompts over 100k tokens; routing and summary
 * prompts stay far below that. (Sonnet 4.5 reaches end of life on 2026-11-30.)
 */
export const DEFAULT_PRICES: Record<string, Price> = {
  'anthropic/claude-sonnet-5-5': { input_per_mtok: 2, output_per_mtok: 10 },
  'anthropic/claude-haiku-5-5': { input_per_mtok: 0.1, output_per_mtok: 0.5 },
  'anthropic/claude-sonnet-4-5': { input_per_mtok: 3, output_per_mtok: 15 },
  'anthropic/claude-haiku-4-5': { input_per_mtok: 1, output_per_mtok: 5 },
  'moonshot/kimi-k2-0905-preview': { input_per_mtok: 0.6, output_per_mtok: 2.5 },
  'openai/gpt-4.1': { input_per_mtok: 2, output_per_mtok: 8 },
  'openai/gpt-4.1-mini': { input_per_mtok: 0.4, output_per_mtok: 1.6 },
};

const Int = (min: number) => z.coerce.number().int().min(min);
const Bool = z.preprocess(
  (v) => (typeof v === 'string' ? ['1', 'true', 'yes', 'on'].includes(v.toLowerCase()) : v),
  z.boolean(),
);
const ProviderName = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,31}$/, 'provider names are lower-case letters, digits, - and _');

export interface ModelRef {
  provider: string;
  model: string;
}
const REF = /^([a-z][a-z0-9_-]{0,31})\/(\S+)$/;
/** `{ provider, model }` or the short form `"provider/model"`. */
const ModelRefSchema = z.union([
  z.strictObject({ provider: ProviderName, model: z.string().min(1) }),
  z
    .string()
    .regex(REF, 'must be "provider/model", e.g. anthropic/claude-sonnet-4-5')
    .transform((s): ModelRef => {
      const [, provider, model] = REF.exec(s)!;
      return { provider: provider!, model: model! };
    }),
]);
/** A list, or (from the environment) a comma-separated string of "provider/model". */
const ModelList = z.preprocess(
  (v) =>
    typeof v === 'string'
      ? v
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : v,
  z.array(ModelRefSchema),
);

const PriceSchema = z.strictObject({
  input_per_mtok: z.coerce.number().min(0),
  output_per_mtok: z.coerce.number().min(0),
});
export type Price = z.infer<typeof PriceSchema>;

const ProviderSchema = z.strictObject({
  /** Wire API; well-known names imply it, other providers default to `openai`. */
  api: z.enum(['anthropic', 'openai']).optional(),
  api_key: z.string().min(1).optional(),
  /** Anthropic: without /v1 (a trailing /v1 is dropped). OpenAI-compatible: with /v1. */
  base_url: z.url().optional(),
  /** Force a provider off (or on, for a keyless server on the hosted URL). */
  enabled: Bool.optional(),
});

const DepartmentBudget = z.strictObject({
  monthly_usd: z.coerce.number().positive(),
  /** At 100 %: refuse new calls, or answer with `downgrade_to` instead. */
  on_exceed: z.enum(['refuse', 'downgrade']).default('refuse'),
  downgrade_to: ModelRefSchema.optional(),
});

export const LlmConfigInput = z.strictObject({
  providers: z.record(ProviderName, ProviderSchema).default({}),
  models: z
    .strictObject({
      chat: ModelList.optional(),
      vision: ModelList.optional(),
      routing: ModelList.optional(),
      long_document: ModelList.optional(),
      /** Unset: the routing models, then the chat models. */
      summary: ModelList.optional(),
    })
    .prefault({}),
  /** Keyed "provider/model"; overrides and extends DEFAULT_PRICES. */
  prices: z.record(z.string(), PriceSchema).default({}),
  retry: z
    .strictObject({
      /** Tries per candidate model (the first included) before failing over. */
      max_attempts: Int(1).max(10).default(2),
      base_delay_ms: Int(0).default(500),
      max_delay_ms: Int(0).default(8_000),
      /** A longer retry-after is not waited for: the call fails over at once. */
      max_retry_after_ms: Int(0).default(10_000),
    })
    .prefault({}),
  /** No stream event within this time aborts the attempt (counted as a timeout). */
  first_byte_timeout_ms: Int(1).default(30_000),
  /**
   * A request asked without streaming (a REST turn: nobody reads it as it is written) must
   * have its whole answer within this time, or the attempt is aborted as a timeout and the
   * next model is tried at once (not the same one again). Shorter than
   * agents.turn_timeout_ms, so that a fallback still has time.
   */
  response_timeout_ms: Int(1).default(90_000),
  /**
   * How the SDKs reach the providers: `node` (node:http/https keep-alive agents given to the
   * SDKs as their fetch; cheaper per call) or `fetch` (the global fetch, the SDKs' default).
   */
  http_client: z.enum(['node', 'fetch']).default('node'),
  circuit_breaker: z
    .strictObject({
      /** This many failures of one provider/model within window_s open its circuit. */
      failures: Int(1).default(5),
      window_s: Int(1).default(60),
      /** Open this long, then one probe call is let through. */
      cooldown_s: Int(1).default(30),
    })
    .prefault({}),
  budgets: z
    .strictObject({
      billing_timezone: TimeZone.default('Asia/Singapore'),
      /** One warning per department per month when spend reaches this share of the budget. */
      warn_percent: Int(1).max(100).default(80),
      departments: z.partialRecord(Department, DepartmentBudget).default({}),
    })
    .prefault({}),
});
type LlmConfigInput = z.infer<typeof LlmConfigInput>;

export interface ResolvedProvider {
  name: string;
  api: 'anthropic' | 'openai';
  api_key: string | undefined;
  base_url: string;
  /** Has a key, or points at a self-hosted/proxy URL that needs none. */
  enabled: boolean;
  /** The env var that sets its key, for messages. */
  key_env: string;
  /** How people call it ("Claude", "Kimi"). */
  label: string;
}

export type LlmConfig = Omit<LlmConfigInput, 'providers' | 'models' | 'prices'> & {
  providers: Record<string, ResolvedProvider>;
  /** Candidates per purpose, in order; those on disabled providers are skipped per call. */
  models: Record<ModelPurpose, ModelRef[]>;
  /** Defaults merged with configured prices, keyed "provider/model". */
  prices: Record<string, Price>;
  /** Whether each purpose's list was configured (true) or is the default (false). */
  models_configured: Record<ModelPurpose, boolean>;
};

export const refKey = (ref: ModelRef) => `${ref.provider}/${ref.model}`;
const trimSlash = (url: string) => url.replace(/\/+$/, '');

function resolveProviders(input: LlmConfigInput): Record<string, ResolvedProvider> {
  const out: Record<string, ResolvedProvider> = {};
  const names = new Set([...Object.keys(WELL_KNOWN_PROVIDERS), ...Object.keys(input.providers)]);
  for (const name of names) {
    const p = input.providers[name] ?? {};
    const known = isWellKnown(name) ? WELL_KNOWN_PROVIDERS[name] : undefined;
    const api = p.api ?? known?.api ?? 'openai';
    let baseUrl = trimSlash(p.base_url ?? known?.base_url ?? '');
    // The Anthropic SDK appends /v1/messages itself.
    if (api === 'anthropic') baseUrl = baseUrl.replace(/\/v1$/, '');
    const selfHosted = baseUrl !== '' && (!known || baseUrl !== trimSlash(known.base_url));
    out[name] = {
      name,
      api,
      api_key: p.api_key,
      base_url: baseUrl,
      enabled: p.enabled ?? (baseUrl !== '' && (p.api_key !== undefined || selfHosted)),
      key_env: known?.key_env ?? `MEZZOFY__llm__providers__${name}__api_key`,
      label: known?.label ?? name,
    };
  }
  return out;
}

/** Resolves defaults and checks references; issues name the key that is wrong. */
export const LlmConfigSchema = LlmConfigInput.transform((input, ctx): LlmConfig => {
  const issue = (path: (string | number)[], message: string) =>
    ctx.issues.push({ code: 'custom', message, input, path });
  const providers = resolveProviders(input);
  for (const [name, p] of Object.entries(providers)) {
    if (!p.base_url)
      issue(['providers', name, 'base_url'], `required for provider '${name}' (its API's URL)`);
  }
  const prices = { ...DEFAULT_PRICES, ...input.prices };
  const checkRef = (ref: ModelRef, path: (string | number)[]) => {
    if (!providers[ref.provider]) {
      issue(path, `unknown provider '${ref.provider}'; declare it under llm.providers`);
    } else if (!prices[refKey(ref)]) {
      issue(
        path,
        `${refKey(ref)} has no price; add llm.prices."${refKey(ref)}" with input_per_mtok and output_per_mtok (USD per million tokens)`,
      );
    }
  };
  const models = {} as Record<ModelPurpose, ModelRef[]>;
  const configured = {} as Record<ModelPurpose, boolean>;
  const defaults = (purpose: ModelPurpose): ModelRef[] =>
    Object.hasOwn(DERIVED_PURPOSES, purpose)
      ? DERIVED_PURPOSES[purpose as keyof typeof DERIVED_PURPOSES].flatMap((p) => models[p])
      : DEFAULT_MODELS[purpose as BasePurpose].map(parseRef);
  // MODEL_PURPOSES lists derived purposes after the ones they default to.
  for (const purpose of MODEL_PURPOSES) {
    const list = input.models[purpose];
    configured[purpose] = list !== undefined;
    models[purpose] = (list ?? defaults(purpose)).filter(
      (ref, i, all) => all.findIndex((r) => refKey(r) === refKey(ref)) === i,
    );
    for (const [i, ref] of (list ?? []).entries()) checkRef(ref, ['models', purpose, i]);
  }
  for (const [department, budget] of Object.entries(input.budgets.departments)) {
    if (!budget) continue;
    const path = ['budgets', 'departments', department, 'downgrade_to'];
    if (budget.downgrade_to) checkRef(budget.downgrade_to, path);
    else if (budget.on_exceed === 'downgrade')
      issue(path, "required when on_exceed is 'downgrade' (the cheaper model to switch to)");
  }
  return { ...input, providers, models, prices, models_configured: configured };
});

export function parseRef(text: string): ModelRef {
  const match = REF.exec(text);
  if (!match) throw new Error(`not a provider/model reference: ${text}`);
  return { provider: match[1]!, model: match[2]! };
}
