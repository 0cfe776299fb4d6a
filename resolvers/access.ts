import { defaultFieldResolver, isObjectType, type GraphQLField, type GraphQLSchema } from 'graphql';
import { forbidden } from '../core/errors.js';
import type { Context } from './context.js';
import type { Role, Viewer } from './viewer.js';

/*
 * Who may see what: every rule of the API in this one file, applied to the built schema by
 * applyAccessRules, so no resolver can forget one. Three kinds:
 *
 * - operations: the roles that may run each root field (every root field must be listed, or the
 *   schema does not build: a new field is closed until someone writes its rule), and for lookups
 *   the rows the viewer may see (others are null, exactly like an absent id);
 * - fields: nested fields a viewer may not see answer null or empty, never an error, so one query
 *   serves every role;
 * - scopes: what an argument may ask for (a customer's analytics cover its own invoices only),
 *   used by the resolvers that take such arguments.
 *
 * Rows are checked after they are loaded, never by keying a cache per viewer: the shared cache
 * stays shared and cannot serve one viewer's rows to another.
 */

const INTERNAL: readonly Role[] = ['admin', 'analyst'];
const READERS: readonly Role[] = ['admin', 'analyst', 'customer'];

interface Parties {
  readonly issuerId: string;
  readonly receiverId: string;
}

const hasRole = (roles: readonly Role[]) => (viewer: Viewer) => roles.includes(viewer.role as Role);

/** Risk scores are internal: a model whose scores its subjects can watch can be gamed. */
const isInternal = hasRole(INTERNAL);

/** An invoice: internal roles, and a customer that is its issuer or receiver. */
const maySeeInvoice = (viewer: Viewer, invoice: Parties): boolean =>
  isInternal(viewer) || (viewer.role === 'customer' && (invoice.issuerId === viewer.customerId || invoice.receiverId === viewer.customerId));

/**
 * A customer's own record (profile, ratings, stats, looking it up by id): internal roles and the
 * customer itself. Its counterparties' names reach a customer only through their shared invoices.
 */
const maySeeCustomer = (viewer: Viewer, customer: { readonly id: string }): boolean =>
  isInternal(viewer) || (viewer.role === 'customer' && customer.id === viewer.customerId);

interface OperationRule {
  readonly roles: readonly Role[];
  /** Rows of the result the viewer may see; the others become null. */
  readonly rows?: (viewer: Viewer, row: never) => boolean;
}

const OPERATION_RULES: Readonly<Record<string, OperationRule>> = {
  'Query.invoice': { roles: READERS, rows: maySeeInvoice },
  'Query.invoices': { roles: READERS, rows: maySeeInvoice },
  'Query.customer': { roles: READERS, rows: maySeeCustomer },
  'Query.customers': { roles: READERS, rows: maySeeCustomer },
  // Scoped to the customer's own invoices: see statsCustomerScope and segmentScope.
  'Query.invoiceStats': { roles: READERS },
  'Query.segmentStats': { roles: READERS },
  'Query.riskScores': { roles: INTERNAL },
  // A writer (an ERP or billing integration) creates invoices and reads nothing but the invoice
  // it just created, returned by the mutation itself.
  'Mutation.createInvoice': { roles: ['admin', 'writer'] },
  // Internal roles only: they see every invoice. Opening it to customers needs a party filter
  // on the score stream (riskScoreStream's ScoreFilter), as the other customer scopes have.
  'Subscription.riskScored': { roles: INTERNAL },
};

interface FieldRule {
  readonly visible: (viewer: Viewer, parent: never) => boolean;
  /** What the field answers when hidden (fresh for each call: results may be mutated downstream). */
  readonly hidden: () => unknown;
}

const emptyConnection = () => ({ edges: [], nodes: [], pageInfo: { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null } });
/** Seen by whoever sees the parent row. */
const PUBLIC: FieldRule = { visible: () => true, hidden: () => null };
const publicFields = (type: string, fields: readonly string[]) => Object.fromEntries(fields.map((f) => [`${type}.${f}`, PUBLIC]));

/**
 * Every field of these types needs a rule below, as every operation does: a field added to a
 * customer or an invoice is closed until someone decides who may see it.
 */
const GUARDED_TYPES = new Set(['Customer', 'Invoice']);

const FIELD_RULES: Readonly<Record<string, FieldRule>> = {
  // Once a viewer may see an invoice, it sees these of it; the receiver's payment terms are in
  // dueDate, which both parties agreed to.
  ...publicFields('Invoice', ['id', 'issueDate', 'issuerId', 'receiverId', 'issuer', 'receiver', 'amountUsd', 'payments', 'paidUsd', 'outstandingUsd', 'dueDate', 'paymentStatus']),
  'Invoice.risk': { visible: isInternal, hidden: () => null },
  // A counterparty's name, reached through a shared invoice.
  ...publicFields('Customer', ['id', 'name']),
  'Customer.profile': { visible: maySeeCustomer, hidden: () => null },
  'Customer.rating': { visible: maySeeCustomer, hidden: () => null },
  'Customer.ratingHistory': { visible: maySeeCustomer, hidden: () => [] },
  'Customer.stats': { visible: maySeeCustomer, hidden: () => [] },
  // Readers see a customer's invoices (a customer only those it is a party to: invoicePageScope).
  'Customer.invoicesIssued': { visible: hasRole(READERS), hidden: emptyConnection },
  'Customer.invoicesReceived': { visible: hasRole(READERS), hidden: emptyConnection },
};

