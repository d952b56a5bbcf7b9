/**
 * The gateway's flow control and token expiry against a fake socket: while the socket's
 * unsent bytes are over the high-water mark, consecutive text deltas merge into one frame
 * that goes out once it drains; a client stuck above the mark is closed 1013; a token that
 * expires without reauth closes the socket 4001; the heartbeat drops a client that stops
 * answering pings; a client ping is answered with pong. Two gateways on one bus (as two
 * processes on one Redis) hand a stream over to the one its client reconnects to.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROTOCOL_VERSION, type WsServerEvent } from '@mezzofy/protocol';
import { UnsecuredJWT } from 'jose';
import { describe, expect, it, vi } from 'vitest';
import type { WebSocket } from 'ws';
import type { AgentEvent } from '../agents/agent.ts';
import type { Principal } from '../auth/principal.ts';
import type { SendOptions } from '../chat/chat.service.ts';
import { createLoggers } from '../logging/logger.ts';
import type { PubSub } from './pubsub.ts';
import { createStreamHandoff, type StreamHandoff } from './stream-handoff.ts';
import { createWsGateway, type GatewayDeps } from './ws-gateway.ts';

class FakeSocket extends EventEmitter {
  readonly OPEN = 1;
  readyState = 1;
  bufferedAmount = 0;
  sent: WsServerEvent[] = [];
  closedWith: { code: number; reason: string } | null = null;
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close(code: number, reason: string) {
    this.closedWith = { code, reason };
    this.readyState = 3;
    this.emit('close');
  }
  terminate() {
    this.close(1006, '');
  }
  pings = 0;
  /** Answers each ping with a pong, as a live client's ws library does. */
  answersPings = true;
  ping() {
    this.pings += 1;
    if (this.answersPings) setImmediate(() => this.emit('pong'));
  }
  frame(message: unknown) {
    this.emit('message', Buffer.from(JSON.stringify(message)), false);
  }
}

const principal: Principal = {
  id: '00000000-0000-4000-8000-000000000001',
  email: 'a@mezzofy.test',
  name: 'A',
  role: 'sales_rep',
  department: 'sales',
  permissions: new Set(['chat:use']),
  sessionId: 's',
  timezone: 'UTC',
  locale: 'en',
};

const tokenFor = (expiresInS: number) =>
  new UnsecuredJWT({ sub: principal.id })
    .setExpirationTime(Math.floor(Date.now() / 1000) + expiresInS)
    .encode();

/** Without Redis: every stream is local. */
const noHandoff: StreamHandoff = {
  enabled: false,
  claim: async () => false,
  onClaim() {},
  relay() {},
  onRelay() {},
  cancel() {},
  onCancel() {},
};

function gateway(
  turn: (
    emit: (e: AgentEvent) => void,
    release: Promise<void>,
    signal: AbortSignal,
  ) => Promise<void>,
  realtime: Partial<GatewayDeps['config']['realtime']> = {},
  extra: { streamHandoff?: StreamHandoff; principal?: Principal } = {},
) {
  let release!: () => void;
  const released = new Promise<void>((r) => {
    release = r;
  });
  const deps = {
    auth: { authenticate: async () => extra.principal ?? principal },
    userStates: { onInvalidate() {}, get: async () => undefined },
    chat: {
      async send(_p: Principal, _input: unknown, _meta: unknown, options: SendOptions) {
        await turn((e) => options.onEvent?.(e), released, options.signal!);
        return { text: 'done', finish: 'stop' };
      },
    },
    approvals: {},
    userEvents: { onEvent() {} },
    streamHandoff: extra.streamHandoff ?? noHandoff,
    config: {
      realtime: {
        hello_timeout_ms: 5_000,
        max_frame_bytes: 4096,
        heartbeat_s: 30,
        messages_per_window: 100,
        window_s: 60,
        high_water_bytes: 1024,
        stuck_timeout_ms: 10_000,
        resume_buffer_events: 10,
        resume_ttl_s: 60,
        ...realtime,
      },
    },
    log: createLoggers({ level: 'silent' }).app,
  } as unknown as GatewayDeps;
  return { gw: createWsGateway(deps), release };
}

async function connect(
  gw: ReturnType<typeof createWsGateway>,
  token = tokenFor(3600),
  extra: Record<string, unknown> = {},
  waitMs = 10,
) {
  const socket = new FakeSocket();
  gw.accept(socket as unknown as WebSocket, '127.0.0.1', null);
  socket.frame({ type: 'hello', token, protocol_version: PROTOCOL_VERSION, ...extra });
  await sleep(waitMs);
  expect(socket.sent.some((e) => e.type === 'ready')).toBe(true);
  return socket;
}

