/** /admin: users, roles, audit log. Each route states its permission. */
import {
  AuditList,
  AuditQuery,
  CreateUserRequest,
  ErrorEnvelope,
  OkResponse,
  ResetPasswordRequest,
  RoleList,
  UpdateUserRequest,
  UserIdParams,
  UserList,
  UserListQuery,
  UserView,
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

export function adminRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/admin/users',
      {
        config: { permission: 'users:read' },
        schema: {
          tags: ['admin'],
          querystring: UserListQuery,
          response: { 200: UserList, ...errors },
        },
      },
      async (request) => c.users.list(request.principal!, request.query),
    );

    app.post(
      '/admin/users',
      {
        config: { permission: 'users:write' },
        schema: {
          tags: ['admin'],
          body: CreateUserRequest,
          response: { 201: UserView, ...errors },
        },
      },
      async (request, reply) => {
        reply.status(201);
        return c.users.create(request.principal!, request.body, requestMeta(request));
      },
    );

    app.get(
      '/admin/users/:id',
      {
        config: { permission: 'users:read' },
        schema: { tags: ['admin'], params: UserIdParams, response: { 200: UserView, ...errors } },
      },
      async (request) => c.users.get(request.principal!, request.params.id),
    );

    app.patch(
      '/admin/users/:id',
      {
        config: { permission: 'users:write' },
        schema: {
          tags: ['admin'],
          params: UserIdParams,
          body: UpdateUserRequest,
          response: { 200: UserView, ...errors },
        },
      },
      async (request) =>
        c.users.update(request.principal!, request.params.id, request.body, requestMeta(request)),
    );

    app.delete(
      '/admin/users/:id',
      {
        config: { permission: 'users:write' },
        schema: { tags: ['admin'], params: UserIdParams, response: { 200: UserView, ...errors } },
      },
      async (request) =>
        c.users.deactivate(request.principal!, request.params.id, requestMeta(request)),
    );

    app.post(
      '/admin/users/:id/reset-password',
      {
        config: { permission: 'users:write' },
        schema: {
          tags: ['admin'],
          params: UserIdParams,
          body: ResetPasswordRequest,
          response: { 200: OkResponse, ...errors },
        },
      },
      async (request) => {
        await c.users.resetPassword(
          request.principal!,
          request.params.id,
          request.body.new_password,
          requestMeta(request),
        );
        return { ok: true as const };
      },
    );

    app.get(
      '/admin/roles',
      {
        config: { permission: 'roles:read' },
        schema: { tags: ['admin'], response: { 200: RoleList, ...errors } },
      },
      async () => ({
        items: c.roles.list().map((r) => ({
          name: r.name,
          description: r.description,
          department: r.department,
          permissions: [...r.permissions].sort(),
        })),
      }),
    );

    app.get(
      '/admin/audit',
      {
        config: { permission: 'audit:read' },
        schema: {
          tags: ['admin'],
          querystring: AuditQuery,
          response: { 200: AuditList, ...errors },
        },
      },
      async (request) => {
        return c.audit.list(request.principal!, request.query);
      },
    );
  };
}
