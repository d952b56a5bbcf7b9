/**
 * Picks the agent that answers a message. Precedence: an explicit agent (the app's picker,
 * a webhook or schedule naming its agent); the session's current agent; a keyword fast path
 * in English, Chinese and Malay; an LLM classification (strict JSON, checked against the
 * agent list, with a time limit); the user's own department. A failing classifier (timeout,
 * invalid answer, no model) falls back to the department. The chosen agent must be one the
 * user's role reaches (`agent:<name>`), else `agent_forbidden`.
 */
import type { Department } from '@mezzofy/protocol';
import { AGENT_NAMES, type AgentDefinition, type AgentName } from '../agents/agent.ts';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { Principal } from '../auth/principal.ts';
import { AppError } from '../errors.ts';
import type { LlmManager } from '../llm/llm-manager.ts';
import type { Logger } from '../logging/logger.ts';

export type RoutedBy = 'explicit' | 'session' | 'keyword' | 'classifier' | 'department';

export interface RouteInput {
  principal: Principal;
  explicitAgent?: string | null | undefined;
  sessionAgent?: string | null | undefined;
  text: string;
  source: AuditSource;
}

export interface RouteDecision {
  agent: AgentName;
  by: RoutedBy;
}

/** Sources whose messages always name their agent: they never guess. */
const MACHINE_SOURCES: readonly AuditSource[] = ['webhook', 'scheduler'];
/** Longest text the classifier sees; routing needs the gist, not the whole document. */
const CLASSIFIER_MAX_CHARS = 2_000;

/** Every department has an agent today; the map keeps the fallback explicit. */
const DEPARTMENT_AGENT: Record<Department, AgentName> = {
  finance: 'finance',
  sales: 'sales',
  marketing: 'marketing',
  support: 'support',
  management: 'management',
};

const isAgentName = (v: unknown): v is AgentName =>
  typeof v === 'string' && (AGENT_NAMES as readonly string[]).includes(v);

const LATIN = /[a-z0-9]/i;
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** One matcher per keyword: whole words for Latin script, substrings for CJK. */
function keywordMatcher(keyword: string): (text: string) => boolean {
  const k = keyword.trim().toLowerCase();
  if (!LATIN.test(k)) return (text) => text.includes(k);
  const words = k.split(/\s+/).map(escapeRegExp).join('[\\s\\-]+');
  const re = new RegExp(`(?<![\\p{L}\\p{N}])${words}(?![\\p{L}\\p{N}])`, 'iu');
  return (text) => re.test(text);
}

export interface KeywordMatch {
  agent: AgentName;
  score: number;
  matched: string[];
}

export function createKeywordIndex(agents: ReadonlyMap<AgentName, AgentDefinition>) {
  const table = [...agents.values()].map((a) => ({
    agent: a.name,
    matchers: a.keywords.map((k) => ({ keyword: k, test: keywordMatcher(k) })),
  }));
  return {
    /** The agent whose keywords match most; null when none match or the best ties. */
    match(text: string): KeywordMatch | null {
      const lower = text.toLowerCase();
      const scored = table
        .map(({ agent, matchers }) => {
          const matched = matchers.filter((m) => m.test(lower)).map((m) => m.keyword);
          return { agent, score: matched.length, matched };
        })
        .filter((s) => s.score > 0)
        .sort((a, b) => b.score - a.score);
      if (scored.length === 0) return null;
      if (scored.length > 1 && scored[1]!.score === scored[0]!.score) return null;
      return scored[0]!;
    },
  };
}

export interface IntentRouterDeps {
  agents: ReadonlyMap<AgentName, AgentDefinition>;
  llm: Pick<LlmManager, 'stream' | 'configured'>;
  /** The classifier's time limit (agents.routing_timeout_ms). */
  classifierTimeoutMs: number;
  log: Logger;
}

export type IntentRouter = ReturnType<typeof createIntentRouter>;

