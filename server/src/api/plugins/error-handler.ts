/**
 * One error envelope for every 4xx/5xx: { error: { code, message, details?, request_id } }.
 * 5xx text is never shown to the client; it is logged with the request id.
 */
import type { ErrorCode, ErrorEnvelope } from '@mezzofy/protocol';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { AppError } from '../../errors.ts';

export function sendError(
  reply: FastifyReply,
  request: FastifyRequest,
  status: number,
  code: ErrorCode,
  message: string,
  details?: unknown,
) {
  const body: ErrorEnvelope = {
    error: { code, message, ...(details === undefined ? {} : { details }), request_id: request.id },
  };
  return reply.status(status).type('application/json').send(body);
}

/** Fastify's own errors, by code, mapped to ours. */
const FASTIFY_ERRORS: Record<string, { code: ErrorCode; message?: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'payload_too_large', message: 'request body is too large' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    code: 'unsupported_media_type',
    message: 'unsupported Content-Type',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    code: 'bad_request',
    message: 'request body is empty but Content-Type is JSON',
  },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    code: 'invalid_json',
    message: 'request body is not valid JSON',
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    code: 'bad_request',
    message: 'Content-Length does not match the body',
  },
  FST_ERR_CTP_INVALID_TYPE: { code: 'bad_request', message: 'Content-Type header is malformed' },
};

export function registerErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof AppError) {
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      if (err.statusCode >= 500) request.log.error({ err }, 'request failed');
      return sendError(reply, request, err.statusCode, err.code, err.message, err.details);
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const where = err.validationContext ?? 'request';
      const details = err.validation.map((v) => ({
        in: where,
        path: v.instancePath.replace(/^\//, '').replaceAll('/', '.'),
        message: v.message,
      }));
      const first = details[0];
      return sendError(
        reply,
        request,
        400,
        'validation_failed',
        `invalid ${where}${first ? `: ${first.path || '(root)'} ${first.message}` : ''}`,
        details,
      );
    }
    const mapped = err.code ? FASTIFY_ERRORS[err.code] : undefined;
    if (mapped)
      return sendError(
        reply,
        request,
        err.statusCode ?? 400,
        mapped.code,
        mapped.message ?? err.message,
      );
    if (err instanceof SyntaxError || err.statusCode === 400) {
      return sendError(reply, request, 400, 'bad_request', 'request could not be parsed');
    }
    if (err.statusCode === 413)
      return sendError(reply, request, 413, 'payload_too_large', 'request body is too large');
    if (err.statusCode === 415)
      return sendError(reply, request, 415, 'unsupported_media_type', 'unsupported Content-Type');
    if (err.statusCode === 503)
      return sendError(
        reply,
        request,
        503,
        'service_unavailable',
        'service is unavailable; try again shortly',
      );
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return sendError(reply, request, err.statusCode, 'bad_request', 'request was rejected');
    }
    // PostgreSQL refuses text it cannot store (a NUL byte, U+0000): the input is at fault.
    if (err.code === '22021' || err.code === '22P05') {
      return sendError(reply, request, 400, 'bad_request', 'request text contains a NUL character');
    }
    request.log.error({ err }, 'unhandled error');
    return sendError(reply, request, 500, 'internal_error', 'internal server error');
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(
      reply,
      request,
      404,
      'not_found',
      `no route ${request.method} ${request.url.split('?')[0]}`,
    ),
  );
}
