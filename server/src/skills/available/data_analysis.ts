/**
 * data_analysis: real statistics on a CSV text or a markdown table given in the chat or a
 * quick action — row/column counts, each column's type, min/max/mean/sum of numeric
 * columns, top values of text columns, and an optional group-by with an aggregate. Pure
 * computation: no model is involved, so the numbers are exact.
 */
import { parse as parseCsv } from 'csv-parse/sync';
import { AppError } from '../../errors.ts';
import type { SkillResult, SkillRun } from '../skill.ts';

const MAX_ROWS = 100_000;
const MAX_COLUMNS = 200;
const MAX_GROUPS = 100;
const DEFAULT_TOP = 5;

export type ColumnType = 'number' | 'date' | 'boolean' | 'text' | 'empty';

export interface ColumnStats {
  name: string;
  type: ColumnType;
  /** Non-empty cells. */
  count: number;
  missing: number;
  distinct: number;
  min?: number | string;
  max?: number | string;
  sum?: number;
  mean?: number;
  top?: { value: string; count: number }[];
}

export interface GroupRow {
  group: string;
  value: number;
  rows: number;
}

export interface Analysis {
  format: 'csv' | 'markdown';
  rows: number;
  columns: number;
  column_stats: ColumnStats[];
  group_by?: {
    column: string;
    value_column: string | null;
    aggregate: Aggregate;
    groups: GroupRow[];
  };
}

/** How a group's values are combined (the skill's `aggregate` parameter). */
export const AGGREGATES = ['sum', 'mean', 'count', 'min', 'max'] as const;
export type Aggregate = (typeof AGGREGATES)[number];
/** Field separators a CSV may use (the skill's `delimiter` parameter). */
export const DELIMITERS = [',', ';', '\t', '|'] as const;

/** Drops float noise such as 0.30000000000000004 without hiding real precision. */
const tidy = (n: number) => Number.parseFloat(n.toPrecision(12));

/** "1,234.50", "$12", "RM 8.90", "HK$100", "-5%" → number; anything else → null. */
export function toNumber(cell: string): number | null {
  let s = cell.trim();
  if (s === '') return null;
  let negative = false;
  if (/^\(.*\)$/.test(s)) {
    negative = true;
    s = s.slice(1, -1);
  }
  s = s.replace(/^(?:[A-Z]{0,3}\$|RM|SGD|HKD|MYR|USD|CNY|RMB|¥|€|£)\s*/i, '').replace(/%$/, '');
  if (!/^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][-+]?\d+)?$/.test(s) || !/\d/.test(s))
    return null;
  const n = Number(s.replaceAll(',', ''));
  if (!Number.isFinite(n)) return null;
  return negative ? -n : n;
}

const DATE = /^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?)?$/;
const BOOL = /^(true|false|yes|no)$/i;

function isMarkdownTable(text: string): boolean {
  const lines = text.trim().split(/\r?\n/);
  return (
    lines.length >= 2 && lines[0]!.trim().startsWith('|') && /^\s*\|?\s*:?-{3,}/.test(lines[1]!)
  );
}

function parseMarkdown(text: string): string[][] {
  const rows: string[][] = [];
  for (const line of text.trim().split(/\r?\n/)) {
    const t = line.trim();
    if (!t.startsWith('|')) continue;
    const inner = t.replace(/^\|/, '').replace(/\|$/, '');
    const cells = inner.split(/(?<!\\)\|/).map((c) => c.trim().replaceAll('\\|', '|'));
    if (cells.every((c) => /^:?-{3,}:?$/.test(c))) continue;
    rows.push(cells);
  }
  return rows;
}

function detectDelimiter(text: string): string {
  const header = text.split(/\r?\n/, 1)[0] ?? '';
  let best = ',';
  let bestCount = 0;
  for (const d of DELIMITERS) {
    const count = header.split(d).length - 1;
    if (count > bestCount) {
      best = d;
      bestCount = count;
    }
  }
  return best;
}

