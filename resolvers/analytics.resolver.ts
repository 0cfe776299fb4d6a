import { Arg, Args, Ctx, FieldResolver, Int, Query, Resolver, Root } from 'type-graphql';
import { Kind, type FragmentDefinitionNode, type SelectionSetNode } from 'graphql';
import type { ComplexityEstimatorArgs } from 'graphql-query-complexity';
import { badUserInput } from '../core/errors.js';
import { Customer } from '../schema/customer.type.js';
import { CustomerRole, Granularity, InvoiceStats, InvoiceStatsArgs, StatsRow } from '../schema/stats.type.js';
import type { CustomerRecord } from '../sources/postgres/customerStore.js';
import type { StatsGroup, StatsPosition, StatsQuery } from '../sources/postgres/statsStore.js';
import type { Context } from './context.js';
import { statsCustomerScope } from './access.js';
import { parseCustomerId, parseIdList } from './ids.js';
import { statsRowOf, type StatsRowRecord } from './statsRows.js';

export const MAX_STATS_MONTHS = 120;
export const MAX_STATS_PAGE = 10_000;

/**
 * Rows of their own columns are computed in one query, so a page of them costs its length, not
 * its length times its fields (10,000 rows stay well under MAX_QUERY_COMPLEXITY). A row's object
 * fields (its `customer`, and whatever that selects) are work per row: their cost is multiplied
 * by the page's length, as any list's is (a page of 10,000 customers' invoices was charged as
 * one), while the columns, `pageInfo`, `freshness` and `warnings` are counted once.
 */
export const analyticsCost = ({ args, childComplexity, node, context }: ComplexityEstimatorArgs) => {
  const first = typeof args.first === 'number' ? Math.max(args.first, 0) : 100;
  const fragments = (context?.fragments ?? new Map()) as ReadonlyMap<string, FragmentDefinitionNode>;
  // What the estimator counted for the rows' object fields: all it counted but the fields known
  // to cost 1 each. A field it may have left out (@include, @skip) is not among those, so the
  // estimate can only err towards charging more per row.
  const perRow = Math.max(childComplexity - countedOnce(node.selectionSet, fragments), 0);
  return 10 + first + childComplexity + perRow * (first - 1);
};

/**
 * Fields of a page that cost 1 each and do not repeat per row: everything but object fields
 * under `rows` (and what they select), here or through fragments; `__typename` (Apollo Client
 * adds it everywhere) counts 1, as the estimator prices it. Selections with directives count 0
 * (whether they run depends on variables).
 */
function countedOnce(set: SelectionSetNode | undefined, fragments: ReadonlyMap<string, FragmentDefinitionNode>, inRows = false, depth = 0): number {
  if (!set || depth > 50) return 0;
  let count = 0;
  for (const selection of set.selections) {
    if (selection.directives?.length) continue;
    if (selection.kind === Kind.FIELD) {
      if (inRows && selection.selectionSet) continue;
      count += 1 + (inRows ? 0 : countedOnce(selection.selectionSet, fragments, selection.name.value === 'rows', depth + 1));
    } else {
      const inner = selection.kind === Kind.INLINE_FRAGMENT ? selection.selectionSet : fragments.get(selection.name.value)?.selectionSet;
      count += countedOnce(inner, fragments, inRows, depth + 1);
    }
  }
  return count;
}

/** Customer.stats: up to `months` rows a customer by month, one by total; the customers list multiplies it. */
export const customerStatsCost = ({ args, childComplexity }: ComplexityEstimatorArgs) =>
  10 + childComplexity * (args.granularity === Granularity.TOTAL ? 1 : typeof args.months === 'number' ? Math.max(args.months, 1) : MAX_STATS_MONTHS);

