/**
 * Several API processes on one machine (`server.workers` > 1, `WEB_CONCURRENCY`): the process
 * started becomes a node:cluster primary that forks that many `--role=api` processes sharing
 * its listening port (Node 20 has no SO_REUSEPORT; the primary accepts each connection and
 * hands it to the next worker in turn). The workers are ordinary API processes on the shared
 * PostgreSQL and Redis (docs/adr/0005, 0010): nothing here knows about HTTP.
 *
 * The primary keeps them running: a worker that exits unexpectedly is replaced, after a delay
 * that doubles (up to a cap) while replacements keep dying young (before listening, or soon
 * after); after `maxYoungDeaths` young deaths in a row it gives up (`failed`). A worker that
 * exits before every worker has started fails the start; a worker that cannot start says why
 * once, through the primary (`reportStartFailure`), instead of each printing the same error.
 * `stop` asks each worker to stop (onShutdownRequest) and waits for its own drain (in-flight
 * turns stored, sockets closed with 1001), then kills what is left.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { withServerNodeFlags } from './node-flags.ts';

export interface ApiWorkersOptions {
  count: number;
  log: Logger;
  /** Arguments for each worker's entry script (its role is set here: `--role=api`). */
  args: string[];
  /** The workers' entry script; default: this process's own (process.argv[1]). */
  exec?: string;
  /** How long `stop` waits for the workers' own shutdown before killing them. */
  stopTimeoutMs: number;
  /** Delay before replacing a worker that exited; doubles up to `maxMs` while they die young. */
  restartDelay?: { firstMs: number; maxMs: number; youngMs: number };
  /** Young deaths in a row after which the primary gives up (`failed`). */
  maxYoungDeaths?: number;
}

export interface ApiWorkers {
  /** Resolves with the listening port when every worker listens; rejects if one exits first. */
  readonly ready: Promise<number>;
  /** Resolves when replacements keep dying young and the primary has stopped the others. */
  readonly failed: Promise<Error>;
  /** Process ids of the running workers. */
  pids(): number[];
  /** Asks every worker to stop as on `signal` and waits; true when all stopped in time. */
  stop(signal: NodeJS.Signals): Promise<boolean>;
  /** SIGKILL for every worker still running (a forced exit of the primary). */
  kill(): void;
}

const DEFAULT_RESTART = { firstMs: 1_000, maxMs: 30_000, youngMs: 10_000 };
const START_FAILED = 'mezzofy:start-failed';
const SHUTDOWN = 'mezzofy:shutdown';

/**
 * In a worker: runs `handler` when the primary asks it to stop. The primary asks over IPC, not
 * with a signal: a worker may also get the signal itself (a terminal's Ctrl-C reaches the whole
 * process group; systemd signals every process of the unit), and a stop request says which
 * signal the primary got.
 */
export function onShutdownRequest(handler: (signal: NodeJS.Signals) => void): void {
  if (!cluster.isWorker) return;
  process.on('message', (m: { type?: string; signal?: NodeJS.Signals }) => {
    if (m?.type === SHUTDOWN) handler(m.signal ?? 'SIGTERM');
  });
}

/**
 * In a worker: hands the reason it cannot start to the primary, which prints the first one
 * only. False when this process is not a worker (the caller prints it).
 */
export function reportStartFailure(message: string): Promise<boolean> {
  if (!cluster.isWorker || !process.send) return Promise.resolve(false);
  return new Promise((ok) => {
    process.send!({ type: START_FAILED, message }, undefined, {}, (err) => ok(!err));
  });
}

