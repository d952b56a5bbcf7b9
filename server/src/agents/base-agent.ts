/**
 * The base agent loop every department agent runs. One turn: build the system prompt (the
 * agent's instructions, its skills' instructions, the brand context, the user's local date
 * and time), then call the chat model with exactly the agent's tools; run the tool calls it
 * makes through the executor and call it again with the results, until it answers without
 * tools, a call waits for approval, the step or time limit is reached, or the user cancels.
 * Cancel and the time limit abort the upstream model request, and no tool starts after
 * either fires. Model errors (AppErrors) are thrown; the chat layer reports them.
 */
import { ConfigError } from '../config/load-config.ts';
import type { Clock } from '../infra/clock.ts';
import type { AnsweredBy, LlmManager, LlmResult } from '../llm/llm-manager.ts';
import type { ChatMessage, ContentPart, ModelPurpose, ToolSpec } from '../llm/types.ts';
import type { Logger } from '../logging/logger.ts';
import type { SkillRegistry } from '../skills/skill-registry.ts';
import type { ToolCall, ToolContext, ToolExecutor, ToolOutcome } from '../tools/tool.ts';
import type {
  AgentDefinition,
  AgentEvent,
  AgentName,
  AgentRunner,
  TurnFinish,
  TurnInput,
} from './agent.ts';
import { localDateTimeLine } from './local-time.ts';

export interface AgentLimits {
  /** Model calls per turn. */
  maxSteps: number;
  /** The whole turn, model calls and tools together. */
  turnTimeoutMs: number;
  /**
   * A model call whose prompt (system, conversation, tool results) is longer than this, in
   * characters, goes to the `long_document` models. Default: never.
   */
  longDocumentChars?: number;
}

export interface AgentRunnerDeps {
  llm: Pick<LlmManager, 'stream'>;
  tools: ToolExecutor;
  skills: SkillRegistry;
  agents: ReadonlyMap<AgentName, AgentDefinition>;
  /** Brand and company context (brand_guidelines.md); read per turn so edits apply at once. */
  knowledge: () => string;
  clock: Clock;
  limits: AgentLimits;
  log: Logger;
}

/** Characters the model reads in a prompt: a cheap, stable stand-in for its tokens. */
export function promptChars(system: string, messages: readonly ChatMessage[]): number {
  let n = system.length;
  for (const m of messages)
    for (const part of m.content) {
      if (part.type === 'text') n += part.text.length;
      else if (part.type === 'tool-result')
        n +=
          typeof part.output === 'string' ? part.output.length : JSON.stringify(part.output).length;
      else if (part.type === 'tool-call') n += JSON.stringify(part.input).length;
    }
  return n;
}

/** What the user sees while a turn starts on a slower kind of model. */
const STATUS: Partial<Record<ModelPurpose, string>> = {
  vision: 'Analyzing image…',
  long_document: 'Reading the document…',
};

/** What the model reads for a tool call that was never run. */
const NOT_RUN: Record<'cancelled' | 'time_limit' | 'step_limit', string> = {
  cancelled: 'Not run: the user cancelled the turn.',
  time_limit: 'Not run: the turn reached its time limit.',
  step_limit: 'Not run: the turn reached its step limit.',
};

/**
 * Checks at start-up that every agent's skills exist and list the agent, and that every
 * tool the agent or its skills name is in the registry; the first problem stops start-up.
 */
export function validateAgents(
  agents: ReadonlyMap<AgentName, AgentDefinition>,
  skills: SkillRegistry,
  tools: ToolExecutor,
): void {
  const specOf = (agent: string, tool: string, via: string) => {
    try {
      tools.specs([tool]);
    } catch {
      throw new ConfigError(
        `config error: agent ${agent} ${via} the tool ${tool}, which is not in the tool registry`,
      );
    }
  };
  for (const agent of agents.values()) {
    for (const tool of agent.tools) specOf(agent.name, tool, 'declares');
    for (const name of agent.skills) {
      const skill = skills.get(name);
      if (!skill)
        throw new ConfigError(`config error: agent ${agent.name} uses the unknown skill ${name}`);
      if (!skill.manifest.agents.includes(agent.name))
        throw new ConfigError(
          `config error: agent ${agent.name} uses the skill ${name}, whose manifest does not list ${agent.name} in agents`,
        );
      for (const tool of skill.manifest.tools) {
        specOf(agent.name, tool, `uses skill ${name}, which needs`);
        if (!agent.tools.includes(tool))
          throw new ConfigError(
            `config error: agent ${agent.name} uses the skill ${name}, which needs the tool ${tool}; add it to the agent's tools`,
          );
      }
    }
  }
}

