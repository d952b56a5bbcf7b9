/**
 * Chat over the WebSocket `GET /chat/ws`: every client message and server event, defined once.
 *
 * - The first frame is `hello { token, protocol_version }` within the hello deadline (the
 *   token never goes in the URL); the server answers `ready` or closes with a WS_CLOSE code.
 * - Every server event carries `seq`, increasing by one per connection from 1.
 * - A frame that is not JSON or fails the schema is answered with an `error` event
 *   (validation_failed / invalid_json); the connection stays up.
 * - Before the access token expires the client sends `reauth { token }` (same user);
 *   otherwise the socket closes with 4001 "token expired".
 * - Events of a turn resumed after an approval (decided here, over REST or on another
 *   device) carry `request_id: "approval:<approval id>"`; `approval.decided` reaches every
 *   socket of the user.
 */
import { z } from 'zod';
import { ApprovalView } from './approvals.ts';
import { ChatAgentName, ChatReply } from './chat.ts';
import { Uuid } from './common.ts';
import { ErrorCode } from './errors.ts';

export const PROTOCOL_VERSION = 1;

/** Close codes the server uses; the close reason says why in words. */
export const WS_CLOSE = {
  normal: 1000,
  /** The server is shutting down; reconnect elsewhere. */
  going_away: 1001,
  /**
   * A frame larger than `max_frame_bytes`; the reason reads `frame of N bytes exceeds
   * max_frame_bytes M`. A far larger frame is cut from its header with no reason.
   */
  too_large: 1009,
  /** The client did not read its events for too long (backpressure limit). */
  try_again_later: 1013,
  protocol_error: 4000,
  /** No hello in time, a bad token, or the access token expired without reauth. */
  unauthenticated: 4001,
  /** The account was deactivated, its role changed, or its login session ended. */
  forbidden: 4003,
  /** hello.protocol_version is not PROTOCOL_VERSION. */
  version_mismatch: 4009,
} as const;
export type WsCloseCode = (typeof WS_CLOSE)[keyof typeof WS_CLOSE];

const RequestId = z.string().min(1).max(100);
const Token = z.string().min(1).max(4096);

// ---- client → server ----

export const WsHello = z.strictObject({
  type: z.literal('hello'),
  token: Token,
  protocol_version: z.number().int(),
  /** Resume a dropped connection: replay its events after `last_seq` (same process only). */
  resume: z
    .strictObject({ connection_id: z.string().min(1).max(100), last_seq: z.number().int().min(0) })
    .optional(),
});
export const WsReauth = z.strictObject({ type: z.literal('reauth'), token: Token });
export const WsPing = z.strictObject({
  type: z.literal('ping'),
  id: z.string().max(100).optional(),
});
export const WsChatSend = z.strictObject({
  type: z.literal('chat.send'),
  /** Chosen by the client; every event of this turn carries it. */
  request_id: RequestId,
  message: z.string().min(1),
  session_id: Uuid.optional(),
  agent: ChatAgentName.optional(),
  client_message_id: z.string().min(1).max(100).optional(),
});
export const WsChatCancel = z
  .strictObject({
    type: z.literal('chat.cancel'),
    request_id: RequestId.optional(),
    session_id: Uuid.optional(),
  })
  .refine((m) => m.request_id !== undefined || m.session_id !== undefined, {
    message: 'name the request_id or the session_id to cancel',
  });
export const WsApprovalDecide = z.strictObject({
  type: z.literal('approval.decide'),
  approval_id: Uuid,
  decision: z.enum(['approve', 'reject']),
});

export const WsClientMessage = z.discriminatedUnion('type', [
  WsHello,
  WsReauth,
  WsPing,
  WsChatSend,
  WsChatCancel,
  WsApprovalDecide,
]);
export type WsClientMessage = z.infer<typeof WsClientMessage>;

// ---- server → client ----

const Seq = z.number().int().positive();
const event = <T extends string, S extends z.ZodRawShape>(type: T, shape: S) =>
  z.object({ type: z.literal(type), seq: Seq, ...shape });

export const WsReady = event('ready', {
  user: z.object({ id: Uuid, email: z.string(), name: z.string(), role: z.string() }),
  protocol_version: z.number().int(),
  heartbeat_s: z.number(),
  max_frame_bytes: z.number().int(),
  /** Give it back in `hello.resume` after a reconnect. */
  connection_id: z.string(),
  /** When the access token expires; send `reauth` before then. */
  token_expires_at: z.iso.datetime(),
  /** Set when this hello resumed a connection: events after last_seq follow. */
  resumed: z.boolean(),
});
export const WsReauthOk = event('reauth.ok', { token_expires_at: z.iso.datetime() });
export const WsPong = event('pong', { id: z.string().optional() });
export const WsStatus = event('status', { request_id: RequestId, text: z.string() });
export const WsModelStart = event('model.start', {
  request_id: RequestId,
  provider: z.string(),
  model: z.string(),
  fallback_reason: z.string().nullable(),
});
export const WsTextDelta = event('text.delta', { request_id: RequestId, text: z.string() });
export const WsToolCallStart = event('tool.call-start', {
  request_id: RequestId,
  id: z.string(),
  name: z.string(),
  input: z.record(z.string(), z.unknown()),
});
export const WsToolCallEnd = event('tool.call-end', {
  request_id: RequestId,
  id: z.string(),
  name: z.string(),
  status: z.enum(['ok', 'error', 'pending_approval']),
  approval_id: z.string().optional(),
});
export const WsApprovalRequested = event('approval.requested', {
  request_id: RequestId,
  approval_id: z.string(),
  tool: z.string(),
  summary: z.string(),
});
/** A file a tool made during the turn (report, deck, spreadsheet); fetch it by id. */
export const WsArtifactCreated = event('artifact.created', {
  request_id: RequestId,
  tool_call_id: z.string(),
  artifact: z.object({
    id: z.string(),
    name: z.string(),
    /** pdf, pptx, docx, csv, xlsx, png, … */
    type: z.string(),
    size_bytes: z.number().int().nullable(),
  }),
});
export const WsMessageEnd = event('message.end', { request_id: RequestId, ...ChatReply.shape });
export const WsError = event('error', {
  code: ErrorCode,
  message: z.string(),
  request_id: RequestId.optional(),
});
export const WsApprovalDecided = event('approval.decided', { approval: ApprovalView });

export const WsServerEvent = z.discriminatedUnion('type', [
  WsReady,
  WsReauthOk,
  WsPong,
  WsStatus,
  WsModelStart,
  WsTextDelta,
  WsToolCallStart,
  WsToolCallEnd,
  WsApprovalRequested,
  WsArtifactCreated,
  WsMessageEnd,
  WsError,
  WsApprovalDecided,
]);
export type WsServerEvent = z.infer<typeof WsServerEvent>;
/** An event as the server builds it, before its seq is assigned. */
export type WsServerEventBody = WsServerEvent extends infer E
  ? E extends { seq: number }
    ? Omit<E, 'seq'>
    : never
  : never;
