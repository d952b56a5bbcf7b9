/** /admin/usage: LLM calls, tokens and spend (usage:read). */
import { ErrorEnvelope, UsageQuery, UsageReport } from '@mezzofy/protocol';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Container } from '../container.ts';

const errors = { 400: ErrorEnvelope, 401: ErrorEnvelope, 403: ErrorEnvelope };

export function usageRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/admin/usage',
      {
        config: { permission: 'usage:read' },
        schema: {
          tags: ['admin'],
          summary: 'LLM usage and spend, grouped by department, user, model and/or day',
          querystring: UsageQuery,
          response: { 200: UsageReport, ...errors },
        },
      },
      async (request) => c.usage.report(request.query),
    );
  };
}
