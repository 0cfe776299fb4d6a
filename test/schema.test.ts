import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { it } from 'node:test';
import { buildGatewaySchema, printGatewaySchema, SCHEMA_FILE } from '../server/schema.js';

it('schema/schema.graphql matches the schema the code builds (run `npm run schema` after a change)', async () => {
  const committed = await readFile(SCHEMA_FILE, 'utf8');
  assert.equal(printGatewaySchema(await buildGatewaySchema()), committed);
});