export function startApiWorkers(options: ApiWorkersOptions): ApiWorkers {
  const { count, log } = options;
  const restart = options.restartDelay ?? DEFAULT_RESTART;
  const maxYoungDeaths = options.maxYoungDeaths ?? 5;
  cluster.setupPrimary({
    ...(options.exec ? { exec: options.exec } : {}),
    // The primary's own node flags, and the server's V8 flags if it was started without them.
    execArgv: withServerNodeFlags(process.execArgv, process.env.NODE_OPTIONS),
    args: [...options.args.filter((a) => !a.startsWith('--role=')), '--role=api'],
  });

  const workers = new Map<Worker, { forkedAt: number; listening: boolean }>();
  let listening = 0;
  let stopping = false;
  let isReady = false;
  let delay = restart.firstMs;
  let youngDeaths = 0;
  let firstStartFailure: string | undefined;
  let resolveReady!: (port: number) => void;
  let rejectReady!: (err: Error) => void;
  const ready = new Promise<number>((ok, fail) => {
    resolveReady = ok;
    rejectReady = fail;
  });
  ready.catch(() => {});
  let resolveFailed!: (err: Error) => void;
  const failed = new Promise<Error>((ok) => {
    resolveFailed = ok;
  });

  const fork = () => {
    const worker = cluster.fork({ PROCESS_ROLE: 'api' });
    const state = { forkedAt: Date.now(), listening: false };
    workers.set(worker, state);
    worker.on('message', (m: { type?: string; message?: string }) => {
      // The worker's own line (`error: …`); the primary says it with its own prefix.
      if (m?.type === START_FAILED)
        firstStartFailure ??= String(m.message).replace(/^(error|fatal): /, '');
    });
    worker.once('listening', (address) => {
      state.listening = true;
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
      workers.delete(worker);
      if (stopping) return;
      if (!isReady) {
        void stopAll('SIGTERM');
        rejectReady(
          new Error(
            firstStartFailure ??
              `an API worker exited while starting (${signal ?? `code ${code}`}); see its message above`,
          ),
        );
        return;
      }
      const young = !state.listening || Date.now() - state.forkedAt < restart.youngMs;
      if (!young) {
        delay = restart.firstMs;
        youngDeaths = 0;
      } else if (++youngDeaths >= maxYoungDeaths) {
        const reason = firstStartFailure ?? `exit ${signal ?? `code ${code}`}`;
        log.error(
          { worker_pid: worker.process.pid, code, signal, young_deaths: youngDeaths },
          'API workers keep dying young; giving up',
        );
        void stopAll('SIGTERM').then(() =>
          resolveFailed(new Error(`API workers keep dying young (last: ${reason})`)),
        );
        return;
      }
      const wait = delay;
      delay = Math.min(delay * 2, restart.maxMs);
      firstStartFailure = undefined;
      log.error(
        { worker_pid: worker.process.pid, code, signal, restart_in_ms: wait },
        'API worker exited; starting another',
      );
      setTimeout(() => {
        if (!stopping) fork();
      }, wait).unref();
    });
  };

  const kill = () => {
    for (const w of workers.keys()) if (!w.isDead()) w.process.kill('SIGKILL');
  };

  const stopAll = async (signal: NodeJS.Signals): Promise<boolean> => {
    stopping = true;
    const running = [...workers.keys()];
    const exits = running.map(
      (w) => new Promise<void>((ok) => (w.isDead() ? ok() : w.once('exit', () => ok()))),
    );
    for (const w of running) {
      if (w.isDead()) continue;
      if (w.isConnected())
        w.send({ type: SHUTDOWN, signal }, undefined, (err) => {
          if (err && !w.isDead()) w.process.kill(signal);
        });
      else w.process.kill(signal);
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all(exits).then(() => false),
      new Promise<boolean>((ok) => {
        timer = setTimeout(() => ok(true), options.stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!timedOut) return true;
    const left = running.filter((w) => !w.isDead());
    log.error(
      { worker_pids: left.map((w) => w.process.pid) },
      'API workers did not stop in time; killed',
    );
    kill();
    await Promise.all(exits);
    return false;
  };

  for (let i = 0; i < count; i++) fork();
  return {
    ready,
    failed,
    pids: () => [...workers.keys()].map((w) => w.process.pid!).filter(Boolean),
    stop: stopAll,
    kill,
  };
}
