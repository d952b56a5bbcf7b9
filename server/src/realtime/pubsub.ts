/**
 * Publish/subscribe across processes: Redis with REDIS_URL, in-process otherwise.
 * Subscribers learn when the channel may have missed messages (Redis reconnect), so caches
 * built on it can drop everything and stop trusting themselves while it is down.
 */
import { EventEmitter } from 'node:events';
import type { Redis } from '../infra/redis.ts';

export type Handler = (message: string) => void;

export interface PubSub {
  readonly kind: 'redis' | 'in-process';
  publish(channel: string, message: string): Promise<void>;
  subscribe(channel: string, handler: Handler): Promise<void>;
  /** True while messages are known to be delivered. */
  healthy(): boolean;
  /** Called when delivery resumes after a gap (messages may have been lost). */
  onResync(listener: () => void): void;
  close(): Promise<void>;
}

export function createInProcessPubSub(): PubSub {
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  return {
    kind: 'in-process',
    async publish(channel, message) {
      emitter.emit(channel, message);
    },
    async subscribe(channel, handler) {
      emitter.on(channel, handler);
    },
    healthy: () => true,
    onResync() {},
    async close() {
      emitter.removeAllListeners();
    },
  };
}

/** `publisher` is a shared connection; `subscriber` is dedicated (subscribe mode). */
export function createRedisPubSub(publisher: Redis, subscriber: Redis, prefix: string): PubSub {
  const handlers = new Map<string, Set<Handler>>();
  const resyncListeners = new Set<() => void>();
  let ready = subscriber.status === 'ready';
  subscriber.on('message', (channel: string, message: string) => {
    const set = handlers.get(channel.slice(prefix.length));
    if (set) for (const h of set) h(message);
  });
  subscriber.on('ready', () => {
    const wasDown = !ready;
    ready = true;
    // ioredis re-subscribes on reconnect; anything published meanwhile is lost.
    if (wasDown) for (const l of resyncListeners) l();
  });
  const down = () => {
    ready = false;
  };
  subscriber.on('close', down);
  subscriber.on('end', down);
  subscriber.on('reconnecting', down);
  return {
    kind: 'redis',
    async publish(channel, message) {
      await publisher.publish(prefix + channel, message);
    },
    async subscribe(channel, handler) {
      let set = handlers.get(channel);
      if (!set) {
        set = new Set();
        handlers.set(channel, set);
        await subscriber.subscribe(prefix + channel);
      }
      set.add(handler);
    },
    healthy: () => ready && subscriber.status === 'ready',
    onResync(listener) {
      resyncListeners.add(listener);
    },
    async close() {
      handlers.clear();
      subscriber.disconnect();
    },
  };
}
