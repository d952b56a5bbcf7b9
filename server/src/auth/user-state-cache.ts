/**
 * Per-process cache of what every authenticated request needs: the user row and the ids of
 * their live sessions. Any change (role, department, deactivation, password, logout) is
 * announced on pub/sub and every process drops the entry, so it takes effect on the very
 * next request. While pub/sub is down the cache is bypassed, and it is cleared whenever
 * delivery resumes, since messages may have been missed.
 */
import { LRUCache } from 'lru-cache';
import type { UserRow } from '../db/schema.ts';
import type { PubSub } from '../realtime/pubsub.ts';

export const USER_INVALIDATE_CHANNEL = 'auth:user-invalidate';

export interface UserState {
  user: UserRow;
  sessions: ReadonlySet<string>;
}

export interface UserStateCache {
  get(userId: string): Promise<UserState | undefined>;
  /**
   * The cached state, synchronously, when get() would answer it from memory; undefined when
   * get() would have to load it (not cached, loading, or pub/sub down): then call get().
   */
  peek(userId: string): UserState | undefined;
  /** Reload from the database, bypassing the cache (a session id we have not seen yet). */
  reload(userId: string): Promise<UserState | undefined>;
  /** Drop the entry here and on every other process. */
  invalidate(userId: string): Promise<void>;
  /** Listeners run on every process when a user's state changes (sockets close on it). */
  onInvalidate(listener: (userId: string) => void): void;
}

export async function createUserStateCache(options: {
  load: (userId: string) => Promise<UserState | undefined>;
  pubsub: PubSub;
  ttlMs: number;
  max: number;
  /** An invalidation could not be announced (Redis unreachable); the caller still succeeds. */
  onPublishError?: (err: unknown, userId: string) => void;
}): Promise<UserStateCache> {
  const { load, pubsub } = options;
  const cache = new LRUCache<string, UserState>({
    max: options.max,
    ttl: options.ttlMs,
    fetchMethod: async (userId) => load(userId),
  });
  // invalidate() aborts a load in flight, rejecting everyone waiting on it; what that load
  // read may predate the change, so they load afresh rather than fail.
  const fetch = (userId: string) => cache.fetch(userId).catch(() => load(userId));
  const listeners = new Set<(userId: string) => void>();
  await pubsub.subscribe(USER_INVALIDATE_CHANNEL, (userId) => {
    cache.delete(userId);
    for (const l of listeners) l(userId);
  });
  pubsub.onResync(() => cache.clear());
  return {
    async get(userId) {
      if (!pubsub.healthy()) return load(userId);
      return fetch(userId);
    },
    peek(userId) {
      return pubsub.healthy() ? cache.get(userId) : undefined;
    },
    async reload(userId) {
      cache.delete(userId);
      if (!pubsub.healthy()) return load(userId);
      return fetch(userId);
    },
    async invalidate(userId) {
      cache.delete(userId);
      try {
        await pubsub.publish(USER_INVALIDATE_CHANNEL, userId);
      } catch (err) {
        // The change is committed; failing the request would not undo it. Processes that
        // cannot hear us cannot hear Redis either: they read from the database meanwhile
        // and clear their cache when delivery resumes.
        options.onPublishError?.(err, userId);
      }
    },
    onInvalidate(listener) {
      listeners.add(listener);
    },
  };
}
