import { GraphQLSafeInt } from 'graphql-scalars';
import { ArgsType, Field, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { PageInfo } from './connection.type.js';
import { DateTimeScalar, DecimalScalar } from './scalars.js';

export enum CustomerRole {
  ISSUER = 'ISSUER',
  RECEIVER = 'RECEIVER',
}
registerEnumType(CustomerRole, { name: 'CustomerRole', description: 'Group invoices by the customer who issued them, or who received them.' });

export enum Granularity {
  MONTH = 'MONTH',
  TOTAL = 'TOTAL',
}
registerEnumType(Granularity, { name: 'Granularity', description: 'A row per customer and month, or per customer over the whole window.' });

export enum StatsOrder {
  TOTAL_DESC = 'TOTAL_DESC',
  COUNT_DESC = 'COUNT_DESC',
  CUSTOMER_ASC = 'CUSTOMER_ASC',
}
registerEnumType(StatsOrder, { name: 'StatsOrder', description: 'Ties are broken by customer id, then month.' });

// simpleResolvers: fields are read as properties (inline, on the compiled path). type-graphql's
// resolver per field cost a 10,000-row page about 9 of 35 ms in the gateway (by hand, at 10M).
@ObjectType({ description: 'A customer\u2019s invoices in a month (or in the whole window).', simpleResolvers: true })
export class StatsRow {
  @Field(() => ID)
  customerId!: string;

  @Field(() => String, { nullable: true, description: 'YYYY-MM (UTC); null for Granularity TOTAL.' })
  month!: string | null;

  @Field(() => GraphQLSafeInt)
  invoiceCount!: number;

  @Field(() => DecimalScalar)
  totalUsd!: string;

  @Field(() => DecimalScalar, { description: 'Rounded half away from zero to cents, as Postgres round() does.' })
  avgUsd!: string;

  @Field(() => DecimalScalar)
  minUsd!: string;

  @Field(() => DecimalScalar)
  maxUsd!: string;
}

@ObjectType({ description: 'How an analytics answer was made. It equals the same aggregate in Postgres at asOf.', simpleResolvers: true })
export class Freshness {
  // Counts of a window's invoices pass 2^31 in a large lake: SafeInt goes to 2^53 - 1, Int stops at 2^31 - 1.
  @Field(() => GraphQLSafeInt, { description: 'Invoices counted from the lake\u2019s Parquet files.' })
  lakeRows!: number;

  @Field(() => GraphQLSafeInt, { description: 'Invoices read live from Postgres (not in the lake yet, or changed since).' })
  liveRows!: number;

  @Field(() => DateTimeScalar, { description: 'The Postgres snapshot the answer is exact for.' })
  asOf!: string;

  @Field(() => DateTimeScalar, { nullable: true, description: 'When the lake files used were exported; null when the lake was not used.' })
  lakeAsOf!: string | null;

  @Field(() => String, { description: 'LAKE (DuckDB over Parquet plus live rows) or POSTGRES.' })
  engine!: string;
}

@ObjectType({ description: 'Something about the answer worth knowing: a fallback, or data that had to be skipped.', simpleResolvers: true })
export class Warning {
  @Field(() => String)
  code!: string;

  @Field(() => String)
  message!: string;
}

@ObjectType({ simpleResolvers: true })
export class InvoiceStats {
  @Field(() => [StatsRow])
  rows!: StatsRow[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;

  @Field(() => Freshness)
  freshness!: Freshness;

  @Field(() => [Warning])
  warnings!: Warning[];
}

@ArgsType()
export class InvoiceStatsArgs {
  @Field(() => CustomerRole)
  groupBy!: CustomerRole;

  @Field(() => Int, { description: 'The last n calendar months in UTC, this one included: 1 to 120.' })
  months!: number;

  @Field(() => [ID], { nullable: true, description: 'Only these customers (at most 1000).' })
  customerIds?: string[] | null;

  @Field(() => Granularity, { defaultValue: Granularity.MONTH })
  granularity!: Granularity;

  @Field(() => StatsOrder, { defaultValue: StatsOrder.TOTAL_DESC })
  orderBy!: StatsOrder;

  @Field(() => Int, { defaultValue: 100, description: 'Rows per page: 1 to 10000.' })
  first!: number;

  @Field(() => String, { nullable: true })
  after?: string | null;
}
