import 'reflect-metadata';
import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { buildSchema } from 'type-graphql';
import { CustomerResolver } from '../resolvers/customer.resolver.js';
import { InvoiceResolver } from '../resolvers/invoice.resolver.js';

/** The schema file committed beside the code; `npm run schema` rewrites it, a test fails on drift. */
export const SCHEMA_FILE = new URL('../../schema/schema.graphql', import.meta.url);

export function buildGatewaySchema(): Promise<GraphQLSchema> {
  // Arguments are validated by the resolvers themselves (ids, bounds, cursors), not class-validator.
  return buildSchema({ resolvers: [InvoiceResolver, CustomerResolver], validate: false });
}

/** The SDL as committed: sorted, so that moving code around does not show as drift. */
export function printGatewaySchema(schema: GraphQLSchema): string {
  return printSchema(lexicographicSortSchema(schema)) + '\n';
}
