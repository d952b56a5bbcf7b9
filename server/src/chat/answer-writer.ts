/**
 * Group commit for turns' answers (docs/adr/0009). Each chat turn ends with one statement that
 * stores the answer with its usage rows and gives the session's lease back. Under load many
 * turns end at about the same time; each statement costs PostgreSQL a transaction and a WAL
 * flush, and this process a round trip. So the answers that are ready in the same turn of the
 * event loop, or while the previous statements are still running, go to PostgreSQL together:
 * one statement for up to `maxBatch` answers, at most `maxInFlight` statements at once.
 *
 * Nothing changes for a single turn: an answer that finds no statement running leaves at the
 * end of the current turn of the event loop (setImmediate), and every caller's promise settles
 * only once its own answer is committed (or has failed). Two answers of one session never share
 * a statement. If a statement of several answers fails, each of them is tried again alone, so
 * one bad answer fails only its own turn.
 */
import type { Executor } from '../db/executor.ts';
import { type AnswerValues, insertAnswersAndEndTurns, type MessageRow } from './chat.repository.ts';

/** Answers in one statement at most: its JSON parameter stays small (an answer is ~1 KB). */
export const ANSWER_BATCH_MAX = 64;
/** Answer statements running at once, of this process; the others wait for one to end. */
export const ANSWER_STATEMENTS_IN_FLIGHT = 2;

export interface AnswerWriter {
  /** Stores the answer and ends its turn; resolves with the stored row once committed. */
  store(answer: AnswerValues): Promise<MessageRow>;
}

interface Pending {
  answer: AnswerValues;
  resolve(row: MessageRow): void;
  reject(err: unknown): void;
}

export function createAnswerWriter(
  db: Executor,
  options: {
    maxBatch?: number;
    maxInFlight?: number;
    /** The statement (tests count its calls). */
    insert?: typeof insertAnswersAndEndTurns;
  } = {},
): AnswerWriter {
  const maxBatch = options.maxBatch ?? ANSWER_BATCH_MAX;
  const maxInFlight = options.maxInFlight ?? ANSWER_STATEMENTS_IN_FLIGHT;
  const insert = options.insert ?? insertAnswersAndEndTurns;
  if (!(maxBatch >= 1 && maxInFlight >= 1)) throw new Error('answer writer: limits must be >= 1');
  let queue: Pending[] = [];
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
      const batch: Pending[] = [];
      const sessions = new Set<string>();
      const rest: Pending[] = [];
      for (const pending of queue) {
        const session = pending.answer.session_id;
        if (batch.length < maxBatch && !sessions.has(session)) {
          sessions.add(session);
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

  async function run(batch: Pending[]): Promise<void> {
    let rows: Map<string, MessageRow>;
    try {
      rows = await insert(
        db,
        batch.map((p) => p.answer),
      );
    } catch (err) {
      if (batch.length === 1) batch[0]!.reject(err);
      // One after the other, in this statement's place: still maxInFlight at most.
      else for (const p of batch) await run([p]);
      return;
    }
    for (const p of batch) {
      const row = rows.get(p.answer.session_id);
      if (row) p.resolve(row);
      else p.reject(new Error('answer not stored'));
    }
  }

  return {
    store(answer) {
      return new Promise<MessageRow>((resolve, reject) => {
        queue.push({ answer, resolve, reject });
        schedule();
      });
    },
  };
}
