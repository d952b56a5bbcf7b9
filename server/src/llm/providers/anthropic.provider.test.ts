import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeModelServer, startFakeModelServer } from '../../../test/fakes/model-server.ts';
import { collectStream } from '../../../test/helpers/collect-stream.ts';
import { SDK_TRANSPORTS } from '../../../test/helpers/sdk-transports.ts';
import { type ChatRequest, ProviderError } from '../types.ts';
import { createAnthropicProvider } from './anthropic.provider.ts';

const API_KEY = 'sk-ant-test-0123456789abcdef';
const PNG_BASE64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

let fake: FakeModelServer;
/** Set per transport: every test runs over both (SDK_TRANSPORTS). */
let transportFetch: typeof globalThis.fetch | undefined;

beforeAll(async () => {
  fake = await startFakeModelServer();
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => {
  fake.clear();
});

function provider(options: { baseURL?: string; timeoutMs?: number } = {}) {
  return createAnthropicProvider({
    ...(transportFetch ? { fetch: transportFetch } : {}),
    name: 'anthropic',
    apiKey: API_KEY,
    baseURL: fake.url,
    ...options,
  });
}

function ask(text: string, extra: Partial<ChatRequest> = {}): ChatRequest {
  return {
    model: 'claude-sonnet-4-6',
    messages: [{ role: 'user', content: [{ type: 'text', text }] }],
    ...extra,
  };
}

/** Runs a request that must fail, and returns its ProviderError and the events before it. */
async function failure(request: ChatRequest, options?: Parameters<typeof provider>[0]) {
  const { events, error } = await collectStream(provider(options).stream(request));
  expect(error).toBeInstanceOf(ProviderError);
  return { events, error: error as ProviderError };
}

describe.each(SDK_TRANSPORTS)('over %s', (_name, transport) => {
  beforeAll(() => {
    transportFetch = transport;
  });

  describe('Anthropic provider: streaming', () => {
    it('streams text as several deltas in order, then usage and the finish reason', async () => {
      fake.script('anthropic', {
        text: ['Good ', 'morning', ', Ana.'],
        usage: { inputTokens: 42, outputTokens: 7 },
      });
      const { events, error } = await collectStream(provider().stream(ask('Hi')));
      expect(error).toBeUndefined();
      expect(events).toEqual([
        { type: 'text-delta', text: 'Good ' },
        { type: 'text-delta', text: 'morning' },
        { type: 'text-delta', text: ', Ana.' },
        { type: 'usage', inputTokens: 42, outputTokens: 7 },
        { type: 'finish', reason: 'stop' },
      ]);
    });

    it('returns a tool call whose arguments arrive in pieces as one parsed call', async () => {
      fake.script('anthropic', {
        toolCalls: [{ id: 'toolu_1', name: 'get_sales', input: { region: 'SG', months: [1, 2] } }],
        argumentChunks: 5,
      });
      const { events } = await collectStream(provider().stream(ask('Sales?')));
      expect(events.filter((e) => e.type === 'tool-call')).toEqual([
        {
          type: 'tool-call',
          id: 'toolu_1',
          name: 'get_sales',
          input: { region: 'SG', months: [1, 2] },
        },
      ]);
      expect(events.at(-1)).toEqual({ type: 'finish', reason: 'tool-calls' });
    });

    it('returns text and parallel tool calls in order; an empty input is {}', async () => {
      fake.script('anthropic', {
        text: 'Let me check both.',
        toolCalls: [
          { id: 'toolu_a', name: 'get_weather', input: { city: 'Kuala Lumpur' } },
          { id: 'toolu_b', name: 'list_holidays', input: '' },
        ],
      });
      const { events } = await collectStream(provider().stream(ask('Plan')));
      const text = events.flatMap((e) => (e.type === 'text-delta' ? [e.text] : []));
      expect(text.length).toBeGreaterThan(1);
      expect(text.join('')).toBe('Let me check both.');
      expect(events.filter((e) => e.type !== 'text-delta' && e.type !== 'usage')).toEqual([
        { type: 'tool-call', id: 'toolu_a', name: 'get_weather', input: { city: 'Kuala Lumpur' } },
        { type: 'tool-call', id: 'toolu_b', name: 'list_holidays', input: {} },
        { type: 'finish', reason: 'tool-calls' },
      ]);
    });

    it('reports max_tokens as finish reason length', async () => {
      fake.script('anthropic', { text: 'Cut sh', finish: 'length' });
      const { events } = await collectStream(provider().stream(ask('Long essay')));
      expect(events.at(-1)).toEqual({ type: 'finish', reason: 'length' });
    });
  });

  describe('Anthropic provider: whole answers (stream: false)', () => {
    const whole = (text: string, extra: Partial<ChatRequest> = {}) =>
      ask(text, { stream: false, ...extra });

    it('asks without streaming and gives the same events: text, usage, finish', async () => {
      fake.script('anthropic', {
        text: ['Good ', 'morning', ', Ana.'],
        usage: { inputTokens: 42, outputTokens: 7 },
      });
      const { events, error } = await collectStream(provider().stream(whole('Hi')));
      expect(error).toBeUndefined();
      expect(fake.lastRequest()!.stream).toBe(false);
      expect((fake.lastRequest()!.body as { stream?: boolean }).stream).toBe(false);
      expect(events).toEqual([
        { type: 'text-delta', text: 'Good morning, Ana.' },
        { type: 'usage', inputTokens: 42, outputTokens: 7 },
        { type: 'finish', reason: 'stop' },
      ]);
    });

    it('returns text and parallel tool calls in order', async () => {
      fake.script('anthropic', {
        text: 'Let me check both.',
        toolCalls: [
          { id: 'toolu_a', name: 'get_weather', input: { city: 'Kuala Lumpur' } },
          { id: 'toolu_b', name: 'list_holidays', input: '' },
        ],
      });
      const { events } = await collectStream(provider().stream(whole('Plan')));
      expect(events.filter((e) => e.type !== 'usage')).toEqual([
        { type: 'text-delta', text: 'Let me check both.' },
        { type: 'tool-call', id: 'toolu_a', name: 'get_weather', input: { city: 'Kuala Lumpur' } },
        { type: 'tool-call', id: 'toolu_b', name: 'list_holidays', input: {} },
        { type: 'finish', reason: 'tool-calls' },
      ]);
    });

    it.each([
      { status: 529, kind: 'overloaded', retryable: true },
      { status: 500, kind: 'server', retryable: true },
      { status: 400, kind: 'bad_request', retryable: false },
      { status: 401, kind: 'auth', retryable: false },
    ])('maps HTTP $status to $kind', async ({ status, kind, retryable }) => {
      fake.script('anthropic', { error: { status } });
      const { events, error } = await failure(whole('Hi'));
      expect(events).toEqual([]);
      expect(error).toMatchObject({ kind, status, provider: 'anthropic' });
      expect(error.retryable).toBe(retryable);
    });

    it('a body cut off by a dropped connection is a connection error, with no events', async () => {
      fake.script('anthropic', {
        text: 'never whole',
        failAfterChunks: { chunks: 0, mode: 'disconnect' },
      });
      const { events, error } = await failure(whole('Hi'));
      expect(events).toEqual([]);
      expect(error.kind).toBe('connection');
      expect(error.retryable).toBe(true);
    });

    it('throws aborted when the signal aborts before the answer arrives', async () => {
      const controller = new AbortController();
      fake.script('anthropic', () => {
        controller.abort();
        return { text: 'too late', delayMs: 2_000 };
      });
      const { error } = await failure(whole('Hi', { signal: controller.signal }));
      expect(error.kind).toBe('aborted');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });
  });

  describe('Anthropic provider: request', () => {
    it('sends the key, the version header and exactly the system, messages and tools given', async () => {
      fake.script('anthropic', 'Done.');
      const inputSchema = {
        type: 'object',
        properties: { city: { type: 'string', description: 'City name' } },
        required: ['city'],
      };
      await collectStream(
        provider().stream({
          model: 'claude-sonnet-4-6',
          system: 'You are Mezzofy’s assistant.',
          maxOutputTokens: 512,
          temperature: 0.2,
          tools: [{ name: 'get_weather', description: 'Weather for a city', inputSchema }],
          messages: [
            { role: 'user', content: [{ type: 'text', text: 'Weather in SG and KL?' }] },
            {
              role: 'assistant',
              content: [
                { type: 'text', text: 'Checking.' },
                { type: 'tool-call', id: 'toolu_1', name: 'get_weather', input: { city: 'SG' } },
                { type: 'tool-call', id: 'toolu_2', name: 'get_weather', input: { city: 'KL' } },
              ],
            },
            {
              role: 'tool',
              content: [
                { type: 'tool-result', id: 'toolu_1', name: 'get_weather', output: '31°C' },
              ],
            },
            {
              role: 'tool',
              content: [
                {
                  type: 'tool-result',
                  id: 'toolu_2',
                  name: 'get_weather',
                  output: 'timeout',
                  isError: true,
                },
              ],
            },
          ],
        }),
      );
      const request = fake.lastRequest('anthropic')!;
      expect(request.path).toBe('/v1/messages');
      expect(request.apiKey).toBe(API_KEY);
      expect(request.headers['anthropic-version']).toBeTruthy();
      expect(request.body).toEqual({
        model: 'claude-sonnet-4-6',
        max_tokens: 512,
        stream: true,
        system: 'You are Mezzofy’s assistant.',
        temperature: 0.2,
        tools: [
          { name: 'get_weather', description: 'Weather for a city', input_schema: inputSchema },
        ],
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'Weather in SG and KL?' }] },
          {
            role: 'assistant',
            content: [
              { type: 'text', text: 'Checking.' },
              { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'SG' } },
              { type: 'tool_use', id: 'toolu_2', name: 'get_weather', input: { city: 'KL' } },
            ],
          },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: 'toolu_1', content: '31°C' },
              { type: 'tool_result', tool_use_id: 'toolu_2', content: 'timeout', is_error: true },
            ],
          },
        ],
      });
    });

    it('sends an image part as a base64 image block', async () => {
      await collectStream(
        provider().stream({
          model: 'claude-sonnet-4-6',
          messages: [
            {
              role: 'user',
              content: [
                { type: 'text', text: 'What is on this receipt?' },
                { type: 'image', mediaType: 'image/png', data: PNG_BASE64 },
              ],
            },
          ],
        }),
      );
      const body = fake.lastRequest('anthropic')!.body as { messages: unknown[] };
      expect(body.messages).toEqual([
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is on this receipt?' },
            {
              type: 'image',
              source: { type: 'base64', media_type: 'image/png', data: PNG_BASE64 },
            },
          ],
        },
      ]);
    });

    it('accepts a base URL configured with /v1 and still calls /v1/messages', async () => {
      const { error } = await collectStream(
        provider({ baseURL: `${fake.url}/v1/` }).stream(ask('Hi')),
      );
      expect(error).toBeUndefined();
      expect(fake.lastRequest()!.path).toBe('/v1/messages');
    });

    it('rejects a tool call in a user message before calling the API', async () => {
      const { error } = await failure({
        model: 'claude-sonnet-4-6',
        messages: [
          { role: 'user', content: [{ type: 'tool-call', id: 't', name: 'x', input: {} }] },
        ],
      });
      expect(error.kind).toBe('bad_request');
      expect(fake.counts.anthropic).toBe(0);
    });

    it("sends another provider's tool call ids in Anthropic's id alphabet, each pair still linked", async () => {
      // Kimi's ids (after a failover, or in a session's history); Anthropic 400s on `.` and `:`.
      const ids = ['functions.search_leads:0', 'functions.search_leads_0', 'toolu_01Valid-id'];
      fake.script('anthropic', 'Done.');
      await collectStream(
        provider().stream(
          ask('Find Acme', {
            messages: [
              { role: 'user', content: [{ type: 'text', text: 'Find Acme' }] },
              {
                role: 'assistant',
                content: ids.map((id) => ({
                  type: 'tool-call',
                  id,
                  name: 'search_leads',
                  input: {},
                })),
              },
              {
                role: 'tool',
                content: ids.map((id) => ({
                  type: 'tool-result',
                  id,
                  name: 'search_leads',
                  output: id,
                })),
              },
            ],
          }),
        ),
      );
      const [, assistant, results] = (
        fake.lastRequest('anthropic')!.body as {
          messages: { content: { id?: string; tool_use_id?: string; content?: string }[] }[];
        }
      ).messages;
      const sent = assistant!.content.map((b) => b.id!);
      for (const id of sent) expect(id).toMatch(/^[a-zA-Z0-9_-]+$/);
      expect(new Set(sent).size).toBe(ids.length);
      expect(sent[2]).toBe('toolu_01Valid-id');
      expect(results!.content.map((b) => [b.tool_use_id, b.content])).toEqual(
        sent.map((id, i) => [id, ids[i]]),
      );
    });
  });

  describe('Anthropic provider: errors', () => {
    it.each([
      { status: 529, kind: 'overloaded', retryable: true },
      { status: 429, kind: 'rate_limited', retryable: true },
      { status: 500, kind: 'server', retryable: true },
      { status: 503, kind: 'server', retryable: true },
      { status: 400, kind: 'bad_request', retryable: false },
      { status: 404, kind: 'bad_request', retryable: false },
      { status: 422, kind: 'bad_request', retryable: false },
      { status: 401, kind: 'auth', retryable: false },
      { status: 403, kind: 'auth', retryable: false },
    ])('maps HTTP $status to $kind', async ({ status, kind, retryable }) => {
      fake.script('anthropic', { error: { status } });
      const { events, error } = await failure(ask('Hi'));
      expect(events).toEqual([]);
      expect(error).toMatchObject({ kind, status, provider: 'anthropic', retryAfterMs: undefined });
      expect(error.retryable).toBe(retryable);
      expect(fake.counts.anthropic).toBe(1);
    });

    it('maps an overloaded_error body to overloaded whatever the status', async () => {
      fake.script('anthropic', { error: { status: 500, type: 'overloaded_error' } });
      const { error } = await failure(ask('Hi'));
      expect(error.kind).toBe('overloaded');
    });

    it('reads retry-after in seconds and as an HTTP date', async () => {
      const inThirtySeconds = new Date(Date.now() + 30_000).toUTCString();
      fake.script(
        'anthropic',
        { error: { status: 429, retryAfter: 7 } },
        { error: { status: 529, retryAfter: inThirtySeconds } },
      );
      const seconds = await failure(ask('Hi'));
      expect(seconds.error).toMatchObject({ kind: 'rate_limited', retryAfterMs: 7000 });
      const date = await failure(ask('Hi'));
      expect(date.error.kind).toBe('overloaded');
      expect(date.error.retryAfterMs).toBeGreaterThan(25_000);
      expect(date.error.retryAfterMs).toBeLessThanOrEqual(30_000);
    });

    it('never puts the API key in the error, even when the server echoes it', async () => {
      fake.script('anthropic', {
        error: { status: 401, message: `invalid x-api-key: ${API_KEY}` },
      });
      const { error } = await failure(ask('Hi'));
      expect(error.kind).toBe('auth');
      expect(error.message).not.toContain(API_KEY);
      expect(String((error.cause as Error).message)).not.toContain(API_KEY);
      expect(error.message).toContain('[redacted]');
    });

    it('throws after the deltas already yielded when an error event arrives mid-stream', async () => {
      fake.script('anthropic', {
        text: ['one ', 'two ', 'three ', 'four'],
        failAfterChunks: { chunks: 2, mode: 'error-event', type: 'overloaded_error' },
      });
      const { events, error } = await failure(ask('Count'));
      expect(events).toEqual([
        { type: 'text-delta', text: 'one ' },
        { type: 'text-delta', text: 'two ' },
      ]);
      expect(error.kind).toBe('overloaded');
      expect(error.status).toBeUndefined();
    });

    it('throws connection after the deltas already yielded when the connection drops', async () => {
      fake.script('anthropic', {
        text: ['one ', 'two ', 'three ', 'four'],
        failAfterChunks: { chunks: 3, mode: 'disconnect' },
      });
      const { events, error } = await failure(ask('Count'));
      expect(events.map((e) => (e.type === 'text-delta' ? e.text : e.type))).toEqual([
        'one ',
        'two ',
        'three ',
      ]);
      expect(error.kind).toBe('connection');
      expect(error.retryable).toBe(true);
    });

    it.each([['invalid-json' as const], ['garbage' as const], ['truncated' as const]])(
      'maps %s output to malformed',
      async (malformed) => {
        fake.script('anthropic', { text: 'never seen', malformed });
        const { error } = await failure(ask('Hi'));
        expect(error.kind).toBe('malformed');
        expect(error.retryable).toBe(false);
      },
    );

    it('maps unparseable tool arguments to malformed', async () => {
      fake.script('anthropic', { toolCalls: [{ name: 'get_weather', input: '{"city": "Par' }] });
      const { error } = await failure(ask('Weather?'));
      expect(error.kind).toBe('malformed');
    });

    it('times out when no response comes in time', async () => {
      fake.script('anthropic', { text: 'late', delayMs: 2_000 });
      const { error } = await failure(ask('Hi'), { timeoutMs: 100 });
      expect(error.kind).toBe('timeout');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });

    it('reports connection when nothing listens at the base URL', async () => {
      const gone = await startFakeModelServer();
      await gone.close();
      const { error } = await failure(ask('Hi'), { baseURL: gone.url });
      expect(error.kind).toBe('connection');
    });
  });

  describe('Anthropic provider: abort', () => {
    it('stops the stream with aborted when the signal aborts mid-stream, and the server sees the close', async () => {
      const words = Array.from({ length: 10 }, (_, i) => `w${i} `);
      fake.script('anthropic', { text: words, chunkDelayMs: 20 });
      const controller = new AbortController();
      const { events, error } = await collectStream(
        provider().stream(ask('Talk', { signal: controller.signal })),
        (event) => {
          if (event.type === 'text-delta') controller.abort();
        },
      );
      expect(events).toEqual([{ type: 'text-delta', text: 'w0 ' }]);
      expect(error).toBeInstanceOf(ProviderError);
      expect((error as ProviderError).kind).toBe('aborted');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });

    it('throws aborted when the signal aborts before the response starts', async () => {
      const controller = new AbortController();
      fake.script('anthropic', () => {
        controller.abort();
        return { text: 'too late', delayMs: 2_000 };
      });
      const { error } = await failure(ask('Hi', { signal: controller.signal }));
      expect(error.kind).toBe('aborted');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });
  });
});
