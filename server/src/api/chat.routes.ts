/** /chat over REST: send a message and get the whole reply; the caller's sessions. */
import {
  ChatCancelReply,
  ChatReply,
  ChatSendMediaFields,
  ChatSendRequest,
  ChatSendUrlRequest,
  ChatSessionDetail,
  ChatSessionList,
  ChatSessionParams,
  ChatSessionQuery,
  ErrorEnvelope,
  OkResponse,
} from '@mezzofy/protocol';
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { detectImageType } from '../chat/media-type.ts';
import type { Container } from '../container.ts';
import { AppError } from '../errors.ts';
import { requestMeta } from './request-meta.ts';

const LATER = 'video, audio and documents arrive with the input issue';

/** The upload's fields and its one file; multipart limits become 413/400 envelopes. */
async function readUpload(request: FastifyRequest, maxBytes: number) {
  if (!request.isMultipart())
    throw new AppError('unsupported_media_type', 'send multipart/form-data with one file');
  const fields: Record<string, string> = {};
  let file: { name: string; data: Buffer } | undefined;
  try {
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file' || file)
          throw new AppError('bad_request', 'send exactly one file, in the field "file"');
        file = { name: part.filename || 'upload', data: await part.toBuffer() };
      } else {
        fields[part.fieldname] = String(part.value);
      }
    }
  } catch (err) {
    if (err instanceof AppError) throw err;
    const code = (err as { code?: string }).code;
    if (code === 'FST_REQ_FILE_TOO_LARGE')
      throw new AppError('payload_too_large', `the file is larger than ${maxBytes} bytes`, {
        details: { max_bytes: maxBytes },
      });
    if (code === 'FST_FILES_LIMIT')
      throw new AppError('bad_request', 'send exactly one file, in the field "file"');
    if (code === 'FST_PARTS_LIMIT' || code === 'FST_FIELDS_LIMIT' || code === 'FST_PROTO_VIOLATION')
      throw new AppError('bad_request', 'the upload has too many or malformed fields');
    throw err;
  }
  if (!file) throw new AppError('bad_request', 'the file is missing (field "file")');
  const parsed = ChatSendMediaFields.safeParse(fields);
  if (!parsed.success)
    throw new AppError('validation_failed', 'invalid upload fields', {
      details: parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
    });
  return { fields: parsed.data, file };
}

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

    app.post(
      '/chat/send-media',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['chat'],
          summary:
            'Send an image (multipart: file, and message, session_id, agent, client_message_id); answers the whole reply',
          consumes: ['multipart/form-data'],
          response: {
            200: ChatReply,
            ...errors,
            409: ErrorEnvelope,
            413: ErrorEnvelope,
            415: ErrorEnvelope,
            429: ErrorEnvelope,
            502: ErrorEnvelope,
            503: ErrorEnvelope,
          },
        },
      },
      async (request) => {
        const { fields, file } = await readUpload(request, c.config.chat.max_media_bytes);
        const mediaType = detectImageType(file.data);
        if (!mediaType)
          throw new AppError(
            'unsupported_media_type',
            `only JPEG, PNG, GIF and WebP images can be sent here; ${LATER}`,
          );
        return c.chat.send(
          request.principal!,
          {
            message: fields.message?.trim() ? fields.message : '',
            ...(fields.session_id ? { session_id: fields.session_id } : {}),
            ...(fields.agent ? { agent: fields.agent } : {}),
            ...(fields.client_message_id ? { client_message_id: fields.client_message_id } : {}),
          },
          requestMeta(request),
          { media: { mediaType, data: file.data, name: file.name } },
        );
      },
    );

    app.post(
      '/chat/send-url',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['chat'],
          summary: 'Read a web page into the conversation (not available yet: 501)',
          body: ChatSendUrlRequest,
          response: { ...errors, 501: ErrorEnvelope },
        },
      },
      async () => {
        throw new AppError(
          'capability_unavailable',
          'web page reading arrives with the input issue; paste the text into /chat/send for now',
        );
      },
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

    app.post(
      '/chat/sessions/:id/cancel',
      {
        config: { permission: 'chat:use' },
        schema: {
          tags: ['chat'],
          summary: 'Stop the turn running in one of the caller’s sessions, on any process',
          description:
            'The turn stops (the model request is aborted and no further tool runs) and is stored with finish "cancelled"; its sender gets that reply. `cancelled` is false when no turn was running.',
          params: ChatSessionParams,
          response: { 200: ChatCancelReply, ...errors },
        },
      },
      async (request) => c.chat.cancel(request.principal!, request.params.id),
    );
  };
}