export function classifierPrompt(agents: ReadonlyMap<AgentName, AgentDefinition>): string {
  const list = [...agents.values()].map((a) => `- ${a.name}: ${a.description}`).join('\n');
  return [
    'You route messages from Mezzofy staff to one department assistant. Mezzofy sells a coupon, voucher, loyalty and membership platform to merchants in Asia.',
    `The assistants:\n${list}`,
    'Answer with JSON only, exactly {"agent":"<name>"} using one of the names above, or {"agent":null} if none fits. No other text.',
  ].join('\n\n');
}

/** The agent in a classifier answer, or null when it is not exactly one known agent. */
export function parseClassifierAnswer(text: string): AgentName | null {
  const match = /\{[\s\S]*\}/.exec(text.trim());
  if (!match) return null;
  try {
    const parsed = JSON.parse(match[0]) as { agent?: unknown };
    return isAgentName(parsed.agent) ? parsed.agent : null;
  } catch {
    return null;
  }
}

export function createIntentRouter(deps: IntentRouterDeps) {
  const { agents, llm, log } = deps;
  const keywords = createKeywordIndex(agents);
  const system = classifierPrompt(agents);

  function known(name: string, what: string): AgentName {
    if (!isAgentName(name) || !agents.has(name))
      throw new AppError('unknown_agent', `there is no agent named ${name}`, {
        details: { [what]: name, agents: [...agents.keys()] },
      });
    return name;
  }

  /** Asks the routing model; null on any failure (logged), so the department answers. */
  async function classify(
    principal: Principal,
    text: string,
    source: AuditSource,
  ): Promise<AgentName | null> {
    if (!llm.configured('routing')) return null;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new Error('routing classifier timed out')),
      deps.classifierTimeoutMs,
    );
    let answer = '';
    try {
      const stream = llm.stream(
        'routing',
        {
          system,
          messages: [
            {
              role: 'user',
              content: [{ type: 'text', text: text.slice(0, CLASSIFIER_MAX_CHARS) }],
            },
          ],
          maxOutputTokens: 20,
          temperature: 0,
        },
        {
          userId: principal.id,
          department: principal.department,
          source,
          signal: controller.signal,
        },
      );
      for await (const event of stream) {
        if (event.type === 'text-delta') answer += event.text;
      }
    } catch (err) {
      log.warn(
        { err: controller.signal.aborted ? undefined : err, timed_out: controller.signal.aborted },
        'routing classifier failed; using the department agent',
      );
      return null;
    } finally {
      clearTimeout(timer);
    }
    const agent = parseClassifierAnswer(answer);
    if (!agent || !agents.has(agent)) {
      log.warn(
        { answer: answer.slice(0, 200) },
        'routing classifier gave no valid agent; using the department agent',
      );
      return null;
    }
    return agent;
  }

  function mayReach(principal: Principal, agent: AgentName): boolean {
    return principal.permissions.has(`agent:${agent}`);
  }

  return {
    keywords,
    mayReach,
    async route(input: RouteInput): Promise<RouteDecision> {
      const { principal } = input;
      let decision: RouteDecision;
      if (input.explicitAgent) {
        decision = { agent: known(input.explicitAgent, 'agent'), by: 'explicit' };
      } else if (MACHINE_SOURCES.includes(input.source)) {
        throw new AppError('bad_request', `a ${input.source} message must name its agent`);
      } else if (
        input.sessionAgent &&
        isAgentName(input.sessionAgent) &&
        agents.has(input.sessionAgent)
      ) {
        decision = { agent: input.sessionAgent, by: 'session' };
      } else {
        const hit = keywords.match(input.text);
        if (hit) decision = { agent: hit.agent, by: 'keyword' };
        else {
          const classified = input.text.trim()
            ? await classify(principal, input.text, input.source)
            : null;
          decision = classified
            ? { agent: classified, by: 'classifier' }
            : { agent: DEPARTMENT_AGENT[principal.department], by: 'department' };
        }
      }
      if (!mayReach(principal, decision.agent))
        throw new AppError(
          'agent_forbidden',
          `your role may not use the ${decision.agent} agent (needs agent:${decision.agent})`,
          { details: { agent: decision.agent, routed_by: decision.by } },
        );
      return decision;
    },
  };
}
