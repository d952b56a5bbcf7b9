/**
 * llm_usage (the ledger: one row per model call attempt), budget_alerts and notifications.
 * Month and day boundaries are computed in SQL in the billing time zone, the same way on
 * PostgreSQL 15 and PGlite.
 */
import type { UsageGroupBy } from '@mezzofy/protocol';
import { sql } from 'kysely';
import { type AuditSource, writeAudit } from '../audit/audit.repository.ts';
import type { Executor } from '../db/executor.ts';
import { prepare, runPrepared } from '../db/prepared.ts';

export type UsageStatus = 'ok' | 'error' | 'aborted';

export interface UsageRow {
  provider: string;
  model: string;
  purpose: string;
  department: string | null;
  userId: string | null;
  source: string;
  sessionId: string | null;
  callId: string;
  attempt: number;
  status: UsageStatus;
  errorKind: string | null;
  errorMessage: string | null;
  fallbackReason: string | null;
  inputTokens: number | null;
  outputTokens: number | null;
  /** NUMERIC(14,6) text. */
  costUsd: string;
  latencyMs: number;
  ttfbMs: number | null;
  createdAt: Date;
}

/** An llm_usage row by column name, as stored (text cut, times rounded). */
export interface UsageColumns {
  provider: string;
  model: string;
  purpose: string;
  department: string | null;
  user_id: string | null;
  source: string;
  session_id: string | null;
  call_id: string;
  attempt: number;
  status: UsageStatus;
  error_kind: string | null;
  error_message: string | null;
  fallback_reason: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  cost_usd: string;
  latency_ms: number;
  ttfb_ms: number | null;
  created_at: Date;
}

export function usageColumns(row: UsageRow): UsageColumns {
  return {
    provider: row.provider,
    model: row.model,
    purpose: row.purpose,
    department: row.department,
    user_id: row.userId,
    source: row.source,
    session_id: row.sessionId,
    call_id: row.callId,
    attempt: row.attempt,
    status: row.status,
    error_kind: row.errorKind,
    error_message: row.errorMessage?.slice(0, 1000) ?? null,
    fallback_reason: row.fallbackReason,
    input_tokens: row.inputTokens,
    output_tokens: row.outputTokens,
    cost_usd: row.costUsd,
    latency_ms: Math.round(row.latencyMs),
    ttfb_ms: row.ttfbMs === null ? null : Math.round(row.ttfbMs),
    created_at: row.createdAt,
  };
}

export const USAGE_COLUMNS = [
  'provider',
  'model',
  'purpose',
  'department',
  'user_id',
  'source',
  'session_id',
  'call_id',
  'attempt',
  'status',
  'error_kind',
  'error_message',
  'fallback_reason',
  'input_tokens',
  'output_tokens',
  'cost_usd',
  'latency_ms',
  'ttfb_ms',
  'created_at',
] as const satisfies readonly (keyof UsageColumns)[];

/**
 * Rows given as one JSON array parameter (`[UsageColumns, ...]`), so a statement inserts any
 * number of them: used to store a turn's last usage row with its answer.
 */
export const usageRowsFromJson = (json: unknown) =>
  sql<UsageColumns>`jsonb_populate_recordset(null::llm_usage, ${json}::jsonb)`;

const insertUsageStatement = prepare<never, 'rows'>('llm_insert_usage', (db, p) =>
  db
    .insertInto('llm_usage')
    .columns(USAGE_COLUMNS)
    .expression((eb) => eb.selectFrom(usageRowsFromJson(p('rows')).as('u')).select(USAGE_COLUMNS)),
);

/** Model call attempts (every model call writes one, on the hot path of a chat turn). */
export async function insertUsage(db: Executor, ...rows: UsageRow[]): Promise<void> {
  if (rows.length === 0) return;
  await runPrepared(db, insertUsageStatement, { rows: JSON.stringify(rows.map(usageColumns)) });
}

/** Start of the month containing `now`, in `tz`, as a timestamptz expression. */
const monthStart = (now: Date, tz: string) =>
  sql`(date_trunc('month', ${now}::timestamptz at time zone ${tz}) at time zone ${tz})`;

/** The department's spend in the billing month containing `now`, and that month (YYYY-MM). */
export async function monthSpend(
  db: Executor,
  department: string,
  now: Date,
  tz: string,
): Promise<{ month: string; spentUsd: number }> {
  const start = monthStart(now, tz);
  const result = await sql<{ month: string; spent: number }>`
    select to_char(${now}::timestamptz at time zone ${tz}, 'YYYY-MM') as month,
           coalesce(sum(cost_usd), 0)::float8 as spent
      from llm_usage
     where department = ${department}
       and created_at >= ${start}
       and created_at < (date_trunc('month', ${now}::timestamptz at time zone ${tz})
                         + interval '1 month') at time zone ${tz}`.execute(db);
  const row = result.rows[0]!;
  return { month: row.month, spentUsd: Number(row.spent) };
}

