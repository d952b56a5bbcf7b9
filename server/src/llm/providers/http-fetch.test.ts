/**
 * The node:http transport given to the SDKs as their fetch: what a caller of fetch relies on
 * (status, headers, body stream, decoding, abort) against a real local server.
 */
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHttpFetch } from './http-fetch.ts';

let server: http.Server;
let base: string;
const seen: {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  port: number;
}[] = [];
/** Responses held open by the 'hang' routes, ended by the tests. */
const held: http.ServerResponse[] = [];

beforeAll(async () => {
  server = http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    seen.push({
      method: req.method!,
      url: req.url!,
      headers: req.headers,
      body,
      port: req.socket.remotePort!,
    });
    const text = 'hello, compressed world';
    switch (req.url) {
      case '/json':
        res.writeHead(201, 'Made', { 'content-type': 'application/json', 'x-multi': ['a', 'b'] });
        res.end(JSON.stringify({ echo: body }));
        return;
      case '/gzip':
        res.writeHead(200, { 'content-encoding': 'gzip' });
        res.end(zlib.gzipSync(text));
        return;
      case '/deflate':
        res.writeHead(200, { 'content-encoding': 'deflate' });
        res.end(zlib.deflateSync(text));
        return;
      case '/br':
        res.writeHead(200, { 'content-encoding': 'br' });
        res.end(zlib.brotliCompressSync(text));
        return;
      case '/empty':
        res.writeHead(204);
        res.end();
        return;
      case '/hang-headers':
        held.push(res);
        return;
      case '/hang-body':
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: first\n\n');
        held.push(res);
        return;
      case '/slow':
        setTimeout(() => {
          res.writeHead(200);
          res.write('slow ');
          setTimeout(() => res.end('answer'), 150);
        }, 250);
        return;
      case '/large': {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        // 4 MiB in 64 KiB writes, each byte its index mod 251: a reader sees any loss or reorder.
        const chunk = (n: number) =>
          Buffer.from(Array.from({ length: 65_536 }, (_, i) => (n * 65_536 + i) % 251));
        let n = 0;
        const more = () => {
          while (n < 64) if (!res.write(chunk(n++))) return res.once('drain', more);
          res.end();
        };
        more();
        return;
      }
      case '/gzip-hang': {
        res.writeHead(200, { 'content-encoding': 'gzip' });
        const gzip = zlib.createGzip();
        gzip.pipe(res);
        gzip.write('data: first\n\n');
        gzip.flush();
        held.push(res);
        return;
      }
      case '/cut':
        res.writeHead(200, { 'content-length': '100' });
        res.write('partial');
        setTimeout(() => res.socket?.destroy(), 10);
        return;
      default:
        res.writeHead(404);
        res.end('no');
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const res of held) res.destroy();
  server.closeAllConnections();
  server.close();
});

