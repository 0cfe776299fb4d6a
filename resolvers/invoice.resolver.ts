import { Arg, Ctx, FieldResolver, ID, Mutation, Query, Resolver, Root } from 'type-graphql';
import { CreateInvoiceInput } from '../schema/createInvoice.input.js';
import { Customer } from '../schema/customer.type.js';
import { Invoice } from '../schema/invoice.type.js';
import { perId } from '../schema/complexity.js';
import { MAX_IDS } from '../schema/limits.js';
import type { Context } from './context.js';
import { badUserInput } from '../core/errors.js';
import type { CustomerRecord } from '../sources/postgres/customerStore.js';
import type { InvoiceRecord } from '../sources/postgres/invoiceStore.js';
import type { RiskScoreRecord } from '../sources/postgres/riskStore.js';
import { RiskScore } from '../schema/risk.type.js';
import { parseCustomerId, parseIdList, parseInvoiceId } from './ids.js';
import { loadAll } from './loadAll.js';

@Resolver(() => Invoice)
export class InvoiceResolver {
  @Query(() => Invoice, { nullable: true, description: 'One invoice; null when no invoice has this id.' })
  invoice(@Arg('id', () => ID) id: string, @Ctx() ctx: Context): Promise<InvoiceRecord | null> {
    return ctx.loaders.invoice.load(parseInvoiceId(id));
  }

  @Query(() => [Invoice], {
    nullable: 'items',
    description: `Invoices in the order of ids, null where absent. At most ${MAX_IDS} ids.`,
    complexity: perId,
  })
  async invoices(@Arg('ids', () => [ID]) ids: string[], @Ctx() ctx: Context): Promise<(InvoiceRecord | null)[]> {
    return loadAll(ctx.loaders.invoice, parseIdList(ids, parseInvoiceId));
  }

  @FieldResolver(() => Customer)
  issuer(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<CustomerRecord | null> {
    return ctx.loaders.customer.load(invoice.issuerId);
  }

  @FieldResolver(() => Customer)
  receiver(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<CustomerRecord | null> {
    return ctx.loaders.customer.load(invoice.receiverId);
  }

  @FieldResolver(() => RiskScore, { nullable: true, description: 'Its risk score; null until scored (milliseconds after the insert).' })
  risk(@Root() invoice: InvoiceRecord, @Ctx() ctx: Context): Promise<RiskScoreRecord | null> {
    return ctx.loaders.risk.load(invoice.id);
  }

  @Mutation(() => Invoice, { description: 'Stores a new invoice and returns it as stored.' })
  async createInvoice(@Arg('input', () => CreateInvoiceInput) input: CreateInvoiceInput, @Ctx() ctx: Context): Promise<InvoiceRecord> {
    const issuerId = parseCustomerId(input.issuerId, 'input.issuerId');
    const receiverId = parseCustomerId(input.receiverId, 'input.receiverId');
    if (!(Number(input.amountUsd) > 0)) throw badUserInput('input.amountUsd must be greater than 0');
    const [issuer, receiver] = await loadAll(ctx.loaders.customer, [issuerId, receiverId]);
    if (!issuer) throw badUserInput(`input.issuerId ${issuerId} is not an existing customer`);
    if (!receiver) throw badUserInput(`input.receiverId ${receiverId} is not an existing customer`);
    return ctx.invoices.insert({ issuerId, receiverId, amountUsd: input.amountUsd, issueDate: input.issueDate ?? null });
  }
}
