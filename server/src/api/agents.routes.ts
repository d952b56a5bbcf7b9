/**
 * The agents and skills a caller may use (the app's agent picker and quick actions) and
 * running a skill directly, without the model loop (`chat:use`).
 */
import {
  AgentList,
  ErrorEnvelope,
  SkillList,
  SkillNameParams,
  SkillRunRequest,
  SkillRunResponse,
} from '@mezzofy/protocol';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Container } from '../container.ts';

const errors = { 400: ErrorEnvelope, 401: ErrorEnvelope, 403: ErrorEnvelope };

export function agentsRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/agents',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['agents'],
          summary: 'The department agents the caller may talk to',
          response: { 200: AgentList, ...errors },
        },
      },
      async (request) => {
        const principal = request.principal!;
        const items = [...c.agentDefinitions.values()]
          .filter((a) => principal.permissions.has(`agent:${a.name}`))
          .map((a) => ({
            name: a.name,
            title: a.title,
            description: a.description,
            department: a.department,
            skills: a.skills.filter((s) => {
              const skill = c.skills.get(s);
              return skill !== undefined && c.skills.usableBy(principal).includes(skill);
            }),
          }));
        return { items };
      },
    );

    app.get(
      '/skills',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['agents'],
          summary: 'The skills the caller may use, with their parameter JSON Schemas',
          response: { 200: SkillList, ...errors },
        },
      },
      async (request) => ({
        items: c.skills.usableBy(request.principal!).map((s) => ({
          name: s.manifest.name,
          description: s.manifest.description,
          agents: s.manifest.agents.filter((a) => request.principal!.permissions.has(`agent:${a}`)),
          status: s.status,
          capability: s.manifest.capability ?? null,
          parameters: s.parametersJsonSchema,
        })),
      }),
    );

    app.post(
      '/skills/:name/run',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['agents'],
          summary: 'Run a skill directly with validated parameters (quick actions)',
          params: SkillNameParams,
          body: SkillRunRequest,
          response: {
            200: SkillRunResponse,
            ...errors,
            404: ErrorEnvelope,
            501: ErrorEnvelope,
            502: ErrorEnvelope,
            503: ErrorEnvelope,
          },
        },
      },
      async (request, reply) => {
        const controller = new AbortController();
        // A client that goes away before the answer cancels the skill's model call.
        const onClose = () => {
          if (!reply.raw.writableFinished) controller.abort();
        };
        reply.raw.on('close', onClose);
        try {
          const result = await c.skills.run(request.params.name, request.body.parameters, {
            principal: request.principal!,
            agent: null,
            sessionId: null,
            source: 'api',
            signal: controller.signal,
            llm: c.llm,
            tools: c.tools.executor,
            knowledge: c.knowledge,
            clock: c.clock,
            log: c.loggers.app,
          });
          return {
            skill: request.params.name,
            status: result.status,
            text: result.text,
            ...(result.data === undefined ? {} : { data: result.data }),
            approval_id: result.approvalId ?? null,
          };
        } finally {
          reply.raw.off('close', onClose);
        }
      },
    );
  };
}
