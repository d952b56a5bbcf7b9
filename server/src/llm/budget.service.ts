/**
 * Monthly AI budgets per department (llm.budgets). Before each call: month-to-date spend in
 * the billing time zone; at 100 % refuse (budget_exceeded) or downgrade, as configured. At
 * the warning share (80 %) and at 100 %, one alert per department, month and level: an audit
 * row and a notification to the department's managers, raised exactly once even when many
 * calls cross the line together (a unique budget_alerts row decides who raises it).
 *
 * A soft limit: calls already running when the budget is reached finish and are charged.
 */
import type { Department } from '@mezzofy/protocol';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { Database } from '../db/database.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../infra/clock.ts';
import type { Logger } from '../logging/logger.ts';
import { type LlmConfig, type ModelRef, refKey } from './llm-config.ts';
import { type AlertLevel, monthSpend, raiseBudgetAlert } from './usage.repository.ts';

export type BudgetDecision =
  | { action: 'allow' }
  | { action: 'downgrade'; to: ModelRef; spentUsd: number; budgetUsd: number; month: string };

export interface BudgetContext {
  department: Department;
  userId: string | null;
  source: AuditSource;
}

export interface BudgetStatus {
  department: string;
  month: string;
  spentUsd: number;
  budgetUsd: number;
  /** Spent / budget, in percent, rounded down. */
  percent: number;
  level: AlertLevel | null;
}

export type BudgetService = ReturnType<typeof createBudgetService>;

const usd = (n: number) => `$${n.toFixed(2)}`;
const capital = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/** The first day of the month after `month` (YYYY-MM), as YYYY-MM-DD. */
export function nextMonthStart(month: string): string {
  const [y, m] = month.split('-').map(Number) as [number, number];
  return m === 12 ? `${y + 1}-01-01` : `${y}-${String(m + 1).padStart(2, '0')}-01`;
}

export function createBudgetService(deps: {
  config: LlmConfig;
  database: Database;
  clock: Clock;
  log: Logger;
}) {
  const { config, database, clock, log } = deps;
  const { billing_timezone: tz, warn_percent: warnPercent } = config.budgets;
  /** Alerts this process knows are raised, so a crossed line costs no transaction per call. */
  const raised = new Set<string>();

  async function status(department: string): Promise<BudgetStatus | null> {
    const budget = config.budgets.departments[department as Department];
    if (!budget) return null;
    const { month, spentUsd } = await monthSpend(database.db, department, clock(), tz);
    const ratio = spentUsd / budget.monthly_usd;
    const level: AlertLevel | null =
      ratio >= 1 ? 'exceeded' : ratio * 100 >= warnPercent ? 'warning' : null;
    return {
      department,
      month,
      spentUsd,
      budgetUsd: budget.monthly_usd,
      percent: Math.floor(ratio * 100),
      level,
    };
  }

  function policyText(department: Department): string {
    const budget = config.budgets.departments[department]!;
    return budget.on_exceed === 'downgrade' && budget.downgrade_to
      ? `requests switch to the cheaper ${refKey(budget.downgrade_to)}`
      : 'new requests are refused';
  }

  async function alert(s: BudgetStatus, ctx: BudgetContext): Promise<void> {
    if (!s.level) return;
    const key = `${s.department}|${s.month}|${s.level}`;
    if (raised.has(key)) return;
    const department = s.department as Department;
    const name = capital(department);
    const resets = nextMonthStart(s.month);
    const notification =
      s.level === 'warning'
        ? {
            kind: 'budget_warning',
            title: `${name} has used ${s.percent}% of its AI budget`,
            body: `${name} has spent ${usd(s.spentUsd)} of its ${usd(s.budgetUsd)} AI budget for ${s.month}. At 100% ${policyText(department)} until ${resets}.`,
          }
        : {
            kind: 'budget_exceeded',
            title: `${name} has used up its AI budget`,
            body: `${name} has spent ${usd(s.spentUsd)} of its ${usd(s.budgetUsd)} AI budget for ${s.month}; ${policyText(department)} until ${resets}.`,
          };
    try {
      await database.db.transaction().execute((trx) =>
        raiseBudgetAlert(
          trx,
          {
            department,
            month: s.month,
            level: s.level!,
            spentUsd: s.spentUsd,
            budgetUsd: s.budgetUsd,
            userId: ctx.userId,
            source: 'system',
            notification: {
              ...notification,
              data: {
                department,
                month: s.month,
                level: s.level,
                percent: s.percent,
                spent_usd: Number(s.spentUsd.toFixed(6)),
                budget_usd: s.budgetUsd,
                resets_on: resets,
                triggered_by: ctx.source,
              },
            },
          },
          s.level === 'warning' ? 'llm.budget_warning' : 'llm.budget_exceeded',
        ),
      );
      raised.add(key);
    } catch (err) {
      // The call itself goes on; the next call tries again.
      log.error({ err, department, month: s.month, level: s.level }, 'budget alert not raised');
    }
  }

  return {
    status,

    /** Throws budget_exceeded, or tells the manager to downgrade, or allows the call. */
    async beforeCall(ctx: BudgetContext): Promise<BudgetDecision> {
      const s = await status(ctx.department);
      if (!s) return { action: 'allow' };
      await alert(s, ctx);
      if (s.level !== 'exceeded') return { action: 'allow' };
      const budget = config.budgets.departments[ctx.department]!;
      if (budget.on_exceed === 'downgrade' && budget.downgrade_to) {
        return {
          action: 'downgrade',
          to: budget.downgrade_to,
          spentUsd: s.spentUsd,
          budgetUsd: s.budgetUsd,
          month: s.month,
        };
      }
      throw budgetExceeded(s, tz);
    },

    /** After a call was charged: raise the alert it may have crossed. */
    async afterCall(ctx: BudgetContext): Promise<void> {
      const s = await status(ctx.department);
      if (s) await alert(s, ctx);
    },
  };
}

export function budgetExceeded(s: BudgetStatus, tz: string, extra = ''): AppError {
  const resets = nextMonthStart(s.month);
  return new AppError(
    'budget_exceeded',
    `the ${s.department} department has used its AI budget for ${s.month} (${usd(s.spentUsd)} of ${usd(s.budgetUsd)})${extra}; the assistant is paused for ${s.department} until ${resets} (${tz}) unless an administrator raises llm.budgets.departments.${s.department}.monthly_usd`,
    {
      details: {
        department: s.department,
        month: s.month,
        spent_usd: Number(s.spentUsd.toFixed(6)),
        budget_usd: s.budgetUsd,
        resets_on: resets,
        timezone: tz,
      },
    },
  );
}
