/**
 * Chat over the WebSocket (`GET /chat/ws`, protocol/src/ws.ts). One Connection per socket:
 *
 * - hello first, within `realtime.hello_timeout_ms` (else 4001); the token is checked with
 *   auth.authenticate and the protocol version (else 4009); then `ready`.
 * - Every frame is parsed with the protocol's union: bad JSON or schema → an `error` event,
 *   the socket stays up. A frame over `max_frame_bytes` closes the socket 1009 with the reason
 *   `frame of N bytes exceeds max_frame_bytes M`, after the frames before it were handled; the
 *   frames after it are dropped. ws itself cuts a frame over frameCeiling() (1009, no reason)
 *   from its header, before buffering it.
 * - A per-connection message budget (`messages_per_window` per `window_s`) → `rate_limited`.
 * - The access token's expiry closes the socket (4001) unless `reauth` brought a fresh one;
 *   a user-state invalidation (deactivated, role changed, logged out — announced on every
 *   process through the user-state cache) re-checks the user's sockets: 4003 if refused.
 * - Server heartbeat: a ws ping every `heartbeat_s`; no pong by the next one → terminate.
 * - Backpressure: while the socket has more than `high_water_bytes` unsent, events wait in a
 *   queue in which consecutive text deltas of a turn merge into one; a client stuck above the
 *   mark for `stuck_timeout_ms` is closed 1013.
 * - Events are numbered per stream (`seq`) and the last `resume_buffer_events` kept: a hello
 *   with `resume { connection_id, last_seq }` from the same user, within `resume_ttl_s`,
 *   reattaches to the stream: the missed events are replayed first (their own seq), then
 *   `ready` (the next seq). Turns keep running while the client is away. A stream held by
 *   another process is handed over (stream-handoff.ts): that process gives up its numbering,
 *   kept events and the list of its running turns, and relays their later events here.
 * - Events for the user from any process (userEvents: a turn resumed after an approval, as
 *   request `approval:<id>`; `approval.decided`) go into every stream of that user here.
 * - `chat.cancel` by session reaches a turn on any process (chat.cancel → pub/sub).
 */
import { randomUUID } from 'node:crypto';
import {
  PROTOCOL_VERSION,
  WS_CLOSE,
  WsClientMessage,
  type WsServerEvent,
  type WsServerEventBody,
} from '@mezzofy/protocol';
import { decodeJwt } from 'jose';
import type { WebSocket } from 'ws';
import type { AgentEvent } from '../agents/agent.ts';
import type { Principal } from '../auth/principal.ts';
import type { Container } from '../container.ts';
import { AppError } from '../errors.ts';
import { eventsOf } from './turn-events.ts';

/** What the gateway needs from the container. */
export type GatewayDeps = Pick<
  Container,
  'auth' | 'userStates' | 'chat' | 'approvals' | 'config' | 'userEvents' | 'streamHandoff'
> & {
  log: Container['loggers']['app'];
};

interface Turn {
  controller: AbortController;
  sessionId: string | undefined;
}

/** The numbered event stream of one logical connection; survives a socket for resume. */
interface Stream {
  id: string;
  userId: string;
  seq: number;
  /** Sent events, oldest first, for resume. */
  kept: WsServerEvent[];
  /** Events waiting for the socket to drain (backpressure). */
  queue: WsServerEventBody[];
  socket: WebSocket | null;
  /** Turns of this stream running on this process. */
  turns: Map<string, Turn>;
  /** Turns of this stream running on other processes (it was handed over): their sessions. */
  remoteTurns: Map<string, string | undefined>;
  expiry: NodeJS.Timeout | null;
  /** Handed over to another process: events of its turns here are relayed there. */
  moved: boolean;
  /** A flush is scheduled for the end of this turn of the event loop (see emitTo). */
  flushing: boolean;
}

function newStream(id: string, userId: string, seq: number, kept: WsServerEvent[] = []): Stream {
  return {
    id,
    userId,
    seq,
    kept,
    queue: [],
    flushing: false,
    socket: null,
    turns: new Map(),
    remoteTurns: new Map(),
    expiry: null,
    moved: false,
  };
}

