/** The user's local date and time as one line for the system prompt. */
import type { Locale } from '@mezzofy/protocol';

interface Formatters {
  zone: string;
  /** The last line made, for the minute it was made in (the line has minute resolution). */
  last?: { minute: number; line: string };
  long: Intl.DateTimeFormat;
  iso: Intl.DateTimeFormat;
  offset: Intl.DateTimeFormat;
}

/** Building an Intl.DateTimeFormat costs far more than using one: one set per time zone. */
const formatters = new Map<string, Formatters>();
const MAX_ZONES = 500;

function formattersFor(timeZone: string): Formatters {
  const cached = formatters.get(timeZone);
  if (cached) return cached;
  let zone = timeZone;
  let made: Formatters;
  try {
    made = make(zone);
  } catch {
    // An unknown zone (a bad value stored for the user) reads as UTC.
    zone = 'UTC';
    made = make(zone);
  }
  if (formatters.size >= MAX_ZONES) formatters.clear();
  formatters.set(timeZone, made);
  return made;
}

function make(timeZone: string): Formatters {
  // Always English and 24-hour: the model reads it, and the user's own language is stated separately.
  return {
    zone: timeZone,
    long: new Intl.DateTimeFormat('en-GB', {
      timeZone,
      weekday: 'long',
      year: 'numeric',
      month: 'long',
      day: 'numeric',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    }),
    iso: new Intl.DateTimeFormat('en-CA', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
    }),
    offset: new Intl.DateTimeFormat('en-GB', { timeZone, timeZoneName: 'longOffset' }),
  };
}

export function localDateTimeLine(now: Date, timeZone: string, _locale: Locale): string {
  const f = formattersFor(timeZone);
  // Zone offsets change on whole minutes, so one line serves every turn of the same minute.
  const minute = Math.floor(now.getTime() / 60_000);
  if (f.last?.minute === minute) return f.last.line;
  const parts = f.long.formatToParts(now);
  const get = (type: string) => parts.find((p) => p.type === type)?.value ?? '';
  const formatted = `${get('weekday')} ${get('day')} ${get('month')} ${get('year')}, ${get('hour')}:${get('minute')} (${f.iso.format(now)})`;
  const offset = f.offset.formatToParts(now).find((p) => p.type === 'timeZoneName')?.value ?? '';
  const line = `Current local date/time for the user: ${formatted} (timezone ${f.zone}${offset ? `, ${offset}` : ''})`;
  f.last = { minute, line };
  return line;
}
