/**
 * pino JSON logs to stdout and, when logging.dir is set, to app.log, error.log and
 * access.log (the seed's names). Secrets are redacted by path and never logged by design:
 * request bodies and headers are not logged at all.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Paths pino blanks out, should a secret ever reach a log call. */
export const REDACT_PATHS = [
  'password',
  '*.password',
  '*.new_password',
  '*.current_password',
  'token',
  '*.token',
  '*.access_token',
  '*.refresh_token',
  '*.jwt_secret',
  '*.api_key',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
];

export interface Loggers {
  app: Logger;
  access: Logger;
  /** Writes out everything logged so far, synchronously (used at shutdown). */
  flush(): void;
}

export interface LoggerOptions {
  level: string;
  dir?: string | undefined;
  /** Where stdout-bound lines go (tests capture them). */
  stdout?: DestinationStream;
}

/**
 * Lines are gathered into blocks of BLOCK_BYTES, written at most FLUSH_MS after they were
 * logged, rather than one write per line: under load, a write per request costs more than
 * formatting the line.
 */
const BLOCK_BYTES = 16 * 1024;
const FLUSH_MS = 100;

type Destination = ReturnType<typeof pino.destination>;

/** SonicBoom's buffered length (`_len`), which has no public getter. */
const pending = (dest: Destination) => (dest as unknown as { _len: number })._len;

/**
 * The block buffer in front of a SonicBoom destination. SonicBoom can buffer by itself
 * (`minLength`), but it measures its whole pending buffer (`Buffer.byteLength`, which flattens
 * the concatenated string) on every line: several µs a line under load. Here a line costs a
 * push, and SonicBoom is handed one string per block, which it writes at once (async): its
 * `minLength` is the block size, so it holds a partial block until asked to write it.
 */
class LineBlocks {
  #parts: string[] = [];
  #bytes = 0;
  readonly #dest: Destination;

  constructor(dest: Destination) {
    this.#dest = dest;
  }

