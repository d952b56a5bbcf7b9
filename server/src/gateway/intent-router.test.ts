/**
 * The router on labelled requests (keyword fast path in English, Chinese and Malay, and
 * requests without any keyword resolved by a scripted classifier), its precedence order,
 * the classifier's failure modes (timeout, invalid answer, no model → department) and the
 * agent permission check.
 */
import type { Department } from '@mezzofy/protocol';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AgentName } from '../agents/agent.ts';
import { AGENTS } from '../agents/registry.ts';
import type { Principal } from '../auth/principal.ts';
import { AppError } from '../errors.ts';
import type { LlmEvent, LlmRequest } from '../llm/llm-call.ts';
import type { ModelPurpose } from '../llm/types.ts';
import { createIntentRouter, parseClassifierAnswer } from './intent-router.ts';

const ALL = ['finance', 'sales', 'marketing', 'support', 'management'].map((a) => `agent:${a}`);

function principal(department: Department, agents: string[] = ALL): Principal {
  return {
    id: '00000000-0000-4000-8000-000000000001',
    email: 'u@mezzofy.test',
    name: 'Test User',
    role: 'executive',
    department,
    permissions: new Set(['chat:use', ...agents]),
    sessionId: 's1',
    timezone: 'Asia/Hong_Kong',
    locale: 'en',
  };
}

type Answer = string | { hang: true } | { error: true };

/** A routing model that answers from a script keyed by the user's text. */
function scriptedClassifier(answers: (text: string) => Answer, configured = true) {
  const seen: { purpose: ModelPurpose; text: string; system: string | undefined }[] = [];
  const llm = {
    configured: () => configured,
    async *stream(
      purpose: ModelPurpose,
      request: LlmRequest,
      ctx: { signal?: AbortSignal },
    ): AsyncGenerator<LlmEvent, never> {
      const part = request.messages[0]!.content[0]!;
      const text = part.type === 'text' ? part.text : '';
      seen.push({ purpose, text, system: request.system });
      const answer = answers(text);
      if (typeof answer !== 'string') {
        if ('error' in answer) throw new AppError('llm_unavailable', 'every model failed');
        await new Promise((_, reject) => {
          ctx.signal?.addEventListener('abort', () => reject(ctx.signal?.reason), { once: true });
        });
      }
      yield { type: 'text-delta', text: answer as string };
      throw new Error('not reached in these tests');
    },
  };
  // The router only reads text deltas and stops at the end of the stream.
  const wrapped = {
    configured: llm.configured,
    async *stream(purpose: ModelPurpose, request: LlmRequest, ctx: { signal?: AbortSignal }) {
      const it = llm.stream(purpose, request, ctx);
      const first = await it.next();
      if (!first.done) yield first.value;
    },
  };
  return { llm: wrapped as never, seen };
}

const log = pino({ level: 'silent' });
const router = (answers: (text: string) => Answer, timeoutMs = 2_000, configured = true) => {
  const c = scriptedClassifier(answers, configured);
  return {
    ...c,
    router: createIntentRouter({ agents: AGENTS, llm: c.llm, classifierTimeoutMs: timeoutMs, log }),
  };
};

const KEYWORD_CASES: [string, AgentName][] = [
  ['Can you check which invoices are overdue for March?', 'finance'],
  ['Reconcile the bank export with our receivables', 'finance'],
  ['请帮我核对这个月的发票', 'finance'],
  ['Sila semak invois pelanggan bulan lepas', 'finance'],
  ['What is our budget for Q3 events?', 'finance'],
  ['Find new leads in the F&B sector in Singapore', 'sales'],
  ['Draft a follow-up for the prospect we met yesterday', 'sales'],
  ['帮我找一些潜在客户', 'sales'],
  ['Senaraikan prospek baharu di Kuala Lumpur', 'sales'],
  ['Plan a campaign for the Lunar New Year coupons', 'marketing'],
  ['写一篇营销文案介绍会员积分', 'marketing'],
  ['Sediakan kempen promosi Hari Raya', 'marketing'],
  ['Write an Instagram caption for our new e-voucher feature', 'marketing'],
  ['A merchant opened a ticket: coupons cannot redeem at the counter', 'support'],
  ['客户投诉积分没有到账', 'support'],
  ['Ada aduan daripada pelanggan tentang baucar', 'support'],
  ['Summarise the KPI trends for the board meeting', 'management'],
  ['准备下周董事会的材料', 'management'],
  ['Sediakan laporan untuk lembaga pengarah', 'management'],
  ['Draft our OKRs for next quarter', 'management'],
];

