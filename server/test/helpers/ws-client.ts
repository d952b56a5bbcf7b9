/** A WebSocket test client for /chat/ws: every event it received, waiting for the next match. */
import { PROTOCOL_VERSION, type WsServerEvent } from '@mezzofy/protocol';
import WebSocket from 'ws';

/** A test client: every event it received, waiting for the next matching one, its close. */
export class Client {
  readonly ws: WebSocket;
  readonly events: WsServerEvent[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: { match: (e: WsServerEvent) => boolean; resolve: (e: WsServerEvent) => void }[] =
    [];
  private seen = 0;

  constructor(target: string) {
    this.ws = new WebSocket(target);
    this.ws.on('message', (data) => {
      const event = JSON.parse(String(data)) as WsServerEvent;
      this.events.push(event);
      for (const w of [...this.waiters])
        if (w.match(event)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(event);
        }
    });
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => resolve({ code, reason: String(reason) }));
    });
  }

  opened(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
  }

  async send(message: unknown) {
    await this.opened();
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  /** The next event (after those already taken) of this type, matching `where`. */
  next<T extends WsServerEvent['type']>(
    type: T,
    where: (e: Extract<WsServerEvent, { type: T }>) => boolean = () => true,
    timeoutMs = 5_000,
  ): Promise<Extract<WsServerEvent, { type: T }>> {
    const match = (e: WsServerEvent) =>
      e.type === type && where(e as Extract<WsServerEvent, { type: T }>);
    const index = this.events.findIndex((e, i) => i >= this.seen && match(e));
    if (index >= 0) {
      this.seen = index + 1;
      return Promise.resolve(this.events[index] as Extract<WsServerEvent, { type: T }>);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${type} event; got ${JSON.stringify(this.events)}`)),
        timeoutMs,
      );
      this.waiters.push({
        match,
        resolve: (e) => {
          clearTimeout(timer);
          this.seen = this.events.length;
          resolve(e as Extract<WsServerEvent, { type: T }>);
        },
      });
    });
  }

  async hello(token: string, extra: Record<string, unknown> = {}) {
    await this.send({ type: 'hello', token, protocol_version: PROTOCOL_VERSION, ...extra });
    return this.next('ready');
  }

  close() {
    this.ws.close();
  }
}
