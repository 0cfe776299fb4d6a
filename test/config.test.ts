import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readFile } from 'node:fs/promises';
import { ConfigError, loadConfig, SETTING_NAMES } from '../server/config.js';

describe('configuration', () => {
  it('runs on embedded defaults when nothing is set', () => {
    const config = loadConfig({});
    assert.equal(config.database.url, undefined);
    assert.equal(config.cache.redisUrl, undefined);
    assert.equal(config.http.port, 4000);
    assert.equal(config.env, 'development');
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.database));
  });

  it('treats empty variables as unset', () => {
    assert.equal(loadConfig({ DATABASE_URL: '', PORT: '' }).http.port, 4000);
  });

  it('reads every setting', () => {
    const config = loadConfig({
      NODE_ENV: 'production',
      PORT: '8080',
      DATABASE_URL: 'postgres://u:p@db:5432/x',
      REDIS_URL: 'redis://cache:6379',
      DATABASE_POOL_MAX: '5',
      CACHE_TTL_SECONDS: '60',
      CACHE_KEY_PREFIX: 'tenant-a:',
    });
    assert.equal(config.http.port, 8080);
    assert.equal(config.database.poolMax, 5);
    assert.equal(config.cache.ttlSeconds, 60);
    assert.equal(config.cache.keyPrefix, 'tenant-a:');
    assert.equal(config.cache.redisUrl, 'redis://cache:6379');
  });

  it('stops on a bad setting with one line naming the key but not the value', () => {
    const cases: [Record<string, string>, string, string][] = [
      [{ PORT: 'eighty' }, 'PORT', 'eighty'],
      [{ PORT: '70000' }, 'PORT', '70000'],
      [{ DATABASE_URL: 'mysql://admin:hunter2@db/x' }, 'DATABASE_URL', 'hunter2'],
      [{ REDIS_URL: 'http://secret-host' }, 'REDIS_URL', 'secret-host'],
      [{ DATABASE_POOL_MAX: '0' }, 'DATABASE_POOL_MAX', '0 '],
      [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', 'loud'],
      [{ NODE_ENV: 'staging' }, 'NODE_ENV', 'staging'],
      [{ EXPOSE_ERRORS: 'yes' }, 'EXPOSE_ERRORS', 'yes'],
    ];
    for (const [env, key, value] of cases) {
      assert.throws(
        () => loadConfig(env),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, new RegExp(`^invalid configuration: ${key} `));
          assert.ok(!err.message.includes(value), `${key}: message shows the value: ${err.message}`);
          assert.equal(err.message.split('\n').length, 1);
          return true;
        },
      );
    }
  });

  it('refuses the dev error flag in production', () => {
    assert.throws(() => loadConfig({ NODE_ENV: 'production', EXPOSE_ERRORS: '1' }), /EXPOSE_ERRORS/);
  });

  it('documents every setting in the README and .env.example', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const example = await readFile(new URL('../../.env.example', import.meta.url), 'utf8');
    for (const name of SETTING_NAMES) {
      assert.match(readme, new RegExp(`\\| \`${name}\``), `README lacks ${name}`);
      assert.match(example, new RegExp(`^# ${name}=`, 'm'), `.env.example lacks ${name}`);
    }
  });
});
