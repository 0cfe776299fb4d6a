/**
 * Exact money arithmetic on decimal text with two places: numeric(14,2) from Postgres, DECIMAL
 * from DuckDB. Cents are bigints; nothing passes through a float.
 */

/** "123.45" -> 12345n (a missing or short fraction counts as zeros). */
export function toCents(amount: string): bigint {
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
  const cents = toCents(total);
  const negative = cents < 0n;
  const abs = negative ? -cents : cents;
  let quotient = abs / count;
  if ((abs % count) * 2n >= count) quotient += 1n;
  return formatCents(negative ? -quotient : quotient);
}
