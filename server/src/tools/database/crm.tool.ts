/**
 * CRM tools over sales_leads: search_leads (read, runs at once, a bounded page of rows) and
 * contact_lead (external: a message to the lead's contact, only once the user approves).
 */
import { z } from 'zod';
import { findLead, markLeadContacted, searchLeads } from '../../crm/leads.repository.ts';
import type { Database } from '../../db/database.ts';
import type { Clock } from '../../infra/clock.ts';
import { approvalIdOf, type OutboxSink } from '../communication/outbox-delivery.ts';
import { defineTool } from '../tool-registry.ts';

const MAX_ROWS = 50;
const DEFAULT_ROWS = 20;
const NOTES_PREVIEW = 300;
const LEAD_STATUSES = [
  'new',
  'contacted',
  'qualified',
  'proposal',
  'closed_won',
  'closed_lost',
] as const;

export const SearchLeadsInput = z.strictObject({
  query: z
    .string()
    .trim()
    .max(200)
    .optional()
    .describe('Text found in the company name, contact name or contact e-mail.'),
  status: z.enum(LEAD_STATUSES).optional().describe('Pipeline stage.'),
  industry: z.string().trim().max(100).optional().describe('Industry (part of the name).'),
  location: z.string().trim().max(100).optional().describe('Location (part of the name).'),
  assigned_to_me: z.boolean().default(false).describe('Only leads assigned to the user.'),
  limit: z.number().int().min(1).max(MAX_ROWS).default(DEFAULT_ROWS).describe('Rows to return.'),
});

export function searchLeadsTool(deps: { database: Database }) {
  return defineTool({
    name: 'search_leads',
    description: 'Search the CRM sales leads by text, stage, industry or location.',
    inputSchema: SearchLeadsInput,
    effect: 'read',
    permission: 'crm:read',
    async execute(input, ctx) {
      const rows = await searchLeads(deps.database.db, {
        query: input.query,
        status: input.status,
        industry: input.industry,
        location: input.location,
        assignedTo: input.assigned_to_me ? ctx.principal.id : undefined,
        limit: input.limit,
      });
      return {
        count: rows.length,
        leads: rows.map((r) => ({
          id: r.id,
          company_name: r.company_name,
          contact_name: r.contact_name,
          contact_email: r.contact_email,
          industry: r.industry,
          location: r.location,
          status: r.status,
          assigned_to: r.assigned_to,
          last_contacted: r.last_contacted?.toISOString() ?? null,
          follow_up_date: r.follow_up_date?.toISOString() ?? null,
          notes:
            r.notes && r.notes.length > NOTES_PREVIEW
              ? `${r.notes.slice(0, NOTES_PREVIEW)}…`
              : r.notes,
        })),
      };
    },
  });
}

export const ContactLeadInput = z.strictObject({
  lead_id: z.uuid().describe('The lead to contact (id from search_leads).'),
  subject: z.string().trim().min(1).max(300).describe('Subject line.'),
  message: z.string().trim().min(1).max(10_000).describe("Message to the lead's contact."),
});

export function contactLeadTool(deps: { database: Database; outbox: OutboxSink; clock: Clock }) {
  return defineTool({
    name: 'contact_lead',
    description:
      "Send a message to a sales lead's contact and record the outreach. The user must approve it first.",
    inputSchema: ContactLeadInput,
    effect: 'external',
    permission: 'crm:write',
    async execute(input, ctx) {
      const lead = await findLead(deps.database.db, input.lead_id);
      if (!lead) throw new Error(`no lead with id ${input.lead_id}`);
      if (!lead.contact_email) throw new Error(`lead ${lead.company_name} has no contact e-mail`);
      const item = await deps.outbox.enqueue(
        {
          userId: ctx.principal.id,
          channel: 'lead_contact',
          recipient: `${lead.company_name} <${lead.contact_email}>`,
          subject: input.subject,
          payload: {
            lead_id: lead.id,
            company_name: lead.company_name,
            to: lead.contact_email,
            subject: input.subject,
            message: input.message,
          },
          pendingActionId: approvalIdOf(ctx),
        },
        { to: lead.contact_email, subject: input.subject },
      );
      await markLeadContacted(deps.database.db, lead.id, deps.clock());
      return { queued: true, outbox_id: item.id, lead_id: lead.id, to: lead.contact_email };
    },
  });
}
