/**
 * The statements at either end of a chat turn, each shared by the turns ready at the same
 * time (group commit, docs/adr/0009; db/group-commit.ts): the answer writer stores a turn's
 * answer with its usage rows and gives the lease back; the lease taker takes a session's free
 * lease, inserts the user message and reads the history. Nothing changes for a single turn, and
 * every caller's promise settles only once its own row is committed (or has failed); two items
 * of one session never share a statement; a failed statement of several is retried item by
 * item, so one bad item fails only its own turn.
 */
import type { Executor } from '../db/executor.ts';
import { blamesAnItem, createGroupCommit } from '../db/group-commit.ts';
import {
  type AnswerValues,
  insertAnswersAndEndTurns,
  type LeasedTurn,
  type LeaseInsertValues,
  leaseAndInsertUserMessages,
  type MessageRow,
  sessionKey,
} from './chat.repository.ts';

/**
 * Items in one statement at most: its JSON parameter and its result stay bounded (an answer's
 * metadata holds its tool transcript; a lease returns the session's history).
 */
export const TURN_BATCH_MAX = 64;
/** Statements of each kind running at once, of this process; the others wait for one to end. */
export const TURN_STATEMENTS_IN_FLIGHT = 2;

interface Limits {
  maxBatch?: number;
  maxInFlight?: number;
}

/** A group commit of one session's items: keyed by session, retried alone for an item's error. */
function bySession<I extends { session_id: string }, O>(
  run: (items: readonly I[]) => Promise<Map<string, O>>,
  options: Limits,
) {
  return createGroupCommit<I, O>({
    key: (item) => sessionKey(item.session_id),
    run,
    retryAlone: blamesAnItem,
    maxBatch: options.maxBatch ?? TURN_BATCH_MAX,
    maxInFlight: options.maxInFlight ?? TURN_STATEMENTS_IN_FLIGHT,
  });
}

export interface AnswerWriter {
  /** Stores the answer and ends its turn; resolves with the stored row once committed. */
  store(answer: AnswerValues): Promise<MessageRow>;
}

export function createAnswerWriter(
  db: Executor,
  options: Limits & {
    /** The statement (tests count its calls). */
    insert?: typeof insertAnswersAndEndTurns;
  } = {},
): AnswerWriter {
  const insert = options.insert ?? insertAnswersAndEndTurns;
  const group = bySession((answers: readonly AnswerValues[]) => insert(db, answers), options);
  return {
    async store(answer) {
      const row = await group.submit(answer);
      if (!row) throw new Error('answer not stored');
      return row;
    },
  };
}

export interface LeaseTaker {
  /**
   * Takes the session's free lease and inserts the user message (leaseAndInsertUserMessages);
   * undefined when the lease is not taken, and then nothing is stored.
   */
  take(values: LeaseInsertValues): Promise<LeasedTurn | undefined>;
}

export function createLeaseTaker(
  db: Executor,
  options: Limits & { lease?: typeof leaseAndInsertUserMessages } = {},
): LeaseTaker {
  const lease = options.lease ?? leaseAndInsertUserMessages;
  const group = bySession((items: readonly LeaseInsertValues[]) => lease(db, items), options);
  return { take: (values) => group.submit(values) };
}
