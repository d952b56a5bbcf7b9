/** The five department agents, by name. */
import type { AgentDefinition, AgentName } from './agent.ts';
import { financeAgent } from './finance.agent.ts';
import { managementAgent } from './management.agent.ts';
import { marketingAgent } from './marketing.agent.ts';
import { salesAgent } from './sales.agent.ts';
import { supportAgent } from './support.agent.ts';

export const AGENTS: ReadonlyMap<AgentName, AgentDefinition> = new Map(
  [financeAgent, salesAgent, marketingAgent, supportAgent, managementAgent].map((a) => [a.name, a]),
);
