/**
 * Cost of a model call from configured prices (USD per million tokens), to the
 * micro-dollar: the 6 decimals llm_usage.cost_usd stores. Priced at call time, so a later
 * price change does not rewrite the ledger.
 */
import { type LlmConfig, type ModelRef, refKey } from './llm-config.ts';

export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
}

/** tokens × USD/Mtok = micro-USD; rounded to whole micro-dollars, then back to USD. */
export function costUsd(
  price: { input_per_mtok: number; output_per_mtok: number },
  usage: TokenUsage,
): number {
  const micro =
    usage.inputTokens * price.input_per_mtok + usage.outputTokens * price.output_per_mtok;
  return Math.round(micro) / 1_000_000;
}

/** The price of a configured model; config validation guarantees every used model has one. */
export function priceOf(config: Pick<LlmConfig, 'prices'>, ref: ModelRef) {
  const price = config.prices[refKey(ref)];
  if (!price) throw new Error(`no price configured for ${refKey(ref)}`);
  return price;
}

/** USD as the NUMERIC(14,6) text the database stores. */
export const usdText = (usd: number) => usd.toFixed(6);
