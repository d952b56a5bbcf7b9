/** The outbox: a sender's own queued messages (/outbox) and everyone's (/admin/outbox). */
import { AdminOutboxQuery, ErrorEnvelope, OutboxList, OutboxQuery } from '@mezzofy/protocol';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Container } from '../container.ts';

const errors = { 400: ErrorEnvelope, 401: ErrorEnvelope, 403: ErrorEnvelope };

export function outboxRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/outbox',
      {
        config: { permission: 'account:self' },
        schema: {
          tags: ['outbox'],
          querystring: OutboxQuery,
          response: { 200: OutboxList, ...errors },
        },
      },
      async (request) => c.outbox.listOwn(request.principal!, request.query),
    );

    app.get(
      '/admin/outbox',
      {
        config: { permission: 'outbox:read' },
        schema: {
          tags: ['admin'],
          querystring: AdminOutboxQuery,
          response: { 200: OutboxList, ...errors },
        },
      },
      async (request) => c.outbox.listAll(request.principal!, request.query),
    );
  };
}
