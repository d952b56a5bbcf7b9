/**
 * Every tool the server knows, by name, with the JSON Schema of its input as the model sees
 * it. Names are unique and snake_case; a schema that is not a plain object is refused at
 * registration, so a bad tool stops start-up instead of a model request.
 */
import { z } from 'zod';
import type { ToolSpec } from '../llm/types.ts';
import type { Tool } from './tool.ts';

const TOOL_NAME = /^[a-z][a-z0-9_]{0,63}$/;

// biome-ignore lint/suspicious/noExplicitAny: tools of any input type live in one registry
export type AnyTool = Tool<any>;

/** Identity helper that keeps a tool's input type inferred from its schema. */
export function defineTool<Input>(tool: Tool<Input>): Tool<Input> {
  return tool;
}

export interface ToolRegistry {
  register(tool: AnyTool): void;
  get(name: string): AnyTool | undefined;
  names(): string[];
  /** The model-facing spec; throws for an unknown name. */
  spec(name: string): ToolSpec;
}

/** The input JSON Schema of a zod schema, as a plain object schema without `$schema`. */
export function inputJsonSchema(name: string, schema: z.ZodType): Record<string, unknown> {
  const { $schema: _ignored, ...json } = z.toJSONSchema(schema, {
    io: 'input',
    unrepresentable: 'any',
  }) as Record<string, unknown>;
  if (json.type !== 'object') {
    throw new Error(`tool ${name}: input schema must be an object schema (got ${json.type})`);
  }
  return json;
}

export function createToolRegistry(tools: readonly AnyTool[] = []): ToolRegistry {
  const byName = new Map<string, { tool: AnyTool; spec: ToolSpec }>();
  const registry: ToolRegistry = {
    register(tool) {
      if (!TOOL_NAME.test(tool.name)) throw new Error(`tool name ${tool.name} is not snake_case`);
      if (byName.has(tool.name)) throw new Error(`tool ${tool.name} is registered twice`);
      if (!tool.description.trim()) throw new Error(`tool ${tool.name} has no description`);
      const spec: ToolSpec = {
        name: tool.name,
        description: tool.description,
        inputSchema: inputJsonSchema(tool.name, tool.inputSchema),
      };
      byName.set(tool.name, { tool, spec });
    },
    get: (name) => byName.get(name)?.tool,
    names: () => [...byName.keys()].sort(),
    spec(name) {
      const entry = byName.get(name);
      if (!entry) throw new Error(`unknown tool ${name}`);
      return entry.spec;
    },
  };
  for (const tool of tools) registry.register(tool);
  return registry;
}
