/** /auth: login, refresh, logout, me, change-password. */
import {
  ChangePasswordRequest,
  ErrorEnvelope,
  LoginRequest,
  LoginResponse,
  OkResponse,
  RefreshRequest,
  TokenPair,
  UserView,
} from '@mezzofy/protocol';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Container } from '../container.ts';
import { requestMeta } from './request-meta.ts';

const errors = { 400: ErrorEnvelope, 401: ErrorEnvelope, 429: ErrorEnvelope };

export function authRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      '/auth/login',
      {
        schema: {
          tags: ['auth'],
          security: [],
          body: LoginRequest,
          response: { 200: LoginResponse, 403: ErrorEnvelope, ...errors },
        },
      },
      async (request) =>
        c.auth.login(request.body.email, request.body.password, requestMeta(request)),
    );

    app.post(
      '/auth/refresh',
      {
        schema: {
          tags: ['auth'],
          security: [],
          body: RefreshRequest,
          response: { 200: TokenPair, ...errors },
        },
      },
      async (request) => c.auth.refresh(request.body.refresh_token, requestMeta(request)),
    );

    app.post(
      '/auth/logout',
      {
        config: { permission: 'account:self' },
        schema: { tags: ['auth'], response: { 200: OkResponse, ...errors } },
      },
      async (request) => {
        await c.auth.logout(request.principal!, requestMeta(request));
        return { ok: true as const };
      },
    );

    app.get(
      '/auth/me',
      {
        config: { permission: 'account:self' },
        schema: { tags: ['auth'], response: { 200: UserView, ...errors } },
      },
      async (request) => c.auth.me(request.principal!),
    );

    app.post(
      '/auth/change-password',
      {
        config: { permission: 'account:self' },
        schema: {
          tags: ['auth'],
          body: ChangePasswordRequest,
          response: { 200: TokenPair, ...errors },
        },
      },
      async (request) =>
        c.auth.changePassword(
          request.principal!,
          request.body.current_password,
          request.body.new_password,
          requestMeta(request),
        ),
    );
  };
}
