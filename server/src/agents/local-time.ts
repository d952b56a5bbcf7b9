/** The user's local date and time as one line for the system prompt. */
import type { Locale } from '@mezzofy/protocol';

export function localDateTimeLine(now: Date, timeZone: string, _locale: Locale): string {
  let zone = timeZone;
  let formatted: string;
  let offset = '';
  try {
    formatted = formatIn(now, zone);
  } catch {
    zone = 'UTC';
    formatted = formatIn(now, zone);
  }
  try {
    offset =
      new Intl.DateTimeFormat('en-GB', { timeZone: zone, timeZoneName: 'longOffset' })
        .formatToParts(now)
        .find((p) => p.type === 'timeZoneName')?.value ?? '';
  } catch {
    offset = '';
  }
  return `Current local date/time for the user: ${formatted} (timezone ${zone}${offset ? `, ${offset}` : ''})`;
}

function formatIn(now: Date, timeZone: string): string {
  // Always English and 24-hour: the model reads it, and the user's own language is stated separately.
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    weekday: 'long',
    year: 'numeric',
    month: 'long',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(now);
  const get = (type: string) => parts.find((p) => p.type === type)?.value ?? '';
  const iso = new Intl.DateTimeFormat('en-CA', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
  }).format(now);
  return `${get('weekday')} ${get('day')} ${get('month')} ${get('year')}, ${get('hour')}:${get('minute')} (${iso})`;
}
