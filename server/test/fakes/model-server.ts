/**
 * A fake model server for tests and benchmarks. It listens on 127.0.0.1 (a free port) and
 * speaks the real wire formats, so the production SDK clients are pointed at it by base URL:
 * the Anthropic Messages API at `POST /v1/messages` and the OpenAI Chat Completions API
 * (Moonshot Kimi, any OpenAI-compatible server) at `POST /v1/chat/completions`.
 *
 *   const fake = await startFakeModelServer();
 *   fake.script('anthropic', 'Hello there', { error: { status: 529 } });
 *   // Anthropic SDK: baseURL fake.url; OpenAI SDK: baseURL fake.openAiBaseURL (…/v1)
 *   fake.requests[0].body; fake.counts.anthropic; await fake.close();
 *
 * Replies are scripted per API (or for either API) and taken in order; with none queued the
 * server answers the default reply. Test-only code: never import it from server/src.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setImmediate as nextTick, setTimeout as sleep } from 'node:timers/promises';
import { anthropicWire } from './model-server/anthropic-wire.ts';
import { openAiWire } from './model-server/openai-wire.ts';
import {
  errorTypeForStatus,
  type FakeApi,
  type FakeReply,
  normaliseReply,
  type WirePlan,
} from './model-server/reply.ts';
import type { WireFormat, WireRequest } from './model-server/wire-format.ts';

export type {
  FakeApi,
  FakeErrorType,
  FakeHttpError,
  FakeReply,
  FakeToolCall,
} from './model-server/reply.ts';

/** A scripted reply: a reply object, a string (shorthand for `{ text }`), or a function of the request. */
export type FakeScript = FakeReply | string | ((request: FakeRequestRecord) => FakeReply | string);

/** How one exchange ended. `client-closed`: the client went away before the end. */
export type FakeOutcome = 'pending' | 'completed' | 'client-closed' | 'disconnected';

export interface FakeRequestRecord {
  /** Which API the path belongs to; `unknown` for any other path (answered 404). */
  api: FakeApi | 'unknown';
  method: string;
  path: string;
  /** Lower-cased header names, as received (the API key included, for assertions). */
  headers: Record<string, string>;
  /** From `x-api-key` or `Authorization: Bearer`. */
  apiKey: string | undefined;
  /** The parsed JSON body; undefined when it was not JSON. */
  body: unknown;
  stream: boolean;
  outcome: FakeOutcome;
  /** Resolves when the exchange ends (response finished, client closed, or disconnected). */
  settled: Promise<Exclude<FakeOutcome, 'pending'>>;
}

export interface FakeModelServerOptions {
  /** Answer when nothing is scripted. Default: a short text. */
  defaultReply?: FakeScript;
  /**
   * Benchmarks: write each response in a single write, without yielding between stream
   * frames. Scripted delays are still honoured.
   */
  zeroLatency?: boolean;
  /** Latency for replies that do not script their own `delayMs` / `chunkDelayMs`. */
  latency?: { firstByteMs?: number; chunkMs?: number };
  /** When set, requests with another key get 401 (otherwise any non-empty key passes). */
  apiKey?: string;
  /** Keep the request log (default true); counts are kept either way. */
  recordRequests?: boolean;
}

export interface FakeModelServer {
  /** `http://127.0.0.1:PORT`: the Anthropic SDK's base URL (it adds `/v1/messages`). */
  readonly url: string;
  /** `http://127.0.0.1:PORT/v1`: the OpenAI SDK's base URL. */
  readonly openAiBaseURL: string;
  readonly port: number;
  /** Queue replies for one API (first argument `'anthropic'` or `'openai'`), or for either. */
  script(api: FakeApi, ...replies: FakeScript[]): void;
  script(...replies: FakeScript[]): void;
  setDefaultReply(reply: FakeScript): void;
  /** Replies still queued (for one API, or all). */
  queued(api?: FakeApi): number;
  /** Every request received, in order. */
  readonly requests: readonly FakeRequestRecord[];
  requestsFor(api: FakeApi): FakeRequestRecord[];
  lastRequest(api?: FakeApi): FakeRequestRecord | undefined;
  /** Requests per API path, including those not recorded. */
  readonly counts: Readonly<Record<FakeApi, number>>;
  /** Forget the log, the counts and every queued reply. */
  clear(): void;
  close(): Promise<void>;
}

