/**
 * A zero-latency fake of the Anthropic Messages API (`POST /v1/messages`) in a process of its
 * own, for bench/chat.bench.ts, so the model's CPU does not count against the server's. Every
 * request is answered with the same short text, in one write, and no request log is kept
 * (counts and bounded timings only, so memory stays flat however long the run).
 *
 *   node --import tsx bench/fake-model-launcher.ts
 *   stdout: one JSON line { "url": "http://127.0.0.1:PORT", "stats_url": "http://127.0.0.1:PORT2", "pid": N }
 *
 * Why not the general scripted fake (server/test/fakes/model-server.ts): per request it parses
 * the URL, copies the headers, makes an AbortController and promises, JSON.parses the whole
 * (~12 KB) body and writes the SSE frames again: ~210–250 µs of CPU each. On a 2-core machine
 * that CPU is taken from the server under test. So the request path here is a plain node:http
 * handler that keeps the body as a string and only looks into it with string searches: the
 * API key and `anthropic-version` headers are checked, `"model":"…"` and `"stream":true` are
 * found with indexOf, and the answer is a Buffer made once per (model, stream) pair, by the
 * scripted fake's own wire helpers (anthropicWire.success over normaliseReply), so the status,
 * headers (plus content-length), SSE events and JSON body are the real wire format. Its usage
 * figures are those of the first request of that pair (input from its size), then fixed. The
 * refusals are the scripted fake's too: 401 without a key, 400 without `anthropic-version` or
 * with a body that is not a JSON object with a model, 404 (Anthropic's error shape) for any
 * other method or path.
 *
 * Timing: each request to /v1/* is timed here, from its headers being parsed (diagnostics
 * channel `http.server.request.start`, before the handler runs) to the last byte of the
 * response handed to the kernel (`http.server.response.finish`), on process.hrtime: the
 * monotonic clock, which processes on one Linux machine share. A request whose last message
 * carries a tag `[bench <id>]` is also kept by its tag, so the bench pairs it with the chat
 * turn that caused it: the last `[bench ` in the raw body is the newest message's, since tags
 * are only in the user's messages and the server sends `messages` oldest first, with the
 * system prompt (agent, skills, brand context, the user's name and local time) and the tool
 * specs holding none. The stats server (a second port, so it never mixes with model traffic):
 *
 *   GET  /stats         model requests since the last reset: count, handling time (µs)
 *   GET  /turns         { tag: [received_us, finished_us] } since the last reset
 *   GET  /last-request  the last answered /v1/messages request: headers (without the key) and body
 *   POST /reset         forget the timings (counts since start are kept)
 */
import dc from 'node:diagnostics_channel';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { anthropicWire } from '../server/test/fakes/model-server/anthropic-wire.ts';
import { errorTypeForStatus, normaliseReply } from '../server/test/fakes/model-server/reply.ts';

const REPLY = 'Hello from the fake model: a short benchmark reply.';
const TAG_OPEN = '[bench ';
/** Bounds on what is kept between resets (a runaway bench must not eat the machine). */
const MAX_DURATIONS = 2_000_000;
const MAX_TAGGED = 500_000;
/** Headers /last-request leaves out: the key, and what a replay must set itself. */
const PRIVATE_HEADERS = new Set(['x-api-key', 'authorization', 'host', 'content-length']);

const nowUs = () => Number(process.hrtime.bigint()) / 1000;

interface Open {
  receivedUs: number;
  tag?: string;
}
/** Model requests received and not finished yet (a closed exchange is removed too). */
const open = new Map<IncomingMessage, Open>();
let durationsUs: number[] = [];
let dropped = 0;
let tagged = new Map<string, [number, number]>();
/** The last answered /v1/messages request, as received: parsed only when asked for. */
let lastRequest: { headers: IncomingHttpHeaders; body: string } | undefined;
let handledTotal = 0;
let anthropicCount = 0;

// ---- the answers: real wire bytes, made once per (model, stream) ----

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

