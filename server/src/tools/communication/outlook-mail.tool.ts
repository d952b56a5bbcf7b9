/**
 * send_email: mail in the user's name. External effect — runs only once the user approves
 * the exact recipients, subject and body. Delivers to the outbox (and email_log, `queued`);
 * Microsoft Graph delivery comes later behind this same tool.
 */
import { z } from 'zod';
import { defineTool } from '../tool-registry.ts';
import {
  approvalIdOf,
  EMAIL_MAX,
  type OutboxSink,
  summarizeRecipients,
} from './outbox-delivery.ts';

const MAX_RECIPIENTS = 50;
const SUBJECT_MAX = 300;
const BODY_MAX = 50_000;

const Address = z.email().max(EMAIL_MAX);

export const SendEmailInput = z.strictObject({
  to: z
    .array(Address)
    .min(1)
    .max(MAX_RECIPIENTS)
    .describe('Recipient e-mail addresses, exactly as the user asked for them.'),
  cc: z.array(Address).max(MAX_RECIPIENTS).default([]).describe('Copy recipients (optional).'),
  subject: z.string().trim().min(1).max(SUBJECT_MAX).describe('Subject line.'),
  body: z.string().trim().min(1).max(BODY_MAX).describe('Plain-text message body.'),
});

export function sendEmailTool(deps: { outbox: OutboxSink }) {
  return defineTool({
    name: 'send_email',
    description:
      "Send an e-mail in the user's name. The user must approve it before it is sent; you get the result after their decision.",
    inputSchema: SendEmailInput,
    effect: 'external',
    permission: 'mail:send',
    async execute(input, ctx) {
      const recipients = summarizeRecipients([...input.to, ...input.cc]);
      const item = await deps.outbox.enqueue(
        {
          userId: ctx.principal.id,
          channel: 'email',
          recipient: recipients,
          subject: input.subject,
          payload: { to: input.to, cc: input.cc, subject: input.subject, body: input.body },
          pendingActionId: approvalIdOf(ctx),
        },
        { to: recipients, subject: input.subject },
      );
      return { queued: true, outbox_id: item.id, to: input.to, cc: input.cc };
    },
  });
}
