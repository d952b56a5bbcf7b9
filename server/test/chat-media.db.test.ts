/**
 * POST /chat/send-media and /chat/send-url, and a chat turn resuming after an approval:
 * an image reaches the vision model as an image block; other bytes are 415, an oversize file
 * 413 and a missing file 400; send-url answers 501 capability_unavailable; approving a
 * send_email the model asked for stores its result and runs one more model call whose
 * history holds the tool result, stored as a new assistant message.
 */
import type { ChatReply, ChatSessionDetail } from '@mezzofy/protocol';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let fake: FakeModelServer;
let t: TestApp;
const MAX_MEDIA = 4096;
const VISION_MODEL = 'claude-haiku-5-5';

beforeAll(async () => {
  fake = await startFakeModelServer();
  t = await createTestApp({
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
    overrides: {
      chat: { max_media_bytes: MAX_MEDIA },
      llm: { models: { vision: [`anthropic/${VISION_MODEL}`] } },
    },
  });
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
});

const PNG = Buffer.concat([
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  Buffer.alloc(64, 7),
]);

function multipart(fields: Record<string, string>, file?: { name: string; data: Buffer }) {
  const boundary = '----mezzofy-test-boundary';
  const chunks: Buffer[] = [];
  for (const [name, value] of Object.entries(fields))
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`,
      ),
    );
  if (file)
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${file.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      file.data,
      Buffer.from('\r\n'),
    );
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return {
    payload: Buffer.concat(chunks),
    headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  };
}

const sendMedia = (
  token: string,
  fields: Record<string, string>,
  file?: { name: string; data: Buffer },
) => t.inject(token, { method: 'POST', url: '/chat/send-media', ...multipart(fields, file) });

function expectError(res: LightMyRequestResponse, status: number, code: string) {
  expect(res.statusCode, res.body).toBe(status);
  expect(res.json().error.code, res.body).toBe(code);
}

type Body = { model: string; messages: { role: string; content: unknown }[] };

describe('POST /chat/send-media', () => {
  it('sends an image to the vision model as an image block and records the media', async () => {
    const user = await t.userWithToken('executive');
    fake.clear();
    fake.script('anthropic', 'A small grey square.');
    const res = await sendMedia(
      user.token,
      { message: 'What is in this picture?', agent: 'support' },
      { name: 'square.png', data: PNG },
    );
    expect(res.statusCode, res.body).toBe(200);
    const reply = res.json() as ChatReply;
    expect(reply).toMatchObject({ text: 'A small grey square.', agent: 'support', finish: 'stop' });
    expect(reply.model).toBe(VISION_MODEL);

    expect(fake.requests).toHaveLength(1);
    const body = fake.requests[0]!.body as Body;
    expect(body.model).toBe(VISION_MODEL);
    const last = body.messages.at(-1)!;
    expect(last.role).toBe('user');
    expect(last.content).toEqual(
      expect.arrayContaining([
        {
          type: 'image',
          source: { type: 'base64', media_type: 'image/png', data: PNG.toString('base64') },
        },
        expect.objectContaining({ type: 'text', text: 'What is in this picture?' }),
      ]),
    );

    const detail = (
      await t.inject(user.token, { method: 'GET', url: `/chat/sessions/${reply.session_id}` })
    ).json() as ChatSessionDetail;
    expect(detail.messages[0]).toMatchObject({
      role: 'user',
      content: 'What is in this picture?',
      metadata: { media: { type: 'image/png', bytes: PNG.length, name: 'square.png' } },
    });
    expect(JSON.stringify(detail.messages[0]!.metadata)).not.toContain(PNG.toString('base64'));

    // The next turn is plain text again: the chat model, with the earlier turn as history.
    fake.script('anthropic', 'Yes.');
    const next = await t.inject(user.token, {
      method: 'POST',
      url: '/chat/send',
      payload: { message: 'Is it grey?', session_id: reply.session_id },
    });
    expect(next.statusCode, next.body).toBe(200);
    expect((fake.requests[1]!.body as Body).model).not.toBe(VISION_MODEL);
  });

  it('refuses PDF and text bytes with 415, whatever the file is called', async () => {
    const user = await t.userWithToken('executive');
    fake.clear();
    const pdf = await sendMedia(
      user.token,
      { message: 'Summarise' },
      { name: 'photo.png', data: Buffer.from('%PDF-1.7\n1 0 obj\n') },
    );
    expectError(pdf, 415, 'unsupported_media_type');
    expect(pdf.json().error.message).toMatch(/input issue/);
    expectError(
      await sendMedia(user.token, {}, { name: 'notes.txt', data: Buffer.from('hello there') }),
      415,
      'unsupported_media_type',
    );
    expect(fake.requests).toHaveLength(0);
  });

  it('refuses an oversize file with 413 and a missing file with 400', async () => {
    const user = await t.userWithToken('executive');
    fake.clear();
    const big = Buffer.concat([PNG, Buffer.alloc(MAX_MEDIA, 1)]);
    expectError(
      await sendMedia(user.token, { message: 'Big' }, { name: 'big.png', data: big }),
      413,
      'payload_too_large',
    );
    expectError(await sendMedia(user.token, { message: 'No file' }), 400, 'bad_request');
    expect(fake.requests).toHaveLength(0);
  });
});

describe('POST /chat/send-url', () => {
  it('answers 501 capability_unavailable and never calls the model', async () => {
    const user = await t.userWithToken('executive');
    fake.clear();
    const res = await t.inject(user.token, {
      method: 'POST',
      url: '/chat/send-url',
      payload: { url: 'https://example.com/pricing', message: 'Summarise this page' },
    });
    expectError(res, 501, 'capability_unavailable');
    expect(res.json().error.message).toMatch(/web page reading arrives with the input issue/);
    expectError(
      await t.inject(user.token, {
        method: 'POST',
        url: '/chat/send-url',
        payload: { url: 'ftp://example.com/file' },
      }),
      400,
      'validation_failed',
    );
    expect(fake.requests).toHaveLength(0);
  });
});

describe('resuming a turn after an approval', () => {
  it('stores the tool result and answers with one more model call', async () => {
    const user = await t.userWithToken('executive');
    fake.clear();
    fake.script(
      'anthropic',
      {
        text: 'I will send it.',
        toolCalls: [
          {
            id: 'toolu_resume_1',
            name: 'send_email',
            input: { to: ['client@customer.test'], subject: 'Proposal', body: 'Please find…' },
          },
        ],
      },
      'The e-mail to the client is on its way.',
    );
    const res = await t.inject(user.token, {
      method: 'POST',
      url: '/chat/send',
      payload: { message: 'E-mail the proposal to the client', agent: 'support' },
    });
    expect(res.statusCode, res.body).toBe(200);
    const reply = res.json() as ChatReply;
    expect(reply.finish).toBe('awaiting_approval');
    expect(reply.pending_approvals).toHaveLength(1);
    expect(fake.requests).toHaveLength(1);

    const approve = await t.inject(user.token, {
      method: 'POST',
      url: `/approvals/${reply.pending_approvals[0]}/approve`,
    });
    expect(approve.statusCode, approve.body).toBe(200);

    const deadline = Date.now() + 5000;
    let detail: ChatSessionDetail;
    for (;;) {
      detail = (
        await t.inject(user.token, { method: 'GET', url: `/chat/sessions/${reply.session_id}` })
      ).json() as ChatSessionDetail;
      if (detail.messages.length >= 3 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(detail.messages.map((m) => [m.role, m.content])).toEqual([
      ['user', 'E-mail the proposal to the client'],
      ['assistant', 'I will send it.'],
      ['assistant', 'The e-mail to the client is on its way.'],
    ]);
    expect(detail.messages[2]!.metadata).toMatchObject({
      continues: reply.message_id,
      approval_id: reply.pending_approvals[0],
      finish: 'stop',
    });

    expect(fake.requests).toHaveLength(2);
    // The REST turn asked for a whole answer; the resumed turn streams to the user's sockets.
    expect(fake.requests.map((r) => r.stream)).toEqual([false, true]);
    const history = (fake.requests[1]!.body as Body).messages;
    const results = JSON.stringify(history.at(-1));
    expect(history.at(-1)!.role).toBe('user');
    expect(results).toContain('tool_result');
    expect(results).toContain('toolu_resume_1');
    expect(results).not.toMatch(/approval/i);
    expect(JSON.stringify(history)).toContain('E-mail the proposal to the client');

    // The next turn's history carries the whole resumed turn.
    fake.script('anthropic', 'Done.');
    const next = await t.inject(user.token, {
      method: 'POST',
      url: '/chat/send',
      payload: { message: 'Thanks', session_id: reply.session_id },
    });
    expect(next.statusCode, next.body).toBe(200);
    const later = JSON.stringify((fake.requests[2]!.body as Body).messages);
    expect(later).toContain('The e-mail to the client is on its way.');
  });
});
