/**
 * The gateway's flow control and token expiry against a fake socket: while the socket's
 * unsent bytes are over the high-water mark, consecutive text deltas merge into one frame
 * that goes out once it drains; a client stuck above the mark is closed 1013; a token that
 * expires without reauth closes the socket 4001; the heartbeat drops a client that stops
 * answering pings; a client ping is answered with pong.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROTOCOL_VERSION, type WsServerEvent } from '@mezzofy/protocol';
import { UnsecuredJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import type { AgentEvent } from '../agents/agent.ts';
import type { Principal } from '../auth/principal.ts';
import type { SendOptions } from '../chat/chat.service.ts';
import { createLoggers } from '../logging/logger.ts';
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

function gateway(
  turn: (emit: (e: AgentEvent) => void, release: Promise<void>) => Promise<void>,
  realtime: Partial<GatewayDeps['config']['realtime']> = {},
) {
  let release!: () => void;
  const released = new Promise<void>((r) => {
    release = r;
  });
  const deps = {
    auth: { authenticate: async () => principal },
    userStates: { onInvalidate() {}, get: async () => undefined },
    chat: {
      async send(_p: Principal, _input: unknown, _meta: unknown, options: SendOptions) {
        await turn((e) => options.onEvent?.(e), released);
        return { text: 'done', finish: 'stop' };
      },
    },
    approvals: {},
    userEvents: { onEvent() {} },
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

async function connect(gw: ReturnType<typeof createWsGateway>, token = tokenFor(3600)) {
  const socket = new FakeSocket();
  gw.accept(socket as unknown as WebSocket, '127.0.0.1', null);
  socket.frame({ type: 'hello', token, protocol_version: PROTOCOL_VERSION });
  await sleep(10);
  expect(socket.sent[0]).toMatchObject({ type: 'ready' });
  return socket;
}

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
