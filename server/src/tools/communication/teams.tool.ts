/**
 * post_teams_message: a message to a Teams channel in the user's name. External effect —
 * runs only once approved; delivers to the outbox until Graph delivery exists.
 */
import { z } from 'zod';
import { defineTool } from '../tool-registry.ts';
import { approvalIdOf, type OutboxSink } from './outbox-delivery.ts';

const CHANNEL_MAX = 200;
const TEXT_MAX = 20_000;

export const PostTeamsMessageInput = z.strictObject({
  channel: z.string().trim().min(1).max(CHANNEL_MAX).describe('Teams channel name, e.g. "sales".'),
  text: z.string().trim().min(1).max(TEXT_MAX).describe('Message text.'),
});

export function postTeamsMessageTool(deps: { outbox: OutboxSink }) {
  return defineTool({
    name: 'post_teams_message',
    description: 'Post a message to a Microsoft Teams channel. The user must approve it first.',
    inputSchema: PostTeamsMessageInput,
    effect: 'external',
    permission: 'teams:post',
    async execute(input, ctx) {
      const item = await deps.outbox.enqueue({
        userId: ctx.principal.id,
        channel: 'teams',
        recipient: input.channel,
        subject: null,
        payload: { channel: input.channel, text: input.text },
        pendingActionId: approvalIdOf(ctx),
      });
      return { queued: true, outbox_id: item.id, channel: input.channel };
    },
  });
}
