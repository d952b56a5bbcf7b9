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

const MAX_UNSENT = 10_000;

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
    if (ready) return;
    // ioredis re-subscribes on reconnect, but 'ready' fires before Redis confirms it. Our own
    // SUBSCRIBE is answered after ioredis's, so once it returns no message can be missed;
    // only then is the channel trusted again. Anything published during the gap is lost,
    // so listeners resynchronise.
    const channels = [...handlers.keys()].map((c) => prefix + c);
    const confirmed = channels.length ? subscriber.subscribe(...channels) : Promise.resolve();
    confirmed.then(
      () => {
        if (subscriber.status !== 'ready' || ready) return;
        ready = true;
        for (const l of resyncListeners) l();
      },
      () => {}, // the connection dropped again; the next 'ready' retries
    );
  });
  const down = () => {
    ready = false;
  };
  subscriber.on('close', down);
  subscriber.on('end', down);
  subscriber.on('reconnecting', down);
  // Messages that could not be published wait (bounded) for the publisher to reconnect.
  const unsent: Array<[string, string]> = [];
  publisher.on('ready', () => {
    for (const [channel, message] of unsent.splice(0))
      publisher.publish(channel, message).catch(() => {});
  });
  return {
    kind: 'redis',
    async publish(channel, message) {
      try {
        await publisher.publish(prefix + channel, message);
      } catch (err) {
        if (unsent.length < MAX_UNSENT) unsent.push([prefix + channel, message]);
        throw err;
      }
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
