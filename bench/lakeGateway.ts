import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { freePorts } from '../test/fixtures/network.js';
import type { ChildServer } from './childServer.js';

/*
 * The gateway as the lake benchmarks run it: in its own process (this file, started with
 * SERVE_FLAG, as npm start runs the gateway: same heap flags, NODE_ENV=production), so its RSS
 * is its own, with the change feed on its own slot and lake.exportNow() on a control port, since
 * exports are timed on demand (LAKE_EXPORT_INTERVAL_MS=0).
 */

const SERVE_FLAG = '--serve-lake-gateway';

/** Slots are per cluster: one per benchmark and database. */
export function feedSlot(bench: string, url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.slice(1)).toLowerCase().replace(/[^a-z0-9_]/g, '_');
  return `ig_feed_${bench}_${name}`.slice(0, 63);
}

/** Ends the slot's consumer and drops the slot (an idle slot would keep WAL for the whole cluster). */
export async function dropSlot(sql: pg.Pool, slot: string): Promise<void> {
  await sql.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, [slot]);
  for (let i = 0; i < 50; i++) {
    const { rows } = await sql.query<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
    if (rows.length === 0) return;
    if (!rows[0]!.active) {
      await sql.query(`SELECT pg_drop_replication_slot($1)`, [slot]);
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`replication slot ${slot} is still in use`);
}

export type ExportOutcome = { kind: 'exported'; generation: number; rows: number; rewritten: number; appended: number; seconds: number } | { kind: string };

export interface LakeGateway {
  readonly url: string;
  /** lake.exportNow() in the gateway; retried while the feed is behind or another export runs. */
  exportNow(full: boolean): Promise<ExportOutcome>;
  /** VmHWM: the highest RSS of the gateway process so far. */
  peakRss(): number;
  exited(): string | undefined;
  stop(): Promise<void>;
}

export interface LakeGatewayOptions {
  readonly databaseUrl: string;
  /** The change feed's slot: a new one starts the lake afresh (generation 0). */
  readonly slot: string;
  /** DATA_DIR: the lake (DATA_DIR/lake), its cache and DuckDB's spill files. */
  readonly dataDir: string;
  /** More settings for this benchmark; they win over the defaults here. */
  readonly env?: Record<string, string>;
  /** V8's old-space limit in MB; 256 (what npm start and the Dockerfile pass) unless a benchmark says otherwise. */
  readonly heapMb?: number;
}

