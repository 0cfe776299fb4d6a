import { averageCents, twoDecimals } from '../core/money.js';
import type { StatsGroup } from '../sources/postgres/statsStore.js';

/** A StatsRow as resolvers hand it to GraphQL. */
export interface StatsRowRecord {
  readonly customerId: string;
  readonly month: string | null;
  readonly invoiceCount: number;
  readonly totalUsd: string;
  readonly avgUsd: string;
  readonly minUsd: string;
  readonly maxUsd: string;
}

export function statsRowOf(g: StatsGroup): StatsRowRecord {
  const count = Number(g.invoices);
  return {
    customerId: String(g.customerId),
    month: g.month,
    invoiceCount: count,
    totalUsd: twoDecimals(g.totalUsd),
    avgUsd: averageCents(g.totalUsd, BigInt(count)),
    minUsd: twoDecimals(g.minUsd),
    maxUsd: twoDecimals(g.maxUsd),
  };
}
