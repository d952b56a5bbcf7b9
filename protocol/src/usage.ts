/**
 * GET /admin/usage: LLM calls, tokens and spend, grouped by department, user, model and/or
 * day. Days are calendar days in the company's billing time zone (the answer names it).
 */
import { z } from 'zod';
import { Department, Uuid } from './common.ts';

export const USAGE_GROUP_BY = ['department', 'user', 'model', 'day'] as const;
export const UsageGroupBy = z.enum(USAGE_GROUP_BY);
export type UsageGroupBy = z.infer<typeof UsageGroupBy>;

/** A calendar date, YYYY-MM-DD. */
export const IsoDate = z.iso.date();

/** `group_by=department&group_by=day` or `group_by=department,day`. */
const GroupByList = z.preprocess((v) => {
  const parts = (Array.isArray(v) ? v : [v]).flatMap((p) =>
    typeof p === 'string' ? p.split(',').map((s) => s.trim()) : [p],
  );
  return [...new Set(parts.filter((p) => p !== ''))];
}, z.array(UsageGroupBy).min(1).max(USAGE_GROUP_BY.length));

export const UsageQuery = z.strictObject({
  /** One or more of department, user, model, day; default department. */
  group_by: GroupByList.optional(),
  /** First day, inclusive (billing time zone); default the first day of this month. */
  from: IsoDate.optional(),
  /** Last day, inclusive (billing time zone); default today. At most 366 days after `from`. */
  to: IsoDate.optional(),
  department: Department.optional(),
  user_id: Uuid.optional(),
});
export type UsageQuery = z.infer<typeof UsageQuery>;

const Totals = {
  /** Model calls made, failed attempts included. */
  calls: z.number().int(),
  /** Of those, attempts that failed or were cancelled. */
  errors: z.number().int(),
  input_tokens: z.number().int(),
  output_tokens: z.number().int(),
  cost_usd: z.number(),
};

/** One group; only the keys named in group_by are present. */
export const UsageItem = z.object({
  department: z.string().nullable().optional(),
  user_id: Uuid.nullable().optional(),
  provider: z.string().nullable().optional(),
  model: z.string().optional(),
  day: IsoDate.optional(),
  ...Totals,
});
export type UsageItem = z.infer<typeof UsageItem>;

export const UsageReport = z.object({
  items: z.array(UsageItem),
  totals: z.object(Totals),
  group_by: z.array(UsageGroupBy),
  from: IsoDate,
  to: IsoDate,
  /** The billing time zone the days are counted in. */
  timezone: z.string(),
});
export type UsageReport = z.infer<typeof UsageReport>;
