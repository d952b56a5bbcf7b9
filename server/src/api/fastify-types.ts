/** What our routes add to Fastify's types: the permission each route needs, the caller. */

import type { Principal } from '../auth/principal.ts';
import type { AppError } from '../errors.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The permission a caller needs; every route not in PUBLIC_ROUTES must declare one. */
    permission?: string;
    /** false: not counted by the HTTP rate limiter (health, WebSocket upgrade). */
    rateLimit?: false;
  }
  interface FastifyRequest {
    principal?: Principal;
    authError?: AppError;
  }
}
