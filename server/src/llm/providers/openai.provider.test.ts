import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FakeModelServer, startFakeModelServer } from '../../../test/fakes/model-server.ts';
import { collectStream } from '../../../test/helpers/collect-stream.ts';
import { SDK_TRANSPORTS } from '../../../test/helpers/sdk-transports.ts';
import { type ChatRequest, ProviderError, type StreamEvent } from '../types.ts';
import { createAnthropicProvider } from './anthropic.provider.ts';
import { createOpenAiCompatibleProvider } from './openai.provider.ts';

const API_KEY = 'sk-moonshot-test-0123456789abcdef';
const JPEG_BASE64 =
  '/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////2wBDAf//////////////////////////////////////////wAARCAABAAEDASIAAhEBAxEB/8QAFAABAAAAAAAAAAAAAAAAAAAAA//EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAMAwEAAhADEAAAAT//2Q==';

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

function provider(options: { baseURL?: string; timeoutMs?: number; apiKey?: string } = {}) {
  return createOpenAiCompatibleProvider({
    ...(transportFetch ? { fetch: transportFetch } : {}),
    name: 'moonshot',
    apiKey: API_KEY,
    baseURL: fake.openAiBaseURL,
    ...options,
  });
}

function ask(text: string, extra: Partial<ChatRequest> = {}): ChatRequest {
  return {
    model: 'kimi-k2',
    messages: [{ role: 'user', content: [{ type: 'text', text }] }],
    ...extra,
  };
}

async function failure(request: ChatRequest, options?: Parameters<typeof provider>[0]) {
  const { events, error } = await collectStream(provider(options).stream(request));
  expect(error).toBeInstanceOf(ProviderError);
  return { events, error: error as ProviderError };
}

function toolCallsOf(events: StreamEvent[]) {
  return events.filter((e) => e.type === 'tool-call');
}

