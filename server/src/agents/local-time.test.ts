import { describe, expect, it } from 'vitest';
import { localDateTimeLine } from './local-time.ts';

describe('localDateTimeLine', () => {
  const at = new Date('2026-11-25T23:30:00Z');

  it("states the user's local date, time and offset", () => {
    expect(localDateTimeLine(at, 'Asia/Singapore', 'en')).toBe(
      'Current local date/time for the user: Thursday 26 November 2026, 07:30 (2026-11-26) (timezone Asia/Singapore, GMT+08:00)',
    );
    // The same zone again (formatters reused) at another instant.
    expect(localDateTimeLine(new Date('2026-07-01T00:05:00Z'), 'Asia/Singapore', 'en')).toBe(
      'Current local date/time for the user: Wednesday 1 July 2026, 08:05 (2026-07-01) (timezone Asia/Singapore, GMT+08:00)',
    );
  });

  it('reads an unknown time zone as UTC', () => {
    expect(localDateTimeLine(at, 'Mars/Olympus_Mons', 'en')).toMatch(
      /^Current local date\/time for the user: Wednesday 25 November 2026, 23:30 \(2026-11-25\) \(timezone UTC, GMT(\+00:00)?\)$/,
    );
  });
});
