import { Arg, Ctx, FieldResolver, ID, Int, Query, Resolver, Root } from 'type-graphql';
import { perId, perPageItem } from '../schema/complexity.js';
import { InvoiceConnection } from '../schema/connection.type.js';
import { Customer } from '../schema/customer.type.js';
import { DEFAULT_PAGE_SIZE, MAX_IDS, MAX_PAGE_SIZE } from '../schema/limits.js';
import type { Context } from './context.js';
import { badUserInput } from '../core/errors.js';
import type { CustomerRecord } from '../sources/postgres/customerStore.js';
import type { PartyRole } from '../sources/postgres/invoiceStore.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { parseCustomerId, parseIdList } from './ids.js';
import { loadAll } from './loadAll.js';
import { invoicePageScope } from './access.js';

@Resolver(() => Customer)
export class CustomerResolver {
  @Query(() => Customer, { nullable: true, description: 'One customer; null when no customer has this id.' })
  customer(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<CustomerRecord | null> {
    return ctx.loaders.customer.load(parseCustomerId(id));
  }

  @Query(() => [Customer], {
    nullable: 'items',
    description: `Customers in the order of ids, null where absent. At most ${MAX_IDS} ids.`,
    complexity: perId,
  })
  customers(@Arg('ids', () => [ID]) ids: string[], @Ctx() ctx: Context): Promise<(CustomerRecord | null)[]> {
    return loadAll(ctx.loaders.customer, parseIdList(ids, parseCustomerId));
  }

  @FieldResolver(() => InvoiceConnection, {
    description: `Invoices this customer issued, newest first. first: 1 to ${MAX_PAGE_SIZE}.`,
    complexity: perPageItem,
  })
  invoicesIssued(
    @Root() customer: CustomerRecord,
    @Ctx() ctx: Context,
    @Arg('first', () => Int, { defaultValue: DEFAULT_PAGE_SIZE }) first: number,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ): Promise<InvoiceConnection> {
    return invoicePage(ctx, customer, 'issuer', first, after);
  }

  @FieldResolver(() => InvoiceConnection, {
    description: `Invoices this customer received, newest first. first: 1 to ${MAX_PAGE_SIZE}.`,
    complexity: perPageItem,
  })
  invoicesReceived(
    @Root() customer: CustomerRecord,
    @Ctx() ctx: Context,
    @Arg('first', () => Int, { defaultValue: DEFAULT_PAGE_SIZE }) first: number,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ): Promise<InvoiceConnection> {
    return invoicePage(ctx, customer, 'receiver', first, after);
  }
}

async function invoicePage(
  ctx: Context,
  customer: CustomerRecord,
  role: PartyRole,
  first: number,
  after: string | null | undefined,
): Promise<InvoiceConnection> {
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) {
    throw badUserInput(`first must be between 1 and ${MAX_PAGE_SIZE}, got ${first}`);
  }
  const position = after == null ? null : decodeCursor(after);
  // One row more than asked tells whether there is a next page without a count.
  // A customer looking at a counterparty sees only the invoices between the two of them.
  const counterpartyId = invoicePageScope(ctx.viewer, customer.id);
  const rows = await ctx.loaders.invoicePage.load({ customerId: customer.id, role, counterpartyId, limit: first + 1, after: position });
  const page = rows.slice(0, first);
  const edges = page.map((node) => ({ cursor: encodeCursor(node), node }));
  return {
    edges,
    nodes: page,
    pageInfo: {
      hasNextPage: rows.length > first,
      hasPreviousPage: false,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges.at(-1)?.cursor ?? null,
    },
  };
}
