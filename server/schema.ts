import 'reflect-metadata';
import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { buildSchema } from 'type-graphql';
import { CustomerResolver } from '../resolvers/customer.resolver.js';
import { InvoiceResolver } from '../resolvers/invoice.resolver.js';
import { RiskResolver } from '../resolvers/risk.resolver.js';
import { AnalyticsResolver, CustomerStatsResolver } from '../resolvers/analytics.resolver.js';
import { applyAccessRules } from '../resolvers/access.js';
import { CustomerSourcesResolver, InvoicePaymentsResolver, SegmentStatsResolver } from '../resolvers/joined.resolver.js';

/** The schema file committed beside the code; `npm run schema` rewrites it, a test fails on drift. */
export const SCHEMA_FILE = new URL('../../schema/schema.graphql', import.meta.url);

/**
 * type-graphql insists on a pubSub once a schema has a subscription, even though every
 * subscription here brings its own `subscribe` (resolvers/riskSubscription.ts).
 */
const UNUSED_PUBSUB = {
  publish: () => undefined,
  subscribe: () => {
    throw new Error('subscriptions here bring their own subscribe function');
  },
};

/** The schema with every access rule of resolvers/access.ts applied. */
export async function buildGatewaySchema(): Promise<GraphQLSchema> {
  // Arguments are validated by the resolvers themselves (ids, bounds, cursors), not class-validator.
  return applyAccessRules(await buildSchema({ resolvers: [InvoiceResolver, CustomerResolver, RiskResolver, AnalyticsResolver, CustomerStatsResolver, CustomerSourcesResolver, InvoicePaymentsResolver, SegmentStatsResolver], validate: false, pubSub: UNUSED_PUBSUB }));
}

/** The SDL as committed: sorted, so that moving code around does not show as drift. */
export function printGatewaySchema(schema: GraphQLSchema): string {
  return printSchema(lexicographicSortSchema(schema)) + '\n';
}
