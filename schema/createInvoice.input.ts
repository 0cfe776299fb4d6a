import { Field, ID, InputType } from 'type-graphql';
import { DateTimeScalar, DecimalScalar } from './scalars.js';

@InputType({ description: 'A new invoice. Both customers must exist; the amount must be positive.' })
export class CreateInvoiceInput {
  @Field(() => ID)
  issuerId!: string;

  @Field(() => ID)
  receiverId!: string;

  @Field(() => DecimalScalar, { description: 'Greater than 0, at most 999999999999.99, at most two decimals.' })
  amountUsd!: string;

  @Field(() => DateTimeScalar, { nullable: true, description: 'Defaults to the time of insertion.' })
  issueDate?: string | null;
}
