'use strict';
// PostGraphile v4 as the lookup benchmark's peer, with the options its docs recommend for
// production. Settings: DATABASE_URL (required), PORT (default 5000), DATABASE_POOL_MAX (default
// 20, the gateway's default, so both servers get as many Postgres connections).
const http = require('node:http');
const { postgraphile } = require('postgraphile');

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  console.error('DATABASE_URL must be set');
  process.exit(1);
}
const port = Number(process.env.PORT || 5000);
const poolMax = Number(process.env.DATABASE_POOL_MAX || 20);

const middleware = postgraphile({ connectionString: databaseUrl, max: poolMax }, 'public', {
  watchPg: false,
  graphiql: false,
  enhanceGraphiql: false,
  disableQueryLog: true,
  dynamicJson: false,
  setofFunctionsContainNulls: false,
  ignoreRBAC: false,
  legacyRelations: 'omit',
  extendedErrors: ['errcode'],
  showErrorStack: false,
  // A missing database should stop the benchmark, not hang it in a retry loop.
  retryOnInitFail: false,
});

const server = http.createServer(middleware);
server.listen(port, '127.0.0.1', () => console.error(`postgraphile listening on http://127.0.0.1:${port}/graphql`));

const stop = () => server.close(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
