/**
 * Builds the Fastify app from a container. Never listens: main.ts does, tests inject().
 */
import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import './api/fastify-types.ts';
import { adminRoutes } from './api/admin.routes.ts';
import { agentsRoutes } from './api/agents.routes.ts';
import { approvalsRoutes } from './api/approvals.routes.ts';
import { authRoutes } from './api/auth.routes.ts';
import { chatRoutes } from './api/chat.routes.ts';
import { healthRoutes } from './api/health.routes.ts';
import { outboxRoutes } from './api/outbox.routes.ts';
import { registerAccessLog } from './api/plugins/access-log.ts';
import { registerErrorHandler, sendError } from './api/plugins/error-handler.ts';
import { registerOpenApi } from './api/plugins/openapi.ts';
import { registerRequestGuard } from './api/plugins/request-guard.ts';
import { serializerCompiler } from './api/serializer.ts';
import { usageRoutes } from './api/usage.routes.ts';
import { wsRoutes } from './api/ws.routes.ts';
import type { Container } from './container.ts';
import { lazyChildLogger } from './logging/logger.ts';
import { createWsGateway, frameCeiling } from './realtime/ws-gateway.ts';

const REQUEST_ID = /^[A-Za-z0-9\-_.:]{8,128}$/;

export interface RouteEntry {
  method: string;
  url: string;
  permission?: string | undefined;
}

export async function buildApp(
  c: Container,
): Promise<FastifyInstance & { routeTable: RouteEntry[] }> {
  const { config } = c;
  const app = Fastify({
    loggerInstance: c.loggers.app as FastifyBaseLogger,
    // Requests are logged once, by the access log, not by Fastify's per-request lines.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    childLoggerFactory: lazyChildLogger,
    bodyLimit: config.server.body_limit_bytes,
    trustProxy: config.server.trust_proxy as boolean,
    requestTimeout: config.server.request_timeout_ms,
    // Behind a trusted proxy, keep the proxy's request id so logs line up end to end.
    genReqId: (req) => {
      const incoming = req.headers['x-request-id'];
      return config.server.trust_proxy && typeof incoming === 'string' && REQUEST_ID.test(incoming)
        ? incoming
        : randomUUID();
    },
    // Refusals made by the router itself (a malformed URL, an over-long path parameter) run
    // no hooks or error handler: answer them with the same envelope and request id.
    frameworkErrors: (err, request, reply) => {
      reply.header('x-request-id', request.id);
      if (err.code === 'FST_ERR_BAD_URL' || err.code === 'FST_ERR_MAX_PARAM_LENGTH')
        return sendError(reply, request, 400, 'bad_request', 'the URL is malformed or too long');
      request.log.error({ err }, 'unhandled error');
      return sendError(reply, request, 500, 'internal_error', 'internal server error');
    },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { ignoreTrailingSlash: true },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // JSON only: without this, text/plain bodies reach validation as strings instead of a 415.
  app.removeContentTypeParser('text/plain');

  const routeTable: RouteEntry[] = [];
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) {
      if (method === 'HEAD') continue;
      routeTable.push({
        method,
        url: route.url ?? route.path,
        permission: (route.config as { permission?: string })?.permission,
      });
    }
  });

  registerErrorHandler(app);
  // Our only onRequest hook (one call per request): it also sets x-request-id on every reply.
  registerRequestGuard(app, {
    auth: c.auth,
    rateLimiter: c.rateLimiter,
    rateLimitEnabled: config.rate_limit.enabled,
  });
  if (config.logging.access_log) registerAccessLog(app, c.loggers.access);
  await registerOpenApi(app, config.version);

  await app.register(healthRoutes(c));
  await app.register(authRoutes(c));
  await app.register(adminRoutes(c));
  await app.register(usageRoutes(c));
  await app.register(agentsRoutes(c));
  await app.register(approvalsRoutes(c));
  await app.register(outboxRoutes(c));
  // Uploads (POST /chat/send-media): one file, at most chat.max_media_bytes.
  await app.register(multipart, {
    limits: {
      fileSize: config.chat.max_media_bytes,
      files: 1,
      fields: 10,
      fieldSize: 1024 * 1024,
      parts: 11,
    },
  });
  await app.register(chatRoutes(c));

  const gateway = createWsGateway({ ...c, log: c.loggers.app });
  // Before the plugin's own preClose: sockets get 1001 and a reason, not a bare close.
  app.addHook('preClose', (done) => {
    gateway.closeAll();
    done();
  });
  // The gateway closes frames over max_frame_bytes with a reason; ws cuts those over the hard
  // ceiling (1009, no reason) before buffering them.
  await app.register(websocket, {
    options: { maxPayload: frameCeiling(config.realtime.max_frame_bytes) },
  });
  await app.register(wsRoutes(gateway));

  return Object.assign(app, { routeTable });
}
