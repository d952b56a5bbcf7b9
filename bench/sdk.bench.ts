/**
 * `npm run bench:sdk`: what one model call costs the server's own process, apart from
 * everything else a chat turn does. The zero-latency fake model (bench/fake-model-launcher.ts)
 * runs in a process of its own; this process makes streaming Messages calls of a chat turn's
 * size (~10 KB: system prompt, six tools, three messages) and reads each answer to the end,
 * CONCURRENCY at a time, and measures its own CPU per call (process.cpuUsage) for:
 *
 *   provider + node:http  the server's Anthropic adapter (official SDK) with the transport it
 *                         uses by default (server/src/llm/providers/http-fetch.ts)
 *   provider, whole answer  the same, asking for the whole answer instead of a stream, as a
 *                         REST turn does (docs/adr/0008)
 *   provider + fetch      the same adapter on the SDK's default transport (global fetch, undici)
 *   fetch only            the same request with the global fetch, body read as text: no SDK
 *   node:http only        the same request with node:http and a keep-alive agent: no SDK, no
 *                         fetch; the floor for any HTTP client in Node
 *
 * Rounds alternate between the variants (ROUNDS each) so a slow period of the machine hits
 * them all; the median round is reported. Results: bench/results/sdk-<ISO>.json and
 * sdk-latest.json.
 *
 * Environment: BENCH_SDK_CALLS (calls per round, default 2000), BENCH_SDK_ROUNDS (default 3),
 * BENCH_SDK_CONCURRENCY (default 10).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createAnthropicProvider } from '../server/src/llm/providers/anthropic.provider.ts';
import { createHttpFetch } from '../server/src/llm/providers/http-fetch.ts';
import type { ChatModelProvider, ChatRequest } from '../server/src/llm/types.ts';
import {
  type ChildServer,
  loadAverage,
  log,
  onInterrupt,
  printTable,
  processCpuMs,
  runBench,
  startChild,
  waitJsonLine,
} from './harness.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = join(ROOT, 'bench/results');
const CALLS = Number(process.env.BENCH_SDK_CALLS ?? 2000);
const ROUNDS = Number(process.env.BENCH_SDK_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_SDK_CONCURRENCY ?? 10);
const MODEL = 'claude-sonnet-5-5';
const API_KEY = 'bench-fake-model-key';

/** A chat turn's request: the sales agent's size and shape, with earlier turns. */
function chatRequest(): ChatRequest {
  const instructions = [
    'You are the Mezzofy sales assistant. You help sales staff find, qualify and follow up leads,',
    'draft outreach and prepare for meetings. Use the tools when they help; never invent data.',
    'Anything sent in the user’s name waits for their approval.',
  ].join(' ');
  const system = `${instructions}\n\n${'Skill guidance: keep emails short, specific and polite. '.repeat(110)}`;
  const tool = (name: string, props: Record<string, unknown>) => ({
    name,
    description: `${name.replace(/_/g, ' ')}: ${'Looks things up in the company systems. '.repeat(4)}`,
    inputSchema: {
      type: 'object',
      properties: props,
      required: Object.keys(props).slice(0, 1),
      additionalProperties: false,
    },
  });
  const str = { type: 'string', maxLength: 500 };
  return {
    model: MODEL,
    system,
    maxOutputTokens: 4096,
    tools: [
      tool('search_leads', { query: str, status: str, limit: { type: 'integer' } }),
      tool('get_lead', { lead_id: str }),
      tool('update_lead', { lead_id: str, status: str, notes: str }),
      tool('draft_email', { to: str, subject: str, body: str }),
      tool('send_email', { to: str, subject: str, body: str }),
      tool('knowledge_search', { query: str, limit: { type: 'integer' } }),
    ],
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'Which leads did I meet last week?' }] },
      {
        role: 'assistant',
        content: [{ type: 'text', text: 'You met Acme Ltd on Tuesday and Globex on Thursday.' }],
      },
      {
        role: 'user',
        content: [{ type: 'text', text: 'Which of my leads should I follow up with this week?' }],
      },
    ],
  };
}

/** The same request in the Messages API's own shape, for the clients without the SDK. */
function wireBody(request: ChatRequest): string {
  return JSON.stringify({
    model: request.model,
    max_tokens: request.maxOutputTokens,
    stream: true,
    system: request.system,
    tools: request.tools?.map((t) => ({
      name: t.name,
      description: t.description,
      input_schema: t.inputSchema,
    })),
    messages: request.messages.map((m) => ({ role: m.role, content: m.content })),
  });
}

type Call = () => Promise<void>;

function viaProvider(provider: ChatModelProvider, request: ChatRequest): Call {
  return async () => {
    let text = '';
    for await (const event of provider.stream(request)) {
      if (event.type === 'text-delta') text += event.text;
    }
    if (!text) throw new Error('no text in the answer');
  };
}

function viaFetch(url: string, body: string): Call {
  return async () => {
    const res = await fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-api-key': API_KEY,
        'anthropic-version': '2023-06-01',
      },
      body,
    });
    const text = await res.text();
    if (res.status !== 200 || !text.includes('text_delta')) throw new Error(`fetch: ${res.status}`);
  };
}

