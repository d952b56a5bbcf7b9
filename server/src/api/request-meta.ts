/** What services record about a request (IP, user agent, source) for audit and sessions. */
import type { FastifyRequest } from 'fastify';
import type { RequestMeta } from '../auth/auth.service.ts';

export function requestMeta(request: FastifyRequest): RequestMeta {
  const client = request.headers['x-client'];
  const source = client === 'web' ? 'web' : client === 'mobile' ? 'mobile' : 'api';
  return { ip: request.ip, userAgent: request.headers['user-agent'] ?? null, source };
}
