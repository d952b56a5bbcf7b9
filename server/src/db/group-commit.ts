/**
 * Group commit (docs/adr/0009): items that are ready at the same time go to the database in one
 * statement. An item that finds fewer than `maxInFlight` statements running leaves at the end of
 * the current turn of the event loop (setImmediate), with whatever was queued by then; otherwise
 * it waits for a running statement to end and leaves with what queued in the meantime, so the
 * busier the process, the more items share a statement, and a lone item waits for nothing.
 *
 * Each item has a key (a chat session): a statement never carries two items of one key, and
 * `run` gives each item's result back under its key. Each caller's promise settles with its own
 * item's result (undefined when `run` gave none) once the statement has ended. If a statement of
 * several items fails, each item is run again alone, one after the other, so one bad item fails
 * only its own caller and the limit of statements at once holds.
 */

export interface GroupCommit<I, O> {
  /** Runs the item in the next statement; its result, once that statement has ended. */
  submit(item: I): Promise<O | undefined>;
}

export interface GroupCommitOptions<I, O> {
  /** Items of one key never share a statement. */
  key(item: I): string;
  /** One statement for these items (distinct keys); each result under its item's key. */
  run(items: readonly I[]): Promise<Map<string, O>>;
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
  let inFlight = 0;
  let scheduled = false;

  function schedule(): void {
    if (scheduled || inFlight >= maxInFlight || queue.length === 0) return;
    scheduled = true;
    setImmediate(flush);
  }

  function flush(): void {
    scheduled = false;
    while (inFlight < maxInFlight && queue.length > 0) {
      const batch: Pending<I, O>[] = [];
      const keys = new Set<string>();
      const rest: Pending<I, O>[] = [];
      for (const pending of queue) {
        if (batch.length < maxBatch && !keys.has(pending.key)) {
          keys.add(pending.key);
          batch.push(pending);
        } else rest.push(pending);
      }
      queue = rest;
      inFlight += 1;
      void run(batch).finally(() => {
        inFlight -= 1;
        schedule();
      });
    }
  }

  async function run(batch: Pending<I, O>[]): Promise<void> {
    let results: Map<string, O>;
    try {
      results = await options.run(batch.map((p) => p.item));
    } catch (err) {
      if (batch.length === 1) batch[0]!.reject(err);
      // One after the other, in this statement's place: still maxInFlight at most.
      else for (const p of batch) await run([p]);
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
