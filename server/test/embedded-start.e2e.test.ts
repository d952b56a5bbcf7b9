/** `npm start` on a fresh machine: embedded PGlite, first admin, one process per DATA_DIR. */
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, type ServerProcess, startServer, waitFor } from './helpers/processes.ts';

const started: ServerProcess[] = [];
afterAll(() => {
  for (const p of started) p.child.kill('SIGKILL');
});

describe('embedded start', () => {
  it('starts with nothing configured, shows a generated admin password once, and guards its DATA_DIR', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'mz-e2e-'));
    const logDir = join(dataDir, 'logs');
    const port = await freePort();
    const first = startServer({
      DATA_DIR: dataDir,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_DIR: logDir,
    });
    started.push(first);
    await waitFor(() => first.stdout().includes('listening on'), 45_000, 'first server to listen');
    expect(first.stdout()).toContain(`http://127.0.0.1:${port}`);

    const password = /Password \(shown once[^:]*\): (\S+)/.exec(first.stdout())?.[1];
    expect(password).toBeTruthy();
    const base = `http://127.0.0.1:${port}`;
    const login = await fetch(`${base}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'admin@mezzofy.local', password }),
    });
    expect(login.status).toBe(200);
    const health = await (await fetch(`${base}/health`)).json();
    expect(health).toMatchObject({ status: 'ok', checks: { database: { engine: 'pglite' } } });

    // The signing key was generated into DATA_DIR with mode 0600.
    expect(existsSync(join(dataDir, 'jwt-secret'))).toBe(true);

    // A second process on the same DATA_DIR refuses to start, with a clear message.
    const second = startServer({
      DATA_DIR: dataDir,
      PORT: String(await freePort()),
      HOST: '127.0.0.1',
    });
    started.push(second);
    expect(await second.exited).toBe(1);
    expect(second.stderr()).toMatch(/DATA_DIR .* is in use by another server process \(pid \d+\)/);

    // SIGTERM: /health turns 503 while draining, then the process exits cleanly, releasing the lock.
    first.child.kill('SIGTERM');
    await waitFor(
      async () => (await fetch(`${base}/health`).catch(() => undefined))?.status === 503,
      900,
      '/health to answer 503 while draining',
    );
    expect(await first.exited).toBe(0);
    expect(existsSync(join(dataDir, 'server.lock'))).toBe(false);

    // The generated password reached the terminal only, never a log file.
    for (const file of readdirSync(logDir))
      expect(readFileSync(join(logDir, file), 'utf8')).not.toContain(password!);

    // Restart on the same data: no second admin, the password still works.
    const again = startServer({ DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1' });
    started.push(again);
    await waitFor(
      () => again.stdout().includes('listening on'),
      45_000,
      'restarted server to listen',
    );
    expect(again.stdout()).not.toContain('First admin created');
    const relogin = await fetch(`${base}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'admin@mezzofy.local', password }),
    });
    expect(relogin.status).toBe(200);
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
  }, 120_000);
});
