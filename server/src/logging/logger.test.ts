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
