/** /chat over REST: send a message and get the whole reply; the caller's sessions. */
import {
  ChatReply,
  ChatSendRequest,
  ChatSessionDetail,
  ChatSessionList,
  ChatSessionParams,
  ChatSessionQuery,
  ErrorEnvelope,
  OkResponse,
} from '@mezzofy/protocol';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Container } from '../container.ts';
import { requestMeta } from './request-meta.ts';

const errors = { 400: ErrorEnvelope, 401: ErrorEnvelope, 403: ErrorEnvelope, 404: ErrorEnvelope };

export function chatRoutes(c: Container): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      '/chat/send',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['chat'],
          summary: 'Send a message; answers the agent’s whole reply',
          body: ChatSendRequest,
          response: {
            200: ChatReply,
            ...errors,
            409: ErrorEnvelope,
            413: ErrorEnvelope,
            429: ErrorEnvelope,
            502: ErrorEnvelope,
            503: ErrorEnvelope,
          },
        },
      },
      async (request) => c.chat.send(request.principal!, request.body, requestMeta(request)),
    );

    app.get(
      '/chat/sessions',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['chat'],
          summary: 'The caller’s chat sessions, newest first; q searches titles and messages',
          querystring: ChatSessionQuery,
          response: { 200: ChatSessionList, ...errors },
        },
      },
      async (request) => c.chat.list(request.principal!, request.query),
    );

    app.get(
      '/chat/sessions/:id',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['chat'],
          summary: 'One of the caller’s sessions with its messages in order',
          params: ChatSessionParams,
          response: { 200: ChatSessionDetail, ...errors },
        },
      },
      async (request) => c.chat.get(request.principal!, request.params.id),
    );

    app.delete(
      '/chat/sessions/:id',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['chat'],
          summary: 'Delete one of the caller’s sessions (soft delete)',
          params: ChatSessionParams,
          response: { 200: OkResponse, ...errors },
        },
      },
      async (request) => c.chat.remove(request.principal!, request.params.id),
    );
  };
}
