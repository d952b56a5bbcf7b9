/** GET /admin/usage: spend and tokens grouped by department, user, model and/or day. */
import type { UsageGroupBy, UsageItem, UsageQuery, UsageReport } from '@mezzofy/protocol';
import type { Database } from '../db/database.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../infra/clock.ts';
import type { LlmConfig } from './llm-config.ts';
import { aggregateUsage } from './usage.repository.ts';

export const MAX_USAGE_RANGE_DAYS = 366;

/** The calendar date of `at` in `tz`, YYYY-MM-DD. */
export function localDate(at: Date, tz: string): string {
  return new Intl.DateTimeFormat('en-CA', {
    timeZone: tz,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
  }).format(at);
}

const KEYS: Record<UsageGroupBy, (keyof UsageItem)[]> = {
  department: ['department'],
  user: ['user_id'],
  model: ['provider', 'model'],
  day: ['day'],
};

export type UsageService = ReturnType<typeof createUsageService>;

export function createUsageService(deps: { database: Database; config: LlmConfig; clock: Clock }) {
  const tz = deps.config.budgets.billing_timezone;
  return {
    async report(query: UsageQuery): Promise<UsageReport> {
      const today = localDate(deps.clock(), tz);
      const from = query.from ?? `${today.slice(0, 8)}01`;
      const to = query.to ?? today;
      if (from > to) throw new AppError('validation_failed', "'from' must not be after 'to'");
      const days = (Date.parse(to) - Date.parse(from)) / 86_400_000 + 1;
      if (days > MAX_USAGE_RANGE_DAYS)
        throw new AppError(
          'validation_failed',
          `the range is ${days} days; ask for at most ${MAX_USAGE_RANGE_DAYS}`,
        );
      const groupBy = query.group_by ?? ['department'];
      const rows = await aggregateUsage(deps.database.db, {
        groupBy,
        from,
        to,
        tz,
        department: query.department,
        userId: query.user_id,
      });
      const keep = new Set(groupBy.flatMap((g) => KEYS[g]));
      const items = rows.map((row) => {
        const item = { ...row } as UsageItem;
        for (const key of ['department', 'user_id', 'provider', 'model', 'day'] as const)
          if (!keep.has(key)) delete item[key];
        return item;
      });
      const totals = { calls: 0, errors: 0, input_tokens: 0, output_tokens: 0, cost_usd: 0 };
      for (const i of items) {
        totals.calls += i.calls;
        totals.errors += i.errors;
        totals.input_tokens += i.input_tokens;
        totals.output_tokens += i.output_tokens;
        totals.cost_usd += i.cost_usd;
      }
      totals.cost_usd = Math.round(totals.cost_usd * 1e6) / 1e6;
      return { items, totals, group_by: groupBy, from, to, timezone: tz };
    },
  };
}