const DEFAULT_REPLY = 'Hello from the fake model.';
const WIRES: Record<FakeApi, WireFormat> = { anthropic: anthropicWire, openai: openAiWire };
const PATHS: Record<string, FakeApi> = {
  '/v1/messages': 'anthropic',
  '/v1/chat/completions': 'openai',
};

function isApi(value: unknown): value is FakeApi {
  return value === 'anthropic' || value === 'openai';
}

function flatHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

function apiKeyOf(headers: Record<string, string>): string | undefined {
  if (headers['x-api-key']) return headers['x-api-key'];
  const match = /^Bearer\s+(.+)$/i.exec(headers.authorization ?? '');
  return match?.[1];
}

export async function startFakeModelServer(
  options: FakeModelServerOptions = {},
): Promise<FakeModelServer> {
  const queues: Record<FakeApi | 'any', FakeScript[]> = { anthropic: [], openai: [], any: [] };
  const requests: FakeRequestRecord[] = [];
  const counts: Record<FakeApi, number> = { anthropic: 0, openai: 0 };
  let defaultReply: FakeScript = options.defaultReply ?? DEFAULT_REPLY;
  const recordRequests = options.recordRequests ?? true;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const closed = new AbortController();
    let destroyedByUs = false;
    let settle: (outcome: Exclude<FakeOutcome, 'pending'>) => void = () => {};
    const record: FakeRequestRecord = {
      api: 'unknown',
      method: req.method ?? 'GET',
      path: new URL(req.url ?? '/', 'http://fake').pathname,
      headers: flatHeaders(req),
      apiKey: undefined,
      body: undefined,
      stream: false,
      outcome: 'pending',
      settled: new Promise((resolve) => {
        settle = resolve;
      }),
    };
    record.apiKey = apiKeyOf(record.headers);
    res.on('close', () => {
      const outcome = res.writableFinished
        ? 'completed'
        : destroyedByUs
          ? 'disconnected'
          : 'client-closed';
      record.outcome = outcome;
      closed.abort();
      settle(outcome);
    });

    const bodyChunks: Buffer[] = [];
    for await (const chunk of req) bodyChunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(bodyChunks).toString('utf8');
    try {
      record.body = JSON.parse(rawBody);
    } catch {
      record.body = undefined;
    }
    const body = (record.body ?? {}) as Record<string, unknown>;
    record.stream = body.stream === true;

    const api = record.method === 'POST' ? PATHS[record.path] : undefined;
    if (api) {
      record.api = api;
      counts[api] += 1;
    }
    if (recordRequests) requests.push(record);
    if (!api) {
      const wire = record.path.includes('chat/completions') ? openAiWire : anthropicWire;
      const message = `No route for ${record.method} ${record.path}`;
      return send(wire.errorResponse({ status: 404, message }));
    }

    const wire = WIRES[api];
    const refuse = (status: number, message: string) =>
      send(wire.errorResponse({ status, type: errorTypeForStatus(status), message }));
    if (!record.apiKey) return refuse(401, 'No API key given');
    if (options.apiKey !== undefined && record.apiKey !== options.apiKey) {
      return refuse(401, 'Invalid API key');
    }
    if (api === 'anthropic' && !record.headers['anthropic-version']) {
      return refuse(400, 'anthropic-version header is required');
    }
    if (record.body === undefined || typeof body.model !== 'string') {
      return refuse(400, 'The body must be JSON with a model');
    }

    const script = queues[api].shift() ?? queues.any.shift() ?? defaultReply;
    const resolved = typeof script === 'function' ? script(record) : script;
    const reply: FakeReply = typeof resolved === 'string' ? { text: resolved } : resolved;
    const wireRequest: WireRequest = {
      model: body.model,
      stream: record.stream,
      includeUsage:
        (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true,
    };
    const normalised = normaliseReply(reply, api, rawBody.length);
    const plan = reply.error
      ? wire.errorResponse(reply.error)
      : reply.malformed
        ? wire.malformed(reply.malformed, normalised, wireRequest)
        : wire.success(normalised, wireRequest);

    const delayMs = reply.delayMs ?? options.latency?.firstByteMs ?? 0;
    if (delayMs > 0) {
      await sleep(delayMs, undefined, { signal: closed.signal }).catch(() => {});
      if (closed.signal.aborted) return;
    }
    const failure = plan.status === 200 && !reply.malformed ? reply.failAfterChunks : undefined;
    if (!failure) {
      if (!record.stream || plan.status !== 200) return send(plan);
      if (options.zeroLatency && !reply.chunkDelayMs) return send(plan);
    }

    res.writeHead(plan.status, plan.headers);
    res.flushHeaders();
    if (failure && !record.stream) {
      // Half a JSON body, then the connection drops.
      const text = plan.frames.map((f) => f.data).join('');
      res.write(text.slice(0, Math.floor(text.length / 2)));
      return disconnect();
    }
    const chunkMs = reply.chunkDelayMs ?? options.latency?.chunkMs ?? 0;
    let contentWritten = 0;
    for (const frame of plan.frames) {
      if (closed.signal.aborted) return;
      if (failure && contentWritten >= failure.chunks && (failure.chunks > 0 || frame.content)) {
        return fail(failure);
      }
      res.write(frame.data);
      if (frame.content) {
        contentWritten += 1;
        if (chunkMs > 0) await sleep(chunkMs, undefined, { signal: closed.signal }).catch(() => {});
        else if (!options.zeroLatency) await nextTick();
      }
    }
    if (failure && !closed.signal.aborted) return fail(failure);
    if (!closed.signal.aborted) res.end();

    function send(p: WirePlan): void {
      res.writeHead(p.status, p.headers);
      res.end(p.frames.map((f) => f.data).join(''));
    }
    function disconnect(): void {
      destroyedByUs = true;
      // End the socket under the unfinished response: the bytes written so far leave first.
      const socket = res.socket;
      socket?.once('finish', () => socket.destroy());
      socket?.end();
    }
    function fail(f: NonNullable<FakeReply['failAfterChunks']>): void {
      if (f.mode === 'disconnect') disconnect();
      else res.end(wire.midStreamError(f.type ?? 'api_error', 'Fake mid-stream failure'));
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`fake model server failed: ${String(error)}`);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  function script(...args: [FakeApi | FakeScript, ...FakeScript[]] | []): void {
    const [first, ...rest] = args;
    if (first === undefined) return;
    if (isApi(first)) queues[first].push(...rest);
    else queues.any.push(first, ...rest);
  }

  return {
    url,
    openAiBaseURL: `${url}/v1`,
    port,
    script: script as FakeModelServer['script'],
    setDefaultReply(reply) {
      defaultReply = reply;
    },
    queued(api) {
      return api
        ? queues[api].length
        : queues.anthropic.length + queues.openai.length + queues.any.length;
    },
    get requests() {
      return requests;
    },
    requestsFor(api) {
      return requests.filter((r) => r.api === api);
    },
    lastRequest(api) {
      const list = api ? requests.filter((r) => r.api === api) : requests;
      return list.at(-1);
    },
    get counts() {
      return { ...counts };
    },
    clear() {
      requests.length = 0;
      counts.anthropic = 0;
      counts.openai = 0;
      queues.anthropic.length = 0;
      queues.openai.length = 0;
      queues.any.length = 0;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
