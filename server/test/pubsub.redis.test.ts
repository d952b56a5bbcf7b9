/**
 * Redis pub/sub across connection pairs (as two processes would have them): delivery,
 * prefix isolation, health while the subscriber connection is down, and resync after it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis, type Redis, waitReady } from '../src/infra/redis.ts';
import { createRedisPubSub, type PubSub } from '../src/realtime/pubsub.ts';
import { clearRedisPrefix, testKeyPrefix, testRedisUrl, waitUntil } from './helpers/redis.ts';

const url = testRedisUrl();
const prefix = testKeyPrefix('pubsub');
const opened: PubSub[] = [];
const connections: Redis[] = [];

/** One "process": a shared publisher and a dedicated subscriber connection. */
async function pair(keyPrefix = prefix) {
  const name = `mz-test-sub-${randomBytes(4).toString('hex')}`;
  const publisher = createRedis(url, { enableOfflineQueue: false });
  const subscriber = createRedis(url, { enableAutoPipelining: false, connectionName: name });
  await Promise.all([waitReady(publisher), waitReady(subscriber)]);
  connections.push(publisher);
  const pubsub = createRedisPubSub(publisher, subscriber, keyPrefix);
  opened.push(pubsub);
  return { pubsub, subscriber, name };
}

/** Drops the named connection from the server side, as a network cut would. */
async function killConnection(name: string) {
  const admin = createRedis(url);
  try {
    await waitReady(admin);
    const list = (await admin.client('LIST')) as string;
    const line = list.split('\n').find((l) => l.includes(` name=${name} `));
    if (!line) throw new Error(`no connection named ${name}`);
    const id = /\bid=(\d+)/.exec(line)![1]!;
    await admin.client('KILL', 'ID', id);
  } finally {
    admin.disconnect();
  }
}

function collector() {
  const got: string[] = [];
  return { got, handler: (m: string) => got.push(m) };
}

afterAll(async () => {
  for (const p of opened) await p.close();
  for (const c of connections) c.disconnect();
  await clearRedisPrefix(url, prefix);
});

describe('Redis pub/sub', () => {
  it('a message published by one process reaches the subscribers of every process', async () => {
    const a = await pair();
    const b = await pair();
    const onA = collector();
    const onB = collector();
    const onB2 = collector();
    await a.pubsub.subscribe('users', onA.handler);
    await b.pubsub.subscribe('users', onB.handler);
    await b.pubsub.subscribe('users', onB2.handler);
    expect(a.pubsub.kind).toBe('redis');
    expect(a.pubsub.healthy()).toBe(true);

    await a.pubsub.publish('users', 'user-1');
    await waitUntil(() => onB.got.length === 1 && onA.got.length === 1, { what: 'delivery' });
    expect(onB.got).toEqual(['user-1']);
    expect(onB2.got).toEqual(['user-1']);
    expect(onA.got).toEqual(['user-1']);
  });

  it('channels and key prefixes keep messages apart', async () => {
    const a = await pair();
    const sameChannelOtherPrefix = await pair(testKeyPrefix('pubsub-other'));
    const otherChannel = collector();
    const otherPrefix = collector();
    const wanted = collector();
    await a.pubsub.subscribe('roles', otherChannel.handler);
    await a.pubsub.subscribe('sessions', wanted.handler);
    await sameChannelOtherPrefix.pubsub.subscribe('sessions', otherPrefix.handler);

    await a.pubsub.publish('sessions', 's-1');
    await waitUntil(() => wanted.got.length === 1, { what: 'delivery' });
    // A round trip after the publish: anything misrouted would have arrived by now.
    await a.pubsub.publish('sessions', 's-2');
    await waitUntil(() => wanted.got.length === 2, { what: 'second delivery' });
    expect(otherChannel.got).toEqual([]);
    expect(otherPrefix.got).toEqual([]);
  });

  it('is unhealthy while the subscriber connection is down, and resyncs once it is back', async () => {
    const a = await pair();
    const b = await pair();
    const onB = collector();
    await b.pubsub.subscribe('users', onB.handler);
    let resyncs = 0;
    b.pubsub.onResync(() => resyncs++);
    expect(b.pubsub.healthy()).toBe(true);

    const dropped = new Promise((r) => b.subscriber.once('close', r));
    await killConnection(b.name);
    await dropped;
    expect(b.pubsub.healthy()).toBe(false);
    expect(resyncs).toBe(0);

    await waitUntil(() => b.pubsub.healthy(), { timeoutMs: 5_000, what: 'subscriber reconnect' });
    await waitUntil(() => resyncs === 1, { what: 'resync after reconnect' });
    // The subscriptions came back with the connection: delivery works again.
    await waitUntil(
      async () => {
        await a.pubsub.publish('users', 'after-reconnect');
        return onB.got.includes('after-reconnect');
      },
      { timeoutMs: 2_000, intervalMs: 50, what: 'delivery after reconnect' },
    );
    expect(a.pubsub.healthy()).toBe(true);
  });

  it('does not resync on a healthy start, nor after close', async () => {
    const a = await pair();
    let resyncs = 0;
    a.pubsub.onResync(() => resyncs++);
    await a.pubsub.subscribe('users', () => {});
    await a.pubsub.close();
    await waitUntil(() => !a.pubsub.healthy(), { what: 'unhealthy after close' });
    expect(resyncs).toBe(0);
  });
});
