import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { it } from 'node:test';
import { getNamedType, type GraphQLObjectType, type GraphQLScalarType } from 'graphql';
import { buildGatewaySchema, printGatewaySchema, SCHEMA_FILE } from '../server/schema.js';

it('schema/schema.graphql matches the schema the code builds (run `npm run schema` after a change)', async () => {
  const committed = await readFile(SCHEMA_FILE, 'utf8');
  assert.equal(printGatewaySchema(await buildGatewaySchema()), committed);
});

it('reads the plain fields of analytics rows as properties, without a resolver per field (10,000-row pages)', async () => {
  const schema = await buildGatewaySchema();
  const fields = (type: string) => (schema.getType(type) as GraphQLObjectType).getFields();
  for (const type of ['StatsRow', 'SegmentRow', 'Freshness', 'PageInfo']) {
    const withResolver = Object.values(fields(type)).filter((f) => f.resolve !== undefined && !(type === 'StatsRow' && f.name === 'customer'));
    assert.deepEqual(withResolver.map((f) => f.name), [], `${type}: fields with a resolver of their own`);
  }
  assert.ok(fields('StatsRow').customer!.resolve, 'a field resolver (the customer, through its loader) is kept');
});

it('counts a window\u2019s invoices past 2^31 (a large lake) as numbers, where Int would fail the answer', async () => {
  const schema = await buildGatewaySchema();
  const fields = (type: string) => (schema.getType(type) as GraphQLObjectType).getFields();
  const counts = [fields('Freshness').lakeRows!, fields('Freshness').liveRows!, fields('StatsRow').invoiceCount!, fields('SegmentRow').invoiceCount!];
  for (const field of counts) {
    const type = getNamedType(field.type) as GraphQLScalarType;
    assert.equal(type.name, 'SafeInt', field.name);
    assert.equal(type.serialize(3_000_000_000), 3_000_000_000, field.name);
  }
});