export interface UsageFilter {
  groupBy: UsageGroupBy[];
  /** Inclusive calendar days, YYYY-MM-DD, in `tz`. */
  from: string;
  to: string;
  tz: string;
  department?: string | undefined;
  userId?: string | undefined;
}

export interface UsageAggregate {
  department?: string | null;
  user_id?: string | null;
  provider?: string | null;
  model?: string;
  day?: string;
  calls: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
}

/** Sums per group; with no group_by, one row of totals. */
export async function aggregateUsage(db: Executor, f: UsageFilter): Promise<UsageAggregate[]> {
  const columns: ReturnType<typeof sql>[] = [];
  const groups: ReturnType<typeof sql>[] = [];
  for (const g of f.groupBy) {
    if (g === 'department') {
      columns.push(sql`department`);
      groups.push(sql`department`);
    } else if (g === 'user') {
      columns.push(sql`user_id`);
      groups.push(sql`user_id`);
    } else if (g === 'model') {
      columns.push(sql`provider`, sql`model`);
      groups.push(sql`provider`, sql`model`);
    } else {
      const day = sql`to_char(created_at at time zone ${f.tz}, 'YYYY-MM-DD')`;
      columns.push(sql`${day} as day`);
      groups.push(day);
    }
  }
  const where = [
    sql`created_at >= (${f.from}::date)::timestamp at time zone ${f.tz}`,
    sql`created_at < (${f.to}::date + 1)::timestamp at time zone ${f.tz}`,
  ];
  if (f.department) where.push(sql`department = ${f.department}`);
  if (f.userId) where.push(sql`user_id = ${f.userId}`);
  const positions = groups.map((_, i) => sql.raw(String(i + 1)));
  const result = await sql<UsageAggregate>`
    select ${sql.join([
      ...columns,
      sql`count(*)::int as calls`,
      sql`(count(*) filter (where status <> 'ok'))::int as errors`,
      sql`coalesce(sum(input_tokens), 0)::float8 as input_tokens`,
      sql`coalesce(sum(output_tokens), 0)::float8 as output_tokens`,
      sql`round(coalesce(sum(cost_usd), 0), 6)::float8 as cost_usd`,
    ])}
      from llm_usage
     where ${sql.join(where, sql` and `)}
     ${groups.length ? sql`group by ${sql.join(positions)} order by ${sql.join(positions)}` : sql``}`.execute(
    db,
  );
  return result.rows.map((r) => ({
    ...r,
    input_tokens: Number(r.input_tokens),
    output_tokens: Number(r.output_tokens),
    cost_usd: Number(r.cost_usd),
  }));
}

export type AlertLevel = 'warning' | 'exceeded';

export interface BudgetAlert {
  department: string;
  month: string;
  level: AlertLevel;
  spentUsd: number;
  budgetUsd: number;
  /** Whose call noticed it (audit user), if a user's. */
  userId: string | null;
  source: AuditSource;
  notification: { kind: string; title: string; body: string; data: Record<string, unknown> };
}

/**
 * Who hears about a department's budget: active users of that department whose role is a
 * `*_manager` role, and every active executive (management sees every department's spend).
 */
export async function budgetRecipients(db: Executor, department: string): Promise<string[]> {
  const rows = await db
    .selectFrom('users')
    .select('id')
    .where('is_active', '=', true)
    .where((eb) =>
      eb.or([
        eb.and([eb('department', '=', department), eb('role', 'like', '%\\_manager')]),
        eb('role', '=', 'executive'),
      ]),
    )
    .orderBy('id')
    .execute();
  return rows.map((r) => r.id);
}

/**
 * Raises the alert once: the first caller inserts the (department, month, level) row and, in
 * the same transaction, writes the audit row and one notification per recipient; everyone
 * else conflicts and does nothing. Returns whether this call raised it.
 */
export async function raiseBudgetAlert(
  db: Executor,
  alert: BudgetAlert,
  action: string,
): Promise<boolean> {
  const inserted = await db
    .insertInto('budget_alerts')
    .values({
      department: alert.department,
      month: alert.month,
      level: alert.level,
      spent_usd: alert.spentUsd.toFixed(6),
      budget_usd: alert.budgetUsd.toFixed(6),
    })
    .onConflict((oc) => oc.columns(['department', 'month', 'level']).doNothing())
    .returning('department')
    .executeTakeFirst();
  if (!inserted) return false;
  const recipients = await budgetRecipients(db, alert.department);
  await writeAudit(db, {
    userId: alert.userId,
    department: alert.department,
    action,
    source: alert.source,
    details: { ...alert.notification.data, notified_user_ids: recipients },
  });
  if (recipients.length) {
    await db
      .insertInto('notifications')
      .values(
        recipients.map((userId) => ({
          user_id: userId,
          kind: alert.notification.kind,
          title: alert.notification.title,
          body: alert.notification.body,
          data: JSON.stringify(alert.notification.data),
        })),
      )
      .execute();
  }
  return true;
}
