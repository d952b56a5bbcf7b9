/**
 * The terminal chat client's core: logs in over REST, speaks the WebSocket protocol, and turns
 * input lines into protocol messages and server events into text. No process I/O here: the
 * caller passes fetch, the WebSocket class, an output stream and the input lines.
 */
import { randomUUID } from 'node:crypto';
import type { Writable } from 'node:stream';
import {
  ApprovalList,
  ChatAgentName,
  ErrorEnvelope,
  LoginResponse,
  PROTOCOL_VERSION,
  TokenPair,
  WS_CLOSE,
  type WsClientMessage,
  WsServerEvent,
} from '@mezzofy/protocol';
import type WebSocket from 'ws';
import type { z } from 'zod';

export interface ChatClientOptions {
  /** The server's base URL, e.g. http://localhost:8000. */
  url: string;
  email: string;
  password: string;
  output: Writable;
  fetch?: typeof fetch;
  WebSocket: typeof WebSocket;
  /** Dim status lines with ANSI codes (default: output.isTTY). */
  color?: boolean;
  /** Refresh the access token this long before it expires (default 60 s). */
  refreshMarginMs?: number;
  /** After losing the connection, keep trying to reconnect this long (default 60 s). */
  reconnectForMs?: number;
}

export interface ChatClient {
  /** Logs in, connects, handles the lines until /quit, end of input or close; the exit code. */
  run(lines: AsyncIterable<string>): Promise<number>;
  /** Ctrl-C: cancels the running turn; a second one (or one when idle) quits. */
  interrupt(): void;
}

class ChatCliError extends Error {}

const KNOWN_EVENTS = new Set<string>(WsServerEvent.options.map((o) => o.shape.type.value));

const CLOSE_REASONS: Record<number, string> = {
  [WS_CLOSE.going_away]: 'the server is shutting down',
  [WS_CLOSE.too_large]: 'a frame was too large',
  [WS_CLOSE.try_again_later]: 'the client fell behind reading events',
  [WS_CLOSE.protocol_error]: 'protocol error',
  [WS_CLOSE.unauthenticated]: 'not authenticated',
  [WS_CLOSE.forbidden]: 'access revoked (account deactivated, role changed or session ended)',
  [WS_CLOSE.version_mismatch]: `protocol version mismatch (this client speaks ${PROTOCOL_VERSION})`,
};

/**
 * Closes after which the client reconnects and resumes its stream: the network or the server
 * went away (restart, another process takes over), or the token ran out mid-outage.
 */
const RECONNECT_CODES = new Set<number>([
  WS_CLOSE.going_away,
  1006, // abnormal: no close frame (network drop, killed process)
  1011, // server error
  1012, // service restart
  WS_CLOSE.try_again_later,
]);

const HELP = [
  'Type a message to chat. Commands:',
  '  /new              start a new session',
  '  /agent <name>     pin an agent (/agent alone unpins)',
  '  /cancel           cancel the running turn (or Ctrl-C)',
  '  /approvals        list pending approvals',
  '  /approve <id>     approve a pending action',
  '  /reject <id>      reject a pending action',
  '  /quit             leave',
].join('\n');

