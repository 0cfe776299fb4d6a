import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, readEnvironment, SETTING_NAMES } from '../server/config.js';

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
      AUTH_JWKS_URL: 'https://idp.example.com/.well-known/jwks.json',
      AUTH_ISSUER: 'https://idp.example.com/',
      AUTH_AUDIENCE: 'invoice-gateway',
      AUTH_ROLE_CLAIM: 'https://example.com/role',
      RATE_LIMIT_REQUESTS: '100',
    });
    assert.equal(config.http.port, 8080);
    assert.deepEqual(
      { mode: config.auth.mode, jwks: config.auth.jwksUrl, issuer: config.auth.issuer, audience: config.auth.audience, role: config.auth.roleClaim, customer: config.auth.customerClaim },
      { mode: 'required', jwks: 'https://idp.example.com/.well-known/jwks.json', issuer: 'https://idp.example.com/', audience: 'invoice-gateway', role: 'https://example.com/role', customer: 'customer_id' },
    );
    assert.equal(config.rateLimits.requests, 100);
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
      [{ INTROSPECTION: 'maybe' }, 'INTROSPECTION', 'maybe'],
      [{ AUTH_MODE: 'sometimes' }, 'AUTH_MODE', 'sometimes'],
      [{ AUTH_JWT_SECRET: 'short-secret' }, 'AUTH_JWT_SECRET', 'short-secret'],
      [{ AUTH_JWKS_URL: 'ftp://keys' }, 'AUTH_JWKS_URL', 'ftp://keys'],
      [{ RATE_LIMIT_REQUESTS: '-1' }, 'RATE_LIMIT_REQUESTS', '-1'],
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
    assert.throws(() => loadConfig({ NODE_ENV: 'production', EXPOSE_ERRORS: '1', DATABASE_URL: 'postgres://db/x' }), /EXPOSE_ERRORS/);
  });

  it('requires DATABASE_URL in production: the embedded Postgres is not shipped there', () => {
    assert.throws(() => loadConfig({ NODE_ENV: 'production' }), /^ConfigError: invalid configuration: DATABASE_URL must be set when NODE_ENV is production$/);
  });

  it('requires authentication in production, with exactly one kind of key, and not elsewhere', () => {
    const db = { DATABASE_URL: 'postgres://db/x' };
    const secret = 'k'.repeat(32);
    const claims = { AUTH_ISSUER: 'https://idp/', AUTH_AUDIENCE: 'gateway' };
    assert.equal(loadConfig({}).auth.mode, 'off');
    assert.throws(() => loadConfig({ ...db, NODE_ENV: 'production' }), /^ConfigError: invalid configuration: AUTH_MODE=required needs exactly one of AUTH_JWT_SECRET and AUTH_JWKS_URL/);
    assert.throws(() => loadConfig({ ...claims, AUTH_MODE: 'required', AUTH_JWT_SECRET: secret, AUTH_JWKS_URL: 'https://idp/jwks' }), /exactly one of/);
    assert.throws(() => loadConfig({ AUTH_MODE: 'required', AUTH_JWT_SECRET: secret, AUTH_ISSUER: 'https://idp/' }), /^ConfigError: invalid configuration: AUTH_MODE=required needs AUTH_ISSUER and AUTH_AUDIENCE$/);
    assert.equal(loadConfig({ ...db, ...claims, NODE_ENV: 'production', AUTH_JWT_SECRET: secret }).auth.mode, 'required');
    assert.equal(loadConfig({ ...db, NODE_ENV: 'production', AUTH_MODE: 'off' }).auth.mode, 'off');
  });

  it('reads trusted documents and refuses a manifest whose ids are not the hashes of their documents', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ig-trusted-'));
    const body = 'query One { invoice(id: "1") { id } }';
    const id = createHash('sha256').update(body).digest('hex');
    const manifest = path.join(dir, 'manifest.json');
    writeFileSync(manifest, JSON.stringify({ format: 'apollo-persisted-query-manifest', version: 1, operations: [{ id, body, name: 'One', type: 'query' }] }));
    assert.equal(loadConfig({ TRUSTED_DOCUMENTS_FILE: manifest }).trustedDocuments?.byHash.get(id), body);
    writeFileSync(manifest, JSON.stringify({ [id]: body }));
    assert.equal(loadConfig({ TRUSTED_DOCUMENTS_FILE: manifest }).trustedDocuments?.byHash.get(id), body);
    writeFileSync(manifest, JSON.stringify({ [id]: 'mutation Evil { createInvoice }' }));
    assert.throws(() => loadConfig({ TRUSTED_DOCUMENTS_FILE: manifest }), /TRUSTED_DOCUMENTS_FILE has an entry whose id is not the sha256/);
    assert.throws(() => loadConfig({ TRUSTED_DOCUMENTS_FILE: path.join(dir, 'missing.json') }), /TRUSTED_DOCUMENTS_FILE cannot be read \(ENOENT\)/);
    rmSync(dir, { recursive: true, force: true });
  });

  it('turns introspection off in production unless INTROSPECTION says otherwise', () => {
    const db = { DATABASE_URL: 'postgres://db/x', AUTH_MODE: 'off' };
    assert.equal(loadConfig({}).introspection, true);
    assert.equal(loadConfig({ ...db, NODE_ENV: 'production' }).introspection, false);
    assert.equal(loadConfig({ ...db, NODE_ENV: 'production', INTROSPECTION: '1' }).introspection, true);
    assert.equal(loadConfig({ INTROSPECTION: 'false' }).introspection, false);
  });

  it('reads .env from the working directory, under the real environment', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'ig-env-'));
    try {
      assert.deepEqual(readEnvironment({ PORT: '1' }, dir), { env: { PORT: '1' } }, 'no .env: the environment as it is');
      await writeFile(path.join(dir, '.env'), '# a comment\nPORT=4100\nLOG_LEVEL="warn"\nexport CACHE_KEY_PREFIX=team-a:\n');
      const { env, file } = readEnvironment({ LOG_LEVEL: 'debug' }, dir);
      assert.equal(file, path.join(dir, '.env'));
      const config = loadConfig(env);
      assert.equal(config.http.port, 4100);
      assert.equal(config.logLevel, 'debug', 'the real environment wins');
      assert.equal(config.cache.keyPrefix, 'team-a:');
      await writeFile(path.join(dir, '.env'), 'PORT=eighty\n');
      assert.throws(() => loadConfig(readEnvironment({}, dir).env), /^ConfigError: invalid configuration: PORT must be a whole number$/);
      if (process.getuid?.() !== 0) {
        await chmod(path.join(dir, '.env'), 0o000);
        assert.throws(() => readEnvironment({}, dir), /\.env cannot be read \(EACCES\)/);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('.env.example lists every setting with its default, commented out', async () => {
    const example = await readFile(new URL('../../.env.example', import.meta.url), 'utf8');
    const defaults = loadConfig({});
    const listed = Object.fromEntries([...example.matchAll(/^# ([A-Z_]+)=(.*)$/gm)].map((m) => [m[1], m[2]]));
    // Uncommenting the whole example must give the configuration of an empty environment
    // (settings that default to unset are listed with an empty value).
    assert.deepEqual(loadConfig(listed as Record<string, string>), defaults);
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
