import { GraphQLScalarType, Kind, type ValueNode } from 'graphql';
import { badUserInput } from '../core/errors.js';

/** numeric(14,2): at most 12 integer digits and 2 decimals. */
const MAX_INTEGER_DIGITS = 12;
const DECIMAL_TEXT = /^(-?)(\d+)(?:\.(\d+))?$/;
/** Already in the form parseDecimal returns (how stored amounts come): checked, not rebuilt. */
const CANONICAL = /^-?(?:0|[1-9]\d{0,11})\.\d\d$/;
/** The same form with any number of integer digits: how sums come from Postgres and DuckDB. */
const CANONICAL_ANY = /^-?(?:0|[1-9]\d*)\.\d\d$/;

/**
 * Parses a decimal amount exactly (no float on the way) into "123.40" form. Rejects more than
 * two decimals rather than rounding: silently changing a money amount is worse than an error.
 */
export function parseDecimal(value: unknown): string {
  // A JSON number has been a binary float on its way here (12.3 may already be 12.299999...);
  // money is accepted only as text.
  if (typeof value === 'number') throw badUserInput('Decimal must be a string such as "999.90", not a number');
  if (typeof value === 'string' && CANONICAL.test(value)) return value;
  return decimalText(value, MAX_INTEGER_DIGITS);
}

/**
 * An amount the server answers with, in "123.40" form. An amount is numeric(14,2), but a total
 * of many is not: 2 invoices of 999,999,999,999.99 sum past 12 integer digits, and the sum is
 * still exact, so only the two decimals are required here.
 */
export function serializeDecimal(value: unknown): string {
  if (typeof value === 'string' && CANONICAL_ANY.test(value)) return value;
  if (typeof value !== 'string') throw new Error('not decimal text');
  return decimalText(value, Infinity);
}

function decimalText(value: unknown, maxIntegerDigits: number): string {
  const match = typeof value === 'string' ? DECIMAL_TEXT.exec(value.trim()) : null;
  if (!match) throw badUserInput('Decimal must be a decimal number such as "999.90"');
  const [, sign, whole, fraction = ''] = match;
  if (fraction.length > 2 && !/^0+$/.test(fraction.slice(2))) throw badUserInput('Decimal has more than two decimal places');
  const integer = whole!.replace(/^0+(?=\d)/, '');
  if (integer.length > maxIntegerDigits) throw badUserInput(`Decimal has more than ${maxIntegerDigits} integer digits`);
  return `${sign}${integer}.${fraction.slice(0, 2).padEnd(2, '0')}`;
}

function literalValue(ast: ValueNode): unknown {
  if (ast.kind === Kind.STRING) return ast.value;
  if (ast.kind === Kind.INT || ast.kind === Kind.FLOAT) return Number(ast.value);
  return undefined;
}

/**
 * A value read from the database that does not fit its scalar (a NaN amount, an infinite date)
 * is the server's problem, not the client's: a plain error, masked and logged with an id.
 */
function serializeWith<T>(parse: (value: unknown) => T, scalar: string) {
  return (value: unknown): T => {
    try {
      return parse(value);
    } catch {
      throw new Error(`a stored value cannot be represented as ${scalar}`);
    }
  };
}

export const DecimalScalar = new GraphQLScalarType({
  name: 'Decimal',
  description:
    'An exact decimal amount with two decimals, as a string ("999.90") both ways. A JSON or literal number is refused: it has been a float on its way. ' +
    'An amount given has at most 12 integer digits; a total answered may have more.',
  serialize: serializeWith(serializeDecimal, 'Decimal'),
  parseValue: (value) => parseDecimal(value),
  parseLiteral: (ast) => parseDecimal(literalValue(ast)),
});

const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$/;

/**
 * Checks an ISO 8601 date-time with a zone; returns it unchanged so microseconds survive. Its
 * instant must fall in years 1 to 9999 in UTC (as the invoices table's check does; "9999-12-31T23:00-02:00"
 * is in year 10000), and its offset within Postgres's ±15:59.
 */
export function parseDateTime(value: unknown): string {
  const ms = typeof value === 'string' && ISO_DATE_TIME.test(value) ? Date.parse(value) : Number.NaN;
  const year = new Date(ms).getUTCFullYear();
  const offsetHours = Number(/([+-]\d{2}):?\d{2}$/.exec(value as string)?.[1] ?? 0);
  if (Number.isNaN(ms) || year < 1 || year > 9999 || Math.abs(offsetHours) > 15) {
    throw badUserInput('DateTime must be an ISO 8601 date-time with a zone, such as "2026-11-24T10:00:00Z", in years 1 to 9999 (UTC)');
  }
  return value as string;
}

export const DateTimeScalar = new GraphQLScalarType({
  name: 'DateTime',
  description: 'An ISO 8601 date-time. Output is UTC with microseconds ("2026-11-24T10:00:00.123456Z").',
  serialize: serializeWith((value) => (value instanceof Date ? value.toISOString() : parseDateTime(value)), 'DateTime'),
  parseValue: (value) => parseDateTime(value),
  parseLiteral: (ast) => parseDateTime(ast.kind === Kind.STRING ? ast.value : undefined),
});
