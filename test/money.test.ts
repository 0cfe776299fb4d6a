import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { averageCents, formatCents, formatWholeCents, toCents, twoDecimals } from '../core/money.js';
import { parseDecimal, serializeDecimal } from '../schema/scalars.js';
import { seededRandom } from './fixtures/random.js';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';

/** Postgres's round(total / count, 2), half away from zero, in BigInt arithmetic of its own. */
function referenceAverage(total: string, count: bigint): string {
  const [whole, fraction = ''] = total.replace('-', '').split('.');
  const abs = BigInt(whole!) * 100n + BigInt(fraction.padEnd(2, '0'));
  let q = (abs * 2n + count) / (2n * count);
  const sign = total.startsWith('-') && q > 0n ? '-' : '';
  return `${sign}${q / 100n}.${String(q % 100n).padStart(2, '0')}`;
}

describe('money', () => {
  it('prints cents held in a double as formatCents prints them', () => {
    for (const cents of [0, -0, 5, -5, 100, -1230, 123456, 99_999_999_999_999, -(2 ** 53 - 1)]) {
      assert.equal(formatWholeCents(cents), formatCents(BigInt(cents)), String(cents));
    }
  });

  it('reads every decimal form to cents', () => {
    for (const [text, cents] of [['12', 1200n], ['12.3', 1230n], ['12.30', 1230n], ['-0.5', -50n], ['-123.45', -12345n], ['0.00', 0n], ['99999999999999999999.99', 9999999999999999999999n]] as const) {
      assert.equal(toCents(text), cents, text);
    }
    assert.equal(formatCents(-5n), '-0.05');
    assert.equal(twoDecimals('12'), '12.00');
    assert.equal(twoDecimals('7.5'), '7.50');
    assert.equal(twoDecimals('123.45'), '123.45');
  });

  it('averages to cents half away from zero, for small totals and totals past 2^53 cents alike', () => {
    const next = seededRandom(7);
    const cases: [string, bigint][] = [['0.05', 2n], ['-0.05', 2n], ['0.01', 3n], ['-0.01', 3n], ['10.00', 3n], ['0.00', 5n], ['1.00', 8n], ['9007199254740.99', 7n], ['99999999999999.99', 3n]];
    for (let i = 0; i < 20_000; i++) {
      const digits = 1 + Math.floor(next() * 19);
      let whole = '';
      for (let d = 0; d < digits; d++) whole += Math.floor(next() * 10);
      const total = `${next() < 0.2 ? '-' : ''}${BigInt(whole)}.${String(Math.floor(next() * 100)).padStart(2, '0')}`;
      const count = BigInt(1 + Math.floor(next() ** 3 * 100_000));
      // Past an amount's largest, averages keep too few decimals in Postgres's division to be the
      // exact quotient rounded once: those are compared with Postgres itself below.
      if (BigInt(whole) / count >= 10n ** 12n) continue;
      cases.push([total, count]);
    }
    for (const [total, count] of cases) assert.equal(averageCents(total, count), referenceAverage(total, count), `${total} / ${count}`);
  });

  it('Decimal keeps canonical amounts, normalizes others, refuses what does not fit', () => {
    for (const [text, parsed] of [['123.45', '123.45'], ['-0.50', '-0.50'], ['007.5', '7.50'], [' 12 ', '12.00'], ['999999999999.99', '999999999999.99'], ['1.500', '1.50']]) {
      assert.equal(parseDecimal(text), parsed, text);
    }
    for (const bad of ['1234567890123.00', '01234567890123.00', '1.234', '1e3', '', 12.5]) assert.throws(() => parseDecimal(bad), String(bad));
  });

  it('Decimal answers totals past an amount\u2019s 12 integer digits, exactly', () => {
    for (const [text, answered] of [['1999999999999.98', '1999999999999.98'], ['-123456789012345678.90', '-123456789012345678.90'], ['0.05', '0.05'], ['0012345678901234.5', '12345678901234.50']]) {
      assert.equal(serializeDecimal(text), answered, text);
    }
    // An input is an amount: the 12 digits still hold there.
    assert.throws(() => parseDecimal('1999999999999.98'));
    for (const bad of ['1.234', '1e3', '', 12.5, null]) assert.throws(() => serializeDecimal(bad), String(bad));
  });
});

/**
 * Postgres's avg() divides to a limited number of decimals before round() rounds again; the
 * average must be Postgres's, so it is compared with Postgres itself.
 */
describe('averages as Postgres rounds them', { skip: await missingServices('postgres') }, () => {
  let database: TestDatabase;
  let sql: pg.Pool;
  before(async () => {
    database = await createTestDatabase('money_average');
    sql = new pg.Pool({ connectionString: database.url, max: 1 });
  });
  after(async () => {
    await sql?.end();
    await database?.drop();
  });

  /** round(sum / count, 2) in Postgres: what round(avg(amount), 2) computes from the sum and the count. */
  const postgresAverages = async (cases: readonly [string, bigint][]) =>
    (
      await sql.query<{ avg: string }>(`SELECT round(t::numeric / c::numeric, 2)::text AS avg FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(t, c, i) ORDER BY i`, [
        cases.map(([total]) => total),
        cases.map(([, count]) => String(count)),
      ])
    ).rows.map((r) => r.avg);

  it('is avg() itself where rounding twice differs from rounding once', async () => {
    const { rows: [row] } = await sql.query<{ avg: string; total: string; n: string }>(
      `SELECT round(avg(x), 2)::text AS avg, sum(x)::text AS total, count(*)::text AS n
       FROM (SELECT 500000000.00::numeric(14,2) AS x FROM generate_series(1, 1000000) UNION ALL SELECT 500005000.00) AS t`,
    );
    assert.equal(row!.avg, '500000000.01', 'Postgres rounds the quotient 500000000.0049999950... to 8 decimals first');
    assert.equal(averageCents(row!.total, BigInt(row!.n)), row!.avg);
  });

  it('equals Postgres for totals of every size, counts up to 10^12 and averages up to an amount\u2019s largest', async () => {
    const next = seededRandom(11);
    const digits = (n: number) => {
      let text = String(1 + Math.floor(next() * 9));
      for (let d = 1; d < n; d++) text += Math.floor(next() * 10);
      return text;
    };
    const cases: [string, bigint][] = [];
    for (let i = 0; i < 20_000; i++) {
      const count = BigInt(digits(1 + Math.floor(next() * 12)));
      // An average below 10^12 (the largest amount) in cents, and a remainder: half the time just
      // under half the count, where the division's rounding can carry into the cents.
      const average = BigInt(digits(1 + Math.floor(next() * 14)));
      const nearHalf = (count - 1n) / 2n - BigInt(Math.floor(next() * 3));
      const remainder = next() < 0.5 ? (nearHalf > 0n ? nearHalf : 0n) : BigInt(Math.floor(next() * Number(count < 1000n ? count : 1000n)));
      const total = average * count + remainder;
      cases.push([`${next() < 0.1 ? '-' : ''}${total / 100n}.${String(total % 100n).padStart(2, '0')}`, count]);
    }
    const expected = await postgresAverages(cases);
    cases.forEach(([total, count], i) => assert.equal(averageCents(total, count), expected[i], `${total} / ${count}`));
  });
});

