/**
 * content_generation: drafts marketing copy in Mezzofy's voice with the chat model and the
 * brand context. Returns the draft text; nothing is published.
 */
import type { SkillResult, SkillRun } from '../skill.ts';
import { llmContextOf } from '../skill.ts';

const LANGUAGES: Record<string, string> = {
  en: 'English',
  'zh-Hans': 'Simplified Chinese',
  'zh-Hant': 'Traditional Chinese',
  ms: 'Malay',
};

export const run: SkillRun = async (params, ctx): Promise<SkillResult> => {
  const language = LANGUAGES[String(params.language ?? 'en')] ?? 'English';
  const variants = Number(params.variants ?? 1);
  const system = [
    'You write marketing copy for Mezzofy, a coupon, voucher, loyalty and membership platform for merchants in Asia.',
    'Never invent statistics, customer names, prices or promotions: use a marked placeholder such as [redemption rate] instead.',
    'Answer with the copy only, no preamble.',
    ctx.knowledge(),
  ]
    .filter(Boolean)
    .join('\n\n');
  const prompt = [
    `Channel: ${params.channel}`,
    `Language: ${language}`,
    `Tone: ${params.tone ?? 'friendly'}`,
    variants > 1 ? `Write ${variants} alternative drafts, numbered.` : 'Write one draft.',
    `Brief:\n${params.brief}`,
  ].join('\n');
  const { text, result } = await ctx.llm.complete(
    'chat',
    { system, messages: [{ role: 'user', content: [{ type: 'text', text: prompt }] }] },
    llmContextOf(ctx),
  );
  return {
    status: 'ok',
    text: text.trim(),
    data: {
      channel: params.channel,
      language,
      answered_by: { provider: result.provider, model: result.model },
    },
  };
};
