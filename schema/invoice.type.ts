import { Field, ID, ObjectType } from 'type-graphql';
import { DateTimeScalar, DecimalScalar } from './scalars.js';

@ObjectType({ description: 'An invoice from one customer (the issuer) to another (the receiver).' })
export class Invoice {
  @Field(() => ID)
  id!: string;

  @Field(() => DateTimeScalar, { description: 'When the invoice was issued, UTC.' })
  issueDate!: string;

  @Field(() => DecimalScalar, { description: 'Amount in US dollars, exact, two decimals.' })
  amountUsd!: string;

  @Field(() => ID)
  issuerId!: string;

  @Field(() => ID)
  receiverId!: string;
}
