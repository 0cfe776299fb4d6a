import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { deleteRedisKeys, missingServices, TEST_REDIS_URL } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { CustomerByIdDocument, CustomersByIdsDocument, InvoiceByIdDocument, InvoicesWithPartiesDocument } from './generated/graphql.js';

const skip = await missingServices('postgres', 'redis');

describe('invoice and customer lookups (Postgres + Redis)', { skip }, () => {
  const f = useTestGateway('lookups', { env: (db) => ({ REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: `${db.name}:` }), seed: { customers: 50, invoices: 2_000, months: 12, seed: 7 } });
  // The keys of this file's gateway in the shared Redis.
  after(() => deleteRedisKeys(`${f.db.name}:*`));

  it('returns an invoice exactly as stored: id string, ISO UTC date, two-decimal amount', async () => {
    const { rows } = await f.sql.query(
      `SELECT invoice_id::text AS id, issue_date, issuer_id::text, receiver_id::text, amount_usd::text FROM invoices WHERE invoice_id = 17`,
    );
    const res = await f.gw.request(InvoiceByIdDocument, { id: '17' });
    assert.equal(res.errors, undefined);
    const invoice = res.data!.invoice!;
    assert.equal(invoice.id, '17');
    assert.equal(invoice.amountUsd, rows[0].amount_usd);
    assert.match(invoice.amountUsd, /^\d+\.\d{2}$/);
    assert.match(invoice.issueDate, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
    assert.equal(new Date(invoice.issueDate).getTime(), (rows[0].issue_date as Date).getTime());
    assert.equal(invoice.issuerId, rows[0].issuer_id);
    assert.equal(invoice.receiverId, rows[0].receiver_id);
  });

  it('answers an unknown id with null, not an error', async () => {
    const res = await f.gw.request(InvoiceByIdDocument, { id: '987654321' });
    assert.equal(res.errors, undefined);
    assert.equal(res.data!.invoice, null);
  });

  it('keeps the order of ids, with null where absent and repeats answered in place', async () => {
    const ids = ['5', '999999', '3', '5', '0'];
    const res = await f.gw.request(InvoicesWithPartiesDocument, { ids });
    assert.equal(res.errors, undefined);
    assert.deepEqual(
      res.data!.invoices.map((i) => i?.id ?? null),
      ['5', null, '3', '5', null],
    );
  });

  it('merges the misses of concurrent requests: one statement for one id asked by many at once', async () => {
    const id = '1501';
    const requests = 32;
    let answers: unknown[] = [];
    const statements = await f.gw.countSql(async () => {
      answers = await Promise.all(Array.from({ length: requests }, () => f.gw.request(InvoiceByIdDocument, { id })));
    });
    assert.ok(answers.every((a) => JSON.stringify(a) === JSON.stringify(answers[0])));
    assert.equal((answers[0] as { data: { invoice: { id: string } } }).data.invoice.id, id);
    // Each request has its own loader; without the process-wide window each would read Postgres.
    assert.ok(statements < requests / 2, `${requests} concurrent requests ran ${statements} statements`);
    assert.ok((await f.gw.gateway.metrics.total(f.gw.gateway.metrics.readsJoined)) > 0);
  });

  it('merges concurrent requests for different ids into few statements', async () => {
    const ids = Array.from({ length: 32 }, (_, i) => String(1601 + i));
    let answers: { data?: { invoice: { id: string } | null } | null }[] = [];
    const statements = await f.gw.countSql(async () => {
      answers = await Promise.all(ids.map((id) => f.gw.request(InvoiceByIdDocument, { id })));
    });
    assert.deepEqual(answers.map((a) => a.data?.invoice?.id), ids);
    assert.ok(statements < ids.length / 2, `${ids.length} concurrent requests ran ${statements} statements`);
  });

  it('canonicalises ids with leading zeros', async () => {
    const res = await f.gw.request(InvoiceByIdDocument, { id: '0042' });
    assert.equal(res.data!.invoice!.id, '42');
  });

  it('100 invoices with issuer and receiver: at most 2 SQL statements cold, 0 once cached (from the second read)', async () => {
    const ids = Array.from({ length: 100 }, (_, i) => String(1001 + i));
    let cold: Awaited<ReturnType<typeof f.gw.request<unknown, unknown>>> | undefined;
    const coldStatements = await f.gw.countSql(async () => {
      cold = await f.gw.request(InvoicesWithPartiesDocument, { ids });
    });
    assert.equal(cold!.errors, undefined);
    assert.ok(coldStatements <= 2, `cold cache ran ${coldStatements} statements`);
    assert.ok(coldStatements >= 1, 'the cold query must have read Postgres');
    // Read once, not cached (CACHE_ADMISSION=second-read): the second read reads Postgres again and fills.
    const secondStatements = await f.gw.countSql(() => f.gw.request(InvoicesWithPartiesDocument, { ids }));
    assert.equal(secondStatements, coldStatements);

    let warm: typeof cold;
    const warmStatements = await f.gw.countSql(async () => {
      warm = await f.gw.request(InvoicesWithPartiesDocument, { ids });
    });
    assert.equal(warmStatements, 0);
    assert.deepEqual(warm, cold);

    const { rows } = await f.sql.query(
      `SELECT i.invoice_id::text AS id, c.customer_name AS issuer FROM invoices i JOIN customers c ON c.customer_id = i.issuer_id
       WHERE invoice_id = ANY($1::bigint[]) ORDER BY invoice_id`,
      [ids],
    );
    const served = (warm!.data as { invoices: { id: string; issuer: { name: string } }[] }).invoices;
    assert.deepEqual(served.map((i) => ({ id: i.id, issuer: i.issuer.name })), rows);
  });

  it('rejects malformed ids with BAD_USER_INPUT and runs no SQL', async () => {
    for (const id of ['abc', '-1', '1.5', '', ' 7', '9223372036854775808', '99999999999999999999']) {
      let res: Awaited<ReturnType<typeof f.gw.request>> | undefined;
      const statements = await f.gw.countSql(async () => {
        res = await f.gw.request(InvoiceByIdDocument, { id });
      });
      assert.equal(res!.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', `id ${JSON.stringify(id)}`);
      assert.equal(statements, 0);
    }
    const customer = await f.gw.request(CustomerByIdDocument, { id: '2147483648' });
    assert.equal(customer.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
  });

  it('rejects more than 1,000 ids with BAD_USER_INPUT', async () => {
    const ids = Array.from({ length: 1001 }, (_, i) => String(i + 1));
    const res = await f.gw.request(InvoicesWithPartiesDocument, { ids });
    assert.equal(res.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
    assert.match(res.errors![0]!.message, /at most 1000/);
    const exactly = await f.gw.request(CustomersByIdsDocument, { ids: ids.slice(0, 1000) });
    assert.equal(exactly.errors, undefined);
    assert.equal(exactly.data!.customers.length, 1000);
  });

  it('looks customers up by id, in order, null where absent', async () => {
    const res = await f.gw.request(CustomersByIdsDocument, { ids: ['2', '777', '1'] });
    assert.equal(res.errors, undefined);
    const { rows } = await f.sql.query(`SELECT customer_name FROM customers WHERE customer_id IN (1, 2) ORDER BY customer_id DESC`);
    assert.deepEqual(res.data!.customers.map((c) => c?.name ?? null), [rows[0].customer_name, null, rows[1].customer_name]);
    const one = await f.gw.request(CustomerByIdDocument, { id: '2' });
    assert.equal(one.data!.customer!.name, rows[0].customer_name);
  });
});
