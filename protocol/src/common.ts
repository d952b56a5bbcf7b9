/** Shapes shared by every endpoint: pagination, timestamps, ids, departments, locales. */
import { z } from 'zod';

export const MAX_PAGE_LIMIT = 100;
export const DEFAULT_PAGE_LIMIT = 20;

export const Uuid = z.uuid();
/** Times on the wire are UTC ISO-8601 strings with a `Z` suffix. */
export const Timestamp = z.iso.datetime();

export const PageQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_LIMIT).default(DEFAULT_PAGE_LIMIT),
  cursor: z.string().max(512).optional(),
});
export type PageQuery = z.infer<typeof PageQuery>;

export function pageOf<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item), next_cursor: z.string().nullable() });
}

export const DEPARTMENTS = ['finance', 'sales', 'marketing', 'support', 'management'] as const;
export const Department = z.enum(DEPARTMENTS);
export type Department = z.infer<typeof Department>;

export const LOCALES = ['en', 'zh', 'ms'] as const;
export const Locale = z.enum(LOCALES);
export type Locale = z.infer<typeof Locale>;

/** IANA time zone name, checked against the runtime's zone database. */
export const TimeZone = z
  .string()
  .min(1)
  .max(64)
  .refine((tz) => {
    try {
      new Intl.DateTimeFormat('en', { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  }, 'unknown time zone');

export const OkResponse = z.object({ ok: z.literal(true) });