function answerOf(plan: {
  status: number;
  headers: Record<string, string>;
  frames: { data: string }[];
}): Answer {
  const body = Buffer.from(plan.frames.map((f) => f.data).join(''), 'utf8');
  return {
    status: plan.status,
    headers: { ...plan.headers, 'content-length': String(body.length) },
    body,
  };
}

const streamed = new Map<string, Answer>();
const whole = new Map<string, Answer>();

function successFor(model: string, stream: boolean, requestBytes: number): Answer {
  const cache = stream ? streamed : whole;
  let answer = cache.get(model);
  if (!answer) {
    const reply = normaliseReply(REPLY, 'anthropic', requestBytes);
    answer = answerOf(anthropicWire.success(reply, { model, stream, includeUsage: false }));
    cache.set(model, answer);
  }
  return answer;
}

function send(res: ServerResponse, answer: Answer): void {
  res.writeHead(answer.status, answer.headers);
  res.end(answer.body);
}

function refusal(status: number, message: string): Answer {
  return answerOf(
    anthropicWire.errorResponse({ status, type: errorTypeForStatus(status), message }),
  );
}

// ---- reading the raw body with string searches ----

const isSpace = (c: number) => c === 32 || c === 10 || c === 13 || c === 9;

/** Index just past `"key"` and its colon (whitespace allowed), from `from`; -1 if none. */
function valueAt(body: string, key: string, from: number): number {
  for (let at = body.indexOf(key, from); at >= 0; at = body.indexOf(key, at + key.length)) {
    let i = at + key.length;
    while (isSpace(body.charCodeAt(i))) i += 1;
    if (body.charCodeAt(i) !== 58 /* : */) continue;
    i += 1;
    while (isSpace(body.charCodeAt(i))) i += 1;
    return i;
  }
  return -1;
}

/**
 * The `"model"` string: the first such key, which is the top-level one in the bodies the SDK
 * sends (model is their first key). Undefined when absent, not a string, or escaped.
 */
function modelOf(body: string): string | undefined {
  const i = valueAt(body, '"model"', 0);
  if (i < 0 || body.charCodeAt(i) !== 34 /* " */) return undefined;
  const end = body.indexOf('"', i + 1);
  if (end < 0) return undefined;
  const model = body.slice(i + 1, end);
  return model.includes('\\') ? undefined : model;
}

/**
 * Whether `"stream": true` is set. A nested `"stream":true` (a tool call's input in the
 * transcript) would be misread; the bench's fake never asks for tool calls, so none occur.
 */
function streamOf(body: string): boolean {
  for (let from = 0; ; ) {
    const i = valueAt(body, '"stream"', from);
    if (i < 0) return false;
    if (body.startsWith('true', i)) return true;
    from = i;
  }
}

/** A JSON object, at a glance: `{` … `}` around optional whitespace. */
function looksLikeObject(body: string): boolean {
  let a = 0;
  let b = body.length - 1;
  while (a <= b && isSpace(body.charCodeAt(a))) a += 1;
  while (b > a && isSpace(body.charCodeAt(b))) b -= 1;
  return body.charCodeAt(a) === 123 /* { */ && body.charCodeAt(b) === 125; /* } */
}

