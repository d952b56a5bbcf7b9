/**
 * Events for a user's sockets, wherever they are connected: a turn resumed after an approval
 * on another process or by a worker, a decision taken on another device. Published on one
 * pub/sub channel (Redis with REDIS_URL, in-process otherwise); each process delivers them to
 * its own sockets of that user (ws-gateway). Redis delivers a publisher's messages in order.
 *
 * Cancelling a turn travels the same way: the process running it aborts it.
 */
import type { WsServerEventBody } from '@mezzofy/protocol';
import type { Logger } from '../logging/logger.ts';
import type { PubSub } from './pubsub.ts';

const EVENTS = 'chat.user-events';
const CANCELS = 'chat.cancel';

export interface CancelRequest {
  userId: string;
  sessionId: string;
  /** The lease token of the turn to cancel (the one running when the user asked). */
  token?: string;
}

export interface UserEvents {
  /** Sends an event to every socket of this user on every process (fire and forget). */
  publish(userId: string, event: WsServerEventBody): void;
  /** This process's delivery of every published event. */
  onEvent(handler: (userId: string, event: WsServerEventBody) => void): void;
  /** Asks every process to cancel the user's running turn in this session. */
  cancel(request: CancelRequest): Promise<void>;
  onCancel(handler: (request: CancelRequest) => void): void;
}

export async function createUserEvents(pubsub: PubSub, log: Logger): Promise<UserEvents> {
  const eventHandlers: Array<(userId: string, event: WsServerEventBody) => void> = [];
  const cancelHandlers: Array<(request: CancelRequest) => void> = [];

  function parse<T>(message: string, what: string): T | undefined {
    try {
      return JSON.parse(message) as T;
    } catch (err) {
      log.warn({ err }, `unreadable ${what} message on pub/sub`);
      return undefined;
    }
  }

  await pubsub.subscribe(EVENTS, (message) => {
    const parsed = parse<{ u: string; e: WsServerEventBody }>(message, 'user event');
    if (!parsed) return;
    for (const h of eventHandlers) {
      try {
        h(parsed.u, parsed.e);
      } catch (err) {
        log.error({ err }, 'delivering a user event failed');
      }
    }
  });
  await pubsub.subscribe(CANCELS, (message) => {
    const parsed = parse<CancelRequest>(message, 'cancel');
    if (parsed) for (const h of cancelHandlers) h(parsed);
  });

  return {
    publish(userId, event) {
      pubsub
        .publish(EVENTS, JSON.stringify({ u: userId, e: event }))
        .catch((err: unknown) => log.warn({ err, userId }, 'user event not published'));
    },
    onEvent(handler) {
      eventHandlers.push(handler);
    },
    async cancel(request) {
      await pubsub.publish(
        CANCELS,
        JSON.stringify({
          userId: request.userId,
          sessionId: request.sessionId,
          ...(request.token ? { token: request.token } : {}),
        }),
      );
    },
    onCancel(handler) {
      cancelHandlers.push(handler);
    },
  };
}
