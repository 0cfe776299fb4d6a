import { ArgsType, Field, Float, ID, InputType, Int, ObjectType, registerEnumType } from 'type-graphql';
import { GraphQLJSON, GraphQLSafeInt } from 'graphql-scalars';
import { PageInfo } from './connection.type.js';
import { DateTimeScalar, DecimalScalar } from './scalars.js';
import { Freshness, Warning } from './stats.type.js';

@ObjectType({ description: 'A customer\u2019s profile from the CRM export (sources/customer-profiles/*.jsonl): the latest updatedAt wins.', simpleResolvers: true })
export class CustomerProfile {
  @Field(() => String, { nullable: true })
  legalName!: string | null;

  @Field(() => String, { nullable: true })
  industry!: string | null;

  @Field(() => String, { nullable: true, description: 'ISO 3166 alpha-2; null when the file\u2019s value is not one.' })
  country!: string | null;

  @Field(() => GraphQLJSON, { nullable: true, description: 'The nested address object, as given.' })
  address!: unknown;

  @Field(() => [String], { nullable: true })
  tags!: string[] | null;

  @Field(() => GraphQLJSON, { nullable: true, description: 'The contacts array, as given.' })
  contacts!: unknown;

  @Field(() => Int, { nullable: true, description: 'Read from a number or a text such as "1,200".' })
  employees!: number | null;

  @Field(() => Int, { nullable: true })
  paymentTermsDays!: number | null;

  @Field(() => DateTimeScalar, { nullable: true })
  updatedAt!: string | null;

  @Field(() => GraphQLJSON, { description: 'The whole JSON object of the winning line.' })
  raw!: unknown;
}

@ObjectType({ description: 'A credit rating snapshot (sources/credit-ratings/*.parquet).', simpleResolvers: true })
export class CreditRating {
  @Field(() => String, { nullable: true, description: 'AAA to D; null when the file\u2019s value is none of them.' })
  rating!: string | null;

  @Field(() => Float, { nullable: true })
  score!: number | null;

  @Field(() => DateTimeScalar)
  asOf!: string;
}

@ObjectType({ description: 'A payment event (sources/payments/date=YYYY-MM-DD/*.jsonl), counted once per paymentId.', simpleResolvers: true })
export class Payment {
  @Field(() => ID)
  paymentId!: string;

  @Field(() => DateTimeScalar)
  paidAt!: string;

  @Field(() => DecimalScalar)
  amountUsd!: string;

  @Field(() => String, { nullable: true })
  method!: string | null;
}

export enum PaymentStatus {
  UNPAID = 'UNPAID',
  PARTIAL = 'PARTIAL',
  PAID = 'PAID',
  OVERPAID = 'OVERPAID',
}
registerEnumType(PaymentStatus, { name: 'PaymentStatus' });

export enum SegmentDimension {
  ISSUER_INDUSTRY = 'ISSUER_INDUSTRY',
  ISSUER_COUNTRY = 'ISSUER_COUNTRY',
  ISSUER_RATING = 'ISSUER_RATING',
  RECEIVER_INDUSTRY = 'RECEIVER_INDUSTRY',
  RECEIVER_COUNTRY = 'RECEIVER_COUNTRY',
  RECEIVER_RATING = 'RECEIVER_RATING',
  MONTH = 'MONTH',
  ISSUER = 'ISSUER',
  RECEIVER = 'RECEIVER',
}
registerEnumType(SegmentDimension, { name: 'SegmentDimension', description: 'A customer with no profile or rating groups under null.' });

export enum SegmentOrder {
  TOTAL_DESC = 'TOTAL_DESC',
  COUNT_DESC = 'COUNT_DESC',
  OUTSTANDING_DESC = 'OUTSTANDING_DESC',
  DIMENSIONS_ASC = 'DIMENSIONS_ASC',
}
registerEnumType(SegmentOrder, { name: 'SegmentOrder', description: 'Ties are broken by the dimensions, in the order asked, nulls first.' });

@InputType({ description: 'Each list keeps the invoices whose value is one of those given; lists combine with AND.' })
export class SegmentFilter {
  @Field(() => [String], { nullable: true })
  issuerIndustries?: string[] | null;

  @Field(() => [String], { nullable: true })
  receiverIndustries?: string[] | null;

  @Field(() => [String], { nullable: true })
  issuerCountries?: string[] | null;

  @Field(() => [String], { nullable: true })
  receiverCountries?: string[] | null;

  @Field(() => [String], { nullable: true })
  issuerRatings?: string[] | null;

  @Field(() => [String], { nullable: true })
  receiverRatings?: string[] | null;

  @Field(() => [ID], { nullable: true })
  issuerIds?: string[] | null;

  @Field(() => [ID], { nullable: true })
  receiverIds?: string[] | null;
}

@ObjectType({ description: 'One group of invoices; a dimension not asked for is null.', simpleResolvers: true })
export class SegmentRow {
  @Field(() => String, { nullable: true })
  issuerIndustry!: string | null;

  @Field(() => String, { nullable: true })
  issuerCountry!: string | null;

  @Field(() => String, { nullable: true })
  issuerRating!: string | null;

  @Field(() => String, { nullable: true })
  receiverIndustry!: string | null;

  @Field(() => String, { nullable: true })
  receiverCountry!: string | null;

  @Field(() => String, { nullable: true })
  receiverRating!: string | null;

  @Field(() => String, { nullable: true, description: 'YYYY-MM (UTC).' })
  month!: string | null;

  @Field(() => ID, { nullable: true })
  issuerId!: string | null;

  @Field(() => ID, { nullable: true })
  receiverId!: string | null;

  @Field(() => GraphQLSafeInt)
  invoiceCount!: number;

  @Field(() => DecimalScalar)
  totalUsd!: string;

  @Field(() => DecimalScalar, { description: 'The sum of the invoices\u2019 distinct payments.' })
  paidUsd!: string;

  @Field(() => DecimalScalar, { description: 'The unpaid remainders, each never below zero.' })
  outstandingUsd!: string;

  @Field(() => Float, { nullable: true, description: 'Days from issue to the payment that settled the invoice, over settled invoices.' })
  avgDaysToPay!: number | null;

  @Field(() => Float, { nullable: true, description: 'Share of invoices paid late: settled after the due date, or unsettled and past it.' })
  lateShare!: number | null;
}

@ObjectType({ simpleResolvers: true })
export class SegmentStats {
  @Field(() => [SegmentRow])
  rows!: SegmentRow[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;

  @Field(() => Freshness)
  freshness!: Freshness;

  @Field(() => [Warning])
  warnings!: Warning[];
}

@ArgsType()
export class SegmentStatsArgs {
  @Field(() => [SegmentDimension])
  dimensions!: SegmentDimension[];

  @Field(() => Int, { description: 'The last n calendar months in UTC, this one included: 1 to 120.' })
  months!: number;

  @Field(() => SegmentFilter, { nullable: true })
  filter?: SegmentFilter | null;

  @Field(() => SegmentOrder, { defaultValue: SegmentOrder.TOTAL_DESC })
  orderBy!: SegmentOrder;

  @Field(() => Int, { defaultValue: 100, description: 'Rows per page: 1 to 10000.' })
  first!: number;

  @Field(() => String, { nullable: true })
  after?: string | null;
}
