/**
 * What the communication tools share: the outbox they deliver to and the approval id of the
 * call they run for (the executor passes it; a tool never asks for approval itself).
 */
import type { OutboxService } from '../../output/outbox.service.ts';
import type { ToolContext } from '../tool.ts';
import type { ApprovedToolContext } from '../tool-runner.ts';

export type OutboxSink = Pick<OutboxService, 'enqueue'>;

export const EMAIL_MAX = 254;
export const RECIPIENT_SUMMARY_MAX = 500;

export function approvalIdOf(ctx: ToolContext): string | null {
  return (ctx as ApprovedToolContext).approvalId ?? null;
}

export function summarizeRecipients(list: readonly string[], empty = '(none)'): string {
  const text = list.length ? list.join(', ') : empty;
  return text.length > RECIPIENT_SUMMARY_MAX ? `${text.slice(0, RECIPIENT_SUMMARY_MAX)}…` : text;
}