/** No keyword of any agent: only the (scripted) classifier can tell. */
const CLASSIFIER_CASES: [string, AgentName][] = [
  ['How much did we charge Kopi House last month, and have they settled it?', 'finance'],
  ['Which merchants still owe us money?', 'finance'],
  ['Who should I call this week to close Q2?', 'sales'],
  ['This mall group might want our platform, how do I approach them?', 'sales'],
  ['Give me three ideas to get more merchants to notice us on social', 'marketing'],
  ['我们下个月应该发什么推送给商户？', 'marketing'],
  ['A shop says the redemption app keeps logging them out, what do I tell them?', 'support'],
  ['Pelanggan tidak dapat log masuk ke portal pedagang', 'support'],
  ['How are we doing overall this quarter compared with the plan?', 'management'],
  ['What should the leadership team focus on next month?', 'management'],
  ['Draft a thank-you note to a merchant who renewed', 'sales'],
  ['Where is the money going this year?', 'finance'],
];

describe('intent router: labelled requests', () => {
  it('has at least 30 labelled requests, at least 10 without any keyword', () => {
    expect(KEYWORD_CASES.length + CLASSIFIER_CASES.length).toBeGreaterThanOrEqual(30);
    expect(CLASSIFIER_CASES.length).toBeGreaterThanOrEqual(10);
  });

  it.each(KEYWORD_CASES)('keyword: %s → %s', async (text, agent) => {
    const r = router(() => '{"agent":"support"}');
    const decision = await r.router.route({ principal: principal('sales'), text, source: 'web' });
    expect(decision).toEqual({ agent, by: 'keyword' });
    expect(r.seen).toHaveLength(0);
  });

  it.each(CLASSIFIER_CASES)('classifier: %s → %s', async (text, agent) => {
    const labels = new Map(CLASSIFIER_CASES);
    const r = router((t) => JSON.stringify({ agent: labels.get(t) }));
    const keywordHit = r.router.keywords.match(text);
    expect(keywordHit).toBeNull();
    const decision = await r.router.route({
      principal: principal('support'),
      text,
      source: 'mobile',
    });
    expect(decision).toEqual({ agent, by: 'classifier' });
    expect(r.seen).toHaveLength(1);
    expect(r.seen[0]!.purpose).toBe('routing');
    expect(r.seen[0]!.system).toContain('{"agent":"<name>"}');
    // The classifier reads the user's own words and chooses among every agent.
    expect(r.seen[0]!.text).toContain(text);
    for (const name of AGENTS.keys()) expect(r.seen[0]!.system).toContain(name);
  });

  it.each(CLASSIFIER_CASES)('classifier, answering another agent: %s', async (text, agent) => {
    // The router follows the classifier, not its own guess: a different valid answer wins.
    const other = [...AGENTS.keys()].find((a) => a !== agent)!;
    const r = router(() => JSON.stringify({ agent: other }));
    const decision = await r.router.route({ principal: principal('support'), text, source: 'web' });
    expect(decision).toEqual({ agent: other, by: 'classifier' });
  });

  it('matches Latin keywords on word boundaries only', () => {
    const r = router(() => '{"agent":null}');
    // "leadership" is not "lead"; "ticketing" is not "ticket"; "invoiced" is not "invoice".
    expect(r.router.keywords.match('leadership offsite agenda')).toBeNull();
    expect(r.router.keywords.match('lead')?.agent).toBe('sales');
    expect(r.router.keywords.match('Cash-flow for May')?.agent).toBe('finance');
  });
});