export async function startLakeGateway(options: LakeGatewayOptions): Promise<LakeGateway> {
  // Imported here, not at the top: it installs signal handlers, which the gateway's process must not have.
  const { startChildServer } = await import('./childServer.js');
  const [port, controlPort] = await freePorts(2);
  const url = `http://127.0.0.1:${port}/graphql`;
  const control = `http://127.0.0.1:${controlPort}`;
  const server: ChildServer = await startChildServer({
    name: 'gateway',
    // As npm start and the Dockerfile run it.
    args: [`--max-old-space-size=${options.heapMb ?? 256}`, '--max-semi-space-size=8', fileURLToPath(import.meta.url), SERVE_FLAG],
    env: {
      NODE_ENV: 'production',
      // One client measuring throughput: no tokens, no per-client budgets.
      AUTH_MODE: 'off',
      RATE_LIMIT_REQUESTS: '0',
      RATE_LIMIT_COST: '0',
      // BENCH_GATEWAY_LOG_LEVEL=debug: each SQL and DuckDB statement with its milliseconds, in the report's log.
      LOG_LEVEL: process.env.BENCH_GATEWAY_LOG_LEVEL ?? 'info',
      HOST: '127.0.0.1',
      PORT: String(port),
      DATABASE_URL: options.databaseUrl,
      DATA_DIR: options.dataDir,
      CHANGE_FEED: '1',
      FEED_SLOT: options.slot,
      LAKE_EXPORT_INTERVAL_MS: '0',
      BENCH_CONTROL_PORT: String(controlPort),
      ...options.env,
    },
    readyTimeoutMs: 300_000,
    ready: async () => (await fetch(`${control}/ready`, { signal: AbortSignal.timeout(2000) })).ok,
  });
  const exportOnce = async (full: boolean): Promise<ExportOutcome> => {
    const started = await fetch(`${control}/export?full=${full ? 1 : 0}`, { method: 'POST' });
    if (!started.ok) throw new Error(`starting the export failed: HTTP ${started.status} ${await started.text()}`);
    for (;;) {
      await new Promise((r) => setTimeout(r, 200));
      if (server.exited()) throw new Error(`the gateway exited (${server.exited()}) during the export`);
      const state = (await (await fetch(`${control}/export`)).json()) as { state: string; outcome?: ExportOutcome; error?: string };
      if (state.state === 'failed') throw new Error(`lake export failed: ${state.error}`);
      if (state.state === 'done') return state.outcome!;
    }
  };
  return {
    url,
    async exportNow(full) {
      for (let attempt = 1; ; attempt++) {
        const outcome = await exportOnce(full);
        if (!['busy', 'feed behind'].includes(outcome.kind) || attempt === 5) return outcome;
        console.error(`export: ${outcome.kind}; trying again`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    },
    peakRss: () => vmHwm(server.pid) || server.peakRss(),
    exited: () => server.exited(),
    stop: () => server.stop(),
  };
}

function vmHwm(pid: number): number {
  try {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * The lake needs the feed: its slot created (which also sets up the risk scorer), and the risk
 * backfill of the seeded invoices finished, so that it does not run under the measurements.
 */
export async function waitForFeed(gateway: LakeGateway, sql: pg.Pool): Promise<void> {
  const started = performance.now();
  for (;;) {
    if (gateway.exited()) throw new Error(`the gateway exited (${gateway.exited()})`);
    const ready = (await (await fetch(new URL('/readyz', gateway.url))).json()) as { feed: { state: string; reason?: string } };
    if (ready.feed.state === 'streaming') break;
    if (ready.feed.state === 'off') throw new Error(`the gateway's change feed is off (${ready.feed.reason}); the lake needs it`);
    if (performance.now() - started > 600_000) throw new Error(`the change feed is not streaming after 10 minutes (${ready.feed.state})`);
    await new Promise((r) => setTimeout(r, 250));
  }
  let logged = 0;
  for (;;) {
    if (gateway.exited()) throw new Error(`the gateway exited (${gateway.exited()})`);
    const { rows } = await sql.query<{ n: string }>(`SELECT coalesce(sum(invoices), 0)::text AS n FROM risk_backfill_issuers`);
    if (Number(rows[0]!.n) === 0) break;
    if (performance.now() - logged > 10_000) {
      logged = performance.now();
      console.error(`waiting for the gateway's risk backfill: ${rows[0]!.n} invoices to score (once per new feed slot, for invoices never scored)`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  console.error(`feed streaming and risk backfill done after ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

/**
 * In the gateway's process: the gateway as server/main.ts starts it (config from the
 * environment, migrations, startGateway), and a control port for lake.exportNow().
 */
async function serveGateway(): Promise<void> {
  const [{ loadConfig }, { createLogger }, { startGateway }, { createDatabase }, { migrate }] = await Promise.all([
    import('../server/config.js'),
    import('../server/logger.js'),
    import('../server/app.js'),
    import('../sources/postgres/database.js'),
    import('../sources/postgres/migrate.js'),
  ]);
  const config = loadConfig(process.env);
  const logger = createLogger({ level: config.logLevel });
  const databaseUrl = config.database.url!;
  const setup = createDatabase({ url: databaseUrl, poolMax: 1, statementTimeoutMs: 0 }, logger);
  try {
    await migrate(setup, logger);
  } finally {
    await setup.close();
  }
  const gateway = await startGateway(config, logger, databaseUrl);

  let job: { state: 'running' | 'done' | 'failed'; outcome?: unknown; error?: string } | undefined;
  const control = http.createServer((req, res) => {
    const send = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const target = new URL(req.url ?? '/', 'http://control');
    if (target.pathname === '/ready') return send(200, { ready: true });
    if (target.pathname !== '/export') return send(404, { error: 'not found' });
    if (req.method !== 'POST') return send(200, job ?? { state: 'none' });
    if (job?.state === 'running') return send(409, { error: 'an export is running' });
    const current: NonNullable<typeof job> = { state: 'running' };
    job = current;
    gateway.lake.exportNow(undefined, { full: target.searchParams.get('full') === '1' }).then(
      (outcome) => Object.assign(current, { state: 'done', outcome }),
      (err: unknown) => Object.assign(current, { state: 'failed', error: (err as Error).message }),
    );
    return send(202, current);
  });
  await new Promise<void>((resolve) => control.listen(Number(process.env.BENCH_CONTROL_PORT), '127.0.0.1', resolve));
  logger.info({ control: (control.address() as AddressInfo).port }, 'bench control port listening');

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    control.close();
    await gateway.stop().catch((err: unknown) => logger.error({ err }, 'stopping the gateway failed'));
    logger.flush(() => process.exit(0));
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void stop());
}


if (process.argv[2] === SERVE_FLAG && process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  serveGateway().catch((err: unknown) => {
    console.error(`gateway failed to start: ${(err as Error).message}`);
    process.exit(1);
  });
}
