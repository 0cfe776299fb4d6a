import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { averageCents, formatCents, toCents, twoDecimals } from '../core/money.js';
import { parseDecimal, serializeDecimal } from '../schema/scalars.js';
import { seededRandom } from './fixtures/random.js';

/** Postgres's round(total / count, 2), half away from zero, in BigInt arithmetic of its own. */
function referenceAverage(total: string, count: bigint): string {
  const [whole, fraction = ''] = total.replace('-', '').split('.');
  const abs = BigInt(whole!) * 100n + BigInt(fraction.padEnd(2, '0'));
  let q = (abs * 2n + count) / (2n * count);
  const sign = total.startsWith('-') && q > 0n ? '-' : '';
  return `${sign}${q / 100n}.${String(q % 100n).padStart(2, '0')}`;
}

describe('money', () => {
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
      cases.push([total, BigInt(1 + Math.floor(next() ** 3 * 100_000))]);
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