  write(line: string): boolean {
    this.#parts.push(line);
    this.#bytes += Buffer.byteLength(line);
    if (this.#bytes >= BLOCK_BYTES) this.#handOver();
    return true;
  }

  #handOver(): void {
    if (this.#bytes === 0) return;
    const block = this.#parts.length === 1 ? this.#parts[0]! : this.#parts.join('');
    this.#parts = [];
    this.#bytes = 0;
    this.#dest.write(block);
  }

  /** Everything logged so far goes to the file (async): the periodic flush. */
  drain(): void {
    this.#handOver();
    if (pending(this.#dest) > 0) this.#dest.flush();
  }

  /** pino's logger.flush(). */
  flush(cb?: (err?: Error) => void): void {
    this.#handOver();
    this.#dest.flush(cb);
  }

  /** Everything logged so far is written before this returns (shutdown, exit). */
  flushSync(): void {
    // What SonicBoom holds first, so the partial block stays below its minLength and is
    // buffered (not sent off asynchronously) when handed over, then written here.
    this.#dest.flushSync();
    if (this.#bytes === 0) return;
    this.#handOver();
    this.#dest.flushSync();
  }
}

/** Every block buffer of the process, written out synchronously when the process exits. */
const allBlocks = new Set<LineBlocks>();
let exitHookInstalled = false;

function writeOutOnExit(): void {
  for (const blocks of allBlocks) {
    try {
      blocks.flushSync();
    } catch {
      // not open yet, or the destination is gone: nothing more can be done at exit
    }
  }
}

function destination(dest: number | string, buffered: LineBlocks[]): LineBlocks {
  // maxWrite: SonicBoom joins blocks handed over while it is writing, up to this much.
  const sonic = pino.destination({
    dest,
    mkdir: true,
    sync: false,
    minLength: BLOCK_BYTES,
    maxWrite: 4 * BLOCK_BYTES,
  });
  const blocks = new LineBlocks(sonic);
  buffered.push(blocks);
  allBlocks.add(blocks);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', writeOutOnExit);
  }
  return blocks;
}

export function createLoggers(options: LoggerOptions): Loggers {
  const buffered: LineBlocks[] = [];
  const stdout = options.stdout ?? destination(1, buffered);
  const common = {
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
  };
  const file = (name: string) => destination(join(options.dir!, name), buffered);
  let appStream: DestinationStream = stdout;
  let accessStream: DestinationStream = stdout;
  if (options.dir) {
    mkdirSync(options.dir, { recursive: true });
    appStream = pino.multistream([
      { stream: stdout, level: 'trace' },
      { stream: file('app.log'), level: 'trace' },
      { stream: file('error.log'), level: 'error' },
    ]);
    accessStream = pino.multistream([
      { stream: stdout, level: 'trace' },
      { stream: file('access.log'), level: 'trace' },
    ]);
  }
  const app = pino({ ...common, level: options.level }, appStream);
  // Access lines are built by access-log.ts from a fixed set of fields (request id, method,
  // redacted URL, status, time, IP, user id): never headers, bodies or tokens. Redaction
  // could never match them, and pino's redaction costs ~20 µs a line on the hot path.
  const access = pino(
    { level: options.level, base: { ...common.base, log: 'access' } },
    accessStream,
  );
  if (buffered.length) {
    setInterval(() => {
      for (const b of buffered) b.drain();
    }, FLUSH_MS).unref();
  }
  return {
    app,
    access,
    flush() {
      for (const b of buffered) {
        try {
          b.flushSync();
        } catch {
          // not open yet: what it holds is written once it is (or lost at exit, as before)
        }
      }
    },
  };
}

type LogMethod = (...args: unknown[]) => void;

/**
 * Fastify's per-request logger (request.log), made only when something logs through it. A
 * pino child costs several µs per request (bindings, level methods, redaction), and almost
 * no request logs through it: the access log has its own logger. Same bindings, same lines.
 */
class LazyChildLogger {
  #real: Logger | undefined;
  readonly #parent: Logger;
  readonly #bindings: Record<string, unknown>;
  readonly #options: Record<string, unknown>;

  constructor(parent: Logger, bindings: Record<string, unknown>, options: Record<string, unknown>) {
    this.#parent = parent;
    this.#bindings = bindings;
    this.#options = options;
  }

  get #logger(): Logger {
    if (!this.#real) this.#real = this.#parent.child(this.#bindings, this.#options);
    return this.#real;
  }

  get level(): string {
    return this.#real?.level ?? (this.#options.level as string | undefined) ?? this.#parent.level;
  }
  set level(level: string) {
    this.#logger.level = level;
  }
  fatal(...args: unknown[]) {
    (this.#logger.fatal as LogMethod)(...args);
  }
  error(...args: unknown[]) {
    (this.#logger.error as LogMethod)(...args);
  }
  warn(...args: unknown[]) {
    (this.#logger.warn as LogMethod)(...args);
  }
  info(...args: unknown[]) {
    (this.#logger.info as LogMethod)(...args);
  }
  debug(...args: unknown[]) {
    (this.#logger.debug as LogMethod)(...args);
  }
  trace(...args: unknown[]) {
    (this.#logger.trace as LogMethod)(...args);
  }
  silent(...args: unknown[]) {
    (this.#logger.silent as LogMethod)(...args);
  }
  child(bindings: Record<string, unknown>, options?: Record<string, unknown>) {
    return this.#logger.child(bindings, options);
  }
}

/** For Fastify's `childLoggerFactory`: request loggers created on first use. */
export function lazyChildLogger<L>(logger: L, bindings: object, options: object): L {
  return new LazyChildLogger(
    logger as Logger,
    bindings as Record<string, unknown>,
    options as Record<string, unknown>,
  ) as unknown as L;
}