function parseTable(
  data: string,
  delimiter?: string,
): { format: Analysis['format']; header: string[]; rows: string[][] } {
  let table: string[][];
  let format: Analysis['format'];
  if (isMarkdownTable(data)) {
    format = 'markdown';
    table = parseMarkdown(data);
  } else {
    format = 'csv';
    try {
      table = parseCsv(data.trim(), {
        delimiter: delimiter ?? detectDelimiter(data.trim()),
        relax_column_count: true,
        skip_empty_lines: true,
        trim: true,
        bom: true,
      }) as string[][];
    } catch (err) {
      throw new AppError('bad_request', `the data is not readable CSV: ${(err as Error).message}`);
    }
  }
  const [header, ...rows] = table;
  if (!header || header.length === 0)
    throw new AppError('bad_request', 'the data has no header row');
  if (header.length > MAX_COLUMNS)
    throw new AppError(
      'bad_request',
      `the data has ${header.length} columns; at most ${MAX_COLUMNS}`,
    );
  if (rows.length === 0)
    throw new AppError(
      'bad_request',
      'the data is not a table: it has no rows under the header row; give CSV text (first row = headers, then one row per line) or a markdown table',
    );
  if (rows.length > MAX_ROWS)
    throw new AppError('bad_request', `the data has ${rows.length} rows; at most ${MAX_ROWS}`);
  // Unnamed or repeated headers get a position so every column stays addressable.
  const seen = new Set<string>();
  const names = header.map((h, i) => {
    let name = h.trim() || `column_${i + 1}`;
    if (seen.has(name)) name = `${name}_${i + 1}`;
    seen.add(name);
    return name;
  });
  return { format, header: names, rows };
}

function topValues(values: string[], top: number) {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, top)
    .map(([value, count]) => ({ value, count }));
}

function columnStats(name: string, cells: string[], top: number): ColumnStats {
  const present = cells.map((c) => c.trim()).filter((c) => c !== '');
  const base = {
    name,
    count: present.length,
    missing: cells.length - present.length,
    distinct: new Set(present).size,
  };
  if (present.length === 0) return { ...base, type: 'empty' };
  const numbers = present.map(toNumber);
  if (numbers.every((n) => n !== null)) {
    const ns = numbers as number[];
    const sum = ns.reduce((a, b) => a + b, 0);
    return {
      ...base,
      type: 'number',
      min: Math.min(...ns),
      max: Math.max(...ns),
      sum: tidy(sum),
      mean: tidy(sum / ns.length),
    };
  }
  if (present.every((c) => DATE.test(c))) {
    const sorted = [...present].sort();
    return { ...base, type: 'date', min: sorted[0]!, max: sorted.at(-1)! };
  }
  if (present.every((c) => BOOL.test(c)))
    return {
      ...base,
      type: 'boolean',
      top: topValues(
        present.map((c) => c.toLowerCase()),
        top,
      ),
    };
  return { ...base, type: 'text', top: topValues(present, top) };
}

function findColumn(header: string[], wanted: string): number {
  const exact = header.indexOf(wanted);
  if (exact >= 0) return exact;
  const loose = header.findIndex((h) => h.toLowerCase() === wanted.trim().toLowerCase());
  if (loose >= 0) return loose;
  throw new AppError(
    'bad_request',
    `there is no column "${wanted}"; columns: ${header.join(', ')}`,
  );
}

