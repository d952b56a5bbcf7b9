/**
 * One chat turn over REST: load or create the caller's session, pick the agent (explicit,
 * the session's, else the router), store the user message, run the agent with the session's
 * earlier turns, store the reply (with the transcript of tool calls and results so the next
 * turn's history is valid), and answer the whole reply.
 *
 * Ordering and idempotency:
 * - One turn per session at a time, in arrival order: an in-process promise chain per session,
 *   and across processes a lease on the chat_sessions row (docs/adr/0005), taken with the
 *   query that checks ownership and given back with the one that touches the session.
 * - Cancel reaches the turn on whichever process runs it (pub/sub); on shutdown the running
 *   turns are aborted and stored as failed (service_unavailable).
 * - A client_message_id is sent to the model once: duplicates in this process wait for the
 *   first (an in-process map); across processes the unique index on (user_id,
 *   client_message_id) makes the second insert lose, and the loser polls briefly for the
 *   winner's reply. Same id with different content is 409 conflict.
 * - Model errors (llm_not_configured, llm_unavailable, budget_exceeded, …) keep the user
 *   message, store an assistant row with { status: 'failed', error }, and are rethrown.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type {
  ChatReply,
  ChatSendRequest,
  ChatSessionDetail,
  ChatSessionItem,
  ChatSessionList,
  ChatSessionQuery,
  ChatToolCall,
  RoutedBy,
  WsServerEventBody,
} from '@mezzofy/protocol';
import type { AgentEvent, AgentRunner } from '../agents/agent.ts';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { RequestMeta } from '../auth/auth.service.ts';
import type { Principal } from '../auth/principal.ts';
import type { Database } from '../db/database.ts';
import { toPage } from '../db/pagination.ts';
import type { PendingActionRow } from '../db/schema.ts';
import { AppError, notFound } from '../errors.ts';
import type { IntentRouter, RouteDecision } from '../gateway/intent-router.ts';
import type { ChatMessage, ContentPart } from '../llm/types.ts';
import { insertUsage, type UsageRow } from '../llm/usage.repository.ts';
import type { Logger } from '../logging/logger.ts';
import { eventsOf } from '../realtime/turn-events.ts';
import type { UserEvents } from '../realtime/user-events.ts';
import type { ToolOutcome } from '../tools/tool.ts';
import {
  type AnswerValues,
  deleteEmptySession,
  findByClientMessageId,
  findOwnSession,
  findReplyTo,
  insertSession,
  insertUserMessage,
  leaseSession,
  listMessages,
  listSessions,
  type MessageRow,
  releaseSession,
  type SessionRow,
  sessionBusy,
  softDeleteSession,
  updateMessageMetadata,
} from './chat.repository.ts';
import { turnsOf } from './history.ts';
import type { ImageMediaType } from './media-type.ts';
import type { FitHistoryInput, SessionHistory } from './session-history.ts';
import { createAnswerWriter, createLeaseTaker } from './turn-statements.ts';

const TITLE_CHARS = 60;

export interface ChatServiceDeps {
  database: Database;
  agents: AgentRunner;
  router: Pick<IntentRouter, 'route'>;
  /** Fits a session's earlier turns into the model's context budget. */
  history: SessionHistory;
  limits: {
    maxMessageChars: number;
    /** How long a duplicate waits for another process's reply. */
    duplicateWaitMs: number;
    /**
     * A turn's lease on its session (longer than any turn can run); a process that dies
     * mid-turn blocks its session at most this long.
     */
    turnLeaseMs: number;
    /** How long a send waits for another process's turn in the same session. */
    turnWaitMs: number;
  };
  /** Fan-out to the user's sockets on every process, and cancels from any process. */
  events: UserEvents;
  /** The user as a principal now (for resuming a turn after an approval); null if inactive. */
  principalOf: (userId: string) => Promise<Principal | null>;
  log: Logger;
}

