/**
 * The tools every server registers: table analysis, CRM lookups and the communication tools.
 */
import type { Database } from '../db/database.ts';
import type { Clock } from '../infra/clock.ts';
import { analyseTableTool } from './analysis/table-analysis.tool.ts';
import type { OutboxSink } from './communication/outbox-delivery.ts';
import { createCalendarEventTool } from './communication/outlook-calendar.tool.ts';
import { sendEmailTool } from './communication/outlook-mail.tool.ts';
import { postTeamsMessageTool } from './communication/teams.tool.ts';
import { contactLeadTool, searchLeadsTool } from './database/crm.tool.ts';
import type { AnyTool } from './tool-registry.ts';

export function defaultTools(deps: {
  database: Database;
  outbox: OutboxSink;
  clock: Clock;
}): AnyTool[] {
  return [
    analyseTableTool(),
    searchLeadsTool(deps),
    contactLeadTool(deps),
    sendEmailTool(deps),
    createCalendarEventTool(deps),
    postTeamsMessageTool(deps),
  ];
}