/** One pub/sub bus shared by gateways in this process, delivering later, like Redis. */
function bus(): PubSub {
  const emitter = new EventEmitter();
  return {
    kind: 'redis',
    async publish(channel, message) {
      setImmediate(() => emitter.emit(channel, message));
    },
    async subscribe(channel, handler) {
      emitter.on(channel, handler);
    },
    healthy: () => true,
    onResync() {},
    async close() {},
  };
}

const readyOf = (socket: FakeSocket) =>
  socket.sent.find((e) => e.type === 'ready') as Extract<WsServerEvent, { type: 'ready' }>;

describe('ws gateway flow control', () => {
  it('merges text deltas while the socket is over the high-water mark, then sends them', async () => {
    const { gw, release } = gateway(async (emit, released) => {
      for (const text of ['a', 'b', 'c', 'd']) emit({ type: 'text-delta', text });
      await released;
    });
    const socket = await connect(gw);
    socket.bufferedAmount = 10_000;
    socket.frame({ type: 'chat.send', request_id: 'r', message: 'hi' });
    await sleep(60);
    expect(socket.sent.map((e) => e.type)).toEqual(['ready']);

    socket.bufferedAmount = 0;
    await sleep(60);
    expect(socket.sent.slice(1)).toEqual([
      { type: 'text.delta', request_id: 'r', text: 'abcd', seq: 2 },
    ]);
    release();
    await sleep(20);
    expect(socket.sent.at(-1)).toMatchObject({ type: 'message.end', seq: 3, text: 'done' });
    gw.closeAll();
  });

  it('text deltas emitted in one turn of the event loop leave as one frame, in order', async () => {
    const { gw, release } = gateway(async (emit, released) => {
      emit({ type: 'text-delta', text: 'Hel' });
      emit({ type: 'text-delta', text: 'lo' });
      await new Promise((resolve) => setImmediate(resolve));
      emit({ type: 'text-delta', text: ', Ana.' });
      await released;
    });
    const socket = await connect(gw);
    socket.frame({ type: 'chat.send', request_id: 'r', message: 'hi' });
    await sleep(30);
    expect(socket.sent.slice(1)).toEqual([
      { type: 'text.delta', request_id: 'r', text: 'Hello', seq: 2 },
      { type: 'text.delta', request_id: 'r', text: ', Ana.', seq: 3 },
    ]);
    release();
    await sleep(20);
    expect(socket.sent.at(-1)).toMatchObject({ type: 'message.end', seq: 4, text: 'done' });
    gw.closeAll();
  });

  it('a close sends what was emitted before it in the same turn of the event loop', async () => {
    let closeNow = () => {};
    const { gw, release } = gateway(async (emit, released) => {
      emit({ type: 'text-delta', text: 'said just before the restart' });
      closeNow();
      await released;
    });
    closeNow = () => gw.closeAll(1001, 'restart');
    const socket = await connect(gw);
    socket.frame({ type: 'chat.send', request_id: 'r', message: 'hi' });
    await sleep(20);
    expect(socket.sent.slice(1)).toEqual([
      { type: 'text.delta', request_id: 'r', text: 'said just before the restart', seq: 2 },
    ]);
    release();
  });

  it('closes 1013 when the client stays above the mark past the limit', async () => {
    const { gw, release } = gateway(
      async (emit, released) => {
        emit({ type: 'text-delta', text: 'x' });
        await released;
      },
      { stuck_timeout_ms: 100 },
    );
    const socket = await connect(gw);
    socket.bufferedAmount = 10_000;
    socket.frame({ type: 'chat.send', request_id: 'r', message: 'hi' });
    await sleep(250);
    expect(socket.closedWith).toMatchObject({ code: 1013 });
    expect(socket.closedWith!.reason).toMatch(/not reading/);
    release();
    gw.closeAll();
  });

  it('closes 4001 when the access token expires without reauth', async () => {
    const { gw } = gateway(async () => {});
    const socket = await connect(gw, tokenFor(1));
    await sleep(1_300);
    expect(socket.closedWith).toMatchObject({ code: 4001 });
    expect(socket.closedWith!.reason).toMatch(/token expired/);
    gw.closeAll();
  });

  it('heartbeat: pings every heartbeat_s; a client that stops answering is terminated', async () => {
    const { gw } = gateway(async () => {}, { heartbeat_s: 0.05 });
    const live = await connect(gw);
    const dead = await connect(gw);
    dead.answersPings = false;
    await sleep(300);
    expect(live.pings).toBeGreaterThanOrEqual(3);
    expect(live.closedWith).toBeNull();
    // One unanswered ping is tolerated; at the next beat the socket is dropped.
    expect(dead.closedWith).toMatchObject({ code: 1006 });
    expect(dead.pings).toBe(1);
    expect(gw.size()).toBe(1);
    gw.closeAll();
  });

  it('answers a client ping with pong, echoing its id', async () => {
    const { gw } = gateway(async () => {});
    const socket = await connect(gw);
    socket.frame({ type: 'ping', id: 'p-7' });
    await sleep(10);
    expect(socket.sent.at(-1)).toMatchObject({ type: 'pong', id: 'p-7', seq: 2 });
    gw.closeAll();
  });
});

