/**
 * The per-request gate, in one onRequest hook so it runs before any body is parsed:
 * stamp the reply with the request id, identify the caller from the bearer token, count the
 * request against the rate limit (per user, else per IP), then refuse with 401 (no or bad
 * token) or 403 (missing permission).
 *
 * What a route needs (public or not, its permission, rate-limited or not) is worked out once,
 * when the route is registered. The hook is callback-style and authenticates synchronously
 * when the token and the user's state are already in memory: on the hot path the only
 * asynchronous step is the rate-limit count.
 */
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  HookHandlerDoneFunction,
} from 'fastify';
import type { AuthService } from '../../auth/auth.service.ts';
import type { Principal } from '../../auth/principal.ts';
import { AppError } from '../../errors.ts';
import type { RateDecision, RateLimiter } from '../../infra/rate-limiter.ts';
import { isPublicRoute } from '../public-routes.ts';

export interface GuardOptions {
  auth: Pick<AuthService, 'authenticate'> & Partial<Pick<AuthService, 'authenticateCached'>>;
  rateLimiter: RateLimiter;
  rateLimitEnabled: boolean;
}

const BEARER = /^Bearer ([A-Za-z0-9\-_.~+/]+=*)$/;

/** What the guard needs to know about a route, from its registration. */
interface RouteGuard {
  /** Every method is served without a token (requests no route matched). */
  readonly allPublic: boolean;
  /** Methods served without a token (HEAD counts as GET). */
  readonly publicMethods: ReadonlySet<string>;
  readonly permission: string | undefined;
  readonly rateLimited: boolean;
}

/** Where a route's RouteGuard is kept: in its config, under a key no route declares. */
const GUARD = Symbol('request-guard');
type GuardedConfig = { permission?: string; rateLimit?: false; [GUARD]?: RouteGuard };

function routeGuard(
  methods: readonly string[],
  url: string,
  config: GuardedConfig | undefined,
): RouteGuard {
  return {
    allPublic: false,
    publicMethods: new Set(methods.filter((m) => isPublicRoute(m === 'HEAD' ? 'GET' : m, url))),
    permission: config?.permission,
    rateLimited: config?.rateLimit !== false,
  };
}

/** Requests no route matched (the 404 handler): public, rate-limited per IP. */
const UNROUTED: RouteGuard = {
  allPublic: true,
  publicMethods: new Set(),
  permission: undefined,
  rateLimited: true,
};

export function registerRequestGuard(app: FastifyInstance, options: GuardOptions): void {
  const { auth, rateLimiter, rateLimitEnabled } = options;

  // Every route states its permission, or is on the public allow-list.
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const url = route.url ?? route.path;
    const config = route.config as GuardedConfig | undefined;
    const guard = routeGuard(methods, url, config);
    if (guard.publicMethods.size < methods.length && !guard.permission) {
      throw new Error(
        `route ${methods.join(',')} ${url} declares no permission and is not on the public allow-list`,
      );
    }
    // A new object: a config object may be shared by several routes.
    route.config = { ...config, [GUARD]: guard } as typeof route.config;
  });

  /**
   * The route's RouteGuard. A route that somehow has none (registered before this plugin, or
   * its config replaced afterwards) gets one worked out from its URL, as strict as at
   * registration: never treated as public unless it is on the allow-list.
   */
  const late = new WeakMap<object, RouteGuard>();
  const guardOf = (request: FastifyRequest): RouteGuard => {
    const route = request.routeOptions;
    const config = route.config as GuardedConfig;
    const known = config[GUARD];
    if (known) return known;
    if (route.url === undefined) return UNROUTED;
    let guard = late.get(config);
    if (!guard) {
      guard = routeGuard([route.method].flat(), route.url, config);
      late.set(config, guard);
    }
    return guard;
  };

  /** The last steps, once the caller is known (or known to be unauthenticated). */
  const verdict = (request: FastifyRequest, guard: RouteGuard, isPublic: boolean) => {
    if (isPublic) return undefined;
    if (request.authError) return request.authError;
    if (!request.principal!.permissions.has(guard.permission!)) {
      return new AppError('forbidden', `your role may not do this (needs ${guard.permission})`);
    }
    return undefined;
  };

  const limitThenDecide = (
    request: FastifyRequest,
    reply: FastifyReply,
    done: HookHandlerDoneFunction,
    guard: RouteGuard,
    isPublic: boolean,
  ) => {
    if (!rateLimitEnabled || !guard.rateLimited) {
      done(verdict(request, guard, isPublic));
      return;
    }
    const counted = request.principal
      ? rateLimiter.consume('user', request.principal.id)
      : rateLimiter.consume('ip', request.ip);
    counted.then((decision: RateDecision) => {
      reply.header('x-ratelimit-limit', decision.limit);
      reply.header('x-ratelimit-remaining', decision.remaining);
      reply.header('x-ratelimit-reset', decision.resetSeconds);
      if (!decision.allowed) {
        done(
          new AppError('rate_limited', 'too many requests; slow down', {
            headers: { 'retry-after': String(decision.resetSeconds) },
            details: { retry_after_s: decision.resetSeconds },
          }),
        );
        return;
      }
      done(verdict(request, guard, isPublic));
    }, done);
  };

  app.addHook('onRequest', (request, reply, done) => {
    // Every answer carries the request id, refusals included.
    reply.header('x-request-id', request.id);
    const guard = guardOf(request);
    const isPublic = guard.allPublic || guard.publicMethods.has(request.method);
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
        let principal: Principal | undefined;
        try {
          principal = auth.authenticateCached?.(match[1]!);
        } catch (err) {
          if (!(err instanceof AppError)) {
            done(err as Error);
            return;
          }
          request.authError = err;
        }
        if (principal) {
          request.principal = principal;
        } else if (!request.authError) {
          // Not in memory yet: verify the token and load the user's state.
          auth.authenticate(match[1]!).then(
            (p) => {
              request.principal = p;
              limitThenDecide(request, reply, done, guard, false);
            },
            (err: unknown) => {
              if (!(err instanceof AppError)) {
                done(err as Error);
                return;
              }
              request.authError = err;
              limitThenDecide(request, reply, done, guard, false);
            },
          );
          return;
        }
      }
    }
    limitThenDecide(request, reply, done, guard, isPublic);
  });
}