function groupBy(
  header: string[],
  rows: string[][],
  column: string,
  valueColumn: string | undefined,
  aggregate: Aggregate,
): NonNullable<Analysis['group_by']> {
  const g = findColumn(header, column);
  const v = valueColumn === undefined ? -1 : findColumn(header, valueColumn);
  if (v < 0 && aggregate !== 'count')
    throw new AppError('bad_request', `value_column is needed to ${aggregate} per ${column}`);
  const groups = new Map<string, { values: number[]; rows: number }>();
  for (const row of rows) {
    const key = (row[g] ?? '').trim() || '(blank)';
    const entry = groups.get(key) ?? { values: [], rows: 0 };
    entry.rows += 1;
    if (v >= 0) {
      const n = toNumber(row[v] ?? '');
      if (n !== null) entry.values.push(n);
    }
    groups.set(key, entry);
  }
  const result: GroupRow[] = [...groups.entries()].map(([group, e]) => {
    const sum = e.values.reduce((a, b) => a + b, 0);
    const value =
      aggregate === 'count'
        ? v >= 0
          ? e.values.length
          : e.rows
        : aggregate === 'sum'
          ? sum
          : e.values.length === 0
            ? Number.NaN
            : aggregate === 'mean'
              ? sum / e.values.length
              : aggregate === 'min'
                ? Math.min(...e.values)
                : Math.max(...e.values);
    return { group, value: Number.isNaN(value) ? 0 : tidy(value), rows: e.rows };
  });
  result.sort((a, b) => b.value - a.value || a.group.localeCompare(b.group));
  return {
    column: header[g]!,
    value_column: v >= 0 ? header[v]! : null,
    aggregate,
    groups: result.slice(0, MAX_GROUPS),
  };
}

export interface AnalyseOptions {
  delimiter?: string;
  group_by?: string;
  value_column?: string;
  aggregate?: Aggregate;
  top?: number;
}

export function analyse(data: string, options: AnalyseOptions = {}): Analysis {
  const { format, header, rows } = parseTable(data, options.delimiter);
  const top = options.top ?? DEFAULT_TOP;
  const analysis: Analysis = {
    format,
    rows: rows.length,
    columns: header.length,
    column_stats: header.map((name, i) =>
      columnStats(
        name,
        rows.map((r) => r[i] ?? ''),
        top,
      ),
    ),
  };
  if (options.group_by)
    analysis.group_by = groupBy(
      header,
      rows,
      options.group_by,
      options.value_column,
      options.aggregate ?? 'sum',
    );
  return analysis;
}

const fmt = (n: number | string | undefined) =>
  typeof n === 'number' ? n.toLocaleString('en', { maximumFractionDigits: 2 }) : String(n);

export function describeAnalysis(a: Analysis): string {
  const lines = [`${a.rows} rows × ${a.columns} columns (${a.format}).`];
  for (const c of a.column_stats) {
    const missing = c.missing ? `, ${c.missing} blank` : '';
    if (c.type === 'number')
      lines.push(
        `- ${c.name} (number, ${c.count} values${missing}): sum ${fmt(c.sum)}, mean ${fmt(c.mean)}, min ${fmt(c.min)}, max ${fmt(c.max)}`,
      );
    else if (c.type === 'date')
      lines.push(`- ${c.name} (date, ${c.count} values${missing}): ${c.min} to ${c.max}`);
    else if (c.type === 'empty') lines.push(`- ${c.name}: empty`);
    else
      lines.push(
        `- ${c.name} (${c.type}, ${c.distinct} distinct${missing}): ${(c.top ?? []).map((t) => `${t.value} ×${t.count}`).join(', ')}`,
      );
  }
  if (a.group_by) {
    const g = a.group_by;
    lines.push(`${g.aggregate} of ${g.value_column ?? 'rows'} by ${g.column}:`);
    for (const row of g.groups) lines.push(`- ${row.group}: ${fmt(row.value)} (${row.rows} rows)`);
  }
  return lines.join('\n');
}

export const run: SkillRun = async (params): Promise<SkillResult> => {
  const analysis = analyse(String(params.data), {
    ...(params.delimiter ? { delimiter: String(params.delimiter) } : {}),
    ...(params.group_by ? { group_by: String(params.group_by) } : {}),
    ...(params.value_column ? { value_column: String(params.value_column) } : {}),
    ...(params.aggregate ? { aggregate: params.aggregate as Aggregate } : {}),
    ...(params.top ? { top: Number(params.top) } : {}),
  });
  return { status: 'ok', text: describeAnalysis(analysis), data: analysis };
};