describe('createHttpFetch', () => {
  const fetch = createHttpFetch();

  it('sends method, headers and body with its length; returns status, text and headers', async () => {
    const res = await fetch(`${base}/json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'k' },
      body: JSON.stringify({ a: 'ü' }),
    });
    expect(res.status).toBe(201);
    expect(res.statusText).toBe('Made');
    expect(res.ok).toBe(true);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-multi')).toBe('a, b');
    expect(await res.json()).toEqual({ echo: '{"a":"ü"}' });
    const sent = seen.at(-1)!;
    expect(sent.method).toBe('POST');
    expect(sent.headers['x-api-key']).toBe('k');
    expect(sent.headers['content-length']).toBe(String(Buffer.byteLength('{"a":"ü"}')));
  });

  it('accepts bytes, ArrayBuffer and URLSearchParams bodies', async () => {
    for (const body of [
      new TextEncoder().encode('bytes'),
      new TextEncoder().encode('buffer').buffer,
      new URLSearchParams({ q: 'a b' }),
    ]) {
      await (await fetch(`${base}/json`, { method: 'POST', body })).text();
    }
    expect(seen.slice(-3).map((s) => s.body)).toEqual(['bytes', 'buffer', 'q=a+b']);
  });

  it('reuses one keep-alive connection for requests one after another', async () => {
    await (await fetch(`${base}/json`)).text();
    await (await fetch(`${base}/json`)).text();
    const [a, b] = seen.slice(-2);
    expect(a!.port).toBe(b!.port);
  });

  it('closes idle sockets after the free-socket timeout, but never a slow request in flight', async () => {
    const short = createHttpFetch({ freeSocketTimeoutMs: 100 });
    // Silent for 250 ms before the headers and 150 ms within the body: longer than the timeout.
    const slow = await short(`${base}/slow`);
    expect(await slow.text()).toBe('slow answer');
    const first = seen.at(-1)!.port;
    await (await short(`${base}/json`)).text();
    expect(seen.at(-1)!.port).toBe(first); // reused at once
    await new Promise((r) => setTimeout(r, 300));
    await (await short(`${base}/json`)).text();
    expect(seen.at(-1)!.port).not.toBe(first); // idle too long: a new connection
  });

  it.each(['gzip', 'deflate', 'br'])(
    'decodes a %s body and drops the encoding and length it no longer has',
    async (encoding) => {
      const res = await fetch(`${base}/${encoding}`);
      expect(await res.text()).toBe('hello, compressed world');
      expect(res.headers.get('content-encoding')).toBeNull();
    },
  );

  it('gives a 204 and a HEAD request a null body; other statuses reach the caller as they are', async () => {
    const empty = await fetch(`${base}/empty`);
    expect(empty.status).toBe(204);
    expect(empty.body).toBeNull();
    const head = await fetch(`${base}/json`, { method: 'HEAD' });
    expect(head.body).toBeNull();
    const missing = await fetch(`${base}/nothing-here`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toBe('no');
  });

  it('streams a large body to a slow reader intact and in order', async () => {
    const res = await fetch(`${base}/large`);
    const reader = res.body!.getReader();
    let offset = 0;
    let bad = -1;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (let i = 0; i < value.length && bad < 0; i++)
        if (value[i] !== (offset + i) % 251) bad = offset + i;
      offset += value.length;
      if (offset % (1 << 20) < value.length) await new Promise((r) => setTimeout(r, 20));
    }
    expect(bad).toBe(-1);
    expect(offset).toBe(64 * 65_536);
  });

  it('rejects with the abort reason when aborted before the headers, and frees the request', async () => {
    const controller = new AbortController();
    const pending = fetch(`${base}/hang-headers`, { signal: controller.signal });
    await vi.waitFor(() => expect(held.length).toBeGreaterThan(0));
    const res = held.at(-1)!;
    const closed = once(res, 'close');
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await closed; // the server saw the connection go
  });

  it('errors the body stream when aborted mid-body', async () => {
    const controller = new AbortController();
    const res = await fetch(`${base}/hang-body`, { signal: controller.signal });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('data: first\n\n');
    controller.abort();
    await expect(reader.read()).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('cancelling a compressed body frees the connection (the server sees it close)', async () => {
    const res = await fetch(`${base}/gzip-hang`);
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe('data: first\n\n');
    const serverSide = held.at(-1)!;
    const closed = once(serverSide, 'close');
    await reader.cancel();
    await closed;
  });

  it('takes the method in any case; a lower-case head has no body', async () => {
    const head = await fetch(`${base}/json`, { method: 'head' });
    expect(head.body).toBeNull();
    expect(seen.at(-1)!.method).toBe('HEAD');
  });

  it('rejects (never throws) on a URL it cannot parse', async () => {
    const pending = fetch('not a url');
    expect(pending).toBeInstanceOf(Promise);
    await expect(pending).rejects.toThrow();
  });

  it('sends again, once, a request whose reused keep-alive socket the server had closed', async () => {
    // A server that answers the first request of each connection with keep-alive and drops
    // the connection when a second one arrives on it (an idle-timeout race, made certain).
    let connections = 0;
    const raw = net.createServer((socket) => {
      connections += 1;
      let requests = 0;
      socket.on('data', (chunk) => {
        if (!String(chunk).includes('\r\n\r\n')) return;
        requests += 1;
        if (requests > 1) return socket.destroy();
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok');
      });
    });
    raw.listen(0, '127.0.0.1');
    await once(raw, 'listening');
    const url = `http://127.0.0.1:${(raw.address() as AddressInfo).port}/`;
    try {
      const own = createHttpFetch();
      expect(await (await own(url, { method: 'POST', body: 'a' })).text()).toBe('ok');
      expect(await (await own(url, { method: 'POST', body: 'b' })).text()).toBe('ok');
      expect(connections).toBe(2);
    } finally {
      raw.close();
    }
  });

  it('refuses at once with an already aborted signal', async () => {
    const before = seen.length;
    await expect(fetch(`${base}/json`, { signal: AbortSignal.abort() })).rejects.toMatchObject({
      name: 'AbortError',
    });
    expect(seen.length).toBe(before);
  });

  it('errors the body stream when the server cuts the connection mid-body', async () => {
    const res = await fetch(`${base}/cut`);
    await expect(res.text()).rejects.toThrow();
  });

  it('rejects with the socket error when nothing listens', async () => {
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
  });

  it('hands what it does not carry to the fallback fetch, unchanged', async () => {
    const fallback = vi.fn(
      async (_input: unknown, _init?: unknown) => new Response('from fallback'),
    );
    const withFallback = createHttpFetch({ fallback });
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode('x'));
        c.close();
      },
    });
    const streamed = { method: 'POST', body: stream, duplex: 'half' } as RequestInit;
    await withFallback(`${base}/json`, streamed);
    const request = new Request(`${base}/json`);
    await withFallback(request);
    await withFallback('data:text/plain,hi');
    expect(fallback.mock.calls.map((c) => c[0])).toEqual([
      `${base}/json`,
      request,
      'data:text/plain,hi',
    ]);
  });
});
