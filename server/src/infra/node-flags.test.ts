/**
 * The server's V8 flags (docs/adr/0011) only act when given on node's command line, so every
 * way the repository starts a server process must pass them; a primary adds them for its API
 * workers when it was started without them, and leaves an operator's own values alone.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SERVER_NODE_FLAGS, withServerNodeFlags } from './node-flags.ts';

const SERVER = resolve(import.meta.dirname, '../..');
const read = (path: string) => readFileSync(resolve(SERVER, path), 'utf8');

/** Each command line that starts src/main.ts: its program and node's own arguments. */
function startCommands(): { where: string; program: string; nodeArgs: string[] }[] {
  const found: { where: string; program: string; nodeArgs: string[] }[] = [];
  const add = (where: string, argv: string[]) => {
    const script = argv.findIndex((a) => a.endsWith('main.ts'));
    found.push({ where, program: argv[0]!, nodeArgs: argv.slice(1, script) });
  };
  const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
  add('server/package.json start', pkg.scripts.start!.split(/\s+/));
  for (const file of ['deploy/Dockerfile', 'deploy/docker-compose.yml']) {
    for (const line of read(file).split('\n')) {
      // A JSON command array (Dockerfile CMD, a compose `command:`, or its next line).
      const json = /(\[\s*"[^"]*".*src\/main\.ts.*\])/.exec(line)?.[1];
      if (json) add(`${file}: ${line.trim()}`, JSON.parse(json) as string[]);
    }
  }
  for (const unit of ['api', 'worker', 'scheduler']) {
    const file = `deploy/systemd/mezzofy-${unit}.service`;
    const exec = /^ExecStart=(.*)$/m.exec(read(file))?.[1];
    if (exec) add(file, exec.split(/\s+/));
  }
  return found;
}

describe('server node flags', () => {
  it('every start command of the repository passes them to node', () => {
    const commands = startCommands();
    // The start script, the Dockerfile, three compose services and three systemd units.
    expect(commands).toHaveLength(8);
    for (const { where, program, nodeArgs } of commands) {
      expect(program, where).toMatch(/(^|\/)node$/);
      for (const flag of SERVER_NODE_FLAGS) expect(nodeArgs, where).toContain(flag);
    }
  });

  it('are appended when missing, and not when given by name (either spelling) or NODE_OPTIONS', () => {
    expect(withServerNodeFlags(['--inspect'])).toEqual(['--inspect', ...SERVER_NODE_FLAGS]);
    expect(withServerNodeFlags(['--max-semi-space-size=128'])).toEqual([
      '--max-semi-space-size=128',
    ]);
    expect(withServerNodeFlags(['--max_semi_space_size=8'])).toEqual(['--max_semi_space_size=8']);
    expect(withServerNodeFlags([], '--enable-source-maps --max-semi-space-size=32')).toEqual([]);
    expect(withServerNodeFlags([], '--enable-source-maps')).toEqual([...SERVER_NODE_FLAGS]);
    expect(withServerNodeFlags([], '"--max-semi-space-size=32"')).toEqual([]);
  });
});