const utf8 = new TextEncoder();

/** ws refuses close reasons over 123 bytes. */
function reasonOf(text: string): string {
  let out = text;
  while (utf8.encode(out).length > 123) out = out.slice(0, -1);
  return out;
}

/**
 * ws's maxPayload: above it ws closes 1009 with an empty reason from the frame header, without
 * buffering the frame. Between `max_frame_bytes` and this the frame is buffered and the gateway
 * closes with a reason. The slack is the limit again, at most 64 KiB: what an oversize frame can
 * cost a socket stays within twice the limit and within 64 KiB more than it.
 */
export function frameCeiling(maxFrameBytes: number): number {
  return maxFrameBytes + Math.min(maxFrameBytes, 64 * 1024);
}

function frameBytes(data: Buffer | Buffer[] | ArrayBuffer): number {
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.length, 0);
  return data.byteLength;
}

function issuesOf(error: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return error.issues
    .slice(0, 3)
    .map((i) => (i.path.length ? `${i.path.map(String).join('.')}: ${i.message}` : i.message))
    .join('; ');
}

export type WsGateway = ReturnType<typeof createWsGateway>;

export function createWsGateway(deps: GatewayDeps) {
  const { auth, chat, approvals, log } = deps;
  const cfg = deps.config.realtime;
  const connections = new Set<Connection>();
  const streams = new Map<string, Stream>();
  /**
   * Streams handed to another process whose turns still run here, by id (a stream handed
   * away, back and away again leaves one copy per hand-over).
   */
  const moved = new Map<string, Set<Stream>>();
  /** Streams this process claimed and awaits: what arrives for them meanwhile, in order. */
  const adopting = new Map<string, { userId: string; events: WsServerEventBody[] }>();
  const owners = new WeakMap<WebSocket, Connection>();
  const handoff = deps.streamHandoff;

  deps.userStates.onInvalidate((userId) => {
    for (const conn of connections) if (conn.userId === userId) void conn.recheck();
  });
  // Events from any process for a user (resumed turns, decisions): every stream of theirs
  // here, attached or kept for a resume.
  deps.userEvents.onEvent((userId, body) => {
    for (const stream of streams.values()) if (stream.userId === userId) emitTo(stream, body);
    for (const pending of adopting.values())
      if (pending.userId === userId) pending.events.push(body);
  });

  /** Can a client that saw events up to `lastSeq` resume this stream? */
  function resumable(stream: Stream, lastSeq: number): boolean {
    const oldest = stream.kept[0]?.seq ?? stream.seq + 1;
    return lastSeq >= oldest - 1 && lastSeq <= stream.seq;
  }

  // Another process has the client of a stream held here: give the stream up.
  handoff.onClaim((claim) => {
    const stream = streams.get(claim.streamId);
    if (!stream || stream.userId !== claim.userId) return undefined;
    // Nothing kept, nothing to hand over (and detaching would drop the stream).
    if (cfg.resume_buffer_events === 0) return null;
    // A socket still attached here (half-open: its client is on another process now) loses
    // it; its unsent events are numbered and kept (detach) before the check below.
    if (stream.socket)
      owners.get(stream.socket)?.close(WS_CLOSE.normal, 'resumed on another connection');
    // Events still waiting for this turn of the event loop's flush: numbered and kept too.
    flush(stream);
    if (!resumable(stream, claim.lastSeq)) return null;
    if (stream.expiry) clearTimeout(stream.expiry);
    stream.expiry = null;
    streams.delete(stream.id);
    stream.moved = true;
    if (stream.turns.size > 0) {
      const copies = moved.get(stream.id) ?? new Set<Stream>();
      copies.add(stream);
      moved.set(stream.id, copies);
    }
    const turns = [
      ...[...stream.turns].map(([request_id, t]) => ({ request_id, session_id: t.sessionId })),
      ...[...stream.remoteTurns].map(([request_id, session_id]) => ({ request_id, session_id })),
    ].map((t) => (t.session_id ? t : { request_id: t.request_id }));
    return { seq: stream.seq, kept: stream.kept, turns };
  });
  /** An event of a turn running on another process, for a stream held here. */
  function applyRelayed(stream: Stream, body: WsServerEventBody) {
    if ((body.type === 'message.end' || body.type === 'error') && body.request_id)
      stream.remoteTurns.delete(body.request_id);
    emitTo(stream, body);
  }
  handoff.onRelay((streamId, body) => {
    const stream = streams.get(streamId);
    if (stream) applyRelayed(stream, body);
    else adopting.get(streamId)?.events.push(body);
  });
  handoff.onCancel((streamId, requestId) => {
    const copies = [...(moved.get(streamId) ?? []), streams.get(streamId)];
    for (const stream of copies)
      stream?.turns.get(requestId)?.controller.abort(new Error('cancelled by the user'));
  });
  function forgetMoved(stream: Stream) {
    const copies = moved.get(stream.id);
    copies?.delete(stream);
    if (copies?.size === 0) moved.delete(stream.id);
  }

  function dropStream(stream: Stream) {
    if (stream.expiry) clearTimeout(stream.expiry);
    streams.delete(stream.id);
    for (const turn of stream.turns.values()) turn.controller.abort(new Error('client gone'));
    // Turns started before the stream was handed over here: gone with it, like its own.
    for (const requestId of stream.remoteTurns.keys()) handoff.cancel(stream.id, requestId);
  }

  /** The socket went away: keep the stream for a resume, or drop it. */
  function detach(stream: Stream) {
    stream.socket = null;
    // What was waiting for the socket is numbered and kept for the resume.
    flush(stream);
    if (cfg.resume_buffer_events === 0) return dropStream(stream);
    stream.expiry = setTimeout(() => dropStream(stream), cfg.resume_ttl_s * 1000);
    stream.expiry.unref();
  }

  class Connection {
    principal: Principal | null = null;
    stream: Stream | null = null;
    private token = '';
    private helloTimer: NodeJS.Timeout | null;
    private expiryTimer: NodeJS.Timeout | null = null;
    private heartbeat: NodeJS.Timeout | null = null;
    private drainTimer: NodeJS.Timeout | null = null;
    private stuckSince = 0;
    private alive = true;
    private closed = false;
    /** A frame over max_frame_bytes arrived: the socket closes once the frames before it ran. */
    private oversize = false;
    private windowStart = Date.now();
    private windowCount = 0;
    /** Frames are handled one at a time, in order (hello before anything else). */
    private chain: Promise<void> = Promise.resolve();
    /** Events before `ready` (errors while waiting for hello) are numbered from here. */
    private preSeq = 0;

    constructor(
      private readonly socket: WebSocket,
      private readonly ip: string,
      private readonly userAgent: string | null,
    ) {
      this.helloTimer = setTimeout(
        () => this.close(WS_CLOSE.unauthenticated, `no hello within ${cfg.hello_timeout_ms} ms`),
        cfg.hello_timeout_ms,
      );
      socket.on('message', (data, isBinary) => {
        if (this.oversize) return;
        const bytes = frameBytes(data as Buffer | Buffer[] | ArrayBuffer);
        if (bytes > cfg.max_frame_bytes) {
          // Closed in turn (the frames before it are handled first); the frame is not kept and
          // later frames are dropped.
          this.oversize = true;
          const reason = `frame of ${bytes} bytes exceeds max_frame_bytes ${cfg.max_frame_bytes}`;
          this.chain = this.chain.then(() => this.close(WS_CLOSE.too_large, reason));
          return;
        }
        this.chain = this.chain
          .then(() => this.onFrame(data as Buffer | Buffer[] | ArrayBuffer, isBinary))
          .catch((err) => log.error({ err }, 'websocket frame handling failed'));
      });
      socket.on('pong', () => {
        this.alive = true;
      });
      socket.on('close', () => this.cleanup());
      socket.on('error', () => this.cleanup());
    }

    get userId(): string | undefined {
      return this.principal?.id;
    }

    close(code: number, reason: string) {
      if (this.closed) return;
      // What was emitted before the close leaves before it.
      if (this.stream?.socket === this.socket) flush(this.stream);
      this.cleanup();
      try {
        this.socket.close(code, reasonOf(reason));
      } catch {
        this.socket.terminate();
      }
    }

    private cleanup() {
      if (this.closed) return;
      this.closed = true;
      connections.delete(this);
      for (const t of [this.helloTimer, this.expiryTimer, this.drainTimer]) if (t) clearTimeout(t);
      if (this.heartbeat) clearInterval(this.heartbeat);
      if (this.stream && this.stream.socket === this.socket) detach(this.stream);
    }

    // ---- sending ----

    /** Numbers an event into the stream and sends it now, or queues it under backpressure. */
    emit(body: WsServerEventBody) {
      const stream = this.stream;
      if (!stream) {
        // Before ready: nothing to resume; number it on its own.
        this.preSeq += 1;
        this.sendRaw({ ...body, seq: this.preSeq } as WsServerEvent);
        return;
      }
      emitTo(stream, body);
    }

    private sendRaw(event: WsServerEvent) {
      if (this.closed || this.socket.readyState !== this.socket.OPEN) return;
      this.socket.send(JSON.stringify(event));
    }

    /** Called by emitTo when this socket's buffer is over the high-water mark. */
    watchDrain() {
      if (this.drainTimer || this.closed) return;
      if (!this.stuckSince) this.stuckSince = Date.now();
      this.drainTimer = setTimeout(() => {
        this.drainTimer = null;
        const stream = this.stream;
        if (!stream || this.closed) return;
        if (this.socket.bufferedAmount <= cfg.high_water_bytes) {
          this.stuckSince = 0;
          flush(stream);
          if (stream.queue.length) this.watchDrain();
          return;
        }
        if (Date.now() - this.stuckSince >= cfg.stuck_timeout_ms) {
          this.close(WS_CLOSE.try_again_later, 'the client is not reading its events');
          return;
        }
        this.watchDrain();
      }, 25);
    }

    // ---- receiving ----

    private async onFrame(data: Buffer | Buffer[] | ArrayBuffer, isBinary: boolean) {
      if (this.closed) return;
      if (!this.budget()) {
        this.emit({ type: 'error', code: 'rate_limited', message: 'too many messages; slow down' });
        return;
      }
      let json: unknown;
      try {
        if (isBinary) throw new Error('binary');
        const text = Array.isArray(data)
          ? Buffer.concat(data).toString('utf8')
          : Buffer.from(data as ArrayBuffer).toString('utf8');
        json = JSON.parse(text);
      } catch {
        if (!this.principal)
          return this.close(WS_CLOSE.unauthenticated, 'the first frame must be a JSON hello');
        this.emit({ type: 'error', code: 'invalid_json', message: 'frames are JSON text' });
        return;
      }
      const parsed = WsClientMessage.safeParse(json);
      if (!parsed.success) {
        if (!this.principal)
          return this.close(WS_CLOSE.unauthenticated, 'the first frame must be hello');
        const requestId = (json as { request_id?: unknown } | null)?.request_id;
        this.emit({
          type: 'error',
          code: 'validation_failed',
          message: issuesOf(parsed.error),
          ...(typeof requestId === 'string' && requestId.length <= 100
            ? { request_id: requestId }
            : {}),
        });
        return;
      }
      const msg = parsed.data;
      if (msg.type === 'hello') return this.hello(msg);
      if (!this.principal) return this.close(WS_CLOSE.unauthenticated, 'send hello first');
      switch (msg.type) {
        case 'ping':
          return this.emit({ type: 'pong', ...(msg.id ? { id: msg.id } : {}) });
        case 'reauth':
          return this.reauth(msg.token);
        case 'chat.send':
          return this.chatSend(msg);
        case 'chat.cancel':
          return this.chatCancel(msg);
        case 'approval.decide':
          return this.decide(msg.approval_id, msg.decision);
      }
    }

    private budget(): boolean {
      const now = Date.now();
      if (now - this.windowStart >= cfg.window_s * 1000) {
        this.windowStart = now;
        this.windowCount = 0;
      }
      this.windowCount += 1;
      return this.windowCount <= cfg.messages_per_window;
    }

    private async hello(msg: Extract<WsClientMessage, { type: 'hello' }>) {
      if (this.principal) {
        this.emit({ type: 'error', code: 'bad_request', message: 'already said hello' });
        return;
      }
      if (msg.protocol_version !== PROTOCOL_VERSION)
        return this.close(
          WS_CLOSE.version_mismatch,
          `protocol_version ${msg.protocol_version} is not supported; this server speaks ${PROTOCOL_VERSION}`,
        );
      let principal: Principal;
      try {
        principal = await auth.authenticate(msg.token);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        return this.close(WS_CLOSE.unauthenticated, `${err.code}: ${err.message}`);
      }
      if (this.closed) return;
      if (this.helloTimer) clearTimeout(this.helloTimer);
      this.helloTimer = null;
      this.principal = principal;
      this.setToken(msg.token);

      let stream: Stream | undefined;
      let resumed = false;
      const resume = msg.resume;
      // Reached by shutdown and user-state checks from here on, even while a claim waits.
      connections.add(this);
      if (resume && !streams.has(resume.connection_id) && handoff.enabled) {
        // Held by another process, perhaps: ask for it. Adopted (detached, expiring) the
        // moment its state arrives, with what arrived for it after the claim (seen).
        const id = resume.connection_id;
        await handoff.claim(
          { streamId: id, userId: principal.id, lastSeq: resume.last_seq },
          {
            seen: () => {
              if (!streams.has(id)) adopting.set(id, { userId: principal.id, events: [] });
            },
            adopt: (state) => {
              const pending = adopting.get(id);
              adopting.delete(id);
              if (streams.has(id)) return;
              const adopted = newStream(id, principal.id, state.seq, state.kept);
              for (const t of state.turns) adopted.remoteTurns.set(t.request_id, t.session_id);
              streams.set(adopted.id, adopted);
              detach(adopted);
              for (const body of pending?.events ?? []) applyRelayed(adopted, body);
            },
          },
        );
        adopting.delete(id);
        if (this.closed) return;
      }
      const wanted = resume ? streams.get(resume.connection_id) : undefined;
      if (
        wanted &&
        wanted.userId === principal.id &&
        resume &&
        resumable(wanted, resume.last_seq)
      ) {
        stream = wanted;
        resumed = true;
        if (stream.expiry) clearTimeout(stream.expiry);
        stream.expiry = null;
        // A socket still attached to it (a half-open one) loses it to this one.
        if (stream.socket && stream.socket !== this.socket)
          stream.socket.close(WS_CLOSE.normal, 'resumed on another connection');
      }
      stream ??= newStream(randomUUID(), principal.id, this.preSeq);
      streams.set(stream.id, stream);
      // Events emitted for the old socket and not sent yet: numbered and kept, so they are
      // replayed below, before `ready`, in order.
      if (stream.socket !== this.socket) keepQueued(stream);
      stream.socket = this.socket;
      this.stream = stream;
      owners.set(this.socket, this);

      if (resumed && msg.resume) {
        // First what the client missed, in order, then `ready` with the next seq.
        for (const event of stream.kept) if (event.seq > msg.resume.last_seq) this.sendRaw(event);
      }
      this.emit({
        type: 'ready',
        user: {
          id: principal.id,
          email: principal.email,
          name: principal.name,
          role: principal.role,
        },
        protocol_version: PROTOCOL_VERSION,
        heartbeat_s: cfg.heartbeat_s,
        max_frame_bytes: cfg.max_frame_bytes,
        connection_id: stream.id,
        token_expires_at: new Date(this.tokenExpiresAt).toISOString(),
        resumed,
      });

      this.heartbeat = setInterval(() => {
        if (!this.alive) {
          this.cleanup();
          this.socket.terminate();
          return;
        }
        this.alive = false;
        this.socket.ping();
      }, cfg.heartbeat_s * 1000);
      this.heartbeat.unref();
    }

    private tokenExpiresAt = 0;

    private setToken(token: string) {
      this.token = token;
      const exp = decodeJwt(token).exp;
      this.tokenExpiresAt = exp ? exp * 1000 : Date.now() + 60_000;
      if (this.expiryTimer) clearTimeout(this.expiryTimer);
      this.expiryTimer = setTimeout(
        () => this.close(WS_CLOSE.unauthenticated, 'token expired; reconnect with a fresh token'),
        Math.max(0, this.tokenExpiresAt - Date.now()),
      );
      this.expiryTimer.unref();
    }

    private async reauth(token: string) {
      let principal: Principal;
      try {
        principal = await auth.authenticate(token);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        this.emit({ type: 'error', code: err.code, message: err.message });
        return;
      }
      if (principal.id !== this.principal!.id) {
        this.emit({ type: 'error', code: 'forbidden', message: 'reauth must be the same user' });
        return;
      }
      this.principal = principal;
      this.setToken(token);
      this.emit({
        type: 'reauth.ok',
        token_expires_at: new Date(this.tokenExpiresAt).toISOString(),
      });
    }

    /** The user's state changed somewhere: check the token again; close if refused. */
    async recheck() {
      const before = this.principal;
      if (!before || this.closed) return;
      try {
        const now = await auth.authenticate(this.token);
        if (now.role !== before.role || now.department !== before.department) {
          this.close(WS_CLOSE.forbidden, 'your role changed; reconnect');
          return;
        }
        this.principal = now;
      } catch (err) {
        if (!(err instanceof AppError)) {
          log.error({ err }, 'websocket re-check failed');
          return;
        }
        if (err.code === 'token_expired') {
          this.close(WS_CLOSE.unauthenticated, 'token expired; reconnect with a fresh token');
          return;
        }
        // Deactivation also ends the user's sessions: name the cause, not the symptom.
        const state = await deps.userStates.get(before.id).catch(() => undefined);
        this.close(
          WS_CLOSE.forbidden,
          state && !state.user.is_active ? 'account is deactivated' : err.message,
        );
      }
    }

    private chatSend(msg: Extract<WsClientMessage, { type: 'chat.send' }>) {
      const principal = this.principal!;
      const stream = this.stream!;
      const requestId = msg.request_id;
      if (!principal.permissions.has('chat:use')) {
        this.emit({
          type: 'error',
          code: 'forbidden',
          message: 'your role may not do this (needs chat:use)',
          request_id: requestId,
        });
        return;
      }
      if (stream.turns.has(requestId) || stream.remoteTurns.has(requestId)) {
        this.emit({
          type: 'error',
          code: 'conflict',
          message: 'a turn with this request_id is running',
          request_id: requestId,
        });
        return;
      }
      const controller = new AbortController();
      stream.turns.set(requestId, { controller, sessionId: msg.session_id });
      const onEvent = (event: AgentEvent) => {
        try {
          for (const body of eventsOf(requestId, event)) emitTo(stream, body);
        } catch (err) {
          log.error({ err }, 'websocket event failed');
        }
      };
      void chat
        .send(
          principal,
          {
            message: msg.message,
            ...(msg.session_id ? { session_id: msg.session_id } : {}),
            ...(msg.agent ? { agent: msg.agent } : {}),
            ...(msg.client_message_id ? { client_message_id: msg.client_message_id } : {}),
          },
          { ip: this.ip, userAgent: this.userAgent, source: 'api' },
          { onEvent, signal: controller.signal },
        )
        .then(
          (reply) => emitTo(stream, { type: 'message.end', request_id: requestId, ...reply }),
          (err) => {
            if (!(err instanceof AppError)) log.error({ err }, 'websocket chat turn failed');
            emitTo(stream, {
              type: 'error',
              code: err instanceof AppError ? err.code : 'internal_error',
              message: err instanceof AppError ? err.message : 'internal server error',
              request_id: requestId,
            });
          },
        )
        .finally(() => {
          stream.turns.delete(requestId);
          if (stream.moved && stream.turns.size === 0) forgetMoved(stream);
        });
    }

    private async chatCancel(msg: Extract<WsClientMessage, { type: 'chat.cancel' }>) {
      const stream = this.stream!;
      const requestId = msg.request_id ? { request_id: msg.request_id } : {};
      if (msg.request_id !== undefined) {
        const turn = stream.turns.get(msg.request_id);
        if (turn) {
          turn.controller.abort(new Error('cancelled by the user'));
          return;
        }
        if (stream.remoteTurns.has(msg.request_id)) {
          // Started before the stream was handed over here: it runs on the process it started
          // on. Its session's lease names the running turn too (chat.cancel), when known.
          handoff.cancel(stream.id, msg.request_id);
          const sessionId = stream.remoteTurns.get(msg.request_id);
          if (sessionId) await chat.cancel(this.principal!, sessionId).catch(() => undefined);
          return;
        }
      }
      if (msg.session_id !== undefined) {
        // The turn may run on another process (a REST send, another device): chat.cancel
        // reaches it there.
        try {
          const { cancelled } = await chat.cancel(this.principal!, msg.session_id);
          if (cancelled) return;
        } catch (err) {
          if (!(err instanceof AppError)) throw err;
          this.emit({ type: 'error', code: err.code, message: err.message, ...requestId });
          return;
        }
      }
      this.emit({
        type: 'error',
        code: 'not_found',
        message: 'no running turn of yours matches',
        ...requestId,
      });
    }

    /** The decision's `approval.decided` reaches every socket of the user (userEvents). */
    private async decide(approvalId: string, decision: 'approve' | 'reject') {
      const principal = this.principal!;
      const meta = { source: 'api' as const, ip: this.ip };
      try {
        if (decision === 'approve') await approvals.approve(principal, approvalId, meta);
        else await approvals.reject(principal, approvalId, meta);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        this.emit({ type: 'error', code: err.code, message: err.message });
      }
    }
  }

  function push(stream: Stream, body: WsServerEventBody): WsServerEvent {
    stream.seq += 1;
    const event = { ...body, seq: stream.seq } as WsServerEvent;
    if (cfg.resume_buffer_events > 0) {
      stream.kept.push(event);
      if (stream.kept.length > cfg.resume_buffer_events) stream.kept.shift();
    }
    return event;
  }

  /** Sends queued events while the socket is under its high-water mark. */
  /** Nobody to send to: the queued events are numbered and kept for a resume. */
  function keepQueued(stream: Stream) {
    for (const body of stream.queue.splice(0)) push(stream, body);
  }

  function flush(stream: Stream) {
    const socket = stream.socket;
    while (stream.queue.length) {
      if (!socket || socket.readyState !== socket.OPEN) return keepQueued(stream);
      if (socket.bufferedAmount > cfg.high_water_bytes) {
        owners.get(socket)?.watchDrain();
        return;
      }
      socket.send(JSON.stringify(push(stream, stream.queue.shift()!)));
    }
  }

  function emitTo(stream: Stream, body: WsServerEventBody) {
    if (stream.moved) {
      handoff.relay(stream.id, body);
      return;
    }
    const last = stream.queue.at(-1);
    if (
      body.type === 'text.delta' &&
      last?.type === 'text.delta' &&
      last.request_id === body.request_id
    ) {
      last.text += body.text;
    } else {
      stream.queue.push(body.type === 'text.delta' ? { ...body } : body);
    }
    // Sent once this turn of the event loop is over: text deltas that arrive together (one
    // network read of the model's stream) leave as one frame, with one sequence number, and
    // the frames of one turn go out together. A close, a resume and a hand-over flush first.
    if (!stream.flushing) {
      stream.flushing = true;
      setImmediate(() => {
        stream.flushing = false;
        flush(stream);
      });
    }
  }

  return {
    /** The route's handler: one call per upgraded socket. */
    accept(socket: WebSocket, ip: string, userAgent: string | null) {
      new Connection(socket, ip, userAgent);
    },
    /** Closes every socket (server shutdown) and drops kept streams. */
    closeAll(code: number = WS_CLOSE.going_away, reason = 'server is shutting down') {
      for (const conn of [...connections]) conn.close(code, reason);
      for (const stream of streams.values()) dropStream(stream);
      for (const copies of moved.values()) for (const stream of copies) dropStream(stream);
      moved.clear();
      adopting.clear();
    },
    /** Sockets past hello on this process. */
    size: () => connections.size,
  };
}