function viaNodeHttp(url: string, body: string): Call {
  const target = new URL(`${url}/v1/messages`);
  const agent = new http.Agent({ keepAlive: true });
  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'x-api-key': API_KEY,
    'anthropic-version': '2023-06-01',
  };
  return () =>
    new Promise<void>((done, fail) => {
      const req = http.request(target, { method: 'POST', headers, agent }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () =>
          res.statusCode === 200 && text.includes('text_delta')
            ? done()
            : fail(new Error(`node:http: ${res.statusCode}`)),
        );
        res.on('error', fail);
      });
      req.on('error', fail);
      req.end(body);
    });
}

interface Round {
  cpu_us_per_call: number;
  calls_per_s: number;
  fake_cpu_us_per_call: number | undefined;
}

async function round(call: Call, fakePid: number | undefined): Promise<Round> {
  const fakeBefore = processCpuMs(fakePid);
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = 0; i < CALLS / CONCURRENCY; i++) await call();
    }),
  );
  const elapsed = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  const fakeAfter = processCpuMs(fakePid);
  return {
    cpu_us_per_call: Math.round((cpu.user + cpu.system) / CALLS),
    calls_per_s: Math.round((CALLS / elapsed) * 1000),
    fake_cpu_us_per_call:
      fakeBefore !== undefined && fakeAfter !== undefined
        ? Math.round(((fakeAfter - fakeBefore) * 1000) / CALLS)
        : undefined,
  };
}

const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function main(): Promise<number> {
  mkdirSync(RESULTS, { recursive: true });
  const runId = `${Date.now().toString(36)}_${process.pid}`;
  const fakeStdoutFile = join(os.tmpdir(), `mezzofy-sdk-bench-fake-${runId}.out`);
  let fakeChild: ChildServer | undefined;
  const stop = async () => {
    await fakeChild?.stop();
    rmSync(fakeStdoutFile, { force: true });
  };
  onInterrupt(stop);
  try {
    fakeChild = startChild({
      args: ['--import', 'tsx', join(ROOT, 'bench/fake-model-launcher.ts')],
      stdoutFile: fakeStdoutFile,
      env: process.env,
      cwd: ROOT,
    });
    const fake = await waitJsonLine<{ url: string; pid: number }>(fakeStdoutFile, fakeChild);
    const request = chatRequest();
    const body = wireBody(request);
    const provider = (fetch?: typeof globalThis.fetch) =>
      createAnthropicProvider({
        name: 'anthropic',
        apiKey: API_KEY,
        baseURL: fake.url,
        ...(fetch ? { fetch } : {}),
      });
    const variants: [string, Call][] = [
      ['provider + node:http (server default)', viaProvider(provider(createHttpFetch()), request)],
      [
        'provider, whole answer + node:http (REST turns)',
        viaProvider(provider(createHttpFetch()), { ...request, stream: false }),
      ],
      ['provider + fetch (SDK default)', viaProvider(provider(), request)],
      ['fetch only (no SDK)', viaFetch(fake.url, body)],
      ['node:http only (no SDK, no fetch)', viaNodeHttp(fake.url, body)],
    ];
    log(
      `fake model at ${fake.url}; ${Buffer.byteLength(body)} B request; ${CALLS} calls per round, ${CONCURRENCY} at a time, ${ROUNDS} rounds each`,
    );
    for (const [, call] of variants) for (let i = 0; i < 200; i++) await call(); // warm-up
    const rounds = new Map<string, Round[]>(variants.map(([name]) => [name, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, call] of variants) {
        const result = await round(call, fake.pid);
        rounds.get(name)!.push(result);
        log(
          `round ${r + 1}: ${name}: ${result.cpu_us_per_call} µs/call, ${result.calls_per_s} calls/s`,
        );
      }
    }
    const summary = variants.map(([name]) => {
      const list = rounds.get(name)!;
      return {
        variant: name,
        cpu_us_per_call: median(list.map((x) => x.cpu_us_per_call)),
        calls_per_s: median(list.map((x) => x.calls_per_s)),
        fake_cpu_us_per_call: median(list.map((x) => x.fake_cpu_us_per_call ?? Number.NaN)),
        rounds: list,
      };
    });
    printTable([
      ['variant', 'CPU µs per call (this process)', 'calls/s', 'fake µs/call'],
      ...summary.map((s) => [
        s.variant,
        String(s.cpu_us_per_call),
        String(s.calls_per_s),
        String(s.fake_cpu_us_per_call),
      ]),
    ]);
    const result = {
      date: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      load_average: loadAverage(),
      request_bytes: Buffer.byteLength(body),
      calls_per_round: CALLS,
      rounds: ROUNDS,
      concurrency: CONCURRENCY,
      means:
        "CPU µs per call: this process's user+system CPU for one streaming call made and read to the end, median of the rounds; the fake model's CPU is its own process's",
      variants: summary,
    };
    const file = join(RESULTS, `sdk-${result.date.replace(/:/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
    writeFileSync(join(RESULTS, 'sdk-latest.json'), `${JSON.stringify(result, null, 2)}\n`);
    log(`results: ${file}`);
    return 0;
  } finally {
    await stop();
  }
}

runBench(main);