export type ChatService = ReturnType<typeof createChatService>;

/** Optional streaming and cancellation for one send (the WebSocket uses both; REST neither). */
export interface SendOptions {
  /** Each of the agent's events, as it happens (not called for a duplicate's stored reply). */
  onEvent?: (event: AgentEvent) => void;
  /** Cancels the turn: the agent stops and the reply ends with finish 'cancelled'. */
  signal?: AbortSignal;
  /** An image sent with the message (POST /chat/send-media); the turn uses the vision models. */
  media?: { mediaType: ImageMediaType; data: Buffer; name: string };
}

function titleOf(message: string): string {
  const flat = message.replace(/\s+/g, ' ').trim();
  return flat.length > TITLE_CHARS ? `${flat.slice(0, TITLE_CHARS - 1)}…` : flat;
}

/** The reply as stored in the assistant row, so a duplicate gets exactly the same answer. */
function replyOf(sessionId: string, row: MessageRow): ChatReply {
  const m = row.metadata ?? {};
  if (m.status === 'failed') {
    const code = (m.error as AppError['code'] | undefined) ?? 'internal_error';
    throw new AppError(code, (m.message as string | undefined) ?? 'the model call failed');
  }
  return {
    session_id: sessionId,
    message_id: row.id,
    agent: m.agent as ChatReply['agent'],
    routed_by: m.routed_by as RoutedBy,
    text: row.content,
    finish: m.finish as ChatReply['finish'],
    provider: (m.provider as string | null) ?? null,
    model: (m.model as string | null) ?? null,
    fallback_reason: (m.fallback_reason as string | null) ?? null,
    usage: m.usage as ChatReply['usage'],
    tool_calls: (m.tool_calls as ChatToolCall[]) ?? [],
    pending_approvals: (m.pending_approvals as string[]) ?? [],
  };
}

/** The user message the model reads: the text, and the image when one was sent. */
function userMessageOf(message: string, media: SendOptions['media']): ChatMessage {
  const content: ContentPart[] = [];
  if (media)
    content.push({
      type: 'image',
      mediaType: media.mediaType,
      data: media.data.toString('base64'),
    });
  if (message) content.push({ type: 'text', text: message });
  return { role: 'user', content };
}

/** The stored transcript with one tool call's result replaced (null if the call is not in it). */
function withToolResult(
  transcript: ChatMessage[],
  callId: string,
  outcome: ToolOutcome,
): ChatMessage[] | null {
  let found = false;
  const next = transcript.map((m) =>
    m.role !== 'tool'
      ? m
      : {
          ...m,
          content: m.content.map((p): ContentPart => {
            if (p.type !== 'tool-result' || p.id !== callId) return p;
            found = true;
            return {
              type: 'tool-result',
              id: p.id,
              name: p.name,
              output: outcome.output,
              ...(outcome.status === 'error' ? { isError: true } : {}),
            };
          }),
        },
  );
  return found ? next : null;
}

function itemOf(row: SessionRow, lastMessage: string | null): ChatSessionItem {
  return {
    id: row.id,
    title: row.title,
    agent: row.agent,
    last_message: lastMessage,
    updated_at: row.updated_at.toISOString(),
    created_at: row.created_at.toISOString(),
  };
}

/** The reason a turn is aborted when the server shuts down: stored as failed, not cancelled. */
const SHUTDOWN = new Error('the server is shutting down');

