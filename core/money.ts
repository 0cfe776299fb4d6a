/**
 * Exact money arithmetic on decimal text with two places: numeric(14,2) from Postgres, DECIMAL
 * from DuckDB. Cents are bigints; nothing passes through a float.
 */

/** What numeric(14,2) and DuckDB's DECIMAL(p,2) print: the common case, read without splitting. */
const TWO_PLACES = /^-?\d+\.\d\d$/;
/** Cents below this are exact in a double: the average of 10,000 rows is computed without BigInt. */
const SAFE_DIGITS = 15;

/** "123.45" -> 12345n (a missing or short fraction counts as zeros). */
export function toCents(amount: string): bigint {
  if (TWO_PLACES.test(amount)) return BigInt(amount.slice(0, -3) + amount.slice(-2));
  const negative = amount.startsWith('-');
  const [whole, fraction = ''] = amount.replace('-', '').split('.');
  const cents = BigInt(whole!) * 100n + BigInt(fraction.padEnd(2, '0').slice(0, 2));
  return negative ? -cents : cents;
}

/** 12345n -> "123.45". */
export function formatCents(cents: bigint): string {
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  return `${negative ? '-' : ''}${abs / 100n}.${String(abs % 100n).padStart(2, '0')}`;
}

/** total / count to cents, half away from zero, as Postgres round(numeric, 2) does. */
export function averageCents(total: string, count: bigint): string {
  if (count === 0n) return '0.00';
  if (TWO_PLACES.test(total) && total.length <= SAFE_DIGITS + 1) return averageSmall(total, Number(count));
  const cents = toCents(total);
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  let quotient = abs / count;
  if ((abs % count) * 2n >= count) quotient += 1n;
  return formatCents(negative ? -quotient : quotient);
}

/** averageCents in doubles, for totals of at most 15 digits (exact: every value stays below 2^53). */
function averageSmall(total: string, count: number): string {
  const negative = total.startsWith('-');
  const abs = Number((negative ? total.slice(1, -3) : total.slice(0, -3)) + total.slice(-2));
  let quotient = Math.floor(abs / count);
  if ((abs - quotient * count) * 2 >= count) quotient += 1;
  const cents = quotient % 100;
  return `${negative && quotient > 0 ? '-' : ''}${(quotient - cents) / 100}.${cents < 10 ? '0' : ''}${cents}`;
}

/** An amount in the "123.45" form, as it is when it comes from the database. */
export function twoDecimals(amount: string): string {
  return TWO_PLACES.test(amount) ? amount : formatCents(toCents(amount));
}