describe('intent router: precedence', () => {
  const finance = 'Please check the invoice';
  it('explicit agent beats session, keywords and classifier', async () => {
    const r = router(() => '{"agent":"support"}');
    const d = await r.router.route({
      principal: principal('sales'),
      explicitAgent: 'marketing',
      sessionAgent: 'sales',
      text: finance,
      source: 'web',
    });
    expect(d).toEqual({ agent: 'marketing', by: 'explicit' });
  });

  it('the session agent beats keywords', async () => {
    const r = router(() => '{"agent":"support"}');
    const d = await r.router.route({
      principal: principal('sales'),
      sessionAgent: 'sales',
      text: finance,
      source: 'web',
    });
    expect(d).toEqual({ agent: 'sales', by: 'session' });
  });

  it('keywords beat the classifier; the classifier beats the department', async () => {
    const r = router(() => '{"agent":"support"}');
    expect(
      await r.router.route({ principal: principal('sales'), text: finance, source: 'web' }),
    ).toEqual({
      agent: 'finance',
      by: 'keyword',
    });
    expect(
      await r.router.route({ principal: principal('sales'), text: 'hello there', source: 'web' }),
    ).toEqual({
      agent: 'support',
      by: 'classifier',
    });
  });

  it('webhook and schedule messages must name their agent', async () => {
    const r = router(() => '{"agent":"support"}');
    await expect(
      r.router.route({ principal: principal('sales'), text: finance, source: 'webhook' }),
    ).rejects.toMatchObject({
      code: 'bad_request',
    });
    const d = await r.router.route({
      principal: principal('sales'),
      explicitAgent: 'support',
      text: 'x',
      source: 'scheduler',
    });
    expect(d).toEqual({ agent: 'support', by: 'explicit' });
  });

  it('an unknown explicit agent is refused', async () => {
    const r = router(() => '{"agent":"support"}');
    await expect(
      r.router.route({
        principal: principal('sales'),
        explicitAgent: 'legal',
        text: 'x',
        source: 'web',
      }),
    ).rejects.toMatchObject({ code: 'unknown_agent', statusCode: 400 });
  });
});

describe('intent router: classifier failures fall back to the department', () => {
  const text = 'Something with no keyword at all';

  it('on timeout (within the configured limit)', async () => {
    const r = router(() => ({ hang: true }), 50);
    const started = Date.now();
    const d = await r.router.route({ principal: principal('marketing'), text, source: 'web' });
    expect(d).toEqual({ agent: 'marketing', by: 'department' });
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it.each(['{"agent":"legal"}', 'marketing', '{"agent": null}', 'not json', '{"agent":["sales"]}'])(
    'on an invalid answer %s',
    async (answer) => {
      const r = router(() => answer);
      const d = await r.router.route({ principal: principal('finance'), text, source: 'web' });
      expect(d).toEqual({ agent: 'finance', by: 'department' });
    },
  );

  it('on a model error, and without a routing model', async () => {
    const failing = router(() => ({ error: true }));
    expect(
      await failing.router.route({ principal: principal('support'), text, source: 'web' }),
    ).toEqual({
      agent: 'support',
      by: 'department',
    });
    const none = router(() => '{"agent":"sales"}', 2_000, false);
    expect(
      await none.router.route({ principal: principal('management'), text, source: 'web' }),
    ).toEqual({
      agent: 'management',
      by: 'department',
    });
    expect(none.seen).toHaveLength(0);
  });

  it('parses only a JSON object naming a known agent', () => {
    expect(parseClassifierAnswer('{"agent":"sales"}')).toBe('sales');
    expect(parseClassifierAnswer('```json\n{"agent": "support"}\n```')).toBe('support');
    expect(parseClassifierAnswer('{"agent":"Sales"}')).toBeNull();
  });
});

describe('intent router: permissions', () => {
  it('routing to an agent the role may not reach is agent_forbidden', async () => {
    const r = router(() => '{"agent":"finance"}');
    const salesRep = principal('sales', ['agent:sales']);
    for (const input of [
      { text: 'Check the overdue invoices' }, // keyword
      { text: 'nothing to match here' }, // classifier
      { text: 'hi', explicitAgent: 'finance' },
      { text: 'hi', sessionAgent: 'finance' },
    ]) {
      const err = await r.router
        .route({ principal: salesRep, source: 'web', ...input })
        .catch((e) => e);
      expect(err).toBeInstanceOf(AppError);
      expect(err).toMatchObject({ code: 'agent_forbidden', statusCode: 403 });
    }
    expect(
      await r.router.route({ principal: salesRep, text: 'Find leads', source: 'web' }),
    ).toEqual({
      agent: 'sales',
      by: 'keyword',
    });
  });
});
