/**
 * Moving a WebSocket event stream between API processes, for a client that reconnects to
 * another process than the one holding its stream (no sticky load balancing). One pub/sub
 * channel (Redis), four messages:
 *
 *   claim  { c, s, u, n }   "I have user u's socket asking to resume stream s after seq n"
 *   state  { c, ok, st }    the holder's answer to claim c: the stream's numbering and kept
 *                           events and its running turns (ok false: it cannot resume from n)
 *   event  { s, b }         an event of stream s produced by a turn running on a process that
 *                           no longer holds s; whoever holds s now numbers and sends it
 *   cancel { s, r }         cancel turn r of stream s, wherever it runs
 *
 * Redis hands every subscriber the messages in one order (it dispatches each PUBLISH to all
 * subscribers before the next), across channels too. The holder took into its stream what came
 * before the claim; the claimant keeps what comes after its own claim (relayed events and user
 * events, `seen`) until the state arrives (`adopt`), then applies it: nothing is lost or
 * delivered twice, whichever process produced it. A claim nobody answers within the timeout
 * (the holder is gone, or the stream expired) resolves to nothing: the client gets a new
 * stream. Without Redis there is one process and nothing to claim.
 */
import { randomUUID } from 'node:crypto';
import type { WsServerEvent, WsServerEventBody } from '@mezzofy/protocol';
import type { Logger } from '../logging/logger.ts';
import type { PubSub } from './pubsub.ts';

const CHANNEL = 'ws.streams';

export interface StreamState {
  seq: number;
  /** Numbered events kept for resume, oldest first. */
  kept: WsServerEvent[];
  /** Turns still running for the stream (on any process). */
  turns: { request_id: string; session_id?: string }[];
}

export interface Claim {
  streamId: string;
  userId: string;
  lastSeq: number;
}

type Message =
  | { t: 'claim'; c: string; s: string; u: string; n: number }
  | { t: 'state'; c: string; ok: boolean; st?: StreamState }
  | { t: 'event'; s: string; b: WsServerEventBody }
  | { t: 'cancel'; s: string; r: string };

export interface StreamHandoff {
  /** False without Redis: every stream is on this process. */
  readonly enabled: boolean;
  /**
   * Asks the process holding the stream for it. `seen` runs when the claim comes back on the
   * channel (from then on, events of the stream are the claimant's to keep); `adopt` runs
   * synchronously when the state arrives. Resolves true then, false on refusal or when nobody
   * answered within the timeout.
   */
  claim(
    claim: Claim,
    hooks: { seen: () => void; adopt: (state: StreamState) => void },
  ): Promise<boolean>;
  /**
   * This process's answer to a claim: the state (and the stream is given up), null to refuse
   * (it holds the stream but cannot resume from there), undefined when it does not hold it.
   */
  onClaim(handler: (claim: Claim) => StreamState | null | undefined): void;
  /** An event of a stream this process no longer holds, for its holder. */
  relay(streamId: string, body: WsServerEventBody): void;
  onRelay(handler: (streamId: string, body: WsServerEventBody) => void): void;
  /** Cancels a turn of the stream on whichever process runs it. */
  cancel(streamId: string, requestId: string): void;
  onCancel(handler: (streamId: string, requestId: string) => void): void;
}

export async function createStreamHandoff(
  pubsub: PubSub,
  log: Logger,
  timeoutMs: number,
): Promise<StreamHandoff> {
  const enabled = pubsub.kind === 'redis';
  const pending = new Map<
    string,
    { seen: () => void; settle: (state: StreamState | null) => void }
  >();
  let claimHandler: (claim: Claim) => StreamState | null | undefined = () => undefined;
  let relayHandler: (streamId: string, body: WsServerEventBody) => void = () => {};
  let cancelHandler: (streamId: string, requestId: string) => void = () => {};

  const publish = (message: Message) =>
    pubsub
      .publish(CHANNEL, JSON.stringify(message))
      .catch((err: unknown) => log.warn({ err, kind: message.t }, 'stream handoff not published'));

  if (enabled) {
    await pubsub.subscribe(CHANNEL, (raw) => {
      let message: Message;
      try {
        message = JSON.parse(raw) as Message;
      } catch (err) {
        log.warn({ err }, 'unreadable stream handoff message');
        return;
      }
      try {
        switch (message.t) {
          case 'claim': {
            // Our own claim comes back to us too: what follows is ours to keep.
            const own = pending.get(message.c);
            if (own) return own.seen();
            const state = claimHandler({
              streamId: message.s,
              userId: message.u,
              lastSeq: message.n,
            });
            if (state === undefined) return;
            void publish({
              t: 'state',
              c: message.c,
              ok: state !== null,
              ...(state ? { st: state } : {}),
            });
            return;
          }
          case 'state': {
            pending.get(message.c)?.settle(message.ok && message.st ? message.st : null);
            return;
          }
          case 'event':
            relayHandler(message.s, message.b);
            return;
          case 'cancel':
            cancelHandler(message.s, message.r);
            return;
        }
      } catch (err) {
        log.error({ err, kind: message.t }, 'stream handoff message failed');
      }
    });
  }

  return {
    enabled,
    claim(claim, hooks) {
      if (!enabled) return Promise.resolve(false);
      const id = randomUUID();
      return new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          resolve(false);
        }, timeoutMs);
        pending.set(id, {
          seen: hooks.seen,
          settle: (state) => {
            clearTimeout(timer);
            pending.delete(id);
            if (state) hooks.adopt(state);
            resolve(state !== null);
          },
        });
        void publish({ t: 'claim', c: id, s: claim.streamId, u: claim.userId, n: claim.lastSeq });
      });
    },
    onClaim(handler) {
      claimHandler = handler;
    },
    relay(streamId, body) {
      if (enabled) void publish({ t: 'event', s: streamId, b: body });
    },
    onRelay(handler) {
      relayHandler = handler;
    },
    cancel(streamId, requestId) {
      if (enabled) void publish({ t: 'cancel', s: streamId, r: requestId });
    },
    onCancel(handler) {
      cancelHandler = handler;
    },
  };
}
