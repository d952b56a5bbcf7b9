/**
 * One chat turn over REST: load or create the caller's session, pick the agent (explicit,
 * the session's, else the router), store the user message, run the agent with the session's
 * earlier turns, store the reply (with the transcript of tool calls and results so the next
 * turn's history is valid), and answer the whole reply.
 *
 * Ordering and idempotency:
 * - One turn per session at a time, in arrival order: an in-process promise chain per session.
 *   Across processes the next step is a `SELECT … FOR UPDATE` on the chat_sessions row held
 *   by a short transaction around loading history and storing the user message.
 * - A client_message_id is sent to the model once: duplicates in this process wait for the
 *   first (an in-process map); across processes the unique index on (user_id,
 *   client_message_id) makes the second insert lose, and the loser polls briefly for the
 *   winner's reply. Same id with different content is 409 conflict.
 * - Model errors (llm_not_configured, llm_unavailable, budget_exceeded, …) keep the user
 *   message, store an assistant row with { status: 'failed', error }, and are rethrown.
 */
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
} from '@mezzofy/protocol';
import type { AgentEvent, AgentRunner } from '../agents/agent.ts';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { RequestMeta } from '../auth/auth.service.ts';
import type { Principal } from '../auth/principal.ts';
import type { Database } from '../db/database.ts';
import { toPage } from '../db/pagination.ts';
import type { PendingActionRow } from '../db/schema.ts';
import { AppError, notFound } from '../errors.ts';
import type { IntentRouter } from '../gateway/intent-router.ts';
import type { ChatMessage, ContentPart } from '../llm/types.ts';
import type { Logger } from '../logging/logger.ts';
import type { ToolOutcome } from '../tools/tool.ts';
import {
  deleteEmptySession,
  findByClientMessageId,
  findOwnSession,
  findReplyTo,
  insertAssistantMessage,
  insertSession,
  insertUserMessage,
  listMessages,
  listSessions,
  type MessageRow,
  type SessionRow,
  softDeleteSession,
  touchSession,
  updateMessageMetadata,
} from './chat.repository.ts';
import type { ImageMediaType } from './media-type.ts';
import type { SessionHistory } from './session-history.ts';

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
  };
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

