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

  it('reuses the line within a minute and moves with the clock, across a DST change too', () => {
    const zone = 'Europe/London';
    // London springs forward at 01:00 UTC on 29 March 2026: 00:59 GMT, then 02:00 BST.
    const before = localDateTimeLine(new Date('2026-03-29T00:59:10Z'), zone, 'en');
    expect(before).toMatch(/00:59 \(2026-03-29\) \(timezone Europe\/London, GMT(\+00:00)?\)$/);
    expect(localDateTimeLine(new Date('2026-03-29T00:59:50Z'), zone, 'en')).toBe(before);
    expect(localDateTimeLine(new Date('2026-03-29T01:00:00Z'), zone, 'en')).toContain(
      '02:00 (2026-03-29) (timezone Europe/London, GMT+01:00)',
    );
    // Back in time (a test clock): not the cached line.
    expect(localDateTimeLine(new Date('2026-03-28T12:00:00Z'), zone, 'en')).toContain(
      'Saturday 28 March 2026, 12:00',
    );
  });

  it('reads an unknown time zone as UTC', () => {
    expect(localDateTimeLine(at, 'Mars/Olympus_Mons', 'en')).toMatch(
      /^Current local date\/time for the user: Wednesday 25 November 2026, 23:30 \(2026-11-25\) \(timezone UTC, GMT(\+00:00)?\)$/,
    );
  });
});
