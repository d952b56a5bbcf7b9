/** Kysely table types; they mirror migrations/*.sql. */
import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<
  Date | null,
  Date | string | null | undefined,
  Date | string | null
>;
type Json = ColumnType<Record<string, unknown> | null, string | null | undefined, string | null>;

export interface UsersTable {
  id: Generated<string>;
  email: string;
  password_hash: string;
  name: string;
  department: string;
  role: string;
  is_active: Generated<boolean>;
  timezone: Generated<string>;
  locale: Generated<string>;
  password_changed_at: Generated<Date>;
  deactivated_at: NullableTimestamp;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface ChatSessionsTable {
  id: Generated<string>;
  user_id: string;
  title: string | null;
  agent: string | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
  deleted_at: NullableTimestamp;
  /** The lease of the process running this session's turn (migration 0005). */
  turn_token: string | null;
  turn_expires_at: NullableTimestamp;
  /** The model's summary of older turns, and the created_at of the last message it covers. */
  summary: string | null;
  summary_through: NullableTimestamp;
}

export interface ConversationsTable {
  id: Generated<string>;
  user_id: string | null;
  session_id: string;
  role: string;
  content: string;
  metadata: Json;
  /** User messages only: the client's idempotency key (unique per user). */
  client_message_id: string | null;
  created_at: Generated<Date>;
}

export interface SalesLeadsTable {
  id: Generated<string>;
  company_name: string;
  contact_name: string | null;
  contact_email: string | null;
  contact_phone: string | null;
  industry: string | null;
  location: string | null;
  source: string | null;
  status: Generated<string>;
  assigned_to: string | null;
  notes: string | null;
  created_at: Generated<Date>;
  last_contacted: NullableTimestamp;
  follow_up_date: NullableTimestamp;
}

export interface ArtifactsTable {
  id: Generated<string>;
  user_id: string | null;
  session_id: string | null;
  type: string;
  name: string;
  path: string;
  size_bytes: number | null;
  created_at: Generated<Date>;
}

export interface AuditLogTable {
  id: Generated<number>;
  user_id: string | null;
  department: string | null;
  action: string;
  source: Generated<string>;
  details: Json;
  ip_address: string | null;
  created_at: Generated<Date>;
}

export interface LlmUsageTable {
  id: Generated<number>;
  model: string;
  provider: string | null;
  department: string | null;
  user_id: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  cost_usd: ColumnType<string, string | number | undefined, string | number>;
  status: Generated<string>;
  created_at: Generated<Date>;
  purpose: string | null;
  source: string | null;
  session_id: string | null;
  call_id: string | null;
  attempt: number | null;
  error_kind: string | null;
  error_message: string | null;
  fallback_reason: string | null;
  latency_ms: number | null;
  ttfb_ms: number | null;
}

export interface BudgetAlertsTable {
  department: string;
  month: string;
  level: string;
  spent_usd: ColumnType<string, string | number, string | number>;
  budget_usd: ColumnType<string, string | number, string | number>;
  created_at: Generated<Date>;
}

export interface NotificationsTable {
  id: Generated<string>;
  user_id: string;
  kind: string;
  title: string;
  body: string;
  data: Json;
  created_at: Generated<Date>;
  read_at: NullableTimestamp;
}

export interface EmailLogTable {
  id: Generated<number>;
  user_id: string | null;
  to_address: string;
  subject: string | null;
  status: string | null;
  created_at: Generated<Date>;
}

export interface ScheduledJobsTable {
  id: Generated<string>;
  user_id: string | null;
  name: string;
  agent: string;
  message: string;
  schedule: string;
  deliver_to: ColumnType<Record<string, unknown>, string, string>;
  is_active: Generated<boolean>;
  last_run: NullableTimestamp;
  next_run: NullableTimestamp;
  created_at: Generated<Date>;
}

export interface WebhookEventsTable {
  id: Generated<string>;
  source: string;
  event_type: string;
  payload: ColumnType<Record<string, unknown>, string, string>;
  status: Generated<string>;
  task_id: string | null;
  result: Json;
  created_at: Generated<Date>;
  processed_at: NullableTimestamp;
}

export interface AuthSessionsTable {
  id: Generated<string>;
  user_id: string;
  created_at: Generated<Date>;
  expires_at: Timestamp;
  last_used_at: Generated<Date>;
  revoked_at: NullableTimestamp;
  revoke_reason: string | null;
  ip_address: string | null;
  user_agent: string | null;
}

export interface RefreshTokensTable {
  id: Generated<string>;
  session_id: string;
  token_hash: string;
  created_at: Generated<Date>;
  expires_at: Timestamp;
  used_at: NullableTimestamp;
  replaced_by: string | null;
  revoked_at: NullableTimestamp;
}

export interface LoginFailuresTable {
  key: string;
  failures: number;
  window_started_at: Timestamp;
  locked_until: NullableTimestamp;
}

export interface PushDevicesTable {
  id: Generated<string>;
  user_id: string;
  token: string;
  platform: string;
  created_at: Generated<Date>;
  last_seen_at: Generated<Date>;
  disabled_at: NullableTimestamp;
}

export interface PendingActionsTable {
  id: Generated<string>;
  user_id: string;
  session_id: string | null;
  agent: string | null;
  tool: string;
  arguments: ColumnType<Record<string, unknown>, string, string>;
  arguments_sha256: string;
  status: Generated<string>;
  source: Generated<string>;
  created_at: Timestamp;
  expires_at: Timestamp;
  decided_at: NullableTimestamp;
  decided_by: string | null;
  result: Json;
  tool_call_id: string | null;
  turn_context: Json;
}

export interface OutboxTable {
  id: Generated<string>;
  user_id: string;
  channel: string;
  recipient: string;
  subject: string | null;
  payload: ColumnType<Record<string, unknown>, string, string>;
  status: Generated<string>;
  pending_action_id: string | null;
  created_at: Timestamp;
}

export interface SchemaMigrationsTable {
  version: number;
  name: string;
  checksum: string;
  applied_at: Generated<Date>;
}

export interface DB {
  users: UsersTable;
  chat_sessions: ChatSessionsTable;
  conversations: ConversationsTable;
  sales_leads: SalesLeadsTable;
  artifacts: ArtifactsTable;
  audit_log: AuditLogTable;
  llm_usage: LlmUsageTable;
  budget_alerts: BudgetAlertsTable;
  notifications: NotificationsTable;
  email_log: EmailLogTable;
  scheduled_jobs: ScheduledJobsTable;
  webhook_events: WebhookEventsTable;
  auth_sessions: AuthSessionsTable;
  refresh_tokens: RefreshTokensTable;
  login_failures: LoginFailuresTable;
  push_devices: PushDevicesTable;
  pending_actions: PendingActionsTable;
  outbox: OutboxTable;
  schema_migrations: SchemaMigrationsTable;
}

export type UserRow = Selectable<UsersTable>;
export type NewUser = Insertable<UsersTable>;
export type UserUpdate = Updateable<UsersTable>;
export type AuditRow = Selectable<AuditLogTable>;
export type PendingActionRow = Selectable<PendingActionsTable>;
export type OutboxRow = Selectable<OutboxTable>;
