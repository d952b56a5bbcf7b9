/**
 * email_outreach: drafts an e-mail with the chat model, then hands it to the tool executor
 * as a `send_email` call. Sending mail is an external effect, so the executor parks it as a
 * pending approval: this skill never sends anything itself and returns the approval id.
 */
import { randomUUID } from 'node:crypto';
import { AppError } from '../../errors.ts';
import { llmContextOf, type SkillResult, type SkillRun } from '../skill.ts';

export const SEND_EMAIL_TOOL = 'send_email';

const LANGUAGES: Record<string, string> = {
  en: 'English',
  'zh-Hans': 'Simplified Chinese',
  'zh-Hant': 'Traditional Chinese',
  ms: 'Malay',
};

/** The model answers `Subject: …` on the first line, then the body. */
export function parseDraft(text: string): { subject: string; body: string } | null {
  const trimmed = text.trim();
  const match = /^\s*(?:\*\*)?subject(?:\*\*)?\s*[:：]\s*(.+)\r?\n([\s\S]+)$/i.exec(trimmed);
  if (!match) return null;
  const subject = match[1]!.replace(/\*\*/g, '').trim();
  const body = match[2]!.trim();
  return subject && body ? { subject, body } : null;
}

export const run: SkillRun = async (params, ctx): Promise<SkillResult> => {
  const to = params.to as string[];
  const language = LANGUAGES[String(params.language ?? 'en')] ?? 'English';
  const system = [
    'You draft business e-mails for a Mezzofy employee. Mezzofy sells a coupon, voucher, loyalty and membership platform to merchants in Asia.',
    'Answer in exactly this form: the first line is "Subject: <subject>", then a blank line, then the body. Nothing else.',
    'Keep it short, one purpose, one call to action. Never invent results, meetings, prices or discounts the brief does not state.',
    `Sign off as ${ctx.principal.name}.`,
    ctx.knowledge(),
  ]
    .filter(Boolean)
    .join('\n\n');
  const prompt = [
    `Recipients: ${to.join(', ')}`,
    params.recipient_name ? `Greet: ${params.recipient_name}` : '',
    `Language: ${language}`,
    `Tone: ${params.tone ?? 'friendly'}`,
    `Purpose:\n${params.purpose}`,
  ]
    .filter(Boolean)
    .join('\n');
  const { text } = await ctx.llm.complete(
    'chat',
    { system, messages: [{ role: 'user', content: [{ type: 'text', text: prompt }] }] },
    llmContextOf(ctx),
  );
  const draft = parseDraft(text);
  if (!draft)
    throw new AppError(
      'llm_unavailable',
      'the model did not return an e-mail draft (subject and body); try again',
    );

  const outcome = await ctx.tools.execute(
    {
      id: `skill_${randomUUID()}`,
      name: SEND_EMAIL_TOOL,
      input: { to, subject: draft.subject, body: draft.body },
    },
    {
      principal: ctx.principal,
      sessionId: ctx.sessionId,
      source: ctx.source,
      signal: ctx.signal,
      log: ctx.log,
    },
    [SEND_EMAIL_TOOL],
  );
  if (outcome.status === 'pending_approval')
    return {
      status: 'pending_approval',
      text: `Draft e-mail to ${to.join(', ')} is waiting for your approval.\n\nSubject: ${draft.subject}\n\n${draft.body}`,
      data: { to, subject: draft.subject, body: draft.body },
      approvalId: outcome.approvalId,
    };
  if (outcome.status === 'error')
    return {
      status: 'error',
      text: outcome.output,
      data: { to, subject: draft.subject, body: draft.body },
    };
  // Only when config lists the user's role in tools.auto_approve_roles does the executor run
  // an external tool at once; report it plainly as sent by that policy.
  return {
    status: 'ok',
    text: `E-mail to ${to.join(', ')} was sent without asking (your role is auto-approved).\n\n${outcome.output}`,
    data: { to, subject: draft.subject, body: draft.body },
  };
};