describe.each(SDK_TRANSPORTS)('over %s', (_name, transport) => {
  beforeAll(() => {
    transportFetch = transport;
  });

  describe('OpenAI-compatible provider: streaming', () => {
    it('streams text as several deltas in order, then usage and the finish reason', async () => {
      fake.script('openai', {
        text: ['Selamat ', 'pagi', ', Ana.'],
        usage: { inputTokens: 30, outputTokens: 6 },
      });
      const { events, error } = await collectStream(provider().stream(ask('Hi')));
      expect(error).toBeUndefined();
      expect(events).toEqual([
        { type: 'text-delta', text: 'Selamat ' },
        { type: 'text-delta', text: 'pagi' },
        { type: 'text-delta', text: ', Ana.' },
        { type: 'usage', inputTokens: 30, outputTokens: 6 },
        { type: 'finish', reason: 'stop' },
      ]);
    });

    it('returns a tool call whose arguments arrive in pieces as one parsed call', async () => {
      fake.script('openai', {
        toolCalls: [{ id: 'call_1', name: 'get_sales', input: { region: 'MY', top: 5 } }],
        argumentChunks: 6,
      });
      const { events } = await collectStream(provider().stream(ask('Sales?')));
      expect(toolCallsOf(events)).toEqual([
        { type: 'tool-call', id: 'call_1', name: 'get_sales', input: { region: 'MY', top: 5 } },
      ]);
      expect(events.at(-1)).toEqual({ type: 'finish', reason: 'tool-calls' });
    });

    it('accumulates parallel tool calls per index, even when their pieces interleave', async () => {
      fake.script('openai', {
        text: 'Checking both.',
        toolCalls: [
          { id: 'call_a', name: 'get_weather', input: { city: 'Singapore' } },
          { id: 'call_b', name: 'get_weather', input: { city: 'Jakarta' } },
          { id: 'call_c', name: 'list_holidays', input: '' },
        ],
        interleaveToolCalls: true,
      });
      const { events } = await collectStream(provider().stream(ask('Plan')));
      expect(toolCallsOf(events)).toEqual([
        { type: 'tool-call', id: 'call_a', name: 'get_weather', input: { city: 'Singapore' } },
        { type: 'tool-call', id: 'call_b', name: 'get_weather', input: { city: 'Jakarta' } },
        { type: 'tool-call', id: 'call_c', name: 'list_holidays', input: {} },
      ]);
      const text = events.flatMap((e) => (e.type === 'text-delta' ? [e.text] : []));
      expect(text.join('')).toBe('Checking both.');
    });

    it('reports finish_reason length', async () => {
      fake.script('openai', { text: 'Cut sh', finish: 'length' });
      const { events } = await collectStream(provider().stream(ask('Long essay')));
      expect(events.at(-1)).toEqual({ type: 'finish', reason: 'length' });
    });
  });

  describe('OpenAI-compatible provider: whole answers (stream: false)', () => {
    const whole = (text: string, extra: Partial<ChatRequest> = {}) =>
      ask(text, { stream: false, ...extra });

    it('asks without streaming (no stream_options) and gives the same events', async () => {
      fake.script('openai', {
        text: ['Selamat ', 'pagi'],
        usage: { inputTokens: 30, outputTokens: 4 },
      });
      const { events, error } = await collectStream(provider().stream(whole('Hi')));
      expect(error).toBeUndefined();
      const body = fake.lastRequest()!.body as Record<string, unknown>;
      expect(body.stream).toBe(false);
      expect(body).not.toHaveProperty('stream_options');
      expect(events).toEqual([
        { type: 'text-delta', text: 'Selamat pagi' },
        { type: 'usage', inputTokens: 30, outputTokens: 4 },
        { type: 'finish', reason: 'stop' },
      ]);
    });

    it('returns parallel tool calls in order with parsed arguments', async () => {
      fake.script('openai', {
        toolCalls: [
          { id: 'call_a', name: 'get_weather', input: { city: 'Penang' } },
          { id: 'call_b', name: 'list_holidays', input: { year: 2026 } },
        ],
      });
      const { events } = await collectStream(provider().stream(whole('Plan')));
      expect(toolCallsOf(events)).toEqual([
        { type: 'tool-call', id: 'call_a', name: 'get_weather', input: { city: 'Penang' } },
        { type: 'tool-call', id: 'call_b', name: 'list_holidays', input: { year: 2026 } },
      ]);
      expect(events.at(-1)).toEqual({ type: 'finish', reason: 'tool-calls' });
    });

    it.each([
      { status: 429, kind: 'rate_limited', retryable: true },
      { status: 503, kind: 'server', retryable: true },
      { status: 400, kind: 'bad_request', retryable: false },
      { status: 403, kind: 'auth', retryable: false },
    ])('maps HTTP $status to $kind', async ({ status, kind, retryable }) => {
      fake.script('openai', { error: { status } });
      const { events, error } = await failure(whole('Hi'));
      expect(events).toEqual([]);
      expect(error).toMatchObject({ kind, status, provider: 'moonshot' });
      expect(error.retryable).toBe(retryable);
    });

    it('a body cut off by a dropped connection is a connection error, with no events', async () => {
      fake.script('openai', {
        text: 'never whole',
        failAfterChunks: { chunks: 0, mode: 'disconnect' },
      });
      const { events, error } = await failure(whole('Hi'));
      expect(events).toEqual([]);
      expect(error.kind).toBe('connection');
    });

    it('throws aborted when the signal aborts before the answer arrives', async () => {
      const controller = new AbortController();
      fake.script('openai', () => {
        controller.abort();
        return { text: 'too late', delayMs: 2_000 };
      });
      const { error } = await failure(whole('Hi', { signal: controller.signal }));
      expect(error.kind).toBe('aborted');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });

    it('unparseable tool arguments are malformed', async () => {
      fake.script('openai', {
        toolCalls: [{ id: 'call_x', name: 'get_weather', input: '{"city": "Ipoh"' }],
      });
      const { error } = await failure(whole('Plan'));
      expect(error.kind).toBe('malformed');
    });
  });

  describe('OpenAI-compatible provider: request', () => {
    it('sends the key and exactly the system, messages and tools given, asking for usage', async () => {
      const parameters = {
        type: 'object',
        properties: { city: { type: 'string', description: 'City name' } },
        required: ['city'],
      };
      await collectStream(
        provider().stream({
          model: 'kimi-k2',
          system: 'You are Mezzofy’s assistant.',
          maxOutputTokens: 256,
          temperature: 0.3,
          tools: [
            { name: 'get_weather', description: 'Weather for a city', inputSchema: parameters },
          ],
          messages: [
            { role: 'user', content: [{ type: 'text', text: 'Weather in SG and KL?' }] },
            {
              role: 'assistant',
              content: [
                { type: 'tool-call', id: 'call_1', name: 'get_weather', input: { city: 'SG' } },
                { type: 'tool-call', id: 'call_2', name: 'get_weather', input: { city: 'KL' } },
              ],
            },
            {
              role: 'tool',
              content: [{ type: 'tool-result', id: 'call_1', name: 'get_weather', output: '31°C' }],
            },
            {
              role: 'tool',
              content: [
                {
                  type: 'tool-result',
                  id: 'call_2',
                  name: 'get_weather',
                  output: 'timeout',
                  isError: true,
                },
              ],
            },
          ],
        }),
      );
      const request = fake.lastRequest('openai')!;
      expect(request.path).toBe('/v1/chat/completions');
      expect(request.headers.authorization).toBe(`Bearer ${API_KEY}`);
      expect(request.body).toEqual({
        model: 'kimi-k2',
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: 256,
        temperature: 0.3,
        tools: [
          {
            type: 'function',
            function: { name: 'get_weather', description: 'Weather for a city', parameters },
          },
        ],
        messages: [
          { role: 'system', content: 'You are Mezzofy’s assistant.' },
          { role: 'user', content: 'Weather in SG and KL?' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [
              {
                id: 'call_1',
                type: 'function',
                function: { name: 'get_weather', arguments: '{"city":"SG"}' },
              },
              {
                id: 'call_2',
                type: 'function',
                function: { name: 'get_weather', arguments: '{"city":"KL"}' },
              },
            ],
          },
          { role: 'tool', tool_call_id: 'call_1', content: '31°C' },
          { role: 'tool', tool_call_id: 'call_2', content: 'Error: timeout' },
        ],
      });
    });

    it('sends an image part as an image_url with a data: URL', async () => {
      await collectStream(
        provider().stream({
          model: 'kimi-k2-vision',
          messages: [
            {
              role: 'user',
              content: [
                { type: 'text', text: 'Read this voucher.' },
                { type: 'image', mediaType: 'image/jpeg', data: JPEG_BASE64 },
              ],
            },
          ],
        }),
      );
      const body = fake.lastRequest('openai')!.body as { messages: unknown[] };
      expect(body.messages).toEqual([
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Read this voucher.' },
            { type: 'image_url', image_url: { url: `data:image/jpeg;base64,${JPEG_BASE64}` } },
          ],
        },
      ]);
    });

    it('works with no key configured (local servers), sending a placeholder', async () => {
      const { error } = await collectStream(provider({ apiKey: '' }).stream(ask('Hi')));
      expect(error).toBeUndefined();
      expect(fake.lastRequest()!.apiKey).toBe('no-key');
    });
  });

  describe('OpenAI-compatible provider: errors', () => {
    it.each([
      { status: 429, kind: 'rate_limited', retryable: true },
      { status: 500, kind: 'server', retryable: true },
      { status: 502, kind: 'server', retryable: true },
      { status: 529, kind: 'overloaded', retryable: true },
      { status: 400, kind: 'bad_request', retryable: false },
      { status: 404, kind: 'bad_request', retryable: false },
      { status: 422, kind: 'bad_request', retryable: false },
      { status: 401, kind: 'auth', retryable: false },
      { status: 403, kind: 'auth', retryable: false },
    ])('maps HTTP $status to $kind', async ({ status, kind, retryable }) => {
      fake.script('openai', { error: { status } });
      const { events, error } = await failure(ask('Hi'));
      expect(events).toEqual([]);
      expect(error).toMatchObject({ kind, status, provider: 'moonshot' });
      expect(error.retryable).toBe(retryable);
    });

    it('maps Moonshot’s 429 engine_overloaded_error to overloaded', async () => {
      fake.script('openai', { error: { status: 429, type: 'overloaded_error' } });
      const { error } = await failure(ask('Hi'));
      expect(error.kind).toBe('overloaded');
    });

    it('reads retry-after in seconds and as an HTTP date', async () => {
      const inTenSeconds = new Date(Date.now() + 10_000).toUTCString();
      fake.script(
        'openai',
        { error: { status: 429, retryAfter: 3 } },
        { error: { status: 503, retryAfter: inTenSeconds } },
      );
      const seconds = await failure(ask('Hi'));
      expect(seconds.error).toMatchObject({ kind: 'rate_limited', retryAfterMs: 3000 });
      const date = await failure(ask('Hi'));
      expect(date.error.kind).toBe('server');
      expect(date.error.retryAfterMs).toBeGreaterThan(5_000);
      expect(date.error.retryAfterMs).toBeLessThanOrEqual(10_000);
    });

    it('never puts the API key in the error, even when the server echoes it', async () => {
      fake.script('openai', {
        error: { status: 401, message: `Incorrect API key provided: ${API_KEY}` },
      });
      const { error } = await failure(ask('Hi'));
      expect(error.kind).toBe('auth');
      expect(error.message).not.toContain(API_KEY);
      expect(String((error.cause as Error).message)).not.toContain(API_KEY);
    });

    it.each([
      { type: 'rate_limit_error' as const, kind: 'rate_limited' },
      { type: 'api_error' as const, kind: 'server' },
      { type: 'overloaded_error' as const, kind: 'overloaded' },
    ])(
      'throws $kind after the deltas already yielded when a $type arrives mid-stream',
      async ({ type, kind }) => {
        fake.script('openai', {
          text: ['one ', 'two ', 'three'],
          failAfterChunks: { chunks: 2, mode: 'error-event', type },
        });
        const { events, error } = await failure(ask('Count'));
        expect(events).toEqual([
          { type: 'text-delta', text: 'one ' },
          { type: 'text-delta', text: 'two ' },
        ]);
        expect(error.kind).toBe(kind);
      },
    );

    it('throws connection after the deltas already yielded when the connection drops', async () => {
      fake.script('openai', {
        text: ['one ', 'two ', 'three'],
        failAfterChunks: { chunks: 1, mode: 'disconnect' },
      });
      const { events, error } = await failure(ask('Count'));
      expect(events).toEqual([{ type: 'text-delta', text: 'one ' }]);
      expect(error.kind).toBe('connection');
    });

    it.each([['invalid-json' as const], ['garbage' as const], ['truncated' as const]])(
      'maps %s output to malformed',
      async (malformed) => {
        fake.script('openai', { text: 'never seen', malformed });
        const { error } = await failure(ask('Hi'));
        expect(error.kind).toBe('malformed');
      },
    );

    it('maps unparseable tool arguments to malformed', async () => {
      fake.script('openai', { toolCalls: [{ name: 'get_weather', input: '{"city": "Par' }] });
      const { error } = await failure(ask('Weather?'));
      expect(error.kind).toBe('malformed');
    });

    it('times out when no response comes in time', async () => {
      fake.script('openai', { text: 'late', delayMs: 2_000 });
      const { error } = await failure(ask('Hi'), { timeoutMs: 100 });
      expect(error.kind).toBe('timeout');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });
  });

  describe('OpenAI-compatible provider: abort', () => {
    it('stops the stream with aborted when the signal aborts mid-stream, and the server sees the close', async () => {
      const words = Array.from({ length: 10 }, (_, i) => `w${i} `);
      fake.script('openai', { text: words, chunkDelayMs: 20 });
      const controller = new AbortController();
      const { events, error } = await collectStream(
        provider().stream(ask('Talk', { signal: controller.signal })),
        (event) => {
          if (event.type === 'text-delta') controller.abort();
        },
      );
      expect(events).toEqual([{ type: 'text-delta', text: 'w0 ' }]);
      expect((error as ProviderError).kind).toBe('aborted');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });

    it('throws aborted when the signal aborts before the response starts', async () => {
      const controller = new AbortController();
      fake.script('openai', () => {
        controller.abort();
        return { text: 'too late', delayMs: 2_000 };
      });
      const { error } = await failure(ask('Hi', { signal: controller.signal }));
      expect(error.kind).toBe('aborted');
      expect(await fake.lastRequest()!.settled).toBe('client-closed');
    });
  });

  describe('both adapters on one fake server, with base URLs as users configure them', () => {
    it('each SDK reaches its own path and gets its own scripted reply', async () => {
      // What a user writes in .env: Anthropic's root without /v1, OpenAI's with it.
      const env = { ANTHROPIC_BASE_URL: fake.url, OPENAI_BASE_URL: `${fake.url}/v1` };
      const claude = createAnthropicProvider({
        name: 'anthropic',
        apiKey: 'sk-ant-shared-0123456789',
        baseURL: env.ANTHROPIC_BASE_URL,
      });
      const kimi = createOpenAiCompatibleProvider({
        name: 'moonshot',
        apiKey: 'sk-kimi-shared-0123456789',
        baseURL: env.OPENAI_BASE_URL,
      });
      fake.script('anthropic', { text: ['from ', 'Claude'] });
      fake.script('openai', { text: ['from ', 'Kimi'] });

      const [fromClaude, fromKimi] = await Promise.all([
        collectStream(claude.stream({ ...ask('Hi'), model: 'claude-sonnet-4-6' })),
        collectStream(kimi.stream(ask('Hi'))),
      ]);
      const textOf = (events: StreamEvent[]) =>
        events.flatMap((e) => (e.type === 'text-delta' ? [e.text] : [])).join('');
      expect(textOf(fromClaude.events)).toBe('from Claude');
      expect(textOf(fromKimi.events)).toBe('from Kimi');
      expect(fake.counts).toEqual({ anthropic: 1, openai: 1 });
      expect(fake.requestsFor('anthropic').map((r) => [r.path, r.apiKey])).toEqual([
        ['/v1/messages', 'sk-ant-shared-0123456789'],
      ]);
      expect(fake.requestsFor('openai').map((r) => [r.path, r.apiKey])).toEqual([
        ['/v1/chat/completions', 'sk-kimi-shared-0123456789'],
      ]);
    });

    it('an OpenAI base URL configured without /v1 reaches no API and fails as bad_request', async () => {
      const { error } = await failure(ask('Hi'), { baseURL: fake.url });
      expect(error).toMatchObject({ kind: 'bad_request', status: 404 });
      expect(fake.counts).toEqual({ anthropic: 0, openai: 0 });
    });
  });
});
