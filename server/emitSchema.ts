import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { buildGatewaySchema, printGatewaySchema, SCHEMA_FILE } from './schema.js';

await writeFile(SCHEMA_FILE, printGatewaySchema(await buildGatewaySchema()));
console.log(`wrote ${fileURLToPath(SCHEMA_FILE)}`);
