import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { UserRow } from '../db/schema.ts';
import type { PubSub } from '../realtime/pubsub.ts';
import { createUserStateCache, type UserState } from './user-state-cache.ts';

/** One bus shared by several "processes", whose delivery a test can cut and restore. */
function bus() {
  const emitter = new EventEmitter();
  const nodes: Array<{ healthy: boolean; resync: Set<() => void> }> = [];
  return {
    node(): PubSub & { setHealthy(v: boolean): void; failPublish: boolean } {
      const state = { healthy: true, resync: new Set<() => void>() };
      nodes.push(state);
      const self = {
        kind: 'redis' as const,
        failPublish: false,
        async publish(channel: string, message: string) {
          if (self.failPublish) throw new Error('Stream isn’t writeable');
          emitter.emit(channel, message);
        },
        async subscribe(channel: string, handler: (m: string) => void) {
          emitter.on(channel, (m: string) => {
            if (state.healthy) handler(m);
          });
        },
        healthy: () => state.healthy,
        onResync(l: () => void) {
          state.resync.add(l);
        },
        async close() {},
        setHealthy(v: boolean) {
          const wasDown = !state.healthy;
          state.healthy = v;
          if (v && wasDown) for (const l of state.resync) l();
        },
      };
      return self;
    },
  };
}

/** A fake users table; `load` reads it, optionally slowly. */
function table() {
  const rows = new Map<string, { name: string; active: boolean }>();
  let loads = 0;
  let delayMs = 0;
  const load = async (userId: string): Promise<UserState | undefined> => {
    loads++;
    const row = rows.get(userId);
    const snapshot = row ? { ...row } : undefined; // read now, like a SELECT
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    if (!snapshot) return undefined;
    return {
      user: { id: userId, name: snapshot.name, is_active: snapshot.active } as UserRow,
      sessions: new Set(['s1']),
    };
  };
  return {
    rows,
    load,
    loads: () => loads,
    slow(ms: number) {
      delayMs = ms;
    },
  };
}

const options = { ttlMs: 60_000, max: 100 };

describe('user-state cache', () => {
  it('serves repeat reads from memory', async () => {
    const t = table();
    t.rows.set('u1', { name: 'Ann', active: true });
    const cache = await createUserStateCache({ load: t.load, pubsub: bus().node(), ...options });
    await cache.get('u1');
    await cache.get('u1');
    expect(t.loads()).toBe(1);
  });

  it('a change announced by one process is seen by the next read on another', async () => {
    const b = bus();
    const t = table();
    t.rows.set('u1', { name: 'Ann', active: true });
    const here = await createUserStateCache({ load: t.load, pubsub: b.node(), ...options });
    const there = await createUserStateCache({ load: t.load, pubsub: b.node(), ...options });
    const seen: string[] = [];
    there.onInvalidate((id) => seen.push(id));
    expect((await there.get('u1'))!.user.is_active).toBe(true);

    t.rows.set('u1', { name: 'Ann', active: false });
    await here.invalidate('u1');
    expect((await there.get('u1'))!.user.is_active).toBe(false);
    expect(seen).toEqual(['u1']);
  });

  it('a change announced while a read is loading: the read returns the new state, not an error', async () => {
    const b = bus();
    const t = table();
    t.rows.set('u1', { name: 'Ann', active: true });
    const here = await createUserStateCache({ load: t.load, pubsub: b.node(), ...options });
    const there = await createUserStateCache({ load: t.load, pubsub: b.node(), ...options });
    t.slow(30);
    const reading = there.get('u1'); // has read the row, still "on the wire"
    await new Promise((r) => setTimeout(r, 5));
    t.rows.set('u1', { name: 'Ann', active: false });
    await here.invalidate('u1');
    const state = await reading;
    expect(state!.user.is_active).toBe(false);
    t.slow(0);
    // What was read before the change was not kept either.
    expect((await there.get('u1'))!.user.is_active).toBe(false);
  });

  it('while delivery is down, every read goes to the database; after it resumes the cache starts empty', async () => {
    const b = bus();
    const t = table();
    t.rows.set('u1', { name: 'Ann', active: true });
    const node = b.node();
    const cache = await createUserStateCache({ load: t.load, pubsub: node, ...options });
    await cache.get('u1'); // cached
    node.setHealthy(false);
    t.rows.set('u1', { name: 'Ann B.', active: true }); // its announcement is lost
    expect((await cache.get('u1'))!.user.name).toBe('Ann B.');
    expect((await cache.get('u1'))!.user.name).toBe('Ann B.');
    expect(t.loads()).toBe(3);

    t.rows.set('u1', { name: 'Ann C.', active: true }); // lost too
    node.setHealthy(true);
    expect((await cache.get('u1'))!.user.name).toBe('Ann C.');
  });

  it('an announcement that cannot be sent does not fail the change', async () => {
    const t = table();
    t.rows.set('u1', { name: 'Ann', active: true });
    const node = bus().node();
    const errors: string[] = [];
    const cache = await createUserStateCache({
      load: t.load,
      pubsub: node,
      ...options,
      onPublishError: (_err, userId) => errors.push(userId),
    });
    await cache.get('u1');
    node.failPublish = true;
    t.rows.set('u1', { name: 'Ann', active: false });
    await expect(cache.invalidate('u1')).resolves.toBeUndefined();
    expect(errors).toEqual(['u1']);
    // Dropped here all the same.
    expect((await cache.get('u1'))!.user.is_active).toBe(false);
  });

  it('peek answers from memory only, exactly when get would not load', async () => {
    const b = bus();
    const t = table();
    t.rows.set('u1', { name: 'Ann', active: true });
    const node = b.node();
    const here = await createUserStateCache({ load: t.load, pubsub: b.node(), ...options });
    const cache = await createUserStateCache({ load: t.load, pubsub: node, ...options });
    expect(cache.peek('u1')).toBeUndefined(); // not loaded yet
    t.slow(20);
    const loading = cache.get('u1');
    expect(cache.peek('u1')).toBeUndefined(); // still loading
    await loading;
    t.slow(0);
    expect(cache.peek('u1')!.user.name).toBe('Ann');
    expect(t.loads()).toBe(1);

    // A change announced elsewhere drops it here: the next peek misses.
    t.rows.set('u1', { name: 'Ann', active: false });
    await here.invalidate('u1');
    expect(cache.peek('u1')).toBeUndefined();
    expect((await cache.get('u1'))!.user.is_active).toBe(false);
    expect(cache.peek('u1')!.user.is_active).toBe(false);

    // While delivery is down, nothing is answered from memory.
    node.setHealthy(false);
    expect(cache.peek('u1')).toBeUndefined();
  });
});