export function createChatService(deps: ChatServiceDeps) {
  const { database, agents, router, limits, principalOf, events, log } = deps;
  const db = database.db;
  /** Tail of each session's turn chain. */
  const sessionQueues = new Map<string, Promise<unknown>>();
  /** Sends in flight by `${userId}\n${clientMessageId}`. */
  const inFlight = new Map<string, { message: string; reply: Promise<ChatReply> }>();
  /** Turns running on this process, by session, with the lease token each holds. */
  const running = new Map<string, { userId: string; token: string; controller: AbortController }>();
  /** Settles when every turn started on this process has ended (for shutdown). */
  const pending = new Set<Promise<unknown>>();
  let closing = false;
  /** Leases given back by `storeAnswer`, so the running turn's wrapper does not do it again. */
  const released = new Set<string>();
  /** Takes leases with user messages, and stores answers: those ready together in one statement. */
  const leases = createLeaseTaker(db);
  const answers = createAnswerWriter(db);

  events.onCancel(({ userId, sessionId, token }) => {
    const turn = running.get(sessionId);
    // The token names the turn that was running when the user asked: not the one after it.
    if (turn && turn.userId === userId && (!token || turn.token === token))
      turn.controller.abort(new Error('cancelled by the user'));
  });

  function inSessionQueue<T>(sessionId: string, work: () => Promise<T>): Promise<T> {
    const previous = sessionQueues.get(sessionId) ?? Promise.resolve();
    const run = previous.then(work, work);
    const tail = run.catch(() => {});
    sessionQueues.set(sessionId, tail);
    pending.add(tail);
    void tail.then(() => {
      pending.delete(tail);
      if (sessionQueues.get(sessionId) === tail) sessionQueues.delete(sessionId);
    });
    return run;
  }

  function shuttingDown(): AppError {
    return new AppError(
      'service_unavailable',
      'the server is restarting; send the message again in a moment',
    );
  }

  /**
   * Waits for the session's turn lease (another process may be running a turn in it), taken
   * by `take` (leaseSession, or the lease taker: leaseAndInsertUserMessages). Undefined when
   * the session is not the user's or was deleted.
   */
  async function lease<T>(
    userId: string,
    sessionId: string,
    take: () => Promise<T | undefined>,
    callerSignal?: AbortSignal,
  ): Promise<T | undefined> {
    const deadline = Date.now() + limits.turnWaitMs;
    for (let pause = 20; ; pause = Math.min(pause * 2, 250)) {
      if (closing) throw shuttingDown();
      if (callerSignal?.aborted)
        throw new AppError('conflict', 'cancelled before the turn started; nothing was stored');
      const taken = await take();
      if (taken) return taken;
      if (!(await findOwnSession(db, userId, sessionId))) return undefined;
      if (Date.now() >= deadline)
        throw new AppError(
          'conflict',
          'another turn in this session is still running; send again when it has finished',
        );
      await sleep(pause);
    }
  }

  const leaseOnly = (userId: string, sessionId: string, token: string) => () =>
    leaseSession(db, userId, sessionId, token, limits.turnLeaseMs);

  /**
   * Runs `work` as the session's running turn on this process: cancellable by the caller's
   * signal, by a cancel from any process, and aborted with SHUTDOWN on shutdown. The lease is
   * given back if `work` did not (it stores nothing on its way out).
   */
  async function asRunningTurn<T>(
    userId: string,
    sessionId: string,
    token: string,
    callerSignal: AbortSignal | undefined,
    work: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const controller = new AbortController();
    const onAbort = () => controller.abort(callerSignal?.reason);
    if (callerSignal?.aborted) onAbort();
    else callerSignal?.addEventListener('abort', onAbort, { once: true });
    running.set(sessionId, { userId, token, controller });
    // A turn that got past the closing checks just as shutdown began is aborted too.
    if (closing) controller.abort(SHUTDOWN);
    try {
      return await work(controller.signal);
    } finally {
      callerSignal?.removeEventListener('abort', onAbort);
      if (running.get(sessionId)?.controller === controller) running.delete(sessionId);
      if (!released.delete(token))
        await releaseSession(db, sessionId, token).catch((err: unknown) =>
          log.warn({ err, sessionId }, 'could not give the session lease back; it expires'),
        );
    }
  }

  /**
   * Stores the turn's answer with its deferred llm_usage rows, touches the session and gives
   * its lease back: one statement, shared with the other answers ready at the same time
   * (turn-statements.ts). If it fails, the usage rows are still written (the model calls
   * happened and are paid for).
   */
  async function storeAnswer(
    values: Pick<AnswerValues, 'user_id' | 'session_id' | 'content' | 'metadata'>,
    agent: string | undefined,
    token: string,
    usage: UsageRow[] = [],
  ): Promise<MessageRow> {
    const taken = usage.splice(0);
    let row: MessageRow;
    try {
      row = await answers.store({ ...values, agent, token, usage: taken });
    } catch (err) {
      if (taken.length)
        await insertUsage(db, ...taken).catch((e: unknown) =>
          log.error({ err: e, sessionId: values.session_id }, 'llm_usage rows not written'),
        );
      throw err;
    }
    released.add(token);
    return row;
  }

  /** A turn aborted by shutdown ends as failed (service_unavailable), not as cancelled. */
  function checkShutdown(signal: AbortSignal) {
    if (signal.aborted && signal.reason === SHUTDOWN) throw shuttingDown();
  }

  /** The turn was cut short by shutdown (a turn that had finished anyway is kept). */
  function interruptedByShutdown(signal: AbortSignal, collected: CollectedTurn): boolean {
    return signal.reason === SHUTDOWN && collected.end.finish === 'cancelled';
  }

  /**
   * The history, unless the turn is stopped while it is made (a summary takes a model call):
   * shutdown fails the turn; a cancel goes on with none, and the agent ends the turn
   * 'cancelled' before any model call.
   */
  async function historyFor(input: FitHistoryInput & { signal: AbortSignal }) {
    try {
      return await deps.history.fit(input);
    } catch (err) {
      if (!input.signal.aborted) throw err;
      checkShutdown(input.signal);
      return [];
    }
  }

  /** Another send stored this client_message_id first: its reply, once stored. */
  async function replyOfDuplicate(
    userMessage: MessageRow & { session_id: string },
    message: string,
  ): Promise<ChatReply> {
    if (userMessage.content !== message)
      throw new AppError(
        'conflict',
        'this client_message_id was already used for a different message',
      );
    const deadline = Date.now() + limits.duplicateWaitMs;
    for (;;) {
      const reply = await findReplyTo(db, userMessage.session_id, userMessage.id);
      if (reply) return replyOf(userMessage.session_id, reply);
      if (Date.now() >= deadline)
        throw new AppError(
          'conflict',
          'this message is still being answered; retry with the same client_message_id',
        );
      await sleep(100);
    }
  }

  async function turn(
    principal: Principal,
    input: ChatSendRequest,
    meta: RequestMeta,
    existingId: string | undefined,
    options: SendOptions,
  ): Promise<ChatReply> {
    const source = meta.source ?? 'api';
    const route = (sessionAgent: string | null) =>
      router.route({
        principal,
        explicitAgent: input.agent ?? null,
        sessionAgent,
        text: input.message,
        source,
      });
    const token = randomUUID();
    const userRow = (decision: RouteDecision) => ({
      user_id: principal.id,
      session_id: sessionId,
      content: input.message,
      client_message_id: input.client_message_id ?? null,
      metadata: {
        ...(input.client_message_id ? { client_message_id: input.client_message_id } : {}),
        agent: decision.agent,
        ...(options.media
          ? {
              media: {
                type: options.media.mediaType,
                bytes: options.media.data.byteLength,
                name: options.media.name,
              },
            }
          : {}),
      },
    });
    // A new session is routed first (a refused agent creates nothing) and created holding
    // its lease. So is a message that names its agent: its lease, user message and history
    // are then one statement. Otherwise the session is routed once its lease (which checks
    // ownership) is held, by the session's agent.
    let created: SessionRow | undefined;
    let early: RouteDecision | undefined;
    if (!existingId || input.agent) early = await route(null);
    if (!existingId) {
      created = await insertSession(db, {
        user_id: principal.id,
        title: titleOf(input.message || options.media?.name || 'Image'),
        agent: early!.agent,
        turn_token: token,
        leaseMs: limits.turnLeaseMs,
      });
    }
    const sessionId = existingId ?? created!.id;

    return inSessionQueue(sessionId, async () => {
      let current = created;
      let stored: Awaited<ReturnType<typeof insertUserMessage>> | undefined;
      if (!current && early) {
        const take = async () => {
          const row = userRow(early);
          const both = await leases.take({ ...row, token, leaseMs: limits.turnLeaseMs });
          if (both) return both;
          // Busy, not the user's, or an expired lease (which the one statement leaves alone):
          // the lease alone, then the insert with a snapshot that sees the last answer.
          const session = await leaseSession(
            db,
            principal.id,
            sessionId,
            token,
            limits.turnLeaseMs,
          );
          if (!session) return undefined;
          try {
            return { session, ...(await insertUserMessage(db, row)) };
          } catch (err) {
            await releaseSession(db, sessionId, token).catch(() => {});
            throw err;
          }
        };
        const taken = await lease(principal.id, sessionId, take, options.signal);
        current = taken?.session;
        stored = taken;
      } else if (!current) {
        current = await lease(
          principal.id,
          sessionId,
          leaseOnly(principal.id, sessionId, token),
          options.signal,
        );
      }
      // Not the user's, or deleted (perhaps while this send waited its turn).
      if (!current) throw notFound('chat session');
      const session = current;
      return asRunningTurn(principal.id, sessionId, token, options.signal, async (signal) => {
        const decision = early ?? (await route(session.agent));
        // The earlier messages come back from the same statement as the insert.
        const { message: userMessage, earlier } =
          stored ?? (await insertUserMessage(db, userRow(decision)));
        if (!userMessage) {
          // Lost the race to another process with the same client_message_id.
          const first = await findByClientMessageId(db, principal.id, input.client_message_id!);
          if (!first) throw new AppError('conflict', 'duplicate message');
          // The session this send created holds nothing: remove it rather than list it empty.
          if (created) await deleteEmptySession(db, sessionId);
          return replyOfDuplicate(first, input.message);
        }

        let collected: CollectedTurn | undefined;
        // The final answer's usage row, stored with the answer (LlmCallContext.deferUsage).
        const usage: UsageRow[] = [];
        try {
          const history = await historyFor({
            principal,
            session,
            rows: earlier,
            source,
            signal,
          });
          checkShutdown(signal);
          collected = await collectTurn(
            agents.run({
              principal,
              agent: decision.agent,
              sessionId,
              history,
              message: userMessageOf(input.message, options.media),
              source,
              signal,
              deferUsage: (row) => usage.push(row),
              // Streamed only for someone who reads it as it is written (the WebSocket).
              stream: options.onEvent !== undefined,
            }),
            options.onEvent,
          );
          if (interruptedByShutdown(signal, collected)) throw shuttingDown();
        } catch (err) {
          // What ran before the failure (tool calls, parked approvals) stays in the transcript.
          await storeFailure(
            principal.id,
            sessionId,
            err,
            token,
            {
              reply_to: userMessage.id,
              agent: decision.agent,
              routed_by: decision.by,
              ...(collected ? answerMetadata(collected) : {}),
            },
            usage,
          );
          throw err;
        }

        const assistant = await storeAnswer(
          {
            user_id: principal.id,
            session_id: sessionId,
            content: collected.end.text,
            metadata: {
              reply_to: userMessage.id,
              agent: decision.agent,
              routed_by: decision.by,
              ...answerMetadata(collected),
            },
          },
          decision.agent,
          token,
          usage,
        );
        return replyOf(sessionId, assistant);
      });
    });
  }

  /** Stores a turn that failed (the user message stays) and gives the lease back. */
  async function storeFailure(
    userId: string,
    sessionId: string,
    err: unknown,
    token: string,
    metadata: Record<string, unknown>,
    usage: UsageRow[] = [],
  ): Promise<void> {
    if (!(err instanceof AppError)) log.error({ err, sessionId }, 'chat turn failed');
    await storeAnswer(
      {
        user_id: userId,
        session_id: sessionId,
        content: '',
        metadata: {
          status: 'failed',
          error: err instanceof AppError ? err.code : 'internal_error',
          message: err instanceof AppError ? err.message : 'internal server error',
          ...metadata,
        },
      },
      typeof metadata.agent === 'string' ? metadata.agent : undefined,
      token,
      usage,
    );
  }

  /**
   * After the user approves or rejects an action a chat turn parked: store the tool result in
   * place of the "waiting for approval" one, then (once nothing else in that turn waits, and if
   * the turn is still the session's latest) run the agent once more and store its reply. The
   * resumed turn streams to the user's sockets on every process, as request `approval:<id>`.
   */
  async function resume(action: PendingActionRow, outcome: ToolOutcome): Promise<void> {
    const sessionId = action.session_id;
    const callId = action.tool_call_id;
    if (!sessionId || !callId || outcome.status === 'pending_approval') return;
    const requestId = `approval:${action.id}`;
    const publish = (body: WsServerEventBody) => events.publish(action.user_id, body);
    const publishError = (err: unknown) =>
      publish({
        type: 'error',
        code: err instanceof AppError ? err.code : 'internal_error',
        message: err instanceof AppError ? err.message : 'internal server error',
        request_id: requestId,
      });
    await inSessionQueue(sessionId, async () => {
      const principal = await principalOf(action.user_id);
      if (!principal) return;
      const token = randomUUID();
      let session: SessionRow | undefined;
      try {
        session = await lease(principal.id, sessionId, leaseOnly(principal.id, sessionId, token));
      } catch (err) {
        // Shutdown, or the session stayed busy: the decision stands, the turn does not go on.
        publishError(err);
        throw err;
      }
      if (!session) return;
      const leased = session;
      await asRunningTurn(principal.id, sessionId, token, undefined, async (signal) => {
        const rows = await listMessages(db, sessionId);
        let index = -1;
        let transcript: ChatMessage[] | null = null;
        for (let i = rows.length - 1; i >= 0 && !transcript; i--) {
          const stored = rows[i]!.metadata?.transcript;
          if (rows[i]!.role !== 'assistant' || !Array.isArray(stored)) continue;
          transcript = withToolResult(stored as ChatMessage[], callId, outcome);
          index = i;
        }
        if (!transcript) {
          log.warn({ approvalId: action.id, sessionId }, 'no chat turn holds this tool call');
          return;
        }
        const row = rows[index]!;
        const meta = row.metadata ?? {};
        const updated: MessageRow = {
          ...row,
          metadata: {
            ...meta,
            transcript,
            tool_calls: ((meta.tool_calls as ChatToolCall[] | undefined) ?? []).map((c) =>
              c.id === callId ? { ...c, status: outcome.status } : c,
            ),
          },
        };
        await updateMessageMetadata(db, row.id, updated.metadata!);

        const others = ((meta.pending_approvals as string[] | undefined) ?? []).filter(
          (id) => id !== action.id,
        );
        if (others.length > 0) {
          const waiting = await db
            .selectFrom('pending_actions')
            .select('id')
            .where('id', 'in', others)
            .where('status', '=', 'pending')
            .execute();
          if (waiting.length > 0) return;
        }
        if (index !== rows.length - 1) return;

        const agent = ((meta.agent as string | undefined) ?? action.agent) as ChatReply['agent'];
        const source = action.source as AuditSource;
        // The parked turn goes to the model whole (its tool calls need their results); the
        // turns before it are fitted to the budget.
        const turnRows = [...rows.slice(0, index), updated];
        const start = Math.max(
          0,
          turnRows.findLastIndex((r) => r.role === 'user'),
        );
        const parked = turnsOf(turnRows.slice(start)).at(-1)?.messages ?? [];
        let collected: CollectedTurn | undefined;
        const usage: UsageRow[] = [];
        try {
          const history = [
            ...(await historyFor({
              principal,
              session: leased,
              rows: turnRows.slice(0, start),
              source,
              signal,
            })),
            ...parked,
          ];
          const results = history.pop();
          if (results?.role !== 'tool')
            throw new AppError('conflict', 'this turn can no longer continue; ask again');
          checkShutdown(signal);
          collected = await collectTurn(
            agents.run({
              principal,
              agent,
              sessionId,
              history,
              message: results,
              source,
              signal,
              deferUsage: (r) => usage.push(r),
            }),
            (event) => {
              for (const body of eventsOf(requestId, event)) publish(body);
            },
          );
          if (interruptedByShutdown(signal, collected)) throw shuttingDown();
        } catch (err) {
          await storeFailure(
            principal.id,
            sessionId,
            err,
            token,
            {
              continues: row.id,
              approval_id: action.id,
              agent,
              ...(collected ? answerMetadata(collected) : {}),
            },
            usage,
          );
          publishError(err);
          return;
        }
        const assistant = await storeAnswer(
          {
            user_id: principal.id,
            session_id: sessionId,
            content: collected.end.text,
            metadata: {
              continues: row.id,
              approval_id: action.id,
              agent,
              routed_by: meta.routed_by ?? null,
              ...answerMetadata(collected),
            },
          },
          agent,
          token,
          usage,
        );
        publish({ type: 'message.end', request_id: requestId, ...replyOf(sessionId, assistant) });
      });
    });
  }

  async function sendNow(
    principal: Principal,
    input: ChatSendRequest,
    meta: RequestMeta,
    options: SendOptions = {},
  ): Promise<ChatReply> {
    if (closing) throw shuttingDown();
    if (input.message.length > limits.maxMessageChars)
      throw new AppError(
        'payload_too_large',
        `the message is longer than ${limits.maxMessageChars} characters`,
        { details: { max_chars: limits.maxMessageChars } },
      );
    const cmid = input.client_message_id;
    if (!cmid) return turn(principal, input, meta, input.session_id, options);

    const key = `${principal.id}\n${cmid}`;
    const sending = inFlight.get(key);
    if (sending) {
      if (sending.message !== input.message)
        throw new AppError(
          'conflict',
          'this client_message_id was already used for a different message',
        );
      return sending.reply;
    }
    const reply = (async () => {
      const first = await findByClientMessageId(db, principal.id, cmid);
      if (first) return replyOfDuplicate(first, input.message);
      return turn(principal, input, meta, input.session_id, options);
    })();
    inFlight.set(key, { message: input.message, reply });
    try {
      return await reply;
    } finally {
      inFlight.delete(key);
    }
  }

  return {
    /** The approvals service's decided handler: resumes the turn without blocking the caller. */
    onDecided(action: PendingActionRow, outcome: ToolOutcome): void {
      const work = resume(action, outcome).catch((err: unknown) =>
        log.error({ err, approvalId: action.id }, 'resuming the chat turn failed'),
      );
      pending.add(work);
      void work.then(() => pending.delete(work));
    },

    /**
     * Cancels the user's running turn in this session, on whichever process runs it. True if
     * a turn was running (it ends with finish 'cancelled'); 404 for another user's session.
     */
    async cancel(principal: Principal, sessionId: string): Promise<{ cancelled: boolean }> {
      if (!(await findOwnSession(db, principal.id, sessionId))) throw notFound('chat session');
      const local = running.get(sessionId);
      if (local && local.userId === principal.id) {
        local.controller.abort(new Error('cancelled by the user'));
        return { cancelled: true };
      }
      const token = await sessionBusy(db, sessionId);
      if (token) await events.cancel({ userId: principal.id, sessionId, token });
      return { cancelled: token !== null };
    },

    /**
     * Shutdown: refuse new turns, abort the running ones (each is stored as failed with
     * service_unavailable) and wait until they are stored, at most `timeoutMs`.
     */
    async shutdown(timeoutMs: number): Promise<void> {
      closing = true;
      for (const turn of running.values()) turn.controller.abort(SHUTDOWN);
      // Until every turn is stored: one that started meanwhile is aborted as it registers.
      const deadline = Date.now() + timeoutMs;
      while (pending.size > 0 && Date.now() < deadline)
        await Promise.race([Promise.allSettled([...pending]), sleep(deadline - Date.now())]);
    },

    /** One turn (see the module comment); tracked so shutdown waits for it to be stored. */
    send(
      principal: Principal,
      input: ChatSendRequest,
      meta: RequestMeta,
      options: SendOptions = {},
    ): Promise<ChatReply> {
      const work = sendNow(principal, input, meta, options);
      const settled = work.then(
        () => {},
        () => {},
      );
      pending.add(settled);
      void settled.then(() => pending.delete(settled));
      return work;
    },

    async list(principal: Principal, query: ChatSessionQuery): Promise<ChatSessionList> {
      const rows = await listSessions(db, principal.id, query);
      return toPage(
        rows,
        query.limit,
        (r) => ({ k: r.cursor_key, id: r.id }),
        (r) => itemOf(r, r.last_message),
      );
    },

    async get(principal: Principal, sessionId: string): Promise<ChatSessionDetail> {
      const session = await findOwnSession(db, principal.id, sessionId);
      if (!session) throw notFound('chat session');
      const rows = (await listMessages(db, sessionId)).filter(
        (r) => r.role === 'user' || r.role === 'assistant',
      );
      const last = rows.at(-1)?.content ?? null;
      return {
        ...itemOf(session, last === null ? null : last.slice(0, 200)),
        messages: rows.map((r) => ({
          id: r.id,
          role: r.role as 'user' | 'assistant',
          content: r.content,
          metadata: r.metadata ?? {},
          created_at: r.created_at.toISOString(),
        })),
      };
    },

    async remove(principal: Principal, sessionId: string): Promise<{ ok: true }> {
      if (!(await softDeleteSession(db, principal.id, sessionId))) throw notFound('chat session');
      return { ok: true };
    },
  };
}

