import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';

export interface LoggerOptions {
  readonly level: string;
  readonly name?: string;
  /** Human-readable lines (pino-pretty) instead of JSON: for a developer's terminal only. */
  readonly pretty?: boolean;
}

/** Structured logs on stdout (JSON, or pino-pretty lines on request); credentials are redacted. */
export function createLogger({ level, name = 'invoice-gateway', pretty = false }: LoggerOptions): Logger {
  return pino({
    name,
    level,
    redact: { paths: ['*.password', '*.connectionString', 'config.database.url', 'config.cache.redisUrl', '*.secretAccessKey', 'config.lake.s3.credentials', 'config.auth.jwtSecret'], censor: '[redacted]' },
    // pino-pretty is a dev dependency: a production install without it keeps JSON.
    transport: pretty && hasPinoPretty() ? { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } : undefined,
  });
}

function hasPinoPretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

export type { Logger };
