import { describe, expect, it } from 'vitest';
import { createInProcessPubSub } from './pubsub.ts';

describe('in-process pub/sub', () => {
  it('delivers a message to every handler of its channel, and only of its channel', async () => {
    const pubsub = createInProcessPubSub();
    const a: string[] = [];
    const b: string[] = [];
    const other: string[] = [];
    await pubsub.subscribe('users', (m) => a.push(m));
    await pubsub.subscribe('users', (m) => b.push(m));
    await pubsub.subscribe('other', (m) => other.push(m));
    await pubsub.publish('users', 'u1');
    await pubsub.publish('users', 'u2');
    expect(a).toEqual(['u1', 'u2']);
    expect(b).toEqual(['u1', 'u2']);
    expect(other).toEqual([]);
    await pubsub.close();
  });

  it('is always healthy and never asks for a resync', async () => {
    const pubsub = createInProcessPubSub();
    let resyncs = 0;
    pubsub.onResync(() => resyncs++);
    expect(pubsub.kind).toBe('in-process');
    expect(pubsub.healthy()).toBe(true);
    await pubsub.publish('nobody-listens', 'x');
    expect(resyncs).toBe(0);
    await pubsub.close();
  });

  it('delivers nothing after close', async () => {
    const pubsub = createInProcessPubSub();
    const got: string[] = [];
    await pubsub.subscribe('users', (m) => got.push(m));
    await pubsub.close();
    await pubsub.publish('users', 'late');
    expect(got).toEqual([]);
  });

  it('supports many subscribers on one channel without warnings', async () => {
    const pubsub = createInProcessPubSub();
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    let count = 0;
    for (let i = 0; i < 50; i++) await pubsub.subscribe('busy', () => count++);
    await pubsub.publish('busy', 'x');
    await new Promise((r) => setImmediate(r));
    process.off('warning', onWarning);
    expect(count).toBe(50);
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    await pubsub.close();
  });
});