export function createChatClient(options: ChatClientOptions): ChatClient {
  const out = options.output;
  const doFetch = options.fetch ?? fetch;
  const color = options.color ?? Boolean((out as { isTTY?: boolean }).isTTY);
  const margin = options.refreshMarginMs ?? 60_000;
  const reconnectForMs = options.reconnectForMs ?? 60_000;
  const base = options.url.replace(/\/+$/, '');

  let access = '';
  let refresh = '';
  let ws: WebSocket | undefined;
  let sessionId: string | undefined;
  let agent: z.infer<typeof ChatAgentName> | undefined;
  let turn: { id: string; cancelling: boolean; midLine: boolean } | undefined;
  /** A resumed turn's text ended mid-line. */
  let resumedMidLine = false;
  let refreshTimer: NodeJS.Timeout | undefined;
  let quitting = false;
  /** The stream to resume after a reconnect: its id and the last event seen. */
  let stream: { id: string; lastSeq: number } | undefined;
  let reconnecting = false;
  let finish: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });

  const write = (text: string) => out.write(text);
  const line = (text: string) => {
    if (turn?.midLine) {
      write('\n');
      turn.midLine = false;
    }
    write(`${text}\n`);
  };
  const dim = (text: string) => line(color ? `\x1b[2m${text}\x1b[22m` : text);
  const err = (text: string) => line(color ? `\x1b[31merror: ${text}\x1b[39m` : `error: ${text}`);

  async function rest(method: string, path: string, body?: unknown, auth = true) {
    let res: Response;
    try {
      res = await doFetch(`${base}${path}`, {
        method,
        headers: {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(auth ? { authorization: `Bearer ${access}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ChatCliError(`cannot reach ${base}: ${(e as Error).message}`);
    }
    const json: unknown = await res.json().catch(() => undefined);
    if (!res.ok) {
      const envelope = ErrorEnvelope.safeParse(json);
      const why = envelope.success
        ? `${envelope.data.error.message} (${envelope.data.error.code})`
        : `HTTP ${res.status}`;
      throw new ChatCliError(`${method} ${path} failed: ${why}`);
    }
    return json;
  }

  /** Sends when connected; false (and says so) while the connection is down. */
  function send(message: WsClientMessage): boolean {
    if (!ws || ws.readyState !== ws.OPEN) {
      err('not connected (reconnecting); try again in a moment');
      return false;
    }
    ws.send(JSON.stringify(message));
    return true;
  }

  function scheduleRefresh(expiresAt: string) {
    clearTimeout(refreshTimer);
    const delay = Math.max(1_000, Date.parse(expiresAt) - Date.now() - margin);
    refreshTimer = setTimeout(() => {
      void (async () => {
        try {
          await refreshTokens();
          send({ type: 'reauth', token: access });
        } catch (e) {
          err(`token refresh failed: ${(e as Error).message}`);
        }
      })();
    }, delay);
    refreshTimer.unref();
  }

  function onEvent(raw: string): string | undefined {
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      dim('warning: ignoring a frame that is not JSON');
      return;
    }
    const type = (json as { type?: unknown } | null)?.type;
    if (typeof type !== 'string' || !KNOWN_EVENTS.has(type)) {
      dim(`warning: ignoring unknown event type ${JSON.stringify(type)}`);
      return;
    }
    const parsed = WsServerEvent.safeParse(json);
    if (!parsed.success) {
      dim(`warning: ignoring an invalid ${type} event: ${parsed.error.issues[0]?.message}`);
      return;
    }
    const e = parsed.data;
    if (e.type === 'ready') stream = { id: e.connection_id, lastSeq: e.seq };
    else if (stream && e.seq > stream.lastSeq) stream.lastSeq = e.seq;
    handleEvent(e, json);
    return e.type;
  }

  function handleEvent(e: WsServerEvent, json: unknown) {
    const mine = 'request_id' in e && turn !== undefined && e.request_id === turn.id;
    // A turn resumed after an approval (decided here, elsewhere or on another device).
    const resumed =
      'request_id' in e && typeof e.request_id === 'string' && e.request_id.startsWith('approval:');
    switch (e.type) {
      case 'ready':
        if (!reconnecting)
          line(
            `Connected as ${e.user.name} <${e.user.email}> (${e.user.role}). /help for commands.`,
          );
        else if (e.resumed) dim('— reconnected; nothing was lost');
        else {
          dim('— reconnected on a new connection');
          if (turn) {
            err('the running answer was lost with the connection; it is stored in the session');
            turn = undefined;
          }
        }
        scheduleRefresh(e.token_expires_at);
        return;
      case 'reauth.ok':
        scheduleRefresh(e.token_expires_at);
        return;
      case 'pong':
        return;
      case 'status':
        if (mine) dim(`… ${e.text}`);
        return;
      case 'model.start':
        return;
      case 'text.delta':
        if (mine && turn) {
          write(e.text);
          turn.midLine = !e.text.endsWith('\n');
        } else if (resumed) {
          write(e.text);
          resumedMidLine = !e.text.endsWith('\n');
        }
        return;
      case 'tool.call-start':
        dim(`→ ${e.name} ${JSON.stringify(e.input)}`);
        return;
      case 'tool.call-end':
        dim(`← ${e.name}: ${e.status}`);
        return;
      case 'approval.requested':
        line(`! approval needed ${e.approval_id}: ${e.tool} — ${e.summary}`);
        line(`  approve with /approve ${e.approval_id} or reject with /reject ${e.approval_id}`);
        return;
      case 'artifact.created':
        line(`+ file ${e.artifact.name} (${e.artifact.type}, id ${e.artifact.id})`);
        return;
      case 'approval.decided':
        line(`approval.decided ${e.approval.id}: ${e.approval.tool} ${e.approval.status}`);
        return;
      case 'error':
        err(`${e.message} (${e.code})`);
        if (mine) turn = undefined;
        return;
      case 'message.end': {
        if (!mine && !resumed) return;
        if (resumed && resumedMidLine) write('\n');
        if (resumed) resumedMidLine = false;
        sessionId = e.session_id;
        const label = (json as { provider_label?: unknown }).provider_label;
        const who = typeof label === 'string' ? label : (e.provider ?? 'no provider');
        const fallback = e.fallback_reason ? `, fallback: ${e.fallback_reason}` : '';
        const finishNote = e.finish === 'stop' ? '' : ` [${e.finish}]`;
        dim(`— answered by ${who} (${e.model ?? 'no model'})${fallback}${finishNote}`);
        if (mine) turn = undefined;
        return;
      }
    }
  }

  async function refreshTokens() {
    const pair = TokenPair.parse(
      await rest('POST', '/auth/refresh', { refresh_token: refresh }, false),
    );
    access = pair.access_token;
    refresh = pair.refresh_token;
  }

  /** The connection went away: reconnect with backoff and resume the stream, or give up. */
  async function reconnect(message: string) {
    const deadline = Date.now() + reconnectForMs;
    dim(`— ${message}; reconnecting…`);
    reconnecting = true;
    for (let wait = 250; !quitting; wait = Math.min(wait * 2, 5_000)) {
      await new Promise((r) => setTimeout(r, wait));
      if (quitting) return;
      try {
        // The access token may have run out while we were away.
        await refreshTokens();
        await connect(stream);
        return;
      } catch (e) {
        if (Date.now() + wait > deadline) {
          err(`could not reconnect: ${(e as Error).message}`);
          return finish(1);
        }
      }
    }
  }

  async function connect(resume?: { id: string; lastSeq: number }): Promise<void> {
    const target = new URL(`${base}/chat/ws`);
    target.protocol = target.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new options.WebSocket(target.toString());
    ws = socket;
    await new Promise<void>((resolve, reject) => {
      let ready = false;
      socket.on('open', () =>
        send({
          type: 'hello',
          token: access,
          protocol_version: PROTOCOL_VERSION,
          ...(resume ? { resume: { connection_id: resume.id, last_seq: resume.lastSeq } } : {}),
        }),
      );
      socket.on('message', (data) => {
        if (onEvent(String(data)) === 'ready' && !ready) {
          ready = true;
          resolve();
        }
      });
      socket.on('error', (e) => {
        if (!ready) reject(new ChatCliError(`cannot connect to ${target}: ${e.message}`));
      });
      socket.on('close', (code, reasonBuffer) => {
        clearTimeout(refreshTimer);
        const reason = String(reasonBuffer);
        if (quitting) return finish(0);
        const what = CLOSE_REASONS[code] ?? 'connection closed';
        const message = `${what} (close ${code}${reason ? `: ${reason}` : ''})`;
        if (!ready) return reject(new ChatCliError(message));
        if (RECONNECT_CODES.has(code)) return void reconnect(message);
        err(message);
        finish(1);
      });
    });
  }

  function quit() {
    quitting = true;
    if (ws && ws.readyState !== ws.CLOSED) ws.close(WS_CLOSE.normal, 'bye');
    else finish(0);
  }

  async function listApprovals() {
    const list = ApprovalList.parse(await rest('GET', '/approvals?status=pending'));
    if (list.items.length === 0) return line('No pending approvals.');
    for (const a of list.items)
      line(`${a.id}  ${a.tool} ${JSON.stringify(a.arguments)} (expires ${a.expires_at})`);
  }

  async function handle(input: string): Promise<void> {
    const text = input.trim();
    if (!text) return;
    if (!text.startsWith('/')) {
      if (turn) return err('a turn is running; wait for it or /cancel it');
      const id = randomUUID();
      const sent = send({
        type: 'chat.send',
        request_id: id,
        message: text,
        ...(sessionId ? { session_id: sessionId } : {}),
        ...(agent ? { agent } : {}),
      });
      if (sent) turn = { id, cancelling: false, midLine: false };
      return;
    }
    const [command, arg] = text.split(/\s+/, 2);
    switch (command) {
      case '/help':
        return line(HELP);
      case '/quit':
      case '/exit':
        return quit();
      case '/new':
        sessionId = undefined;
        return dim('— new session');
      case '/agent': {
        if (!arg) {
          agent = undefined;
          return dim('— agent routing is automatic');
        }
        const name = ChatAgentName.safeParse(arg);
        if (!name.success) return err(`unknown agent ${arg}`);
        agent = name.data;
        return dim(`— agent pinned: ${agent}`);
      }
      case '/cancel':
        if (!turn) return err('no turn is running');
        turn.cancelling = true;
        send({ type: 'chat.cancel', request_id: turn.id });
        return;
      case '/approvals':
        return listApprovals().catch((e: Error) => err(e.message));
      case '/approve':
      case '/reject':
        if (!arg) return err(`usage: ${command} <approval id>`);
        send({
          type: 'approval.decide',
          approval_id: arg,
          decision: command === '/approve' ? 'approve' : 'reject',
        });
        return;
      default:
        return err(`unknown command ${command}; /help lists them`);
    }
  }

  return {
    async run(lines) {
      try {
        const login = LoginResponse.parse(
          await rest(
            'POST',
            '/auth/login',
            { email: options.email, password: options.password },
            false,
          ),
        );
        access = login.access_token;
        refresh = login.refresh_token;
        await connect();
      } catch (e) {
        err(e instanceof ChatCliError ? e.message : `unexpected: ${(e as Error).message}`);
        ws?.terminate();
        return 1;
      }
      const loop = (async () => {
        for await (const input of lines) {
          await handle(input);
          if (quitting) return;
        }
        quit();
      })();
      const code = await Promise.race([finished, loop.then(() => finished)]);
      clearTimeout(refreshTimer);
      ws?.terminate();
      return code;
    },
    interrupt() {
      if (turn && !turn.cancelling) {
        turn.cancelling = true;
        dim('— cancelling (Ctrl-C again to quit)');
        send({ type: 'chat.cancel', request_id: turn.id });
        return;
      }
      quit();
    },
  };
}