describe('ws gateway: a stream handed over to the process the client reconnects to', () => {
  const log = createLoggers({ level: 'silent' }).app;
  const HANDOFF_MS = 300;

  async function pair(turn: Parameters<typeof gateway>[0], other?: Principal) {
    const pubsub = bus();
    const a = gateway(
      turn,
      {},
      { streamHandoff: await createStreamHandoff(pubsub, log, HANDOFF_MS) },
    );
    const b = gateway(
      turn,
      {},
      {
        streamHandoff: await createStreamHandoff(pubsub, log, HANDOFF_MS),
        ...(other ? { principal: other } : {}),
      },
    );
    return { a, b };
  }

  it('replays what was missed, then relays the rest of a turn still running on the first process', async () => {
    let step!: (text: string) => void;
    const { a, b } = await pair(async (emit, released) => {
      step = (text) => emit({ type: 'text-delta', text });
      await released;
    });
    const first = await connect(a.gw);
    const connectionId = readyOf(first).connection_id;
    first.frame({ type: 'chat.send', request_id: 'r', message: 'hi' });
    await sleep(10);
    step('one ');
    // Events leave at the end of the event loop's turn (emitTo's flush).
    await new Promise((resolve) => setImmediate(resolve));
    const lastSeen = first.sent.at(-1)!.seq;
    expect(first.sent.at(-1)).toMatchObject({ type: 'text.delta', text: 'one ' });
    first.close(1006, 'network gone');
    step('two '); // kept on A for the resume

    const second = await connect(
      b.gw,
      tokenFor(3600),
      { resume: { connection_id: connectionId, last_seq: lastSeen } },
      50,
    );
    expect(second.sent.map((e) => e.type)).toEqual(['text.delta', 'ready']);
    expect(second.sent[0]).toMatchObject({ text: 'two ', seq: lastSeen + 1 });
    expect(readyOf(second)).toMatchObject({ resumed: true, connection_id: connectionId });

    step('three'); // the turn still runs on A: relayed to B
    a.release();
    await sleep(30);
    expect(second.sent.slice(2)).toEqual([
      { type: 'text.delta', request_id: 'r', text: 'three', seq: lastSeen + 3 },
      expect.objectContaining({ type: 'message.end', request_id: 'r', seq: lastSeen + 4 }),
    ]);
    // One stream: A no longer sends anything of it.
    expect(first.sent.at(-1)!.seq).toBe(lastSeen);
    a.gw.closeAll();
    b.gw.closeAll();
  });

  it('a cancel sent to the new process stops the turn running on the first', async () => {
    let aborted = false;
    const { a, b } = await pair(async (_emit, _released, signal) => {
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
      aborted = true;
    });
    const first = await connect(a.gw);
    first.frame({ type: 'chat.send', request_id: 'r', message: 'hi' });
    await sleep(10);
    first.close(1006, 'gone');
    const second = await connect(
      b.gw,
      tokenFor(3600),
      { resume: { connection_id: readyOf(first).connection_id, last_seq: readyOf(first).seq } },
      50,
    );
    expect(readyOf(second).resumed).toBe(true);
    // The same request id is still running (on A): not started twice.
    second.frame({ type: 'chat.send', request_id: 'r', message: 'again' });
    await sleep(10);
    expect(second.sent.at(-1)).toMatchObject({ type: 'error', code: 'conflict' });
    second.frame({ type: 'chat.cancel', request_id: 'r' });
    await sleep(30);
    expect(aborted).toBe(true);
    expect(second.sent.at(-1)).toMatchObject({ type: 'message.end', request_id: 'r' });
    a.gw.closeAll();
    b.gw.closeAll();
  });

  it('starts a new stream when nobody holds it (after the handoff wait) or it is not the user’s', async () => {
    const other: Principal = { ...principal, id: '00000000-0000-4000-8000-000000000002' };
    const { a, b } = await pair(async () => {}, other);
    const first = await connect(a.gw);
    first.close(1006, 'gone');
    const started = performance.now();
    const stranger = await connect(
      b.gw,
      tokenFor(3600),
      { resume: { connection_id: readyOf(first).connection_id, last_seq: 1 } },
      HANDOFF_MS + 50,
    );
    expect(performance.now() - started).toBeGreaterThanOrEqual(HANDOFF_MS);
    expect(readyOf(stranger).resumed).toBe(false);
    expect(readyOf(stranger).connection_id).not.toBe(readyOf(first).connection_id);
    // A still holds it for its own user.
    const back = await connect(a.gw, tokenFor(3600), {
      resume: { connection_id: readyOf(first).connection_id, last_seq: 1 },
    });
    expect(readyOf(back).resumed).toBe(true);
    a.gw.closeAll();
    b.gw.closeAll();
  });

  it('is refused at once when the events after last_seq are no longer kept', async () => {
    const { a, b } = await pair(async () => {});
    const first = await connect(a.gw);
    first.close(1006, 'gone');
    const started = performance.now();
    const second = await connect(
      b.gw,
      tokenFor(3600),
      { resume: { connection_id: readyOf(first).connection_id, last_seq: 99 } },
      50,
    );
    expect(performance.now() - started).toBeLessThan(HANDOFF_MS);
    expect(readyOf(second).resumed).toBe(false);
    a.gw.closeAll();
    b.gw.closeAll();
  });

  it('loses and doubles nothing while a streaming turn is handed A → B → A → C', async () => {
    const pubsub = bus();
    // The turn streams until every hand-over is done, then a little more: they overlap.
    const sent: string[] = [];
    let movesDone = false;
    let finished = false;
    const turn: Parameters<typeof gateway>[0] = async (emit, released) => {
      for (let i = 0, after = 0; after < 20; i++) {
        if (movesDone) after += 1;
        sent.push(`${i} `);
        emit({ type: 'text-delta', text: `${i} ` });
        await sleep(1);
      }
      finished = true;
      await released;
    };
    const make = async () =>
      gateway(turn, {}, { streamHandoff: await createStreamHandoff(pubsub, log, HANDOFF_MS) });
    const a = await make();
    const b = await make();
    const c = await make();
    const first = await connect(a.gw);
    const id = readyOf(first).connection_id;
    first.frame({ type: 'chat.send', request_id: 'r', message: 'count' });
    await sleep(5);
    const sockets = [first];
    for (const next of [b, a, c]) {
      const last = sockets.at(-1)!;
      const lastSeen = last.sent.at(-1)!.seq;
      last.close(1006, 'gone');
      const socket = new FakeSocket();
      next.gw.accept(socket as unknown as WebSocket, '127.0.0.1', null);
      socket.frame({
        type: 'hello',
        token: tokenFor(3600),
        protocol_version: PROTOCOL_VERSION,
        resume: { connection_id: id, last_seq: lastSeen },
      });
      await vi.waitFor(() => expect(readyOf(socket)?.resumed).toBe(true), { interval: 2 });
      expect(socket.sent[0]!.seq).toBe(lastSeen + 1);
      sockets.push(socket);
      await sleep(20);
    }
    movesDone = true;
    await vi.waitFor(() => expect(finished).toBe(true), { timeout: 5_000 });
    a.release();
    await vi.waitFor(() => expect(sockets.at(-1)!.sent.at(-1)?.type).toBe('message.end'));
    // Each socket took over where the previous one stopped: one numbering, no gap, no repeat.
    const events = sockets.flatMap((socket) => socket.sent);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const text = events
      .filter((e) => e.type === 'text.delta')
      .map((e) => (e as { text: string }).text)
      .join('');
    expect(text).toBe(sent.join(''));
    expect(sent.length).toBeGreaterThan(40);
    for (const g of [a, b, c]) g.gw.closeAll();
  });

  it('a turn started after the stream came back stays cancellable once it moves again', async () => {
    const pubsub = bus();
    const chatOn = async () =>
      gateway(
        async (_emit, _released, signal) => {
          await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
        },
        {},
        { streamHandoff: await createStreamHandoff(pubsub, log, HANDOFF_MS) },
      );
    const a = await chatOn();
    const b = await chatOn();
    const move = async (from: FakeSocket, to: typeof a, id: string) => {
      const lastSeen = from.sent.at(-1)!.seq;
      from.close(1006, 'gone');
      const socket = await connect(
        to.gw,
        tokenFor(3600),
        { resume: { connection_id: id, last_seq: lastSeen } },
        50,
      );
      expect(readyOf(socket).resumed).toBe(true);
      return socket;
    };
    let socket = await connect(a.gw);
    const id = readyOf(socket).connection_id;
    socket.frame({ type: 'chat.send', request_id: 'r1', message: 'one' });
    await sleep(10);
    socket = await move(socket, b, id);
    socket = await move(socket, a, id);
    socket.frame({ type: 'chat.send', request_id: 'r2', message: 'two' });
    await sleep(10);
    socket = await move(socket, b, id);
    // r1 runs on A's first handed-over copy of the stream, r2 on its second.
    for (const r of ['r1', 'r2']) {
      socket.frame({ type: 'chat.cancel', request_id: r });
      await vi.waitFor(() =>
        expect(socket.sent.some((e) => e.type === 'message.end' && e.request_id === r)).toBe(true),
      );
    }
    a.gw.closeAll();
    b.gw.closeAll();
  });
});
