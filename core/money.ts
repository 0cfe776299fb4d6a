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

/** Cents a double holds exactly (under 2^53) -> "123.45", without a BigInt (a group's text, 10,000 a query). */
export function formatWholeCents(cents: number): string {
  const abs = Math.abs(cents);
  return `${cents < 0 ? '-' : ''}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, '0')}`;
}

/**
 * total / count to cents as Postgres's round(avg(amount), 2): avg divides the sum by the count
 * (numeric_div) to a limited number of decimals, rounding half away from zero, and round() then
 * rounds that to two. Rounding twice differs from rounding the exact quotient only when the
 * division keeps few decimals: an average of at least 10^8 over more than 10^6 invoices (one
 * million 500,000,000.00 and one 500,005,000.00: Postgres 500000000.01, the exact quotient
 * 500000000.0049999...). Totals under 10^13 never get there and take the fast path.
 */
export function averageCents(total: string, count: bigint): string {
  if (count === 0n) return '0.00';
  if (TWO_PLACES.test(total) && total.length <= SAFE_DIGITS + 1) return averageSmall(total, Number(count));
  const cents = toCents(total);
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  const scale = divisionScale(abs, count);
  // The division's result in units of 10^-scale (scale >= 2, the sum's own decimals), then cents.
  const divided = roundedQuotient(abs * 10n ** BigInt(scale - 2), count);
  const quotient = roundedQuotient(divided, 10n ** BigInt(scale - 2));
  return formatCents(negative ? -quotient : quotient);
}

/** a / b rounded half away from zero, for a >= 0 and b > 0. */
function roundedQuotient(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b) * 2n >= b ? q + 1n : q;
}

/**
 * The decimals Postgres's numeric division keeps for (cents / 100) / count (select_div_scale in
 * numeric.c): 16 significant digits by its estimate of the quotient's weight in base-10000
 * digits, and at least the sum's two decimals.
 */
function divisionScale(cents: bigint, count: bigint): number {
  const [dividendWeight, dividendFirst] = cents === 0n ? [0, 0n] : baseDigit(cents, 2);
  const [divisorWeight, divisorFirst] = baseDigit(count, 0);
  let weight = dividendWeight - divisorWeight;
  if (dividendFirst <= divisorFirst) weight--;
  return Math.min(Math.max(16 - weight * 4, 2), 1000);
}

/** The weight and value of the first nonzero base-10000 digit of units * 10^-decimals (units > 0). */
function baseDigit(units: bigint, decimals: number): [number, bigint] {
  // Scaled to 4 decimals: the base-10000 digits are then those of an integer, the last at weight -1.
  const scaled = units * 10n ** BigInt(4 - decimals);
  const digits = scaled.toString().length;
  const weight = Math.floor((digits - 1) / 4) - 1;
  return [weight, scaled / 10000n ** BigInt(weight + 1)];
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
