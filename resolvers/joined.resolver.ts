import { createHash } from 'node:crypto';
import { Args, Ctx, FieldResolver, Query, Resolver, Root } from 'type-graphql';
import { badUserInput } from '../core/errors.js';
import { formatCents, toCents } from '../core/money.js';
import { Customer } from '../schema/customer.type.js';
import { Invoice } from '../schema/invoice.type.js';
import { CreditRating, CustomerProfile, Payment, PaymentStatus, SegmentStats, SegmentStatsArgs } from '../schema/joined.type.js';
import { DecimalScalar, DateTimeScalar } from '../schema/scalars.js';
import { DEFAULT_PAYMENT_TERMS_DAYS, type PaymentRecord, type ProfileRecord, type RatingRecord, type SegmentQuery } from '../sources/lake/joined.js';
import type { CustomerRecord } from '../sources/postgres/customerStore.js';
import type { InvoiceRecord } from '../sources/postgres/invoiceStore.js';
import { analyticsCost, parseFirst, parseMonths } from './analytics.resolver.js';
import type { Context } from './context.js';
import { segmentScope } from './access.js';
import { parseCustomerId, parseIdList } from './ids.js';

const MAX_FILTER_VALUES = 1000;

const parseJson = (text: string | null): unknown => (text === null ? null : JSON.parse(text));

@Resolver(() => Customer)
export class CustomerSourcesResolver {
  @FieldResolver(() => CustomerProfile, { nullable: true, description: 'From the CRM export in the lake; null when no file describes this customer.' })
  async profile(@Root() customer: CustomerRecord, @Ctx() ctx: Context): Promise<CustomerProfile | null> {
    const p = await ctx.loaders.profile.load(customer.id);
    return p && profileOf(p);
  }

  @FieldResolver(() => CreditRating, { nullable: true, description: 'The current rating: the snapshot with the latest asOf.' })
  async rating(@Root() customer: CustomerRecord, @Ctx() ctx: Context): Promise<RatingRecord | null> {
    return (await ctx.loaders.ratings.load(customer.id))[0] ?? null;
  }

  @FieldResolver(() => [CreditRating], { description: 'Every rating snapshot, newest first.' })
  ratingHistory(@Root() customer: CustomerRecord, @Ctx() ctx: Context): Promise<RatingRecord[]> {
    return ctx.loaders.ratings.load(customer.id);
  }
}

