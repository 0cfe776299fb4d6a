import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * DESIGN.md's layering: imports only point down. What each folder may import of the project;
 * anything else (server/ or resolvers/ from below, core/ importing the project) is a back arrow.
 */
const MAY_IMPORT: Record<string, readonly string[]> = {
  core: ['core'],
  sources: ['sources', 'core'],
  schema: ['schema', 'core'],
  pipelines: ['pipelines', 'sources', 'core'],
  resolvers: ['resolvers', 'schema', 'sources', 'pipelines', 'core'],
};

async function* tsFiles(dir: string): AsyncGenerator<string> {
  const entries = await readdir(path.join(ROOT, dir), { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const relative = path.join(dir, entry.name);
    if (entry.isDirectory()) yield* tsFiles(relative);
    else if (entry.name.endsWith('.ts')) yield relative;
  }
}

describe('layering', () => {
  it('no module imports a layer above its own', async () => {
    const violations: string[] = [];
    for (const [layer, allowed] of Object.entries(MAY_IMPORT)) {
      for await (const file of tsFiles(layer)) {
        const text = await readFile(path.join(ROOT, file), 'utf8');
        for (const [, specifier] of text.matchAll(/^(?:import|export)\b[^;]*?from\s+'(\.[^']+)'/gms)) {
          const target = path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), specifier!));
          const targetLayer = target.split(path.sep)[0]!;
          if (!allowed.includes(targetLayer)) violations.push(`${file} imports ${target}`);
        }
      }
    }
    assert.deepEqual(violations, []);
  });
});