export function createChatService(deps: ChatServiceDeps) {
  const { database, agents, router, limits, principalOf, log } = deps;
  const db = database.db;
  /** Tail of each session's turn chain. */
  const sessionQueues = new Map<string, Promise<unknown>>();
  /** Sends in flight by `${userId}\n${clientMessageId}`. */
  const inFlight = new Map<string, { message: string; reply: Promise<ChatReply> }>();

  function inSessionQueue<T>(sessionId: string, work: () => Promise<T>): Promise<T> {
    const previous = sessionQueues.get(sessionId) ?? Promise.resolve();
    const run = previous.then(work, work);
    const tail = run.catch(() => {});
    sessionQueues.set(sessionId, tail);
    void tail.then(() => {
      if (sessionQueues.get(sessionId) === tail) sessionQueues.delete(sessionId);
    });
    return run;
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
    session: SessionRow | undefined,
    options: SendOptions,
  ): Promise<ChatReply> {
    const source = meta.source ?? 'api';
    const decision = await router.route({
      principal,
      explicitAgent: input.agent ?? null,
      sessionAgent: session?.agent ?? null,
      text: input.message,
      source,
    });
    const current =
      session ??
      (await insertSession(db, {
        user_id: principal.id,
        title: titleOf(input.message || options.media?.name || 'Image'),
        agent: decision.agent,
      }));

    return inSessionQueue(current.id, async () => {
      // The session may have been deleted while this send waited its turn.
      if (session && !(await findOwnSession(db, principal.id, current.id)))
        throw notFound('chat session');
      const earlier = await listMessages(db, current.id);
      const userMessage = await insertUserMessage(db, {
        user_id: principal.id,
        session_id: current.id,
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
      if (!userMessage) {
        // Lost the race to another process with the same client_message_id.
        const first = await findByClientMessageId(db, principal.id, input.client_message_id!);
        if (!first) throw new AppError('conflict', 'duplicate message');
        // The session this send created holds nothing: remove it rather than list it empty.
        if (!session) await deleteEmptySession(db, current.id);
        return replyOfDuplicate(first, input.message);
      }

      const history = await deps.history.fit({
        principal,
        session: current,
        rows: earlier,
        source,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      let turn: CollectedTurn;
      try {
        turn = await collectTurn(
          agents.run({
            principal,
            agent: decision.agent,
            sessionId: current.id,
            history,
            message: userMessageOf(input.message, options.media),
            source,
            signal: options.signal ?? new AbortController().signal,
          }),
          options.onEvent,
        );
      } catch (err) {
        const code = err instanceof AppError ? err.code : 'internal_error';
        if (!(err instanceof AppError)) log.error({ err }, 'chat turn failed');
        await insertAssistantMessage(db, {
          user_id: principal.id,
          session_id: current.id,
          content: '',
          metadata: {
            status: 'failed',
            error: code,
            message: err instanceof AppError ? err.message : 'internal server error',
            reply_to: userMessage.id,
            agent: decision.agent,
            routed_by: decision.by,
          },
        });
        await touchSession(db, current.id, { agent: decision.agent });
        throw err;
      }

      const assistant = await insertAssistantMessage(db, {
        user_id: principal.id,
        session_id: current.id,
        content: turn.end.text,
        metadata: {
          reply_to: userMessage.id,
          agent: decision.agent,
          routed_by: decision.by,
          ...answerMetadata(turn),
        },
      });
      await touchSession(db, current.id, { agent: decision.agent });
      return replyOf(current.id, assistant);
    });
  }

  /**
   * After the user approves or rejects an action a chat turn parked: store the tool result in
   * place of the "waiting for approval" one, then (once nothing else in that turn waits, and if
   * the turn is still the session's latest) run the agent once more and store its reply.
   */
  async function resume(action: PendingActionRow, outcome: ToolOutcome): Promise<void> {
    const sessionId = action.session_id;
    const callId = action.tool_call_id;
    if (!sessionId || !callId || outcome.status === 'pending_approval') return;
    await inSessionQueue(sessionId, async () => {
      const principal = await principalOf(action.user_id);
      const session = principal && (await findOwnSession(db, principal.id, sessionId));
      if (!principal || !session) return;
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

      const history = await deps.history.fit({
        principal,
        session,
        rows: [...rows.slice(0, index), updated],
        source: action.source as AuditSource,
      });
      const results = history.pop();
      if (results?.role !== 'tool') return;
      const agent = ((meta.agent as string | undefined) ?? action.agent) as ChatReply['agent'];
      let turn: CollectedTurn;
      try {
        turn = await collectTurn(
          agents.run({
            principal,
            agent,
            sessionId,
            history,
            message: results,
            source: action.source as AuditSource,
            signal: new AbortController().signal,
          }),
        );
      } catch (err) {
        if (!(err instanceof AppError)) log.error({ err }, 'resumed chat turn failed');
        await insertAssistantMessage(db, {
          user_id: principal.id,
          session_id: sessionId,
          content: '',
          metadata: {
            status: 'failed',
            error: err instanceof AppError ? err.code : 'internal_error',
            message: err instanceof AppError ? err.message : 'internal server error',
            continues: row.id,
            approval_id: action.id,
            agent,
          },
        });
        return;
      }
      await insertAssistantMessage(db, {
        user_id: principal.id,
        session_id: sessionId,
        content: turn.end.text,
        metadata: {
          continues: row.id,
          approval_id: action.id,
          agent,
          routed_by: meta.routed_by ?? null,
          ...answerMetadata(turn),
        },
      });
      await touchSession(db, sessionId, { agent });
    });
  }

  return {
    /** The approvals service's decided handler: resumes the turn without blocking the caller. */
    onDecided(action: PendingActionRow, outcome: ToolOutcome): void {
      resume(action, outcome).catch((err: unknown) =>
        log.error({ err, approvalId: action.id }, 'resuming the chat turn failed'),
      );
    },

    async send(
      principal: Principal,
      input: ChatSendRequest,
      meta: RequestMeta,
      options: SendOptions = {},
    ): Promise<ChatReply> {
      if (input.message.length > limits.maxMessageChars)
        throw new AppError(
          'payload_too_large',
          `the message is longer than ${limits.maxMessageChars} characters`,
          { details: { max_chars: limits.maxMessageChars } },
        );
      const session = input.session_id
        ? await findOwnSession(db, principal.id, input.session_id)
        : undefined;
      if (input.session_id && !session) throw notFound('chat session');

      const cmid = input.client_message_id;
      if (!cmid) return turn(principal, input, meta, session, options);

      const key = `${principal.id}\n${cmid}`;
      const running = inFlight.get(key);
      if (running) {
        if (running.message !== input.message)
          throw new AppError(
            'conflict',
            'this client_message_id was already used for a different message',
          );
        return running.reply;
      }
      const reply = (async () => {
        const first = await findByClientMessageId(db, principal.id, cmid);
        if (first) return replyOfDuplicate(first, input.message);
        return turn(principal, input, meta, session, options);
      })();
      inFlight.set(key, { message: input.message, reply });
      try {
        return await reply;
      } finally {
        inFlight.delete(key);
      }
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
