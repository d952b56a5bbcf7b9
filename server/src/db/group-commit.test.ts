import { afterEach, describe, expect, it, vi } from 'vitest';
import { blamesAnItem, createGroupCommit, type GroupCommitOptions } from './group-commit.ts';

interface Item {
  key: string;
  value: string;
}

/** A run that records each statement and answers `value!` per key, after `hold` resolves. */
function recorder(overrides: Partial<GroupCommitOptions<Item, string>> = {}) {
  const statements: string[][] = [];
  const log: string[] = [];
  let running = 0;
  let maxRunning = 0;
  const options: GroupCommitOptions<Item, string> = {
    key: (i) => i.key,
    async run(items) {
      statements.push(items.map((i) => i.value));
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      log.push(`start ${items.map((i) => i.value).join(',')}`);
      await new Promise((r) => setImmediate(r));
      log.push(`end ${items.map((i) => i.value).join(',')}`);
      running -= 1;
      return new Map(items.map((i) => [i.key, `${i.value}!`]));
    },
    retryAlone: () => true,
    maxBatch: 64,
    maxInFlight: 2,
    ...overrides,
  };
  return { group: createGroupCommit(options), statements, log, maxRunning: () => maxRunning };
}

const item = (key: string, value = key): Item => ({ key, value });

afterEach(() => {
  vi.useRealTimers();
});

describe('createGroupCommit', () => {
  it('runs the items submitted together in one statement, each caller getting its own result', async () => {
    const { group, statements } = recorder();
    const results = await Promise.all(['a', 'b', 'c'].map((k) => group.submit(item(k))));
    expect(results).toEqual(['a!', 'b!', 'c!']);
    expect(statements).toEqual([['a', 'b', 'c']]);
  });

  it('gives undefined to an item the statement gave no result for', async () => {
    const { group } = recorder({ run: async (items) => new Map([[items[0]!.key, 'only']]) });
    expect(await Promise.all([group.submit(item('a')), group.submit(item('b'))])).toEqual([
      'only',
      undefined,
    ]);
  });

  it('sends a lone item at the end of the event loop turn, with no timer', async () => {
    // setTimeout and setInterval never fire here: a timer-based batcher would hang.
    vi.useFakeTimers({ toFake: ['setTimeout', 'setInterval', 'Date'] });
    const { group, statements } = recorder();
    expect(await group.submit(item('alone'))).toBe('alone!');
    expect(statements).toEqual([['alone']]);
  });

  it('keeps to maxBatch and maxInFlight, and the waiting items leave together', async () => {
    const { group, statements, maxRunning } = recorder({ maxBatch: 3, maxInFlight: 2 });
    const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
    const results = await Promise.all(keys.map((k) => group.submit(item(k))));
    expect(results).toEqual(keys.map((k) => `${k}!`));
    expect(statements.slice(0, 2)).toEqual([
      ['k0', 'k1', 'k2'],
      ['k3', 'k4', 'k5'],
    ]);
    expect(statements.flat().sort()).toEqual([...keys].sort());
    expect(Math.max(...statements.map((s) => s.length))).toBeLessThanOrEqual(3);
    expect(maxRunning()).toBe(2);
  });

  it('never runs two items of one key at once, and keeps their order', async () => {
    const { group, statements, log } = recorder({ maxInFlight: 2 });
    const results = await Promise.all([
      group.submit(item('s', 'first')),
      group.submit(item('s', 'second')),
      group.submit(item('t', 'other')),
      group.submit(item('s', 'third')),
    ]);
    expect(results).toEqual(['first!', 'second!', 'other!', 'third!']);
    expect(statements).toEqual([['first', 'other'], ['second'], ['third']]);
    // Each statement of key s starts only after the previous one ended.
    expect(log.indexOf('start second')).toBeGreaterThan(log.indexOf('end first,other'));
    expect(log.indexOf('start third')).toBeGreaterThan(log.indexOf('end second'));
  });

  it('runs the items again one by one when the error is blamed on an item', async () => {
    const calls: string[][] = [];
    const { group } = recorder({
      async run(items) {
        calls.push(items.map((i) => i.value));
        if (items.some((i) => i.value === 'bad'))
          throw Object.assign(new Error('bad row'), { code: '23503' });
        return new Map(items.map((i) => [i.key, 'ok']));
      },
      retryAlone: blamesAnItem,
    });
    const results = await Promise.allSettled([
      group.submit(item('a')),
      group.submit(item('b', 'bad')),
      group.submit(item('c')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(calls).toEqual([['a', 'bad', 'c'], ['a'], ['bad'], ['c']]);
  });

  it('fails every item at once when the error says nothing about the items', async () => {
    let calls = 0;
    const lost = Object.assign(new Error('Connection terminated unexpectedly'), {});
    const { group } = recorder({
      async run() {
        calls += 1;
        throw lost;
      },
      retryAlone: blamesAnItem,
    });
    const results = await Promise.allSettled([group.submit(item('a')), group.submit(item('b'))]);
    expect(results).toEqual([
      { status: 'rejected', reason: lost },
      { status: 'rejected', reason: lost },
    ]);
    expect(calls).toBe(1);
  });

  it('settles every caller when run throws at once or gives no results', async () => {
    const throwing = recorder({
      run: () => {
        throw new Error('sync');
      },
      retryAlone: () => false,
    });
    await expect(throwing.group.submit(item('a'))).rejects.toThrow('sync');
    const broken = recorder({
      run: async () => undefined as unknown as Map<string, string>,
      retryAlone: () => false,
    });
    const results = await Promise.allSettled([
      broken.group.submit(item('a')),
      broken.group.submit(item('b')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    // The writer goes on afterwards.
    const ok = recorder();
    expect(await ok.group.submit(item('z'))).toBe('z!');
  });

  it('refuses limits below one', () => {
    const base = { key: (i: Item) => i.key, run: async () => new Map(), retryAlone: () => false };
    expect(() => createGroupCommit({ ...base, maxBatch: 0, maxInFlight: 1 })).toThrow(/limits/);
    expect(() => createGroupCommit({ ...base, maxBatch: 1, maxInFlight: 0 })).toThrow(/limits/);
  });
});

describe('blamesAnItem', () => {
  it('blames data, constraint, deadlock and serialization errors on an item, nothing else', () => {
    for (const code of ['22P02', '23505', '23503', '40P01', '40001'])
      expect(blamesAnItem({ code })).toBe(true);
    for (const err of [
      { code: '57014' },
      { code: '08006' },
      { code: 'ECONNRESET' },
      new Error('x'),
      null,
    ])
      expect(blamesAnItem(err)).toBe(false);
  });
});
