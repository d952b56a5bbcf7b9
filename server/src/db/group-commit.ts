/**
 * Group commit (docs/adr/0009): items that are ready at the same time go to the database in one
 * statement. An item that finds fewer than `maxInFlight` statements running leaves at the end of
 * the current turn of the event loop (one setImmediate, no timer), with whatever was queued by
 * then; otherwise it waits for a running statement to end and leaves with what queued in the
 * meantime, so the busier the process, the more items share a statement.
 *
 * Each item has a key (a chat session). Items of one key never share a statement, and never run
 * at the same time: the second waits until the first's statement has ended, so they reach the
 * database in the order they were submitted. `run` gives each item's result back under its key;
 * each caller's promise settles with its own item's result (undefined when `run` gave none) once
 * the statement has ended.
 *
 * If a statement of several items fails with an error that `retryAlone` blames on one item (bad
 * data, a constraint, a deadlock), each item is run again alone, one after the other, so one bad
 * item fails only its own caller and the limit of statements at once holds. Any other error (the
 * connection, a timeout: it says nothing about the items, and the statement may even have
 * committed) fails every item of the statement, as it would have failed each alone.
 */

export interface GroupCommit<I, O> {
  /** Runs the item in the next statement; its result, once that statement has ended. */
  submit(item: I): Promise<O | undefined>;
}

export interface GroupCommitOptions<I, O> {
  /** Items of one key never share a statement nor run at the same time. */
  key(item: I): string;
  /** One statement for these items (distinct keys); each result under its item's key. */
  run(items: readonly I[]): Promise<ReadonlyMap<string, O>>;
  /** Whether a failed statement of several items is worth running again item by item. */
  retryAlone(err: unknown): boolean;
  /** Items in one statement at most. */
  maxBatch: number;
  /** Statements running at once, at most. */
  maxInFlight: number;
}

interface Pending<I, O> {
  item: I;
  key: string;
  resolve(result: O | undefined): void;
  reject(err: unknown): void;
}

export function createGroupCommit<I, O>(options: GroupCommitOptions<I, O>): GroupCommit<I, O> {
  const { maxBatch, maxInFlight } = options;
  if (!(maxBatch >= 1 && maxInFlight >= 1)) throw new Error('group commit: limits must be >= 1');
  let queue: Pending<I, O>[] = [];
  /** Keys of the items in running statements. */
  const running = new Set<string>();
  let inFlight = 0;
  let scheduled = false;

  function schedule(): void {
    if (scheduled || inFlight >= maxInFlight || queue.length === 0) return;
    scheduled = true;
    setImmediate(flush);
  }

  function flush(): void {
    scheduled = false;
    while (inFlight < maxInFlight) {
      const batch: Pending<I, O>[] = [];
      const keys = new Set<string>();
      const rest: Pending<I, O>[] = [];
      for (const pending of queue) {
        // An item whose key is running or taken, and every later item of that key, waits.
        if (batch.length < maxBatch && !keys.has(pending.key) && !running.has(pending.key))
          batch.push(pending);
        else rest.push(pending);
        keys.add(pending.key);
      }
      if (batch.length === 0) return;
      queue = rest;
      inFlight += 1;
      for (const p of batch) running.add(p.key);
      void settle(batch).finally(() => {
        inFlight -= 1;
        for (const p of batch) running.delete(p.key);
        schedule();
      });
    }
  }

  /** Runs the batch; never rejects, and every caller's promise settles. */
  async function settle(batch: Pending<I, O>[]): Promise<void> {
    let results: ReadonlyMap<string, O>;
    try {
      results = await options.run(batch.map((p) => p.item));
      if (!(results instanceof Map)) throw new Error('group commit: run gave no results');
    } catch (err) {
      if (batch.length > 1 && options.retryAlone(err)) {
        // One after the other, in this statement's place: still maxInFlight at most.
        for (const p of batch) await settle([p]);
      } else for (const p of batch) p.reject(err);
      return;
    }
    for (const p of batch) p.resolve(results.get(p.key));
  }

  return {
    submit(item) {
      return new Promise<O | undefined>((resolve, reject) => {
        queue.push({ item, key: options.key(item), resolve, reject });
        schedule();
      });
    },
  };
}

/**
 * PostgreSQL errors that one item of a statement can cause: bad data (class 22), a broken
 * constraint (class 23), a deadlock or a serialization failure (its rows, in that order). Not
 * the connection, a timeout, or an error without a SQLSTATE.
 */
export function blamesAnItem(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || code.length !== 5) return false;
  return code.startsWith('22') || code.startsWith('23') || code === '40P01' || code === '40001';
}