/**
 * The only counterparty a customer may see in another customer's invoice list: itself. Null:
 * the whole list.
 */
export function invoicePageScope(viewer: Viewer, customerId: string): string | null {
  return viewer.role === 'customer' && customerId !== viewer.customerId ? viewer.customerId : null;
}

/**
 * The customers invoiceStats may group for this viewer: a customer gets its own id whatever it
 * asks (ids of others answer as customers without invoices: nothing is said about them).
 */
export function statsCustomerScope(viewer: Viewer, requested: readonly number[] | null): readonly number[] | null {
  if (viewer.role !== 'customer') return requested;
  const own = Number(viewer.customerId);
  return requested === null || requested.includes(own) ? [own] : [];
}

/**
 * The segmentStats dimensions and filters a customer may use: allow-lists, so a dimension added
 * later is closed to customers. Profiles and ratings would tell it its counterparties'.
 */
const CUSTOMER_DIMENSIONS = new Set(['MONTH', 'ISSUER', 'RECEIVER']);
const CUSTOMER_FILTERS = new Set(['issuerIds', 'receiverIds']);

/**
 * segmentStats for a customer: the customer every row must have on one side (its own id), or
 * null for a viewer who may see all invoices.
 */
export function segmentScope(viewer: Viewer, dimensions: readonly string[], filter: object): number | null {
  if (viewer.role !== 'customer') return null;
  const dimension = dimensions.find((d) => !CUSTOMER_DIMENSIONS.has(d));
  if (dimension) throw forbidden(`segmentStats by ${dimension} is not available to customers (it describes counterparties)`);
  const filtered = Object.entries(filter).find(([name, value]) => value != null && !CUSTOMER_FILTERS.has(name));
  if (filtered) throw forbidden(`segmentStats filter ${filtered[0]} is not available to customers (it describes counterparties)`);
  return Number(viewer.customerId);
}

/**
 * Wraps, in place, every resolver a rule names; fails on a root field without a rule and on a
 * rule for a field the schema lacks.
 */
export function applyAccessRules(schema: GraphQLSchema): GraphQLSchema {
  const subscriptionType = schema.getSubscriptionType()?.name;
  const rootTypes = new Set([schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].flatMap((t) => (t ? [t.name] : [])));
  const used = new Set<string>();
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type) || type.name.startsWith('__')) continue;
    for (const field of Object.values(type.getFields()) as Field[]) {
      const name = `${type.name}.${field.name}`;
      const operation = OPERATION_RULES[name];
      const nested = FIELD_RULES[name];
      if (operation || nested) used.add(name);
      if (rootTypes.has(type.name)) {
        if (!operation) throw new Error(`${name} has no access rule in resolvers/access.ts: every operation needs one`);
        if (type.name === subscriptionType) guardSubscription(name, field, operation);
        else guardOperation(name, field, operation);
      } else if (nested) {
        if (nested !== PUBLIC) guardField(field, nested);
      } else if (GUARDED_TYPES.has(type.name)) {
        throw new Error(`${name} has no access rule in resolvers/access.ts: every field of ${type.name} needs one`);
      }
    }
  }
  const unused = [...Object.keys(OPERATION_RULES), ...Object.keys(FIELD_RULES)].filter((name) => !used.has(name));
  if (unused.length > 0) throw new Error(`access rules for fields the schema lacks: ${unused.join(', ')}`);
  return schema;
}

function mayRun(name: string, rule: OperationRule, viewer: Viewer): void {
  if (!rule.roles.includes(viewer.role as Role)) throw forbidden(`${name} is not available to the ${viewer.role} role`);
}

type Field = GraphQLField<unknown, Context>;

function guardOperation(name: string, field: Field, rule: OperationRule): void {
  const resolve = field.resolve ?? defaultFieldResolver;
  const rows = rule.rows as ((viewer: Viewer, row: unknown) => boolean) | undefined;
  field.resolve = (source, args, context, info) => {
    const { viewer } = context;
    mayRun(name, rule, viewer);
    const result = resolve(source, args, context, info);
    if (!rows || isInternal(viewer)) return result;
    // Null, as for an absent id: whether a hidden row exists is not the viewer's to learn.
    const visible = (row: unknown) => (row !== null && rows(viewer, row) ? row : null);
    return Promise.resolve(result).then((value) => (Array.isArray(value) ? value.map(visible) : visible(value)));
  };
}

function guardSubscription(name: string, field: Field, rule: OperationRule): void {
  const subscribe = field.subscribe!;
  field.subscribe = (source, args, context, info) => {
    mayRun(name, rule, context.viewer);
    return subscribe(source, args, context, info);
  };
}

function guardField(field: Field, rule: FieldRule): void {
  const resolve = field.resolve ?? defaultFieldResolver;
  const visible = rule.visible as (viewer: Viewer, parent: unknown) => boolean;
  field.resolve = (source, args, context, info) => (visible(context.viewer, source) ? resolve(source, args, context, info) : rule.hidden());
}
