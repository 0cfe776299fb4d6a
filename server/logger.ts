import { pino, type Logger } from 'pino';

/** Structured JSON logs on stdout; credentials in connection strings are redacted. */
export function createLogger(level: string, name = 'invoice-gateway'): Logger {
  return pino({
    name,
    level,
    redact: { paths: ['*.password', '*.connectionString', 'config.database.url', 'config.cache.redisUrl'], censor: '[redacted]' },
  });
}

export type { Logger };
