import { Field, ObjectType } from 'type-graphql';
import { Invoice } from './invoice.type.js';

@ObjectType({ description: 'Relay page information. Pages go forward only (first/after).', simpleResolvers: true })
export class PageInfo {
  @Field(() => Boolean)
  hasNextPage!: boolean;

  @Field(() => Boolean, { description: 'Always false: connections page forward only.' })
  hasPreviousPage!: boolean;

  @Field(() => String, { nullable: true })
  startCursor!: string | null;

  @Field(() => String, { nullable: true })
  endCursor!: string | null;
}

@ObjectType()
export class InvoiceEdge {
  @Field(() => String)
  cursor!: string;

  @Field(() => Invoice)
  node!: Invoice;
}

@ObjectType({ description: 'A page of invoices, newest first (issue date, then id, descending).' })
export class InvoiceConnection {
  @Field(() => [InvoiceEdge])
  edges!: InvoiceEdge[];

  @Field(() => [Invoice], { description: 'The edges\u2019 nodes, for clients that need no cursors.' })
  nodes!: Invoice[];

  @Field(() => PageInfo)
  pageInfo!: PageInfo;
}
