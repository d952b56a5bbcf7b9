/**
 * `npm run chat -- --email you@mezzofy.com [--url http://localhost:8000]`: chat with the
 * assistant in the terminal over the WebSocket protocol. The password comes from
 * MEZZOFY_PASSWORD or is prompted without echo (never a command-line argument).
 */
import { createInterface } from 'node:readline/promises';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { createChatClient } from './chat-client.ts';

async function promptPassword(): Promise<string> {
  let muted = false;
  const output = new Writable({
    write(chunk, encoding, callback) {
      if (!muted) process.stdout.write(chunk, encoding);
      callback();
    },
  });
  const rl = createInterface({ input: process.stdin, output, terminal: true });
  try {
    process.stdout.write('Password: ');
    muted = true;
    return await rl.question('');
  } finally {
    muted = false;
    process.stdout.write('\n');
    rl.close();
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { url: { type: 'string' }, email: { type: 'string' }, help: { type: 'boolean' } },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run chat -- --email you@mezzofy.com [--url http://localhost:8000]\n' +
        'env: MEZZOFY_URL, MEZZOFY_EMAIL, MEZZOFY_PASSWORD (otherwise prompted)\n',
    );
    return 0;
  }
  const url = values.url ?? process.env.MEZZOFY_URL ?? 'http://localhost:8000';
  const email = values.email ?? process.env.MEZZOFY_EMAIL;
  if (!email) {
    process.stderr.write('error: pass --email (or set MEZZOFY_EMAIL)\n');
    return 2;
  }
  const password = process.env.MEZZOFY_PASSWORD ?? (await promptPassword());
  const client = createChatClient({ url, email, password, output: process.stdout, WebSocket });
  const rl = createInterface({
    input: process.stdin,
    output: process.stdout,
    terminal: Boolean(process.stdin.isTTY),
  });
  // Iterate from now on: lines piped in while we log in and connect are kept, not dropped.
  const lines = rl[Symbol.asyncIterator]();
  rl.on('SIGINT', () => client.interrupt());
  try {
    return await client.run({ [Symbol.asyncIterator]: () => lines });
  } finally {
    rl.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(1);
  },
);