@Resolver(() => StatsRow)
export class AnalyticsResolver {
  @Query(() => InvoiceStats, {
    description:
      'Invoices of the last n months grouped by customer (and month): exact and fresh, from the Parquet lake plus the rows it lacks read live from Postgres.',
    complexity: analyticsCost,
  })
  async invoiceStats(@Args(() => InvoiceStatsArgs) args: InvoiceStatsArgs, @Ctx() ctx: Context): Promise<InvoiceStats> {
    const months = parseMonths(args.months);
    parseFirst(args.first);
    const requested = args.customerIds == null ? null : [...new Set(parseIdList(args.customerIds, parseCustomerId))].map(Number);
    const customerIds = statsCustomerScope(ctx.viewer, requested);
    const role = args.groupBy === CustomerRole.ISSUER ? 'issuer' : 'receiver';
    const query: StatsQuery = {
      role,
      months,
      customerIds,
      granularity: args.granularity,
      orderBy: args.orderBy,
      limit: args.first + 1,
      after: args.after == null ? null : decodeStatsCursor(args.after, args.orderBy, args.granularity),
    };
    const answer = await ctx.analytics.invoiceStats(query);
    (ctx.operation.stats ??= []).push(answer.kept ? { basis: answer.kept, asOf: answer.asOf } : null);
    const page = answer.groups.slice(0, args.first);
    const rows = page.map(statsRowOf);
    // Rows carry no cursor: only the page's ends are encoded (a 10,000-row page paid for each).
    const cursorOf = (g: StatsGroup | undefined) => (g ? encodeStatsCursor(query, g) : null);
    return {
      rows: rows as unknown as StatsRow[],
      pageInfo: { hasNextPage: answer.groups.length > args.first, hasPreviousPage: false, startCursor: cursorOf(page[0]), endCursor: cursorOf(page.at(-1)) },
      freshness: { lakeRows: answer.lakeRows, liveRows: answer.liveRows, asOf: answer.asOf, lakeAsOf: answer.lakeAsOf, engine: answer.engine },
      warnings: answer.warnings,
    };
  }

  @FieldResolver(() => Customer, { nullable: true })
  customer(@Root() row: StatsRowRecord, @Ctx() ctx: Context): Promise<CustomerRecord | null> {
    return ctx.loaders.customer.load(row.customerId);
  }
}

@Resolver(() => Customer)
export class CustomerStatsResolver {
  @FieldResolver(() => [StatsRow], {
    description: 'This customer\u2019s invoices of the last n months (as invoiceStats); one analytics query for all customers of a request.',
    complexity: customerStatsCost,
  })
  stats(
    @Root() customer: CustomerRecord,
    @Ctx() ctx: Context,
    @Arg('months', () => Int) months: number,
    @Arg('role', () => CustomerRole) role: CustomerRole,
    @Arg('granularity', () => Granularity, { defaultValue: Granularity.TOTAL }) granularity: Granularity,
  ): Promise<StatsRowRecord[]> {
    parseMonths(months);
    return ctx.loaders.customerStats.load({ customerId: customer.id, months, role: role === CustomerRole.ISSUER ? 'issuer' : 'receiver', granularity });
  }
}

export function parseMonths(months: number): number {
  if (!Number.isInteger(months) || months < 1 || months > MAX_STATS_MONTHS) throw badUserInput(`months must be between 1 and ${MAX_STATS_MONTHS}, got ${months}`);
  return months;
}

export function parseFirst(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_STATS_PAGE) throw badUserInput(`first must be between 1 and ${MAX_STATS_PAGE}, got ${first}`);
  return first;
}

const MAX_INT = 2 ** 31 - 1;

/** Opaque: the order and granularity it belongs to, and the last row's position. */
function encodeStatsCursor(query: StatsQuery, g: StatsGroup): string {
  const sortValue = query.orderBy === 'TOTAL_DESC' ? g.totalUsd : query.orderBy === 'COUNT_DESC' ? g.invoices : null;
  return Buffer.from(JSON.stringify([query.orderBy, query.granularity, sortValue, g.customerId, g.month])).toString('base64url');
}

function decodeStatsCursor(cursor: string, orderBy: string, granularity: string): StatsPosition {
  try {
    if (/^[A-Za-z0-9_-]{1,300}$/.test(cursor)) {
      const [o, gr, value, customer, month] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
      const valueOk = value === null ? orderBy === 'CUSTOMER_ASC' : typeof value === 'string' && /^-?\d{1,30}(\.\d{1,2})?$/.test(value);
      // A real month and a customer id Postgres's int takes: the engines compare them as such.
      const monthOk = month === null ? granularity === 'TOTAL' : typeof month === 'string' && /^(?!0000)\d{4}-(0[1-9]|1[0-2])$/.test(month);
      const customerOk = Number.isInteger(customer) && (customer as number) >= 0 && (customer as number) <= MAX_INT;
      if (o === orderBy && gr === granularity && valueOk && customerOk && monthOk) {
        return { sortValue: value as string | null, customerId: customer as number, month: month as string | null };
      }
    }
  } catch {
    // fall through to the error
  }
  throw badUserInput('after is not a cursor of this ordering and granularity returned by this API');
}

