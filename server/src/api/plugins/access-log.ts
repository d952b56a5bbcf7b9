/** access.log: one line per response, with the request id; never headers or bodies. */
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../logging/logger.ts';

const SENSITIVE_QUERY = /(token|password|secret|key|code)/i;

/** The path with the values of sensitive-looking query parameters removed. */
export function safeUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const params = new URLSearchParams(url.slice(q + 1));
  for (const name of [...params.keys()])
    if (SENSITIVE_QUERY.test(name)) params.set(name, '[redacted]');
  return `${url.slice(0, q)}?${params.toString()}`;
}

/** Everything an access line holds. The access logger does no redaction: keep it to these. */
interface AccessLine {
  reqId: string;
  method: string;
  url: string;
  status: number;
  ms: number;
  ip: string;
  userId: string | undefined;
}

export function registerAccessLog(app: FastifyInstance, access: Logger): void {
  // Callback style, not async: no promise per request.
  app.addHook('onResponse', (request, reply, done) => {
    access.info<AccessLine>({
      reqId: request.id,
      method: request.method,
      url: safeUrl(request.url),
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 100) / 100,
      ip: request.ip,
      userId: request.principal?.id,
    });
    done();
  });
}
