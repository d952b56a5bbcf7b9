/**
 * The V8 flags every server process runs with (docs/adr/0011). V8 sizes its heap when the
 * process starts, so they belong on node's command line: the start script, the Dockerfile,
 * compose and the systemd units pass them (server/src/infra/node-flags.test.ts checks each),
 * the benches start the server with them, and a cluster primary gives any that it lacks to its
 * API workers.
 *
 * `--max-semi-space-size=64`: semi-spaces of up to 64 MB instead of V8's 16 MB (the young
 * generation is three of them: two semi-spaces and the new large-object space).
 * A chat turn allocates much short-lived garbage (request and answer JSON, SDK and driver
 * objects); with the default, scavenges took 10.3–10.6 % of an API process's CPU samples at 50
 * users, with 64 MB 4.2–5.8 % (32 MB: 7.6 %, 128 MB: 3.3 %).
 */
export const SERVER_NODE_FLAGS = ['--max-semi-space-size=64'] as const;

/** A flag's name: `--max-semi-space-size` of `--max_semi_space_size=16`. */
const flagName = (flag: string) => flag.split('=')[0]!.replace(/_/g, '-');

/**
 * `execArgv` with each server flag appended that neither it nor `nodeOptions` (NODE_OPTIONS,
 * which a flag on the command line would override) already sets. So a primary started without
 * the flag but with a value in NODE_OPTIONS keeps that value for its workers too. (The shipped
 * start commands put the flag on the command line, where NODE_OPTIONS cannot change it: an
 * operator changes the value there.)
 */
export function withServerNodeFlags(execArgv: readonly string[], nodeOptions = ''): string[] {
  const given = new Set(
    [...execArgv, ...nodeOptions.split(/\s+/).map((a) => a.replace(/^["']|["']$/g, ''))]
      .filter((a) => a.startsWith('--'))
      .map(flagName),
  );
  return [...execArgv, ...SERVER_NODE_FLAGS.filter((f) => !given.has(flagName(f)))];
}
