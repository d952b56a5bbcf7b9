/**
 * The per-request gate, in one onRequest hook so it runs before any body is parsed:
 * identify the caller from the bearer token, count the request against the rate limit
 * (per user, else per IP), then refuse with 401 (no or bad token) or 403 (missing permission).
 */
import type { FastifyInstance } from 'fastify';
import type { AuthService } from '../../auth/auth.service.ts';
import { AppError } from '../../errors.ts';
import type { RateLimiter } from '../../infra/rate-limiter.ts';
import { isPublicRoute } from '../public-routes.ts';

export interface GuardOptions {
  auth: Pick<AuthService, 'authenticate'>;
  rateLimiter: RateLimiter;
  rateLimitEnabled: boolean;
}

const BEARER = /^Bearer ([A-Za-z0-9\-_.~+/]+=*)$/;

export function registerRequestGuard(app: FastifyInstance, options: GuardOptions): void {
  // Every route states its permission, or is on the public allow-list.
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const url = route.url ?? route.path;
    const isPublic = methods.every((m) => isPublicRoute(m === 'HEAD' ? 'GET' : m, url));
    const permission = (route.config as { permission?: string } | undefined)?.permission;
    if (!isPublic && !permission) {
      throw new Error(
        `route ${methods.join(',')} ${url} declares no permission and is not on the public allow-list`,
      );
    }
  });

  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config;
    const url = request.routeOptions.url;
    const isPublic =
      url === undefined || isPublicRoute(request.method === 'HEAD' ? 'GET' : request.method, url);

    if (!isPublic) {
      const header = request.headers.authorization;
      const match = header ? BEARER.exec(header) : null;
      if (!match) {
        request.authError = new AppError(
          'unauthorized',
          header
            ? 'Authorization header must be "Bearer <access token>"'
            : 'sign in first: Authorization header is missing',
        );
      } else {
        try {
          request.principal = await options.auth.authenticate(match[1]!);
        } catch (err) {
          if (!(err instanceof AppError)) throw err;
          request.authError = err;
        }
      }
    }

    if (options.rateLimitEnabled && config.rateLimit !== false) {
      const decision = request.principal
        ? await options.rateLimiter.consume('user', request.principal.id)
        : await options.rateLimiter.consume('ip', request.ip);
      reply.header('x-ratelimit-limit', decision.limit);
      reply.header('x-ratelimit-remaining', decision.remaining);
      reply.header('x-ratelimit-reset', decision.resetSeconds);
      if (!decision.allowed) {
        throw new AppError('rate_limited', 'too many requests; slow down', {
          headers: { 'retry-after': String(decision.resetSeconds) },
          details: { retry_after_s: decision.resetSeconds },
        });
      }
    }

    if (isPublic) return;
    if (request.authError) throw request.authError;
    const permission = config.permission!;
    if (!request.principal!.permissions.has(permission)) {
      throw new AppError('forbidden', `your role may not do this (needs ${permission})`);
    }
  });
}
