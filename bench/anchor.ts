/**
 * The anchor, measured on this machine: the Portkey AI gateway (Node; the npm package
 * `@portkey-ai/gateway`, pinned in bench/anchor/package.json) forwarding the chat server's own
 * model request to the same zero-latency fake model, storing nothing. Issue 3 quotes it at
 * "about 800 requests/s at p50 11 ms on this machine"; the machines a session gets differ in
 * speed (the same code's CPU per turn has doubled from one to the next), so the chat bench
 * runs the anchor next to our server and reports both.
 *
 * Portkey is a bench tool, not part of the product: it is not a workspace and not in `npm ci`.
 * The first run installs it into bench/anchor/node_modules from its lockfile
 * (`npm ci --ignore-scripts`: none of its packages needs an install script to run on Node).
 *
 * The gateway runs as Portkey's own Node entry (`build/start-server.js --headless`,
 * NODE_ENV=production) and is reached on its Anthropic route, `POST /v1/messages`, with
 * `x-portkey-provider: anthropic` and `x-portkey-custom-host` naming the fake (Portkey trusts
 * 127.0.0.1 as a custom host by default). It listens on every interface (its entry takes a port
 * only); the bench targets 127.0.0.1 and stops it when the phase ends.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  type ChildServer,
  cleanChildEnv,
  freePort,
  HOST,
  type LoadSummary,
  log,
  machineSpeedCheckUs,
  processCpuMs,
  runCannon,
  startChild,
  summarize,
  waitHttpOk,
} from './harness.ts';

export const ANCHOR_PACKAGE = '@portkey-ai/gateway';

/** The gateway's Node entry, installed from bench/anchor/package-lock.json when missing. */
export function anchorEntry(root: string): string {
  const dir = join(root, 'bench', 'anchor');
  const entry = join(dir, 'node_modules', ...ANCHOR_PACKAGE.split('/'), 'build', 'start-server.js');
  if (!existsSync(entry)) {
    log(`anchor: installing ${ANCHOR_PACKAGE} into bench/anchor (npm ci, once)`);
    execFileSync('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund'], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 300_000,
    });
    if (!existsSync(entry)) throw new Error(`anchor: ${entry} missing after npm ci`);
  }
  return entry;
}

export interface AnchorLoad {
  connections: number;
  load: LoadSummary;
  /** The gateway process's CPU per 2xx response, in µs. */
  gatewayCpuUsPerRequest: number | undefined;
  /** The fake model's CPU per 2xx response, in µs. */
  fakeCpuUsPerRequest: number | undefined;
}

export interface AnchorRun {
  version: string;
  runs: AnchorLoad[];
  speedCheckUs: { before: number; after: number };
}

/**
 * Starts the gateway, sends `body` (the server's own whole-answer model request) through it to
 * the fake for a warm-up, then for `seconds` at each connection count, and stops it.
 */
export async function measureAnchor(options: {
  root: string;
  env: NodeJS.ProcessEnv;
  stdoutFile: string;
  fake: { url: string; pid: number };
  apiKey: string;
  headers: Record<string, string>;
  body: string;
  connections: number[];
  seconds: number;
  warmupS: number;
}): Promise<AnchorRun> {
  const entry = anchorEntry(options.root);
  const version = (
    JSON.parse(readFileSync(join(options.root, 'bench', 'anchor', 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    }
  ).dependencies[ANCHOR_PACKAGE]!;
  const port = await freePort();
  const gateway: ChildServer = startChild({
    args: [entry, `--port=${port}`, '--headless'],
    env: { ...cleanChildEnv(options.env), NODE_ENV: 'production', NODE_OPTIONS: '' },
    cwd: join(options.root, 'bench', 'anchor'),
    stdoutFile: options.stdoutFile,
  });
  try {
    const base = `http://${HOST}:${port}`;
    await waitHttpOk(`${base}/`, gateway);
    const headers: Record<string, string> = {
      ...options.headers,
      'content-type': 'application/json',
      'x-api-key': options.apiKey,
      'x-portkey-provider': 'anthropic',
      'x-portkey-custom-host': `${options.fake.url}/v1`,
    };
    const cannon = (connections: number, duration: number) =>
      runCannon({
        url: `${base}/v1/messages`,
        method: 'POST',
        headers,
        body: options.body,
        connections,
        duration,
      });
    const speedBefore = machineSpeedCheckUs();
    log(
      `anchor: Portkey ${version}, warm-up ${options.warmupS}s, then ${options.connections.join(' and ')} connections, ${options.seconds}s each`,
    );
    await cannon(Math.max(...options.connections), options.warmupS);
    const pid = gateway.child.pid;
    const runs: AnchorLoad[] = [];
    for (const connections of options.connections) {
      const g0 = processCpuMs(pid);
      const f0 = processCpuMs(options.fake.pid);
      const load = summarize(await cannon(connections, options.seconds));
      const g1 = processCpuMs(pid);
      const f1 = processCpuMs(options.fake.pid);
      const per = (a: number | undefined, b: number | undefined) =>
        a === undefined || b === undefined
          ? undefined
          : Math.round((1000 * (b - a)) / Math.max(1, load.total2xx));
      runs.push({
        connections,
        load,
        gatewayCpuUsPerRequest: per(g0, g1),
        fakeCpuUsPerRequest: per(f0, f1),
      });
    }
    return { version, runs, speedCheckUs: { before: speedBefore, after: machineSpeedCheckUs() } };
  } finally {
    await gateway.stop();
  }
}
