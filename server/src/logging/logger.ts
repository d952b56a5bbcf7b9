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
  /** Flushes file streams (used at shutdown). */
  flush(): void;
}

export interface LoggerOptions {
  level: string;
  dir?: string | undefined;
  /** Where stdout-bound lines go (tests capture them). */
  stdout?: DestinationStream;
}

/**
 * Lines are written in blocks of at least this many bytes, or every FLUSH_MS, rather than
 * one write per line: under load, a write per request costs more than formatting the line.
 */
const BLOCK_BYTES = 4096;
const FLUSH_MS = 100;

type Destination = ReturnType<typeof pino.destination>;

function destination(dest: number | string, buffered: Destination[]): Destination {
  const stream = pino.destination({ dest, mkdir: true, sync: false, minLength: BLOCK_BYTES });
  buffered.push(stream);
  return stream;
}

export function createLoggers(options: LoggerOptions): Loggers {
  const buffered: Destination[] = [];
  const stdout = options.stdout ?? destination(1, buffered);
  const common = {
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
  };
  const files: ReturnType<typeof pino.destination>[] = [];
  const file = (name: string) => {
    const stream = destination(join(options.dir!, name), buffered);
    files.push(stream);
    return stream;
  };
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
    // SonicBoom's buffer length (`_len`) has no public getter; flushing an empty one would
    // issue an empty write.
    setInterval(() => {
      for (const d of buffered) if ((d as unknown as { _len: number })._len > 0) d.flush();
    }, FLUSH_MS).unref();
  }
  return {
    app,
    access,
    flush() {
      for (const f of files) {
        try {
          f.flushSync();
        } catch {
          // not open yet: nothing buffered to flush
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
