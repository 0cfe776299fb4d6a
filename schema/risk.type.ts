import { ArgsType, Field, Float, ID, ObjectType, registerEnumType } from 'type-graphql';
import { PageInfo } from './connection.type.js';
import { DateTimeScalar } from './scalars.js';

export enum RiskBand {
  LOW = 'LOW',
  MEDIUM = 'MEDIUM',
  HIGH = 'HIGH',
}
registerEnumType(RiskBand, { name: 'RiskBand', description: 'LOW below the medium threshold (0.3), HIGH from the high threshold (0.7).' });

@ObjectType({ description: 'One feature of the risk model, as measured for an invoice.', simpleResolvers: true })
export class RiskReason {
  @Field(() => String, { description: 'amountZScore, firstPair, hourlyBurst, roundAmount, justBelowThreshold, selfInvoice.' })
  feature!: string;

  @Field(() => Float, { description: 'The measured value: a z-score, a ratio, or 1/0 for yes/no.' })
  value!: number;

  @Field(() => Float, { description: 'Its share of the score in log-odds; positive raises the risk.' })
  contribution!: number;
}

@ObjectType({ description: 'An invoice\u2019s risk score with the reasons that explain it.', simpleResolvers: true })
export class RiskScore {
  @Field(() => ID)
  invoiceId!: string;

  @Field(() => Float, { description: 'From 0 (no risk signal) to 1.' })
  score!: number;

  @Field(() => RiskBand)
  band!: RiskBand;

  @Field(() => [RiskReason], { description: 'Every feature, largest contribution first.' })
  reasons!: RiskReason[];

  @Field(() => String)
  modelVersion!: string;

  @Field(() => DateTimeScalar)
  scoredAt!: string;

  @Field(() => String, {
    nullable: true,
    description: 'Pass as riskScored(after:) to resume after this event. Null for invoices scored by the backfill, which are never pushed.',
  })
  cursor!: string | null;
}

@ObjectType({ simpleResolvers: true })
export class RiskScoreEdge {
  @Field(() => String)
  cursor!: string;

  @Field(() => RiskScore)
  node!: RiskScore;
}

@ObjectType({ description: 'Risk scores, newest first.', simpleResolvers: true })
export class RiskScoreConnection {
  @Field(() => [RiskScoreEdge])
  edges!: RiskScoreEdge[];

  @Field(() => [RiskScore])
  nodes!: RiskScore[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;
}

@ArgsType()
export class RiskScoreFilterArgs {
  @Field(() => Float, { nullable: true, description: 'Only scores of at least this (0 to 1).' })
  minScore?: number | null;

  @Field(() => RiskBand, { nullable: true })
  band?: RiskBand | null;
}

@ArgsType()
export class RiskScoredArgs extends RiskScoreFilterArgs {
  @Field(() => ID, { nullable: true, description: 'Only invoices from this issuer.' })
  issuerId?: string | null;

  @Field(() => ID, { nullable: true, description: 'Only invoices to this receiver.' })
  receiverId?: string | null;

  @Field(() => String, { nullable: true, description: 'A cursor from an earlier event: first every score after it, then live ones.' })
  after?: string | null;
}