export function buildSystemPrompt(
  agent: AgentDefinition,
  skillInstructions: string[],
  knowledge: string,
  input: Pick<TurnInput, 'principal'>,
  now: Date,
): string {
  const p = input.principal;
  const parts = [agent.instructions.trim()];
  if (skillInstructions.length > 0) parts.push(`## Skills\n\n${skillInstructions.join('\n\n')}`);
  if (knowledge.trim()) parts.push(`## Brand and company context\n\n${knowledge.trim()}`);
  parts.push(
    [
      '## The user',
      `Name: ${p.name}. Department: ${p.department}. Role: ${p.role}. Preferred language: ${p.locale} (answer in the language the user writes in).`,
      localDateTimeLine(now, p.timezone, p.locale),
    ].join('\n'),
  );
  return parts.join('\n\n');
}

function answeredByOf(event: AnsweredBy): AnsweredBy {
  return {
    provider: event.provider,
    model: event.model,
    provider_label: event.provider_label,
    fallback_reason: event.fallback_reason,
    primary: event.primary,
  };
}

export function createAgentRunner(deps: AgentRunnerDeps): AgentRunner {
  const { llm, tools, skills, agents, clock, limits, log } = deps;
  validateAgents(agents, skills, tools);
  const specsByAgent = new Map<AgentName, ToolSpec[]>(
    [...agents.values()].map((a) => [a.name, tools.specs(a.tools)]),
  );

  async function* run(input: TurnInput): AsyncGenerator<AgentEvent, void, undefined> {
    const agent = agents.get(input.agent);
    if (!agent) throw new Error(`unknown agent ${input.agent}`);
    const specs = specsByAgent.get(agent.name)!;
    const system = buildSystemPrompt(
      agent,
      skills.instructionsFor(agent.skills),
      deps.knowledge(),
      input,
      clock(),
    );

    // One signal for the turn: the caller's cancel or our time limit, whichever comes first.
    const turn = new AbortController();
    let timedOut = false;
    const onCancel = () => turn.abort(input.signal.reason);
    if (input.signal.aborted) turn.abort(input.signal.reason);
    else input.signal.addEventListener('abort', onCancel, { once: true });
    const timer = setTimeout(() => {
      timedOut = true;
      turn.abort(new Error('turn time limit reached'));
    }, limits.turnTimeoutMs);
    const stoppedBy = (): 'cancelled' | 'time_limit' => (timedOut ? 'time_limit' : 'cancelled');

    // A turn that shows the model an image runs on the vision models; a prompt longer than
    // the limit (a pasted document, long tool results) on the long-document ones.
    const hasImage = input.message.content.some((p) => p.type === 'image');
    const longChars = limits.longDocumentChars ?? Number.POSITIVE_INFINITY;
    const messages: ChatMessage[] = [...input.history, input.message];
    const announced = new Set<ModelPurpose>();
    const transcript: ChatMessage[] = [];
    const calls: LlmResult[] = [];
    const texts: string[] = [];
    let answeredBy: AnsweredBy | null = null;
    let finish: TurnFinish = 'step_limit';
    const toolCtx: ToolContext = {
      principal: input.principal,
      sessionId: input.sessionId,
      source: input.source,
      signal: turn.signal,
      log,
    };
    const append = (message: ChatMessage) => {
      messages.push(message);
      transcript.push(message);
    };
    // The loop ran to its end: no model call or tool is left running.
    let settled = false;

    try {
      for (let step = 1; step <= limits.maxSteps; step++) {
        if (turn.signal.aborted) {
          finish = stoppedBy();
          break;
        }
        let text = '';
        const toolCalls: ToolCall[] = [];
        let result: LlmResult | undefined;
        const purpose: ModelPurpose = hasImage
          ? 'vision'
          : promptChars(system, messages) > longChars
            ? 'long_document'
            : 'chat';
        const status = STATUS[purpose];
        if (status && !announced.has(purpose)) {
          announced.add(purpose);
          yield { type: 'status', text: status };
        }
        try {
          const stream = llm.stream(
            purpose,
            {
              system,
              messages,
              ...(specs.length > 0 ? { tools: specs } : {}),
              ...(input.stream === false ? { stream: false } : {}),
            },
            {
              userId: input.principal.id,
              department: input.principal.department,
              source: input.source,
              sessionId: input.sessionId,
              signal: turn.signal,
              ...(input.deferUsage ? { deferUsage: input.deferUsage } : {}),
            },
          );
          for await (const event of stream) {
            if (event.type === 'start') {
              answeredBy = answeredByOf(event);
              yield { type: 'model-start', ...answeredBy };
            } else if (event.type === 'text-delta') {
              text += event.text;
              yield { type: 'text-delta', text: event.text };
            } else if (event.type === 'tool-call') {
              toolCalls.push({ id: event.id, name: event.name, input: event.input });
            } else if (event.type === 'result') {
              result = event.result;
            }
          }
        } catch (err) {
          if (!turn.signal.aborted) throw err;
          // Cancelled or out of time mid-answer: keep what was said, run nothing.
          if (text) {
            texts.push(text);
            append({ role: 'assistant', content: [{ type: 'text', text }] });
          }
          finish = stoppedBy();
          break;
        }
        if (result) calls.push(result);
        if (text) texts.push(text);
        const content: ContentPart[] = text ? [{ type: 'text', text }] : [];
        for (const call of toolCalls) content.push({ type: 'tool-call', ...call });
        if (content.length > 0) append({ role: 'assistant', content });
        if (toolCalls.length === 0) {
          finish = 'stop';
          break;
        }

        const results: ContentPart[] = [];
        let pending = false;
        let stopped: 'cancelled' | 'time_limit' | null = null;
        for (const call of toolCalls) {
          if (stopped || turn.signal.aborted) {
            stopped ??= stoppedBy();
            results.push({
              type: 'tool-result',
              id: call.id,
              name: call.name,
              output: NOT_RUN[stopped],
              isError: true,
            });
            continue;
          }
          yield { type: 'tool-call-start', id: call.id, name: call.name, input: call.input };
          const outcome: ToolOutcome = await tools.execute(call, toolCtx, agent.tools);
          if (outcome.status === 'pending_approval') pending = true;
          yield {
            type: 'tool-call-end',
            id: call.id,
            name: call.name,
            status: outcome.status,
            ...(outcome.status === 'pending_approval' ? { approval_id: outcome.approvalId } : {}),
          };
          if (outcome.status === 'ok')
            for (const artifact of outcome.artifacts ?? [])
              yield { type: 'artifact-created', tool_call_id: call.id, artifact };
          results.push({
            type: 'tool-result',
            id: call.id,
            name: call.name,
            output: outcome.output,
            ...(outcome.status === 'error' ? { isError: true } : {}),
          });
        }
        append({ role: 'tool', content: results });
        if (stopped || turn.signal.aborted) {
          finish = stopped ?? stoppedBy();
          break;
        }
        if (pending) {
          // The approval flow resumes the conversation once the user decides.
          finish = 'awaiting_approval';
          break;
        }
      }
      settled = true;
    } finally {
      clearTimeout(timer);
      input.signal.removeEventListener('abort', onCancel);
      // A consumer that stops reading early (or an error) must not leave the model call or a
      // tool running.
      if (!settled && !turn.signal.aborted) turn.abort(new Error('turn ended'));
    }

    const usage = { input_tokens: 0, output_tokens: 0, cost_usd: 0 };
    for (const c of calls) {
      usage.input_tokens += c.usage.input_tokens;
      usage.output_tokens += c.usage.output_tokens;
      usage.cost_usd += c.cost_usd;
    }
    usage.cost_usd = Number(usage.cost_usd.toFixed(6));
    yield {
      type: 'message-end',
      finish,
      text: texts.join('\n\n'),
      answered_by: answeredBy,
      usage,
      transcript,
      calls,
    };
  }

  return { run };
}
