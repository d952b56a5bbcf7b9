import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createLoggers, lazyChildLogger } from './logger.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  return { lines, stream: { write: (l: string) => void lines.push(JSON.parse(l)) } };
}

describe('lazyChildLogger (request.log)', () => {
  it('logs with the parent’s and its own bindings, and redaction, on first use only', () => {
    const out = capture();
    const { app } = createLoggers({ level: 'info', stdout: out.stream });
    let children = 0;
    const parent = Object.assign(Object.create(app), {
      child: (...args: Parameters<typeof app.child>) => {
        children += 1;
        return app.child(...args);
      },
    }) as typeof app;
    const log = lazyChildLogger(parent, { reqId: 'r-1' }, {});
    expect(children).toBe(0);
    expect(log.level).toBe('info');
    log.debug('not written');
    log.error({ password: 'hunter2-secret' }, 'boom');
    log.info('second');
    expect(children).toBe(1);
    expect(out.lines).toHaveLength(2);
    expect(out.lines[0]).toMatchObject({ reqId: 'r-1', msg: 'boom', password: '[redacted]' });
    expect(out.lines[1]).toMatchObject({ reqId: 'r-1', msg: 'second' });
  });

  it('takes a level from the options', () => {
    const out = capture();
    const { app } = createLoggers({ level: 'info', stdout: out.stream });
    const log = lazyChildLogger(app, { reqId: 'r-2' }, { level: 'warn' });
    expect(log.level).toBe('warn');
    log.info('dropped');
    log.warn('kept');
    expect(out.lines.map((l) => l.msg)).toEqual(['kept']);
  });
});

describe('file and stdout logs (written in blocks)', () => {
  const noStdout = { write: () => true };

  const opened = () => new Promise((r) => setTimeout(r, 100)); // files open asynchronously

  it('keeps every line, in order, across blocks; flush() writes the files out', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mz-blocks-'));
    const loggers = createLoggers({ level: 'info', dir, stdout: noStdout });
    await opened();
    for (let i = 0; i < 500; i++) loggers.access.info({ i, pad: 'x'.repeat(80) });
    loggers.app.error({ i: -1 }, 'boom');
    loggers.flush();
    const lines = readFileSync(join(dir, 'access.log'), 'utf8').trim().split('\n');
    expect(lines.map((l) => JSON.parse(l).i)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(readFileSync(join(dir, 'error.log'), 'utf8')).toContain('boom');
  });

  it('writes a quiet trickle out within the flush interval, without flush()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mz-blocks-'));
    const loggers = createLoggers({ level: 'info', dir, stdout: noStdout });
    loggers.app.info('just one line');
    await new Promise((r) => setTimeout(r, 400));
    expect(readFileSync(join(dir, 'app.log'), 'utf8')).toContain('just one line');
  });

  it('writes buffered lines out when the process exits without flushing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mz-blocks-'));
    const logger = fileURLToPath(new URL('./logger.ts', import.meta.url));
    const script = `
      const { createLoggers } = await import(${JSON.stringify(logger)});
      const loggers = createLoggers({ level: 'info', dir: ${JSON.stringify(dir)} });
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 3; i++) loggers.access.info({ i });
      loggers.app.info('last words');
      process.exit(0);
    `;
    const child = spawnSync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { encoding: 'utf8', timeout: 20_000 },
    );
    expect(child.status).toBe(0);
    const stdout = child.stdout.trim().split('\n');
    expect(stdout).toHaveLength(4);
    expect(stdout.at(-1)).toContain('last words');
    expect(readFileSync(join(dir, 'access.log'), 'utf8').trim().split('\n')).toHaveLength(3);
    expect(readFileSync(join(dir, 'app.log'), 'utf8')).toContain('last words');
  });
});
