/**
 * Approvals of external tool actions (send mail, change a calendar, post to Teams, contact a
 * lead) and the outbox those actions deliver to. A pending action is decided by id only;
 * the arguments a person approves are exactly the ones that run.
 */
import { z } from 'zod';
import { PageQuery, pageOf, Timestamp, Uuid } from './common.ts';

export const APPROVAL_STATUSES = [
  'pending',
  'approved',
  'rejected',
  'expired',
  'executed',
  'failed',
] as const;
export const ApprovalStatus = z.enum(APPROVAL_STATUSES);
export type ApprovalStatus = z.infer<typeof ApprovalStatus>;

export const ApprovalView = z.object({
  id: Uuid,
  tool: z.string(),
  /** The canonical arguments that run when approved; changing them needs a new approval. */
  arguments: z.record(z.string(), z.unknown()),
  arguments_sha256: z.string(),
  status: ApprovalStatus,
  session_id: Uuid.nullable(),
  agent: z.string().nullable(),
  created_at: Timestamp,
  expires_at: Timestamp,
  decided_at: Timestamp.nullable(),
  /** Who approved or rejected it; null for expiry and auto-approval. */
  decided_by: Uuid.nullable(),
  /** The tool's outcome once executed or failed: `{ status, output }`. */
  result: z.record(z.string(), z.unknown()).nullable(),
});
export type ApprovalView = z.infer<typeof ApprovalView>;

export const ApprovalListQuery = PageQuery.extend({ status: ApprovalStatus.optional() });
export type ApprovalListQuery = z.infer<typeof ApprovalListQuery>;
export const ApprovalList = pageOf(ApprovalView);
export const ApprovalIdParams = z.strictObject({ id: Uuid });

export const OUTBOX_CHANNELS = ['email', 'calendar', 'teams', 'lead_contact', 'crm_bulk'] as const;
export const OutboxChannel = z.enum(OUTBOX_CHANNELS);
export type OutboxChannel = z.infer<typeof OutboxChannel>;

export const OutboxItemView = z.object({
  id: Uuid,
  /** The sender. */
  user_id: Uuid,
  channel: OutboxChannel,
  /** Who it goes to, summarised (addresses, channel name, lead). */
  recipient: z.string(),
  subject: z.string().nullable(),
  payload: z.record(z.string(), z.unknown()),
  status: z.string(),
  pending_action_id: Uuid.nullable(),
  created_at: Timestamp,
});
export type OutboxItemView = z.infer<typeof OutboxItemView>;

export const OutboxQuery = PageQuery.extend({ channel: OutboxChannel.optional() });
export type OutboxQuery = z.infer<typeof OutboxQuery>;
export const AdminOutboxQuery = OutboxQuery.extend({ user_id: Uuid.optional() });
export type AdminOutboxQuery = z.infer<typeof AdminOutboxQuery>;
export const OutboxList = pageOf(OutboxItemView);
