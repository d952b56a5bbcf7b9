/**
 * The `fetch` the model SDKs are given (their documented `fetch` option): requests go out
 * through node:http / node:https with keep-alive agents instead of the global fetch (undici).
 * The SDKs still build every request, parse every response and classify every error; only
 * the transport changes. Measured here: one streaming 10 KB Messages request through the
 * Anthropic SDK costs ~490 µs of CPU with this transport against ~790 µs with the global
 * fetch (`npm run bench:sdk`; bench/README.md, "SDK benchmark"). ADR 0007.
 *
 * Scope: string, bytes and URLSearchParams bodies to http(s) URLs; anything else (streams,
 * FormData, other schemes) goes to the global fetch unchanged. Responses: status, headers,
 * body as a web stream (gzip, deflate and br decoded, as fetch does); no redirects followed
 * (the model APIs answer directly; a 3xx reaches the SDK as an error). Abort: the request's
 * signal destroys the request, before or during the body, with an AbortError.
 */
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';

export interface HttpFetchOptions {
  /**
   * Idle keep-alive sockets are closed after this long. Below Node's own server default (5 s)
   * so a request does not race the server closing an idle socket.
   */
  freeSocketTimeoutMs?: number;
  /** Fallback for what this transport does not carry (tests pass a recording one). */
  fallback?: typeof globalThis.fetch;
}

const NULL_BODY_STATUS = new Set([204, 205, 304]);

type Body = Uint8Array;

/** The body as bytes, encoded once (its length is the content-length). */
function bodyOf(body: RequestInit['body']): Body | null | undefined {
  if (body === undefined || body === null) return null;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (body instanceof URLSearchParams) return Buffer.from(body.toString(), 'utf8');
  return undefined;
}

function decoded(res: http.IncomingMessage): Readable {
  const encoding = String(res.headers['content-encoding'] ?? '')
    .trim()
    .toLowerCase();
  const decoder =
    encoding === 'gzip' || encoding === 'x-gzip'
      ? zlib.createGunzip()
      : encoding === 'deflate'
        ? zlib.createInflate()
        : encoding === 'br'
          ? zlib.createBrotliDecompress()
          : undefined;
  if (!decoder) return res;
  // A response cut off mid-body errors the decoded stream too.
  res.on('error', (err) => decoder.destroy(err));
  return res.pipe(decoder);
}

const DECODED = /^(gzip|x-gzip|deflate|br)$/i;

/**
 * The body as a web stream (what the SDKs read), chunk for chunk: cheaper than
 * Readable.toWeb. The source pauses while the reader is HIGH_WATER chunks behind.
 */
const HIGH_WATER = 16;
function webStream(readable: Readable, source: Readable): ReadableStream<Uint8Array> {
  let done = false;
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        readable.on('data', (chunk: Buffer) => {
          if (done) return;
          controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
          if ((controller.desiredSize ?? 1) <= 0) readable.pause();
        });
        readable.once('end', () => {
          if (done) return;
          done = true;
          controller.close();
        });
        readable.once('error', (err) => {
          if (done) return;
          done = true;
          controller.error(err);
        });
        readable.once('close', () => {
          // Closed without end or error (destroyed quietly): the body is cut short.
          if (done) return;
          done = true;
          controller.error(Object.assign(new Error('terminated'), { code: 'ECONNRESET' }));
        });
      },
      pull() {
        readable.resume();
      },
      cancel(reason) {
        done = true;
        const err = reason instanceof Error ? reason : undefined;
        readable.destroy(err);
        // The response itself too (under a decoder): frees the socket, tells the server.
        if (source !== readable) source.destroy(err);
      },
    },
    { highWaterMark: HIGH_WATER },
  );
}

function responseHeaders(res: http.IncomingMessage, hasBody: boolean): Headers {
  const headers = new Headers();
  const raw = res.rawHeaders;
  // A decoded body no longer has the length or encoding the server sent.
  const decodedBody = hasBody && DECODED.test(String(res.headers['content-encoding'] ?? '').trim());
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (decodedBody && /^content-(encoding|length)$/i.test(name)) continue;
    headers.append(name, raw[i + 1]!);
  }
  return headers;
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

export function createHttpFetch(options: HttpFetchOptions = {}): typeof globalThis.fetch {
  const fallback = options.fallback ?? globalThis.fetch;
  const agentOptions = {
    keepAlive: true,
    timeout: options.freeSocketTimeoutMs ?? 4_000,
    scheduling: 'lifo' as const,
  };
  const agents = { 'http:': new http.Agent(agentOptions), 'https:': new https.Agent(agentOptions) };

  /**
   * One attempt. A request on a reused keep-alive socket that the server had just closed as
   * idle fails before any response (ECONNRESET); the server did not take it, so it is sent
   * once more on a fresh socket (`retried`), as Node's own guidance and browsers do.
   */
  const send = (
    url: URL,
    init: RequestInit,
    method: string,
    headers: Record<string, string>,
    body: Body | null,
    retried: boolean,
  ): Promise<Response> => {
    const signal = init.signal ?? undefined;
    const transport = url.protocol === 'https:' ? https : http;
    return new Promise<Response>((resolve, reject) => {
      const req = transport.request(url, {
        method,
        headers,
        agent: agents[url.protocol as 'http:' | 'https:'],
      });
      let response: http.IncomingMessage | undefined;
      const onAbort = () => {
        const reason = abortError(signal!);
        // Before the headers: reject; after: the body stream errors with the reason.
        req.destroy(reason as Error);
        response?.destroy(reason as Error);
        reject(reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);

      req.on('error', (err: NodeJS.ErrnoException) => {
        done();
        if (
          !response &&
          !retried &&
          req.reusedSocket &&
          err.code === 'ECONNRESET' &&
          !signal?.aborted
        )
          resolve(send(url, init, method, headers, body, true));
        else reject(err);
      });
      req.on('response', (res) => {
        response = res;
        res.on('close', done);
        const nullBody = NULL_BODY_STATUS.has(res.statusCode ?? 0) || method === 'HEAD';
        try {
          const headers = responseHeaders(res, !nullBody);
          if (nullBody) res.resume();
          const stream = nullBody ? null : decoded(res);
          resolve(
            new Response(stream ? webStream(stream, res) : null, {
              status: res.statusCode ?? 500,
              statusText: res.statusMessage ?? '',
              headers,
            }),
          );
        } catch (err) {
          // A header fetch would refuse too (an invalid value): a failed request, not a crash.
          res.destroy();
          reject(err);
        }
      });
      req.end(body ?? undefined);
    });
  };

  const httpFetch = async (
    input: string | URL | Request,
    init: RequestInit = {},
  ): Promise<Response> => {
    if (input instanceof Request) return fallback(input, init);
    const url = input instanceof URL ? input : new URL(input);
    const body = bodyOf(init.body);
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || body === undefined) {
      return fallback(input, init);
    }
    const signal = init.signal ?? undefined;
    if (signal?.aborted) throw abortError(signal);

    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, name) => {
      headers[name] = value;
    });
    if (body !== null) headers['content-length'] = String(body.byteLength);

    return send(url, init, (init.method ?? 'GET').toUpperCase(), headers, body, false);
  };
  return httpFetch as typeof globalThis.fetch;
}

/** One per process: the keep-alive pools are shared by every provider. */
let shared: typeof globalThis.fetch | undefined;
export function sharedHttpFetch(): typeof globalThis.fetch {
  shared ??= createHttpFetch();
  return shared;
}
