import { parseArgs } from 'node:util';
import { errorMessage } from '../../core/errors.js';
import { ConfigError, loadConfig, readEnvironment } from '../config.js';
import { createLogger } from '../logger.js';
import { createDatabase } from '../../sources/postgres/database.js';
import { defaultSlotName, dropFeed, feedUnavailableReason, slotLag, slotState } from '../../sources/postgres/replication.js';

const usage = 'usage: npm run feed -- --status | --drop';

/**
 * `npm run feed -- --status` shows the slot and its lag; `--drop` removes the slot (ending any
 * gateway streaming from it) and the publication, for uninstalling the gateway or recovering
 * from an abandoned slot that keeps WAL. A gateway started later creates both again and
 * backfills what happened meanwhile.
 */
async function main() {
  const { values } = parseArgs({ options: { status: { type: 'boolean', default: false }, drop: { type: 'boolean', default: false } } });
  if (values.status === values.drop) throw new ConfigError(usage);
  const config = loadConfig(readEnvironment().env);
  if (!config.database.url) throw new ConfigError('DATABASE_URL must be set for npm run feed (the embedded Postgres runs only inside the gateway)');
  const logger = createLogger({ level: 'warn', name: 'feed' });
  const db = createDatabase({ url: config.database.url, poolMax: 2, statementTimeoutMs: 0 }, logger);
  try {
    const slot = config.feed.slot ?? (await defaultSlotName(db));
    if (values.drop) {
      const dropped = await dropFeed(db, slot, config.feed.publication);
      console.log(
        `${dropped.slot ? `dropped replication slot ${slot}` : `no replication slot ${slot}`}; ` +
          `${dropped.publication ? `dropped publication ${config.feed.publication}` : `no publication ${config.feed.publication}`}`,
      );
      return;
    }
    const [state, lag, unavailable] = await Promise.all([slotState(db, slot), slotLag(db, slot), feedUnavailableReason(db)]);
    console.log(
      JSON.stringify(
        {
          slot,
          publication: config.feed.publication,
          exists: state !== undefined,
          active: state?.active ?? false,
          activePid: state?.activePid ?? null,
          lagBytes: lag?.bytes ?? null,
          retainedWalBytes: lag?.retainedBytes ?? null,
          unavailable: unavailable ?? null,
        },
        null,
        2,
      ),
    );
  } finally {
    await db.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : `feed failed: ${errorMessage(err)}`);
  process.exit(1);
});