@Resolver(() => Invoice)
export class InvoicePaymentsResolver {
  @FieldResolver(() => [Payment], { description: 'Its distinct payment events, oldest first.' })
  payments(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<PaymentRecord[]> {
    return ctx.loaders.payments.load(invoice.id);
  }

  @FieldResolver(() => DecimalScalar)
  async paidUsd(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<string> {
    return formatCents(paidCents(await ctx.loaders.payments.load(invoice.id)));
  }

  @FieldResolver(() => DecimalScalar, { description: 'What remains unpaid; never below zero.' })
  async outstandingUsd(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<string> {
    const rest = toCents(invoice.amountUsd) - paidCents(await ctx.loaders.payments.load(invoice.id));
    return formatCents(rest > 0n ? rest : 0n);
  }

  @FieldResolver(() => DateTimeScalar, { description: `The issue date plus the receiver\u2019s payment terms (${DEFAULT_PAYMENT_TERMS_DAYS} days when unknown).` })
  async dueDate(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<string> {
    const terms = (await ctx.loaders.profile.load(invoice.receiverId))?.paymentTermsDays ?? DEFAULT_PAYMENT_TERMS_DAYS;
    const due = new Date(invoice.issueDate);
    due.setUTCDate(due.getUTCDate() + terms);
    // Whole days added to the date and time; the issue date's microseconds are kept as they were.
    return invoice.issueDate.replace(/^.{19}/, due.toISOString().slice(0, 19));
  }

  @FieldResolver(() => PaymentStatus)
  async paymentStatus(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<PaymentStatus> {
    const paid = paidCents(await ctx.loaders.payments.load(invoice.id));
    const amount = toCents(invoice.amountUsd);
    if (paid === 0n) return PaymentStatus.UNPAID;
    if (paid < amount) return PaymentStatus.PARTIAL;
    return paid === amount ? PaymentStatus.PAID : PaymentStatus.OVERPAID;
  }
}

@Resolver()
export class SegmentStatsResolver {
  @Query(() => SegmentStats, {
    description: 'Invoices of the last n months joined with profiles, ratings and payments from the lake, grouped by the dimensions asked for.',
    complexity: analyticsCost,
  })
  async segmentStats(@Args(() => SegmentStatsArgs) args: SegmentStatsArgs, @Ctx() ctx: Context): Promise<SegmentStats> {
    parseMonths(args.months);
    parseFirst(args.first);
    const dimensions = [...new Set(args.dimensions)];
    const filter = args.filter ?? {};
    for (const [name, values] of Object.entries(filter)) {
      if (Array.isArray(values) && values.length > MAX_FILTER_VALUES) throw badUserInput(`filter.${name} takes at most ${MAX_FILTER_VALUES} values`);
    }
    const partyId = segmentScope(ctx.viewer, dimensions, filter);
    const ids = (list: string[] | null | undefined) => (list == null ? null : parseIdList(list, parseCustomerId).map(Number));
    const shape = { dimensions, months: args.months, filter, orderBy: args.orderBy };
    const fingerprint = createHash('sha256').update(JSON.stringify(shape)).digest('base64url').slice(0, 12);
    const offset = args.after == null ? 0 : decodeOffset(args.after, fingerprint);
    const query: SegmentQuery = {
      ...shape,
      filter: { ...filter, issuerIds: ids(filter.issuerIds), receiverIds: ids(filter.receiverIds), partyIds: partyId === null ? null : [partyId] },
      offset,
      limit: args.first + 1,
    };
    const answer = await ctx.joined.segmentStats(query);
    const page = answer.groups.slice(0, args.first);
    const cursor = (i: number) => Buffer.from(JSON.stringify([fingerprint, offset + i + 1])).toString('base64url');
    return {
      rows: page,
      pageInfo: {
        hasNextPage: answer.groups.length > args.first,
        hasPreviousPage: offset > 0,
        startCursor: page.length > 0 ? cursor(0) : null,
        endCursor: page.length > 0 ? cursor(page.length - 1) : null,
      },
      // Of the invoices this query kept (its filter, a customer's scope), not of the whole window.
      freshness: { engine: answer.set.engine, lakeRows: answer.invoices - answer.liveInvoices, liveRows: answer.liveInvoices, asOf: answer.set.window.asOf, lakeAsOf: answer.set.lakeAsOf },
      warnings: answer.warnings,
    };
  }
}

function decodeOffset(cursor: string, fingerprint: string): number {
  try {
    if (/^[A-Za-z0-9_-]{1,100}$/.test(cursor)) {
      const [f, offset] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
      if (f === fingerprint && Number.isSafeInteger(offset) && (offset as number) >= 0) return offset as number;
    }
  } catch {
    // fall through to the error
  }
  throw badUserInput('after is not a cursor of this query returned by this API');
}

function paidCents(payments: readonly PaymentRecord[]): bigint {
  return payments.reduce((sum, p) => sum + toCents(p.amountUsd), 0n);
}

function profileOf(p: ProfileRecord): CustomerProfile {
  return {
    legalName: p.legalName,
    industry: p.industry,
    country: p.country,
    address: parseJson(p.address),
    tags: p.tags,
    contacts: parseJson(p.contacts),
    employees: p.employees,
    paymentTermsDays: p.paymentTermsDays,
    updatedAt: p.updatedAt,
    raw: parseJson(p.raw),
  };
}
