/** sales_leads: the CRM's leads, searched by the sales tools. */

import type { Selectable } from 'kysely';
import type { Executor } from '../db/executor.ts';
import type { DB } from '../db/schema.ts';

export type LeadRow = Selectable<DB['sales_leads']>;

export interface LeadFilter {
  query?: string | undefined;
  status?: string | undefined;
  industry?: string | undefined;
  location?: string | undefined;
  assignedTo?: string | undefined;
  limit: number;
}

const escapeLike = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

export function searchLeads(db: Executor, filter: LeadFilter): Promise<LeadRow[]> {
  let q = db.selectFrom('sales_leads').selectAll();
  if (filter.query) {
    const like = escapeLike(filter.query);
    q = q.where((eb) =>
      eb.or([
        eb('company_name', 'ilike', like),
        eb('contact_name', 'ilike', like),
        eb('contact_email', 'ilike', like),
      ]),
    );
  }
  if (filter.status) q = q.where('status', '=', filter.status);
  if (filter.industry) q = q.where('industry', 'ilike', escapeLike(filter.industry));
  if (filter.location) q = q.where('location', 'ilike', escapeLike(filter.location));
  if (filter.assignedTo) q = q.where('assigned_to', '=', filter.assignedTo);
  return q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute();
}

export function findLead(db: Executor, id: string): Promise<LeadRow | undefined> {
  return db.selectFrom('sales_leads').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Records an outreach: last_contacted now, and a new lead moves to `contacted`. */
export async function markLeadContacted(db: Executor, id: string, now: Date): Promise<void> {
  await db.updateTable('sales_leads').set({ last_contacted: now }).where('id', '=', id).execute();
  await db
    .updateTable('sales_leads')
    .set({ status: 'contacted' })
    .where('id', '=', id)
    .where('status', '=', 'new')
    .execute();
}
