import assert from 'node:assert/strict';
import { getOperationAST, parse } from 'graphql';
import { describe, it } from 'node:test';
import { costShape } from '../server/complexityLimit.js';
import { refuseRoundedNumbers } from '../server/roundedNumbers.js';

/**
 * The key a cached cost is kept under (per document): it must tell apart what changes a cost,
 * and nothing else, or a client grows the cache without bound.
 */
describe('the shape a cost is cached under', () => {
  const document = getOperationAST(parse('query ($ids: [ID!]!, $first: Int, $g: Granularity, $filter: SegmentFilter) { __typename }'))!;

  it('ignores variables the operation does not declare', () => {
    const base = costShape(document, { ids: ['1', '2'], first: 10 });
    assert.equal(costShape(document, { ids: ['3', '4'], first: 10, pad: { x: 'random text' }, more: [1, 2, 3] }), base);
  });

  it('keeps list lengths, numbers and enum values, and collapses ids, in input objects too', () => {
    assert.notEqual(costShape(document, { ids: ['1'] }), costShape(document, { ids: ['1', '2'] }));
    assert.notEqual(costShape(document, { first: 10 }), costShape(document, { first: 500 }));
    assert.notEqual(costShape(document, { g: 'TOTAL' }), costShape(document, { g: 'MONTH' }));
    assert.equal(costShape(document, { filter: { issuerIds: ['1', '2'] } }), costShape(document, { filter: { issuerIds: ['8', '9'] } }));
    assert.notEqual(costShape(document, { filter: { issuerIds: ['1'] } }), costShape(document, { filter: { issuerIds: ['1', '2'] } }));
  });

  it('keeps no shape past 1,024 characters (such a cost is estimated each time)', () => {
    const filter = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`field${i}`, 1]));
    assert.equal(costShape(document, { filter }), undefined);
  });

  it('variables nested past 32 levels are refused before anything walks them', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    assert.equal(refuseRoundedNumbers({ ids: deep })?.code, 'BAD_USER_INPUT');
    assert.equal(refuseRoundedNumbers({ ids: ['1'], filter: { issuerIds: ['2'] } }), undefined);
  });
});
