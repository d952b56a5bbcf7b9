/**
 * Several API processes on one machine (`server.workers` > 1, `WEB_CONCURRENCY`): the process
 * started becomes a node:cluster primary that forks that many `--role=api` processes sharing
 * its listening port (Node 20 has no SO_REUSEPORT; the primary accepts each connection and
 * hands it to the next worker in turn). The workers are ordinary API processes on the shared
 * PostgreSQL and Redis (docs/adr/0005, 0010): nothing here knows about HTTP.
 *
 * The primary keeps them running: a worker that exits unexpectedly is replaced, after a delay
 * that doubles (up to a cap) while replacements keep dying young; one that exits before every
 * worker has started fails the start. `stop` passes the signal on and waits for each worker's
 * own drain (in-flight turns stored, sockets closed with 1001), then kills what is left.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';

export interface ApiWorkersOptions {
  count: number;
  log: Logger;
  /** Arguments for each worker's entry script (its role is set here: `--role=api`). */
  args: string[];
  /** How long `stop` waits for the workers' own shutdown before killing them. */
  stopTimeoutMs: number;
  /** Delay before replacing a worker that exited; doubles up to `maxMs` while they die young. */
  restartDelay?: { firstMs: number; maxMs: number; youngMs: number };
}

export interface ApiWorkers {
  /** Resolves with the listening port when every worker listens; rejects if one exits first. */
  readonly ready: Promise<number>;
  /** Process ids of the running workers. */
  pids(): number[];
  stop(signal: NodeJS.Signals): Promise<void>;
}

const DEFAULT_RESTART = { firstMs: 1_000, maxMs: 30_000, youngMs: 10_000 };

export function startApiWorkers(options: ApiWorkersOptions): ApiWorkers {
  const { count, log } = options;
  const restart = options.restartDelay ?? DEFAULT_RESTART;
  cluster.setupPrimary({
    args: [...options.args.filter((a) => !a.startsWith('--role=')), '--role=api'],
  });

  const started = new Map<Worker, number>();
  let listening = 0;
  let stopping = false;
  let delay = restart.firstMs;
  let resolveReady!: (port: number) => void;
  let rejectReady!: (err: Error) => void;
  let isReady = false;
  const ready = new Promise<number>((ok, fail) => {
    resolveReady = ok;
    rejectReady = fail;
  });
  ready.catch(() => {});

  const fork = () => {
    const worker = cluster.fork({ PROCESS_ROLE: 'api' });
    started.set(worker, Date.now());
    worker.once('listening', (address) => {
      if (isReady) {
        log.info({ worker_pid: worker.process.pid }, 'API worker replaced');
        return;
      }
      listening++;
      if (listening === count) {
        isReady = true;
        resolveReady(address.port);
      }
    });
    worker.once('exit', (code, signal) => {
      const lived = Date.now() - (started.get(worker) ?? Date.now());
      started.delete(worker);
      if (stopping) return;
      if (!isReady) {
        void stopAll('SIGTERM');
        rejectReady(
          new Error(
            `an API worker exited while starting (${signal ?? `code ${code}`}); see its message above`,
          ),
        );
        return;
      }
      if (lived >= restart.youngMs) delay = restart.firstMs;
      const wait = delay;
      delay = Math.min(delay * 2, restart.maxMs);
      log.error(
        { worker_pid: worker.process.pid, code, signal, restart_in_ms: wait },
        'API worker exited; starting another',
      );
      setTimeout(() => {
        if (!stopping) fork();
      }, wait).unref();
    });
  };

  const stopAll = async (signal: NodeJS.Signals) => {
    stopping = true;
    const workers = [...started.keys()];
    const exits = workers.map(
      (w) => new Promise<void>((ok) => (w.isDead() ? ok() : w.once('exit', () => ok()))),
    );
    for (const w of workers) if (!w.isDead()) w.process.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all(exits).then(() => false),
      new Promise<boolean>((ok) => {
        timer = setTimeout(() => ok(true), options.stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      const left = workers.filter((w) => !w.isDead());
      log.error(
        { pids: left.map((w) => w.process.pid) },
        'API workers did not stop in time; killed',
      );
      for (const w of left) w.process.kill('SIGKILL');
      await Promise.all(exits);
    }
  };

  for (let i = 0; i < count; i++) fork();
  return {
    ready,
    pids: () => [...started.keys()].map((w) => w.process.pid!).filter(Boolean),
    stop: stopAll,
  };
}
