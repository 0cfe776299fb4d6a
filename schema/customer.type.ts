import { Field, ID, ObjectType } from 'type-graphql';

@ObjectType({ description: 'A company that issues and receives invoices.' })
export class Customer {
  @Field(() => ID)
  id!: string;

  @Field(() => String)
  name!: string;
}