const isTagChar = (c: number) =>
  (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 45;

/**
 * The id of the last `[bench <id>]` in the body (see the header: the newest message's). Found
 * with forward indexOf steps (a fast search), not lastIndexOf (a slow one on a long body).
 */
function tagOf(body: string): string | undefined {
  let at = body.indexOf(TAG_OPEN);
  if (at < 0) return undefined;
  for (let next = at; next >= 0; next = body.indexOf(TAG_OPEN, next + TAG_OPEN.length)) at = next;
  const start = at + TAG_OPEN.length;
  let i = start;
  while (isTagChar(body.charCodeAt(i))) i += 1;
  return i > start && body.charCodeAt(i) === 93 /* ] */ ? body.slice(start, i) : undefined;
}

function apiKeyOf(headers: IncomingHttpHeaders): string | undefined {
  if (headers['x-api-key']) return String(headers['x-api-key']);
  return /^Bearer\s+(.+)$/i.exec(headers.authorization ?? '')?.[1];
}

// ---- the model server ----

/** The answer to one request: the cached success, or the scripted fake's refusal. */
function answerTo(req: IncomingMessage, body: string): Answer {
  const url = req.url ?? '/';
  const isMessages =
    req.method === 'POST' && (url === '/v1/messages' || url.startsWith('/v1/messages?'));
  if (!isMessages) {
    const q = url.indexOf('?');
    return refusal(404, `No route for ${req.method} ${q < 0 ? url : url.slice(0, q)}`);
  }
  anthropicCount += 1;
  const headers = req.headers;
  if (!apiKeyOf(headers)) return refusal(401, 'No API key given');
  if (!headers['anthropic-version']) return refusal(400, 'anthropic-version header is required');
  const model = looksLikeObject(body) ? modelOf(body) : undefined;
  if (model === undefined) return refusal(400, 'The body must be JSON with a model');

  const entry = open.get(req);
  if (entry) {
    const tag = tagOf(body);
    if (tag) entry.tag = tag;
  }
  lastRequest = { headers, body };
  return successFor(model, streamOf(body), body.length);
}

const modelServer: Server = createServer((req, res) => {
  if (open.has(req)) res.once('close', () => open.delete(req));
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk: string) => {
    body += chunk;
  });
  req.on('end', () => send(res, answerTo(req, body)));
});

dc.subscribe('http.server.request.start', (message) => {
  const { request, server } = message as { request: IncomingMessage; server: Server };
  if (server !== modelServer || !request.url?.startsWith('/v1/')) return;
  open.set(request, { receivedUs: nowUs() });
});

dc.subscribe('http.server.response.finish', (message) => {
  const { request } = message as { request: IncomingMessage };
  const entry = open.get(request);
  if (!entry) return;
  open.delete(request);
  const finishedUs = nowUs();
  handledTotal += 1;
  if (durationsUs.length < MAX_DURATIONS) durationsUs.push(finishedUs - entry.receivedUs);
  else dropped += 1;
  if (entry.tag && tagged.size < MAX_TAGGED) tagged.set(entry.tag, [entry.receivedUs, finishedUs]);
});

// ---- the stats server ----

function stats() {
  const sorted = Float64Array.from(durationsUs).sort();
  const at = (p: number) =>
    sorted.length
      ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
      : null;
  return {
    counts_since_start: { anthropic: anthropicCount, openai: 0, handled: handledTotal },
    handled: {
      count: sorted.length,
      dropped,
      p50_us: at(50),
      p90_us: at(90),
      p99_us: at(99),
      max_us: sorted.length ? sorted[sorted.length - 1] : null,
    },
    open: open.size,
    reply: REPLY,
  };
}

/** The last request as /last-request shows it: flat headers without the key, parsed body. */
function lastRequestView(last: NonNullable<typeof lastRequest>) {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(last.headers)) {
    if (value === undefined || PRIVATE_HEADERS.has(name)) continue;
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  let body: unknown;
  try {
    body = JSON.parse(last.body);
  } catch {
    body = undefined;
  }
  return { headers, body };
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const control = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') return answer(res, 200, stats());
  if (req.method === 'GET' && req.url === '/turns')
    return answer(res, 200, Object.fromEntries(tagged));
  if (req.method === 'GET' && req.url === '/last-request')
    return lastRequest
      ? answer(res, 200, lastRequestView(lastRequest))
      : answer(res, 404, { error: 'none yet' });
  if (req.method === 'POST' && req.url === '/reset') {
    durationsUs = [];
    dropped = 0;
    tagged = new Map();
    return answer(res, 200, { ok: true });
  }
  answer(res, 404, { error: `no route ${req.method} ${req.url}` });
});

const listen = (server: Server) =>
  new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
const modelPort = await listen(modelServer);
const statsPort = await listen(control);

process.stdout.write(
  `${JSON.stringify({
    url: `http://127.0.0.1:${modelPort}`,
    stats_url: `http://127.0.0.1:${statsPort}`,
    pid: process.pid,
  })}\n`,
);

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  for (const server of [control, modelServer]) {
    server.closeAllConnections();
    server.close();
  }
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
