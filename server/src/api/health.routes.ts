/** GET /health: 200 ok/degraded, 503 when the database is unreachable or while draining. */
import { HealthResponse } from '@mezzofy/protocol';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Container } from '../container.ts';

export function healthRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/health',
      {
        config: { rateLimit: false },
        schema: {
          tags: ['health'],
          security: [],
          response: { 200: HealthResponse, 503: HealthResponse },
        },
      },
      async (_request, reply) => {
        const { httpStatus, body } = await c.health.check();
        reply.header('cache-control', 'no-store');
        return reply.status(httpStatus as 200 | 503).send(body);
      },
    );
  };
}
