/**
 * A stand-in API worker for server/src/infra/api-workers.test.ts: forked by the supervisor
 * under test, it speaks the same IPC messages as server/src/main.ts (start failure, shutdown
 * request) and behaves as STUB_MODES says for its place in the test's fork order:
 *   ok        listens on STUB_PORT (0: the port the primary shares); stops on request
 *   hang      listens, then ignores stop requests and SIGTERM
 *   fail      reports that it cannot start, exits 1
 *   die       listens, exits 3 after STUB_LIVE_MS
 */
import cluster from 'node:cluster';
import { createServer } from 'node:net';

const modes = (process.env.STUB_MODES ?? 'ok').split(',');
const index = cluster.worker.id - Number(process.env.STUB_ID_BASE ?? 0) - 1;
const mode = modes[Math.min(index, modes.length - 1)];

if (mode === 'fail') {
  process.send({ type: 'mezzofy:start-failed', message: `error: stub ${index} cannot start` }, () =>
    process.exit(1),
  );
} else {
  const server = createServer((socket) => socket.end(`${process.pid}\n`));
  server.listen(Number(process.env.STUB_PORT ?? 0), '127.0.0.1');
  if (mode === 'hang') {
    process.on('SIGTERM', () => {});
    process.on('message', () => {});
  } else {
    process.on('message', (m) => {
      if (m?.type === 'mezzofy:shutdown') server.close(() => process.exit(0));
    });
  }
  if (mode === 'die') setTimeout(() => process.exit(3), Number(process.env.STUB_LIVE_MS ?? 300));
}
