/**
 * Builds the Fastify app from a container. Never listens: main.ts does, tests inject().
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import {
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import './api/fastify-types.ts';
import { adminRoutes } from './api/admin.routes.ts';
import { authRoutes } from './api/auth.routes.ts';
import { healthRoutes } from './api/health.routes.ts';
import { registerAccessLog } from './api/plugins/access-log.ts';
import { registerErrorHandler } from './api/plugins/error-handler.ts';
import { registerOpenApi } from './api/plugins/openapi.ts';
import { registerRequestGuard } from './api/plugins/request-guard.ts';
import type { Container } from './container.ts';

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
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { ignoreTrailingSlash: true },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

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
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  registerErrorHandler(app);
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

  return Object.assign(app, { routeTable });
}
