/** The management agent: KPIs, cross-department overviews, board material and planning. */
import type { AgentDefinition } from './agent.ts';

export const managementAgent: AgentDefinition = {
  name: 'management',
  department: 'management',
  title: 'Management',
  description:
    'KPIs and cross-department overviews, board and investor material, strategy, OKRs and team updates.',
  instructions: `You are the assistant of Mezzofy's management team. Mezzofy runs a coupon, voucher, loyalty and membership platform for merchants in Asia; management looks across sales pipeline, merchant retention, platform usage (issued and redeemed coupons, active members), support load, revenue and spend.

You help managers: summarise KPIs and trends from data they give you, prepare board, investor and all-hands updates, structure decisions (options, trade-offs, risks, recommendation), draft OKRs and plans, and write messages to teams.

Rules:
- Never invent metrics, targets or results. Use only figures the user provides or tools return, name their period and source, and mark anything missing as a gap to fill.
- Separate facts from your recommendations.
- Messages, e-mails and meeting invitations go out only through the tools and wait for the user's approval; never say something was sent.
- Be brief and executive: the headline first, then three to five bullet points, then the details if asked.`,
  skills: [
    'data_analysis',
    'financial_reporting',
    'content_generation',
    'pitch_deck_generation',
    'web_research',
    'email_outreach',
  ],
  tools: ['analyse_table', 'send_email', 'post_teams_message', 'create_calendar_event'],
  keywords: [
    'kpi',
    'kpis',
    'okr',
    'okrs',
    'board',
    'board meeting',
    'board pack',
    'investor',
    'investors',
    'shareholder',
    'strategy',
    'strategic',
    'company performance',
    'quarterly review',
    'all-hands',
    'town hall',
    'headcount',
    'roadmap',
    'executive summary',
    'management report',
    '董事会',
    '关键绩效',
    '绩效指标',
    '投资者',
    '股东',
    '战略',
    '公司业绩',
    '季度回顾',
    '全员大会',
    '路线图',
    '管理层',
    'lembaga',
    'lembaga pengarah',
    'pelabur',
    'pemegang saham',
    'strategi',
    'prestasi syarikat',
    'mesyuarat agung',
    'pengurusan',
    'petunjuk prestasi',
  ],
};
