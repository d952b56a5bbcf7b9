/**
 * analyse_table (read): the data_analysis skill's computation for the chat — exact row and
 * column counts, each column's type, sum/mean/min/max of numeric columns, top values of text
 * columns and an optional group-by with an aggregate, on a CSV text or markdown table the
 * user gave in the conversation. Pure computation on the arguments (no database, no model),
 * so it runs at once for anyone who may chat; the numbers come from `analyse()`, never from
 * the model's own arithmetic.
 */
import { z } from 'zod';
import {
  AGGREGATES,
  type Analysis,
  analyse,
  DELIMITERS,
} from '../../skills/available/data_analysis.ts';
import { defineTool } from '../tool-registry.ts';

/**
 * Longest table the model may pass. The model copies the table from the chat into its call,
 * so this is far above a chat message (chat.max_message_chars, 16,000 by default) and far
 * below what a model can write out in one answer would ever need.
 */
export const MAX_TABLE_CHARS = 200_000;
const MAX_NAME_CHARS = 200;
/**
 * A result larger than this (JSON characters) drops the top-value lists so the figures still
 * fit the executor's result cap (tools.result_max_bytes, 16 KiB by default) uncut.
 */
export const COMPACT_ABOVE_CHARS = 12_000;

const columnName = (what: string) =>
  z.string().trim().min(1).max(MAX_NAME_CHARS).optional().describe(what);

export const AnalyseTableInput = z
  .strictObject({
    data: z
      .string()
      .trim()
      .min(1, 'give the table: CSV text or a markdown table')
      .max(
        MAX_TABLE_CHARS,
        `the table is longer than ${MAX_TABLE_CHARS} characters; ask the user for a smaller extract (fewer rows or only the columns that matter)`,
      )
      .describe(
        'The table exactly as the user gave it: CSV text (first row = headers) or a markdown table. Copy every row unchanged; do not round, reorder or drop rows.',
      ),
    delimiter: z
      .enum(DELIMITERS)
      .optional()
      .describe('CSV field separator; detected from the header row when not given.'),
    group_by: columnName('Column to group rows by (e.g. merchant, region, month).'),
    value_column: columnName(
      'Numeric column to aggregate per group (needed with group_by unless aggregate is count).',
    ),
    aggregate: z
      .enum(AGGREGATES)
      .optional()
      .describe('How to combine value_column per group (default sum).'),
    top: z
      .number()
      .int()
      .min(1)
      .max(50)
      .optional()
      .describe('How many of the most frequent values to list per text column (default 5).'),
  })
  .superRefine((input, ctx) => {
    if (!input.group_by)
      for (const key of ['value_column', 'aggregate'] as const)
        if (input[key] !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: [key],
            message: `${key} goes with group_by; name the column to group by`,
          });
  });
export type AnalyseTableInput = z.infer<typeof AnalyseTableInput>;

export type TableAnalysisResult = Analysis & { note?: string };

/** The analysis, without the top-value lists when it would not fit the result cap. */
export function compactAnalysis(analysis: Analysis): TableAnalysisResult {
  if (JSON.stringify(analysis).length <= COMPACT_ABOVE_CHARS) return analysis;
  return {
    ...analysis,
    column_stats: analysis.column_stats.map(({ top: _top, ...rest }) => rest),
    note: 'top values of text columns left out to keep the result small; call again with group_by on a column to count its values',
  };
}

export function analyseTableTool() {
  return defineTool({
    name: 'analyse_table',
    description:
      'Exact statistics on a CSV or markdown table the user gave in the chat: row and column counts, column types, blanks, sum/mean/min/max of numeric columns, top values of text columns, and an optional group-by (sum, mean, count, min or max of a column per group). Use it for every figure you report from such a table instead of calculating yourself.',
    inputSchema: AnalyseTableInput,
    effect: 'read',
    // Pure computation on what the user already sent: anyone who may chat may use it.
    permission: 'chat:use',
    async execute(input) {
      const analysis = analyse(input.data, {
        ...(input.delimiter ? { delimiter: input.delimiter } : {}),
        ...(input.group_by ? { group_by: input.group_by } : {}),
        ...(input.value_column ? { value_column: input.value_column } : {}),
        ...(input.aggregate ? { aggregate: input.aggregate } : {}),
        ...(input.top ? { top: input.top } : {}),
      });
      return compactAnalysis(analysis);
    },
  });
}
