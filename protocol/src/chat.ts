/**
 * Chat over REST: send a message and get the agent's whole reply (`POST /chat/send`), and the
 * caller's chat sessions (list with search, detail with messages, soft delete).
 */
import { z } from 'zod';
import { PageQuery, pageOf, Timestamp, Uuid } from './common.ts';

export const CHAT_AGENTS = ['finance', 'sales', 'marketing', 'support', 'management'] as const;
export const ChatAgentName = z.enum(CHAT_AGENTS);

/** How the answering agent was chosen. */
export const RoutedBy = z.enum(['explicit', 'session', 'keyword', 'classifier', 'department']);
export type RoutedBy = z.infer<typeof RoutedBy>;

/** Hard ceiling of the schema; the configured `chat.max_message_chars` (413) is usually lower. */
export const CHAT_MESSAGE_HARD_MAX = 1_000_000;

export const ChatSendRequest = z
  .strictObject({
    message: z.string().min(1).max(CHAT_MESSAGE_HARD_MAX),
    /** Continue this session; omitted: a new session. */
    session_id: Uuid.optional(),
    /** Talk to this agent; omitted: the session's agent, else the router picks. */
    agent: ChatAgentName.optional(),
    /** Idempotency key: a retry with the same key gets the first reply, not a second turn. */
    client_message_id: z.string().min(1).max(100).optional(),
  })
  .meta({ id: 'ChatSendRequest' });
export type ChatSendRequest = z.infer<typeof ChatSendRequest>;

/** The text fields of POST /chat/send-media (multipart/form-data, with one `file`). */
export const ChatSendMediaFields = z.strictObject({
  message: z.string().max(CHAT_MESSAGE_HARD_MAX).optional(),
  session_id: Uuid.optional(),
  agent: ChatAgentName.optional(),
  client_message_id: z.string().min(1).max(100).optional(),
});
export type ChatSendMediaFields = z.infer<typeof ChatSendMediaFields>;

/** POST /chat/send-url: read a web page into the conversation (http or https only). */
export const ChatSendUrlRequest = z
  .strictObject({
    url: z.url({ protocol: /^https?$/ }).max(2048),
    message: z.string().min(1).max(CHAT_MESSAGE_HARD_MAX).optional(),
    session_id: Uuid.optional(),
    agent: ChatAgentName.optional(),
  })
  .meta({ id: 'ChatSendUrlRequest' });
export type ChatSendUrlRequest = z.infer<typeof ChatSendUrlRequest>;

export const ChatToolCall = z.object({
  id: z.string(),
  name: z.string(),
  status: z.enum(['ok', 'error', 'pending_approval']),
  approval_id: z.string().optional(),
});
export type ChatToolCall = z.infer<typeof ChatToolCall>;

export const ChatUsage = z.object({
  input_tokens: z.number(),
  output_tokens: z.number(),
  cost_usd: z.number(),
});

export const ChatReply = z
  .object({
    session_id: Uuid,
    /** The assistant message's id. */
    message_id: Uuid,
    agent: ChatAgentName,
    routed_by: RoutedBy,
    text: z.string(),
    finish: z.enum(['stop', 'awaiting_approval', 'step_limit', 'time_limit', 'cancelled']),
    /** Which provider and model answered (null if none did). */
    provider: z.string().nullable(),
    model: z.string().nullable(),
    /** Why a fallback provider answered (null: the primary did). */
    fallback_reason: z.string().nullable(),
    usage: ChatUsage,
    tool_calls: z.array(ChatToolCall),
    /** Approvals the user must decide before the action runs. */
    pending_approvals: z.array(z.string()),
  })
  .meta({ id: 'ChatReply' });
export type ChatReply = z.infer<typeof ChatReply>;

export const ChatSessionItem = z
  .object({
    id: Uuid,
    title: z.string().nullable(),
    agent: z.string().nullable(),
    /** The latest message, truncated. */
    last_message: z.string().nullable(),
    updated_at: Timestamp,
    created_at: Timestamp,
  })
  .meta({ id: 'ChatSessionItem' });
export type ChatSessionItem = z.infer<typeof ChatSessionItem>;

export const ChatSessionList = pageOf(ChatSessionItem);
export type ChatSessionList = z.infer<typeof ChatSessionList>;

export const ChatSessionQuery = PageQuery.extend({
  /** Searches titles and message content (case-insensitive substring). */
  q: z.string().min(1).max(200).optional(),
});
export type ChatSessionQuery = z.infer<typeof ChatSessionQuery>;

export const ChatMessageView = z
  .object({
    id: Uuid,
    role: z.enum(['user', 'assistant']),
    content: z.string(),
    metadata: z.record(z.string(), z.unknown()),
    created_at: Timestamp,
  })
  .meta({ id: 'ChatMessageView' });
export type ChatMessageView = z.infer<typeof ChatMessageView>;

export const ChatSessionDetail = ChatSessionItem.extend({
  messages: z.array(ChatMessageView),
}).meta({ id: 'ChatSessionDetail' });
export type ChatSessionDetail = z.infer<typeof ChatSessionDetail>;

export const ChatSessionParams = z.strictObject({ id: Uuid });

/** POST /chat/sessions/:id/cancel: true if a turn was running (it ends as 'cancelled'). */
export const ChatCancelReply = z.object({ cancelled: z.boolean() }).meta({ id: 'ChatCancelReply' });
export type ChatCancelReply = z.infer<typeof ChatCancelReply>;
