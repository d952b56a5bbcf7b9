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

export function createLoggers(options: LoggerOptions): Loggers {
  const stdout = options.stdout ?? pino.destination({ dest: 1, sync: false });
  const common = {
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
  };
  const files: ReturnType<typeof pino.destination>[] = [];
  const file = (name: string) => {
    const stream = pino.destination({ dest: join(options.dir!, name), mkdir: true, sync: false });
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
  const access = pino(
    { ...common, level: options.level, base: { ...common.base, log: 'access' } },
    accessStream,
  );
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
