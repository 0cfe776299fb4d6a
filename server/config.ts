import { readFileSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { parseEnv } from 'node:util';
import { z } from 'zod';
import { parseTrustedDocuments, type TrustedDocuments } from './trustedDocuments.js';
import type { AdmissionPolicy } from '../sources/cache/admission.js';
import { DEFAULT_MODEL, RiskModel, type RiskModelParameters } from '../pipelines/riskModel.js';

/**
 * Every setting the gateway reads. Only this module reads `process.env`: the rest of the code
 * receives the frozen, typed slice it needs.
 */
const wholeNumber = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce
    .number({ message: 'must be a whole number' })
    .int('must be a whole number')
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`);
const port = (min: number) => wholeNumber(min, 65535);
const flag = (message: string) => z.enum(['0', '1', 'true', 'false'], { message }).transform((v) => v === '1' || v === 'true');

const settings = z.object({
  /** `production` masks errors and serves the production landing page. */
  NODE_ENV: z.enum(['development', 'production', 'test'], { message: 'must be development, production or test' }).default('development'),
  /** HTTP port of the GraphQL endpoint. */
  PORT: port(0).default(4000),
  /** Interface to listen on. */
  HOST: z.string().min(1, 'must not be empty').default('0.0.0.0'),
  /** Postgres holding `invoices`. Unset: an embedded Postgres under DATA_DIR with demo data. */
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\/\S+$/, 'must be a postgres:// URL').optional(),
  /** Connections per gateway process. */
  DATABASE_POOL_MAX: wholeNumber(1, 1000).default(20),
  /** Server-side limit for one statement; a longer one is an UPSTREAM_TIMEOUT error. */
  DATABASE_STATEMENT_TIMEOUT_MS: wholeNumber(1).default(10_000),
  /** Redis for the shared cache (and pub/sub). Unset: an in-process LRU cache. */
  REDIS_URL: z.string().regex(/^rediss?:\/\/\S+$/, 'must be a redis:// URL').optional(),
  /**
   * Lifetime of a cached row: only a backstop, since the change feed invalidates a row within
   * milliseconds of any UPDATE or DELETE, from any client.
   */
  CACHE_TTL_SECONDS: wholeNumber(1).default(3600),
  /** A cache call slower than this counts as a miss, so a slow Redis never slows a request much. */
  CACHE_TIMEOUT_MS: wholeNumber(1).default(250),
  /** Prefix of every cache key, so that several deployments can share one Redis. */
  CACHE_KEY_PREFIX: z.string().max(100, 'must be at most 100 characters').default('ig:'),
  /** Entries held by the in-process cache when REDIS_URL is unset. */
  CACHE_MAX_ENTRIES: wholeNumber(1).default(100_000),
  /**
   * With REDIS_URL: entries of the in-process tier in front of Redis, kept coherent by the change
   * feed's invalidations over Redis pub/sub. `0`: every read goes to Redis.
   */
  CACHE_LOCAL_MAX_ENTRIES: wholeNumber(0).default(50_000),
  /**
   * Which rows read from Postgres are cached: `second-read` (a row missed twice within
   * CACHE_ADMISSION_WINDOW_SECONDS; one read once costs no cache write) or `always`.
   */
  CACHE_ADMISSION: z.enum(['second-read', 'always'], { message: 'must be second-read or always' }).default('second-read'),
  CACHE_ADMISSION_WINDOW_SECONDS: wholeNumber(1).default(600),
  /**
   * Whole answers of repeated lookups (invoice/customer by id, their columns and parties), kept
   * per viewer scope and dropped by the change feed's invalidations; `0` turns it off, and the
   * compiled runs of the same operations with it (every request through Apollo).
   */
  RESPONSE_CACHE_MAX_ENTRIES: wholeNumber(0).default(20_000),
  /** Where the embedded Postgres (and later the local lake) keep their files. */
  DATA_DIR: z.string().min(1, 'must not be empty').default('.data'),
  /** Port of the embedded Postgres (only used when DATABASE_URL is unset). */
  EMBEDDED_PG_PORT: port(1).default(54329),
  /** Largest estimated cost of one operation (fields times list sizes); see schema/complexity.ts. */
  MAX_QUERY_COMPLEXITY: wholeNumber(1).default(100_000),
  /** pino level. */
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { message: 'must be a pino level (info, debug, ...)' }).default('info'),
  /**
   * Schema introspection (what Apollo Sandbox and codegen read). Default: on, except with
   * NODE_ENV=production, where it is off unless set.
   */
  INTROSPECTION: flag('must be 0 or 1').optional(),
  /** Dev flag: send the original message and stack of unexpected errors to clients. Never in production. */
  EXPOSE_ERRORS: flag('must be 0 or 1').default(false),
  /** The change feed (risk scoring, cache invalidation). `0` for a gateway that must never take the slot. */
  CHANGE_FEED: flag('must be 0 or 1').default(true),
  /** Replication slot of the feed. Default: ig_feed_ and the database's name (slots are per cluster). */
  FEED_SLOT: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a-z, 0-9 and _ (at most 63)').optional(),
  /** Publication of the feed (publications are per database). */
  FEED_PUBLICATION: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a-z, 0-9 and _ (at most 63)').default('invoice_gateway'),
  /** While another gateway holds the slot, how often this one tries to take it over. */
  FEED_RETRY_MS: wholeNumber(100, 60_000).default(1000),
  /** JSON with the risk model's weights, thresholds and version (see README); default the built-in model. */
  RISK_MODEL_FILE: z.string().min(1, 'must not be empty').optional(),
  /** Invoices per backfill batch (whole issuers, so a batch may hold more). */
  RISK_BACKFILL_BATCH: wholeNumber(100, 1_000_000).default(20_000),
  /** How often the feed holder looks for new payments or profiles files to refresh receivers' payment behaviour; 0: never (no such features). */
  RISK_RECEIVER_PAYMENTS_INTERVAL_MS: wholeNumber(0, 86_400_000).default(60_000),
  /** Subscriptions one WebSocket connection may hold at once. */
  MAX_SUBSCRIPTIONS_PER_CONNECTION: wholeNumber(1, 1000).default(20),
  /** Events a subscriber may fall behind; past it, that subscription ends with LIMIT_EXCEEDED. */
  SUBSCRIPTION_QUEUE: wholeNumber(10, 1_000_000).default(10_000),
  /** S3-compatible endpoint of the lake (MinIO, R2, ...). Unset with S3_BUCKET set: AWS S3. */
  S3_ENDPOINT: z.string().regex(/^https?:\/\/\S+$/, 'must be an http(s):// URL').optional(),
  /** Bucket of the lake. Unset (and no S3_ENDPOINT): the lake is a directory under DATA_DIR. */
  S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a bucket name (3-63 of a-z, 0-9, . and -)').optional(),
  /** Region; default AWS_REGION, else us-east-1 (what MinIO expects). */
  S3_REGION: z.string().min(1, 'must not be empty').optional(),
  /** Credentials; default AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else the SDK's own chain. */
  S3_ACCESS_KEY_ID: z.string().min(1, 'must not be empty').optional(),
  S3_SECRET_ACCESS_KEY: z.string().min(1, 'must not be empty').optional(),
  /** Path-style URLs (bucket in the path), as MinIO and most S3-compatible stores need. Default: on with S3_ENDPOINT. */
  S3_FORCE_PATH_STYLE: flag('must be 0 or 1').optional(),
  /** Prefix of every lake key in the bucket, so a bucket can hold other things. */
  LAKE_PREFIX: z.string().regex(/^([A-Za-z0-9._=-]+\/)*$/, 'must be empty or end with / (a-z, 0-9, . _ = -)').default(''),
  /** Local copies of lake objects, for DuckDB: bounded to this many bytes (least recently used go first). */
  LAKE_CACHE_MAX_BYTES: wholeNumber(10 * 2 ** 20).default(2 * 2 ** 30),
  /** How often the gateway exports what changed to the lake; 0 turns the export off (npm run export still works). */
  LAKE_EXPORT_INTERVAL_MS: wholeNumber(0).default(10_000),
  /**
   * Changes to invoices the gateway holding the change feed keeps in memory between exports (about
   * 120 bytes each), so that lake queries group the fresh invoices without reading them from
   * Postgres; past it they are read until the next export. 0: always read.
   */
  LAKE_FRESH_MAX_CHANGES: wholeNumber(0, 10_000_000).default(200_000),
  /** Where the users' datasets are, under LAKE_PREFIX in the lake's bucket or directory. */
  SOURCES_PROFILES_PREFIX: z.string().regex(/^([A-Za-z0-9._=-]+\/)+$/, 'must end with / (a-z, 0-9, . _ = -)').default('sources/customer-profiles/'),
  SOURCES_PAYMENTS_PREFIX: z.string().regex(/^([A-Za-z0-9._=-]+\/)+$/, 'must end with / (a-z, 0-9, . _ = -)').default('sources/payments/'),
  SOURCES_RATINGS_PREFIX: z.string().regex(/^([A-Za-z0-9._=-]+\/)+$/, 'must end with / (a-z, 0-9, . _ = -)').default('sources/credit-ratings/'),
  /** How long a listing of the datasets is reused: a new file is part of answers at most this late. */
  SOURCES_LISTING_TTL_MS: wholeNumber(0, 600_000).default(3_000),
  /** Name the objects in warnings about malformed data (a development aid). */
  SOURCES_WARNING_KEYS: flag('must be 0 or 1').optional(),
  /** Time limit of one analytics query; past it, UPSTREAM_TIMEOUT. */
  ANALYTICS_TIMEOUT_MS: wholeNumber(100).default(30_000),
  /** Postgres connections of analytics queries (each holds one for its snapshot), apart from the lookups' pool. */
  ANALYTICS_POOL_MAX: wholeNumber(1, 1000).default(10),
  /** Customers at or below which invoiceStats asks Postgres's (party, issue_date) index instead of the lake. */
  ANALYTICS_POSTGRES_MAX_CUSTOMERS: wholeNumber(0, 100_000).default(20),
  /** ... and only while those customers have at most this many invoices in the window: past it, their rollups in the lake are cheaper. */
  ANALYTICS_POSTGRES_MAX_INVOICES: wholeNumber(1, 10_000_000).default(5_000),
  /** DuckDB's memory limit, in DuckDB's notation (1GB, 512MB). */
  /** Unset: a quarter of the machine's memory, at least 1GB (defaultDuckMemory). */
  DUCKDB_MEMORY_LIMIT: z.string().regex(/^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/, 'must be a size such as 1GB or 512MB').optional(),
  /** DuckDB's worker threads. */
  DUCKDB_THREADS: wholeNumber(1, 64).default(2),
  /**
   * `required`: every request carries a valid bearer JWT. `off`: no identity, every client is an
   * admin (logged as a warning at start). Default: required with NODE_ENV=production, else off.
   */
  AUTH_MODE: z.enum(['required', 'off'], { message: 'must be required or off' }).optional(),
  /** HS256 key of the tokens (at least 32 bytes); or AUTH_JWKS_URL for RS/ES/PS/EdDSA keys. */
  AUTH_JWT_SECRET: z.string().min(32, 'must be at least 32 characters (HS256 needs a 256-bit key)').optional(),
  /** Key set of an identity provider (fetched, cached, fetched again for an unknown kid). */
  AUTH_JWKS_URL: z.string().regex(/^https?:\/\/\S+$/, 'must be an http(s):// URL').optional(),
  /** Required `iss` of every token (needed with AUTH_MODE=required). */
  AUTH_ISSUER: z.string().min(1, 'must not be empty').optional(),
  /** Required `aud` of every token (needed with AUTH_MODE=required). */
  AUTH_AUDIENCE: z.string().min(1, 'must not be empty').optional(),
  /** Claim holding the role: admin, analyst, customer or writer. */
  AUTH_ROLE_CLAIM: z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters').default('role'),
  /** Claim holding a customer token's customer id. */
  AUTH_CUSTOMER_CLAIM: z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters').default('customer_id'),
  /** Leeway for exp and nbf against clock drift between the issuer and the gateway. */
  AUTH_CLOCK_SKEW_SECONDS: wholeNumber(0, 300).default(30),
  /**
   * How long a fetched key set, and a token verified with it, are trusted before they are
   * checked again: a key the identity provider removes stops passing within about twice this.
   */
  AUTH_KEYS_MAX_AGE_SECONDS: wholeNumber(1, 86_400).default(600),
  /** Requests one client (token subject, or address without auth) may make per window; 0: no limit. */
  RATE_LIMIT_REQUESTS: wholeNumber(0).default(60_000),
  /** Estimated cost (MAX_QUERY_COMPLEXITY's unit) one client may spend per window; 0: no limit. */
  RATE_LIMIT_COST: wholeNumber(0).default(10_000_000),
  /** The window of both budgets. */
  RATE_LIMIT_WINDOW_SECONDS: wholeNumber(1, 86_400).default(60),
  /**
   * Trusted documents: an Apollo persisted-query manifest (or a JSON object of sha256 hash to
   * document). When set, only those operations run, sent by hash or in full.
   */
  TRUSTED_DOCUMENTS_FILE: z.string().min(1, 'must not be empty').optional(),
  /**
   * When set, /metrics answers only `Authorization: Bearer <this>`: its figures (operation names,
   * risk bands, pool use) are for the operator's scraper, not for every client that can reach the port.
   */
  METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
});

export type Settings = z.infer<typeof settings>;

/** Every environment variable the gateway reads (the README and .env.example list them all). */
export const SETTING_NAMES = Object.keys(settings.shape) as (keyof Settings)[];

export interface Config {
  readonly env: Settings['NODE_ENV'];
  readonly http: { readonly port: number; readonly host: string; readonly metricsToken: string | undefined };
  readonly database: {
    /** `undefined`: start the embedded Postgres. */
    readonly url: string | undefined;
    readonly poolMax: number;
    readonly statementTimeoutMs: number;
    readonly embeddedPort: number;
  };
  readonly cache: {
    readonly redisUrl: string | undefined;
    readonly ttlSeconds: number;
    readonly timeoutMs: number;
    readonly maxEntries: number;
    /** The in-process tier in front of Redis; 0: none. */
    readonly localMaxEntries: number;
    readonly admission: AdmissionPolicy;
    readonly admissionWindowSeconds: number;
    readonly keyPrefix: string;
    /** How long an invalidated entry refuses fills: longer than a read that could race it. */
    readonly tombstoneSeconds: number;
  };
  readonly dataDir: string;
  /** Answers kept by the response cache; 0: none. */
  readonly responseCacheMaxEntries: number;
  readonly maxQueryComplexity: number;
  readonly logLevel: Settings['LOG_LEVEL'];
  readonly exposeErrors: boolean;
  readonly introspection: boolean;
  /** Largest request body; a larger one is refused with 413 before it is parsed. */
  readonly maxRequestBytes: number;
  /**
   * Started by `npm start`: the gateway then stops when npm goes, since a process manager's
   * SIGKILL to npm would otherwise leave it, and its embedded Postgres, running with no parent.
   */
  readonly stopWithParent: boolean;
  readonly feed: {
    readonly enabled: boolean;
    /** Undefined: derived from the database's name at start. */
    readonly slot: string | undefined;
    readonly publication: string;
    readonly retryMs: number;
  };
  readonly risk: {
    readonly model: RiskModelParameters;
    readonly backfillBatch: number;
    /** 0: receivers' payment behaviour is never read from the lake. */
    readonly receiverPaymentsIntervalMs: number;
  };
  readonly subscriptions: {
    readonly maxPerConnection: number;
    readonly queue: number;
  };
  readonly lake: {
    /** Undefined: a directory under DATA_DIR. */
    readonly s3: S3Settings | undefined;
    readonly localDir: string;
    readonly prefix: string;
    readonly cacheDir: string;
    readonly cacheMaxBytes: number;
    /** Invoice changes kept in memory between exports (see FreshInvoices); 0: none. */
    readonly freshMaxChanges: number;
    readonly exportIntervalMs: number;
  readonly sources: {
    readonly prefixes: { readonly profiles: string; readonly payments: string; readonly ratings: string };
    readonly listingTtlMs: number;
    readonly warningKeys: boolean;
  };
  };
  readonly auth: AuthSettings;
  readonly rateLimits: {
    /** Per window; 0: no limit. */
    readonly requests: number;
    readonly cost: number;
    readonly windowSeconds: number;
  };
  /** Undefined: any operation may run. */
  readonly trustedDocuments: TrustedDocuments | undefined;
  readonly analytics: {
    readonly timeoutMs: number;
    readonly poolMax: number;
    readonly postgresMaxCustomers: number;
    readonly postgresMaxInvoices: number;
    readonly duckdb: { readonly memoryLimit: string; readonly threads: number; readonly tempDir: string };
  };
}

export interface AuthSettings {
  readonly mode: 'required' | 'off';
  readonly jwtSecret: string | undefined;
  readonly jwksUrl: string | undefined;
  /** Set whenever mode is `required`. */
  readonly issuer: string | undefined;
  readonly audience: string | undefined;
  readonly roleClaim: string;
  readonly customerClaim: string;
  readonly clockSkewSeconds: number;
  readonly keysMaxAgeSeconds: number;
}

export interface S3Settings {
  readonly endpoint: string | undefined;
  readonly bucket: string;
  readonly region: string;
  /** Undefined: the AWS SDK's default credential chain (instance roles, profiles). */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string } | undefined;
  readonly forcePathStyle: boolean;
}

/** 1 MiB: far above any legitimate operation (1,000 ids are about 20 KB). */
export const MAX_REQUEST_BYTES = 1024 * 1024;

/** Settings read from `.env` in the working directory, under the real environment. */
export const ENV_FILE = '.env';

/**
 * The process environment over the settings of `.env` (when present): the real environment
 * wins, as with docker compose. Values are not checked here; loadConfig does that.
 */
export function readEnvironment(env: NodeJS.ProcessEnv = process.env, dir = process.cwd()): { env: NodeJS.ProcessEnv; file?: string } {
  const file = path.join(dir, ENV_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { env };
    throw new ConfigError(`invalid configuration: ${ENV_FILE} cannot be read (${(err as NodeJS.ErrnoException).code})`);
  }
  return { env: { ...parseEnv(text), ...env }, file };
}

/**
 * DuckDB's memory limit when none is set: a quarter of the machine's memory, at least 1GB. DuckDB's
 * own default (80%) ignores the Node heap and Postgres beside it; a fixed 1GB ran out at
 * 10,000,000 invoices in segmentStats and the receiver payments refresh ("failed to pin block").
 */
export function defaultDuckMemory(): string {
  return `${Math.max(1, Math.floor(os.totalmem() / 4 / 2 ** 30))}GB`;
}

/** Thrown for a bad setting; its message is one line naming the key, never the value. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Validates the environment and returns a frozen config, or throws a ConfigError. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable is treated as unset, as docker compose and shells often pass `FOO=`.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = settings.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')} ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  const s = parsed.data;
  const production = s.NODE_ENV === 'production';
  if (s.EXPOSE_ERRORS && production) {
    throw new ConfigError('invalid configuration: EXPOSE_ERRORS must not be set when NODE_ENV is production');
  }
  if (s.S3_ENDPOINT && !s.S3_BUCKET) throw new ConfigError('invalid configuration: S3_BUCKET must be set when S3_ENDPOINT is');
  const accessKeyId = s.S3_ACCESS_KEY_ID ?? nonEmpty(env.AWS_ACCESS_KEY_ID);
  const secretAccessKey = s.S3_SECRET_ACCESS_KEY ?? nonEmpty(env.AWS_SECRET_ACCESS_KEY);
  if (Boolean(accessKeyId) !== Boolean(secretAccessKey)) {
    throw new ConfigError('invalid configuration: S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together');
  }
  if (!s.DATABASE_URL && production) {
    // The embedded Postgres is for trying the gateway; production images do not ship it.
    throw new ConfigError('invalid configuration: DATABASE_URL must be set when NODE_ENV is production');
  }
  const authMode = s.AUTH_MODE ?? (production ? 'required' : 'off');
  if (authMode === 'required' && Boolean(s.AUTH_JWT_SECRET) === Boolean(s.AUTH_JWKS_URL)) {
    throw new ConfigError('invalid configuration: AUTH_MODE=required needs exactly one of AUTH_JWT_SECRET and AUTH_JWKS_URL (or set AUTH_MODE=off)');
  }
  // Without them, a token the same identity provider issued for another API would pass.
  if (authMode === 'required' && (!s.AUTH_ISSUER || !s.AUTH_AUDIENCE)) {
    throw new ConfigError('invalid configuration: AUTH_MODE=required needs AUTH_ISSUER and AUTH_AUDIENCE');
  }
  return deepFreeze({
    env: s.NODE_ENV,
    http: { port: s.PORT, host: s.HOST, metricsToken: s.METRICS_TOKEN },
    database: {
      url: s.DATABASE_URL,
      poolMax: s.DATABASE_POOL_MAX,
      statementTimeoutMs: s.DATABASE_STATEMENT_TIMEOUT_MS,
      embeddedPort: s.EMBEDDED_PG_PORT,
    },
    cache: {
      redisUrl: s.REDIS_URL,
      ttlSeconds: s.CACHE_TTL_SECONDS,
      timeoutMs: s.CACHE_TIMEOUT_MS,
      maxEntries: s.CACHE_MAX_ENTRIES,
      localMaxEntries: s.CACHE_LOCAL_MAX_ENTRIES,
      admission: s.CACHE_ADMISSION,
      admissionWindowSeconds: s.CACHE_ADMISSION_WINDOW_SECONDS,
      keyPrefix: s.CACHE_KEY_PREFIX,
      // A read's fill comes at most a statement timeout and two cache timeouts after its miss.
      tombstoneSeconds: Math.ceil((s.DATABASE_STATEMENT_TIMEOUT_MS + 2 * s.CACHE_TIMEOUT_MS) / 1000) + 30,
    },
    dataDir: s.DATA_DIR,
    responseCacheMaxEntries: s.RESPONSE_CACHE_MAX_ENTRIES,
    maxQueryComplexity: s.MAX_QUERY_COMPLEXITY,
    logLevel: s.LOG_LEVEL,
    exposeErrors: s.EXPOSE_ERRORS,
    introspection: s.INTROSPECTION ?? !production,
    maxRequestBytes: MAX_REQUEST_BYTES,
    stopWithParent: env.npm_lifecycle_event === 'start',
    feed: { enabled: s.CHANGE_FEED, slot: s.FEED_SLOT, publication: s.FEED_PUBLICATION, retryMs: s.FEED_RETRY_MS },
    risk: { model: s.RISK_MODEL_FILE ? readJsonSetting('RISK_MODEL_FILE', s.RISK_MODEL_FILE, (json) => RiskModel.fromJson(json).parameters) : DEFAULT_MODEL, backfillBatch: s.RISK_BACKFILL_BATCH, receiverPaymentsIntervalMs: s.RISK_RECEIVER_PAYMENTS_INTERVAL_MS },
    subscriptions: { maxPerConnection: s.MAX_SUBSCRIPTIONS_PER_CONNECTION, queue: s.SUBSCRIPTION_QUEUE },
    lake: {
      s3: s.S3_BUCKET
        ? {
            endpoint: s.S3_ENDPOINT,
            bucket: s.S3_BUCKET,
            region: s.S3_REGION ?? nonEmpty(env.AWS_REGION) ?? 'us-east-1',
            credentials: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : undefined,
            forcePathStyle: s.S3_FORCE_PATH_STYLE ?? Boolean(s.S3_ENDPOINT),
          }
        : undefined,
      localDir: path.join(s.DATA_DIR, 'lake'),
      prefix: s.LAKE_PREFIX,
      cacheDir: path.join(s.DATA_DIR, 'lake-cache'),
      cacheMaxBytes: s.LAKE_CACHE_MAX_BYTES,
      exportIntervalMs: s.LAKE_EXPORT_INTERVAL_MS,
      freshMaxChanges: s.LAKE_FRESH_MAX_CHANGES,
      sources: {
        prefixes: { profiles: s.SOURCES_PROFILES_PREFIX, payments: s.SOURCES_PAYMENTS_PREFIX, ratings: s.SOURCES_RATINGS_PREFIX },
        listingTtlMs: s.SOURCES_LISTING_TTL_MS,
        warningKeys: s.SOURCES_WARNING_KEYS ?? false,
      },
    },
    auth: {
      mode: authMode,
      jwtSecret: s.AUTH_JWT_SECRET,
      jwksUrl: s.AUTH_JWKS_URL,
      issuer: s.AUTH_ISSUER,
      audience: s.AUTH_AUDIENCE,
      roleClaim: s.AUTH_ROLE_CLAIM,
      customerClaim: s.AUTH_CUSTOMER_CLAIM,
      clockSkewSeconds: s.AUTH_CLOCK_SKEW_SECONDS,
      keysMaxAgeSeconds: s.AUTH_KEYS_MAX_AGE_SECONDS,
    },
    rateLimits: { requests: s.RATE_LIMIT_REQUESTS, cost: s.RATE_LIMIT_COST, windowSeconds: s.RATE_LIMIT_WINDOW_SECONDS },
    trustedDocuments: s.TRUSTED_DOCUMENTS_FILE ? readJsonSetting('TRUSTED_DOCUMENTS_FILE', s.TRUSTED_DOCUMENTS_FILE, parseTrustedDocuments) : undefined,
    analytics: {
      timeoutMs: s.ANALYTICS_TIMEOUT_MS,
      poolMax: s.ANALYTICS_POOL_MAX,
      postgresMaxCustomers: s.ANALYTICS_POSTGRES_MAX_CUSTOMERS,
      postgresMaxInvoices: s.ANALYTICS_POSTGRES_MAX_INVOICES,
      duckdb: { memoryLimit: s.DUCKDB_MEMORY_LIMIT ?? defaultDuckMemory(), threads: s.DUCKDB_THREADS, tempDir: path.join(s.DATA_DIR, 'duckdb-tmp') },
    },
  });
}

const nonEmpty = (value: string | undefined) => (value === undefined || value === '' ? undefined : value);

/** A JSON file named by a setting, parsed and checked at start like every other setting. */
function readJsonSetting<T>(setting: string, file: string, parse: (json: unknown) => T): T {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    const reason = err instanceof SyntaxError ? 'is not valid JSON' : `cannot be read (${(err as NodeJS.ErrnoException).code})`;
    throw new ConfigError(`invalid configuration: ${setting} ${reason}`);
  }
  try {
    return parse(json);
  } catch (err) {
    throw new ConfigError(`invalid configuration: ${setting} ${(err as Error).message}`);
  }
}

function deepFreeze<T extends object>(value: T): T {
  for (const child of Object.values(value)) {
    if (child && typeof child === 'object') deepFreeze(child);
  }
  return Object.freeze(value);
}