type MessageEnd = Extract<AgentEvent, { type: 'message-end' }>;

interface CollectedTurn {
  end: MessageEnd;
  toolCalls: ChatToolCall[];
}

/** Runs a turn to its end, passing each event on, and keeps what the stored answer needs. */
async function collectTurn(
  events: AsyncIterable<AgentEvent>,
  onEvent?: (event: AgentEvent) => void,
): Promise<CollectedTurn> {
  const toolCalls: ChatToolCall[] = [];
  let end: MessageEnd | undefined;
  for await (const event of events) {
    onEvent?.(event);
    if (event.type === 'tool-call-end')
      toolCalls.push({
        id: event.id,
        name: event.name,
        status: event.status,
        ...(event.approval_id ? { approval_id: event.approval_id } : {}),
      });
    else if (event.type === 'message-end') end = event;
  }
  if (!end) throw new Error('the agent turn ended without message-end');
  return { end, toolCalls };
}

/** The stored assistant message's metadata that describes the answer itself. */
function answerMetadata({ end, toolCalls }: CollectedTurn) {
  return {
    provider: end.answered_by?.provider ?? null,
    model: end.answered_by?.model ?? null,
    fallback_reason: end.answered_by?.fallback_reason ?? null,
    finish: end.finish,
    usage: end.usage,
    tool_calls: toolCalls,
    pending_approvals: toolCalls.flatMap((c) => (c.approval_id ? [c.approval_id] : [])),
    transcript: end.transcript,
  };
}
