/** ioredis connections. Commands fail fast while Redis is down instead of queueing forever. */
import { Redis, type RedisOptions } from 'ioredis';

export type { Redis };

export function createRedis(url: string, options: RedisOptions = {}): Redis {
  const client = new Redis(url, {
    lazyConnect: false,
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
    ...options,
  });
  // Errors surface through command rejections and health; an unhandled 'error' would crash.
  client.on('error', () => {});
  return client;
}

export async function waitReady(client: Redis, timeoutMs = 5_000): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not reachable within ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      client.off('ready', onReady);
    };
    client.on('ready', onReady);
  });
}
