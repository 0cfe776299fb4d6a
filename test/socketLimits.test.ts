import assert from 'node:assert/strict';
import { parse } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { connect, subscribe } from './fixtures/subscriber.js';

const skip = await missingServices('postgres');

/**
 * The WebSocket is not Apollo's: what Apollo's settings and plugins enforce over HTTP (the
 * introspection setting, the cost limit, the cost budget) must hold on it too.
 */
describe('operations over the WebSocket', { skip }, () => {
  const f = useTestGateway('socket_limits', {
    env: () => ({ RATE_LIMIT_COST: '1000', RATE_LIMIT_WINDOW_SECONDS: '60' }),
    seed: { customers: 5, invoices: 20, months: 1, seed: 4 },
  });

  const firstError = async (query: string, variables?: Record<string, unknown>) => {
    const client = connect(f.gw.url);
    try {
      const sub = subscribe(client, parse(query) as TypedDocumentNode<unknown, Record<string, unknown>>, variables);
      await sub.ended;
      return sub.errors[0];
    } finally {
      await client.dispose();
    }
  };

  it('carries subscriptions only: a query or a mutation is refused, not run', async () => {
    const query = await firstError('{ invoice(id: "1") { id amountUsd } }');
    assert.equal(query?.extensions?.code, 'BAD_REQUEST', JSON.stringify(query));
    assert.match(query!.message, /subscriptions only/);
    // Introspection too, which over HTTP follows the INTROSPECTION setting.
    assert.equal((await firstError('{ __schema { types { name } } }'))?.extensions?.code, 'BAD_REQUEST');
    const before = (await f.sql.query('SELECT count(*)::int AS n FROM invoices')).rows[0].n;
    const mutation = await firstError('mutation { createInvoice(input: { issuerId: "1", receiverId: "2", amountUsd: "1.00" }) { id } }');
    assert.equal(mutation?.extensions?.code, 'BAD_REQUEST');
    assert.equal((await f.sql.query('SELECT count(*)::int AS n FROM invoices')).rows[0].n, before, 'nothing written');
  });

  it('refuses a subscription whose selection costs more than MAX_QUERY_COMPLEXITY, and charges the budget', async () => {
    const nested = 'subscription { riskScored { invoice { issuer { invoicesIssued(first: 500) { nodes { receiver { invoicesReceived(first: 500) { nodes { id } } } } } } } } }';
    const error = await firstError(nested);
    assert.equal(error?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(error));
    assert.match(error!.message, /estimated cost \d+ exceeds 100000/);
    // An ordinary subscription is accepted (the feed is off here: SERVICE_UNAVAILABLE, not a refusal).
    const plain = await firstError('subscription { riskScored { invoiceId } }');
    assert.equal(plain?.extensions?.code, 'SERVICE_UNAVAILABLE', JSON.stringify(plain));
    // A budget of 1,000 a minute: subscriptions costing hundreds each run out of it.
    const costly = parse('subscription { riskScored { invoice { issuer { invoicesIssued(first: 100) { nodes { id amountUsd issueDate } } } } } }') as TypedDocumentNode<unknown, Record<string, unknown>>;
    const client = connect(f.gw.url);
    try {
      let refused: unknown;
      for (let i = 0; i < 10 && !refused; i++) {
        const sub = subscribe(client, costly);
        await sub.ended;
        if (sub.errors[0]?.extensions?.code === 'LIMIT_EXCEEDED') refused = sub.errors[0];
      }
      assert.ok(refused, 'the cost budget refused a subscription');
    } finally {
      await client.dispose();
    }
  });
});
