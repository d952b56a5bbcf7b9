/**
 * The fake model server (server/test/fakes/model-server.ts) in a process of its own, for
 * bench/chat.bench.ts, so the model's CPU does not count against the server's. Zero latency
 * (each response in one write), no request log (counts only, so memory stays flat however long
 * the run), and every request answered with the same short text.
 *
 *   node --import tsx bench/fake-model-launcher.ts
 *   stdout: one JSON line { "url": "http://127.0.0.1:PORT", "stats_url": "http://127.0.0.1:PORT2", "pid": N }
 *
 * Timing: each request to /v1/* is timed here, from its headers being parsed (diagnostics
 * channel `http.server.request.start`, before the fake's handler runs) to the last byte of the
 * response handed to the kernel (`http.server.response.finish`), on process.hrtime: the
 * monotonic clock, which processes on one Linux machine share. A request whose last message
 * carries a tag `[bench <id>]` is also kept by its tag, so the bench pairs it with the chat
 * turn that caused it. The stats server (a second port, so it never mixes with model traffic):
 *
 *   GET  /stats         model requests since the last reset: count, handling time (µs)
 *   GET  /turns         { tag: [received_us, finished_us] } since the last reset
 *   GET  /last-request  the last /v1/messages request: headers (without the key) and body
 *   POST /reset         forget the timings (counts since start are kept)
 */
import dc from 'node:diagnostics_channel';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startFakeModelServer } from '../server/test/fakes/model-server.ts';

const REPLY = 'Hello from the fake model: a short benchmark reply.';
const TAG = /\[bench ([A-Za-z0-9_-]+)\]/;
/** Bounds on what is kept between resets (a runaway bench must not eat the machine). */
const MAX_DURATIONS = 2_000_000;
const MAX_TAGGED = 500_000;
const SEQ_HEADER = 'x-bench-seq';

const nowUs = () => Number(process.hrtime.bigint()) / 1000;

interface Open {
  receivedUs: number;
  tag?: string;
}
let seq = 0;
/** Requests received and not finished yet, by the sequence number stamped on them. */
const open = new Map<string, Open>();
let durationsUs: number[] = [];
let dropped = 0;
let tagged = new Map<string, [number, number]>();
let lastRequest: { headers: Record<string, string>; body: unknown } | undefined;
let handledTotal = 0;

const isModelPath = (url: string | undefined) => url?.startsWith('/v1/') === true;

dc.subscribe('http.server.request.start', (message) => {
  const { request } = message as { request: IncomingMessage };
  if (!isModelPath(request.url)) return;
  const id = String(++seq);
  // The fake copies the request headers into its record: the stamp reaches defaultReply.
  request.headers[SEQ_HEADER] = id;
  open.set(id, { receivedUs: nowUs() });
});

dc.subscribe('http.server.response.finish', (message) => {
  const { request } = message as { request: IncomingMessage };
  const id = request.headers[SEQ_HEADER];
  if (typeof id !== 'string') return;
  const entry = open.get(id);
  if (!entry) return;
  open.delete(id);
  const finishedUs = nowUs();
  handledTotal += 1;
  if (durationsUs.length < MAX_DURATIONS) durationsUs.push(finishedUs - entry.receivedUs);
  else dropped += 1;
  if (entry.tag && tagged.size < MAX_TAGGED) tagged.set(entry.tag, [entry.receivedUs, finishedUs]);
});

/** The tag in the last message of a model request (the user's new message). */
function tagOf(body: unknown): string | undefined {
  const messages = (body as { messages?: unknown[] } | undefined)?.messages;
  const last = Array.isArray(messages) ? messages.at(-1) : undefined;
  if (last === undefined) return undefined;
  return TAG.exec(JSON.stringify(last))?.[1];
}

const fake = await startFakeModelServer({
  zeroLatency: true,
  recordRequests: false,
  defaultReply: (record) => {
    const id = record.headers[SEQ_HEADER];
    const entry = id ? open.get(id) : undefined;
    if (entry) {
      const tag = tagOf(record.body);
      if (tag) entry.tag = tag;
      // A request that ends without a finished response must not stay in `open`.
      void record.settled.then(() => open.delete(id!));
    }
    if (record.path === '/v1/messages') {
      const headers = { ...record.headers };
      for (const h of ['x-api-key', 'authorization', 'host', 'content-length', SEQ_HEADER])
        delete headers[h];
      lastRequest = { headers, body: record.body };
    }
    return REPLY;
  },
});

function stats() {
  const sorted = Float64Array.from(durationsUs).sort();
  const at = (p: number) =>
    sorted.length
      ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
      : null;
  return {
    counts_since_start: { ...fake.counts, handled: handledTotal },
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

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const control = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') return answer(res, 200, stats());
  if (req.method === 'GET' && req.url === '/turns')
    return answer(res, 200, Object.fromEntries(tagged));
  if (req.method === 'GET' && req.url === '/last-request')
    return lastRequest ? answer(res, 200, lastRequest) : answer(res, 404, { error: 'none yet' });
  if (req.method === 'POST' && req.url === '/reset') {
    durationsUs = [];
    dropped = 0;
    tagged = new Map();
    return answer(res, 200, { ok: true });
  }
  answer(res, 404, { error: `no route ${req.method} ${req.url}` });
});
control.listen(0, '127.0.0.1');
await new Promise((resolve) => control.once('listening', resolve));
const statsPort = (control.address() as AddressInfo).port;

process.stdout.write(
  `${JSON.stringify({ url: fake.url, stats_url: `http://127.0.0.1:${statsPort}`, pid: process.pid })}\n`,
);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  control.closeAllConnections();
  control.close();
  await fake.close();
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
