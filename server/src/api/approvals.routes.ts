/**
 * /approvals: the caller's own pending external actions, decided by id. Ownership is
 * checked in the service (another user's id is a 404); the tool's permission is checked
 * again when approving.
 */
import {
  ApprovalIdParams,
  ApprovalList,
  ApprovalListQuery,
  ApprovalView,
  ErrorEnvelope,
} from '@mezzofy/protocol';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Container } from '../container.ts';
import { requestMeta } from './request-meta.ts';

const errors = {
  400: ErrorEnvelope,
  401: ErrorEnvelope,
  403: ErrorEnvelope,
  404: ErrorEnvelope,
  409: ErrorEnvelope,
};

const PERMISSION = 'account:self';

export function approvalsRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/approvals',
      {
        config: { permission: PERMISSION },
        schema: {
          tags: ['approvals'],
          querystring: ApprovalListQuery,
          response: { 200: ApprovalList, ...errors },
        },
      },
      async (request) => c.approvals.list(request.principal!, request.query),
    );

    app.get(
      '/approvals/:id',
      {
        config: { permission: PERMISSION },
        schema: {
          tags: ['approvals'],
          params: ApprovalIdParams,
          response: { 200: ApprovalView, ...errors },
        },
      },
      async (request) => c.approvals.get(request.principal!, request.params.id),
    );

    // The same decision by id only, either way: the service checks ownership and the arguments.
    for (const decision of ['approve', 'reject'] as const) {
      app.post(
        `/approvals/:id/${decision}`,
        {
          config: { permission: PERMISSION },
          schema: {
            tags: ['approvals'],
            params: ApprovalIdParams,
            response: { 200: ApprovalView, ...errors },
          },
        },
        async (request) => {
          const meta = requestMeta(request);
          return c.approvals[decision](request.principal!, request.params.id, {
            source: meta.source ?? 'api',
            ip: meta.ip,
          });
        },
      );
    }
  };
}
