/**
 * create_calendar_event: an event in the user's calendar with invitations. External effect —
 * runs only once approved; delivers to the outbox until Graph delivery exists.
 */
import { z } from 'zod';
import { defineTool } from '../tool-registry.ts';
import {
  approvalIdOf,
  EMAIL_MAX,
  type OutboxSink,
  summarizeRecipients,
} from './outbox-delivery.ts';

const MAX_ATTENDEES = 100;
const TITLE_MAX = 300;
const TEXT_MAX = 10_000;

const DateTime = z.iso.datetime({ offset: true });

export const CreateCalendarEventInput = z
  .strictObject({
    title: z.string().trim().min(1).max(TITLE_MAX).describe('Event title.'),
    start: DateTime.describe('Start, ISO-8601 with offset, e.g. 2025-03-04T09:00:00+08:00.'),
    end: DateTime.describe('End, ISO-8601 with offset; after the start.'),
    attendees: z
      .array(z.email().max(EMAIL_MAX))
      .max(MAX_ATTENDEES)
      .default([])
      .describe('E-mail addresses to invite.'),
    location: z.string().trim().max(TITLE_MAX).optional().describe('Place or meeting link.'),
    description: z.string().trim().max(TEXT_MAX).optional().describe('Agenda or notes.'),
  })
  .refine((v) => Date.parse(v.end) > Date.parse(v.start), {
    message: 'end must be after start',
    path: ['end'],
  });

export function createCalendarEventTool(deps: { outbox: OutboxSink }) {
  return defineTool({
    name: 'create_calendar_event',
    description:
      "Create an event in the user's calendar and invite attendees. The user must approve it first.",
    inputSchema: CreateCalendarEventInput,
    effect: 'external',
    permission: 'calendar:write',
    async execute(input, ctx) {
      const item = await deps.outbox.enqueue({
        userId: ctx.principal.id,
        channel: 'calendar',
        recipient: summarizeRecipients(input.attendees, '(no attendees)'),
        subject: input.title,
        payload: { ...input },
        pendingActionId: approvalIdOf(ctx),
      });
      return { queued: true, outbox_id: item.id, title: input.title, start: input.start };
    },
  });
}
