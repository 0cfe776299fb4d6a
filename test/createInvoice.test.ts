import assert from 'node:assert/strict';
import { parse } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { CreateInvoiceDocument, InvoiceByIdDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

describe('createInvoice', { skip }, () => {
  const f = useTestGateway('create_invoice', { seed: { customers: 5, invoices: 10, months: 1, seed: 1 } });

  const invoiceCount = async () => Number((await f.sql.query('SELECT count(*) FROM invoices')).rows[0].count);

  it('stores the invoice and returns it as stored', async () => {
    const res = await f.gw.request(CreateInvoiceDocument, { input: { issuerId: '1', receiverId: '2', amountUsd: '999.9' } });
    assert.equal(res.errors, undefined);
    const created = res.data!.createInvoice;
    assert.equal(created.amountUsd, '999.90');
    assert.equal(created.issuer.id, '1');
    const { rows } = await f.sql.query('SELECT amount_usd::text, issuer_id, receiver_id, issue_date FROM invoices WHERE invoice_id = $1', [created.id]);
    assert.deepEqual(rows[0], { amount_usd: '999.90', issuer_id: 1, receiver_id: 2, issue_date: rows[0].issue_date });
    assert.ok(Math.abs((rows[0].issue_date as Date).getTime() - Date.now()) < 60_000, 'issueDate defaults to now');
    const lookup = await f.gw.request(InvoiceByIdDocument, { id: created.id });
    assert.equal(lookup.data!.invoice!.amountUsd, '999.90');
  });

  it('keeps an explicit issueDate to the microsecond and the amount exactly', async () => {
    const res = await f.gw.request(CreateInvoiceDocument, {
      input: { issuerId: '3', receiverId: '4', amountUsd: '999999999999.99', issueDate: '2025-03-01T10:20:30.123456+02:00' },
    });
    assert.equal(res.errors, undefined);
    assert.equal(res.data!.createInvoice.issueDate, '2025-03-01T08:20:30.123456Z');
    assert.equal(res.data!.createInvoice.amountUsd, '999999999999.99');
  });

  it('refuses a number for money, as a variable or a literal, with BAD_USER_INPUT asking for a string', async () => {
    const before = await invoiceCount();
    const asVariable = await f.gw.request(CreateInvoiceDocument, { input: { issuerId: '1', receiverId: '2', amountUsd: 12.5 as unknown as string } });
    const literal = parse('mutation { createInvoice(input: { issuerId: "1", receiverId: "2", amountUsd: 12.5 }) { id } }') as TypedDocumentNode<unknown, never>;
    const asLiteral = await f.gw.request(literal);
    for (const res of [asVariable, asLiteral]) {
      assert.equal(res.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(res.errors));
      assert.match(res.errors![0]!.message, /Decimal must be a string such as "999.90", not a number/);
    }
    assert.equal(await invoiceCount(), before);
  });

  it('rejects bad input with BAD_USER_INPUT and writes nothing', async () => {
    const before = await invoiceCount();
    const bad: [string, Record<string, unknown>][] = [
      ['unknown issuer', { issuerId: '999', receiverId: '2', amountUsd: '1.00' }],
      ['unknown receiver', { issuerId: '1', receiverId: '999', amountUsd: '1.00' }],
      ['malformed issuer id', { issuerId: 'x1', receiverId: '2', amountUsd: '1.00' }],
      ['issuer id beyond int', { issuerId: '2147483648', receiverId: '2', amountUsd: '1.00' }],
      ['zero amount', { issuerId: '1', receiverId: '2', amountUsd: '0' }],
      ['negative amount', { issuerId: '1', receiverId: '2', amountUsd: '-5.00' }],
      ['three decimals', { issuerId: '1', receiverId: '2', amountUsd: '1.005' }],
      ['exponent', { issuerId: '1', receiverId: '2', amountUsd: '1e3' }],
      ['too large for numeric(14,2)', { issuerId: '1', receiverId: '2', amountUsd: '1000000000000.00' }],
      ['not a number', { issuerId: '1', receiverId: '2', amountUsd: 'lots' }],
      ['float that is not exact', { issuerId: '1', receiverId: '2', amountUsd: 0.1 + 0.2 }],
      ['date without zone', { issuerId: '1', receiverId: '2', amountUsd: '1.00', issueDate: '2025-01-01T00:00:00' }],
      ['impossible date', { issuerId: '1', receiverId: '2', amountUsd: '1.00', issueDate: '2025-02-30T00:00:00Z' }],
      ['not a date', { issuerId: '1', receiverId: '2', amountUsd: '1.00', issueDate: 'yesterday' }],
      // Postgres stores these, but they fall outside years 1 to 9999 in UTC.
      ['year 10000 in UTC', { issuerId: '1', receiverId: '2', amountUsd: '1.00', issueDate: '9999-12-31T23:59:59-01:00' }],
      ['1 BC in UTC', { issuerId: '1', receiverId: '2', amountUsd: '1.00', issueDate: '0001-01-01T00:00:00+00:01' }],
      ['offset past 15:59', { issuerId: '1', receiverId: '2', amountUsd: '1.00', issueDate: '2026-01-01T00:00:00+16:00' }],
    ];
    for (const [label, input] of bad) {
      const res = await f.gw.request(CreateInvoiceDocument, { input: input as never });
      assert.equal(res.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', `${label}: ${JSON.stringify(res.errors)}`);
      assert.doesNotMatch(res.errors![0]!.message, /invoices|customers|constraint|SELECT|INSERT/i, label);
    }
    assert.equal(await invoiceCount(), before);
  });

  it('the table refuses an issue date outside years 1 to 9999 from any client (psql, an importer)', async () => {
    for (const date of ['10000-01-01 00:00:00+00', '0001-12-31 23:00:00+00 BC']) {
      await assert.rejects(
        f.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES ($1, 1, 2, 1.00)`, [date]),
        (err: { code?: string; constraint?: string }) => err.code === '23514' && err.constraint === 'invoices_gw_issue_date_range',
      );
    }
    await assert.rejects(f.sql.query(`UPDATE invoices SET issue_date = '10000-06-01 00:00:00+00' WHERE invoice_id = 1`), { code: '23514' });
    // The last instant of year 9999 is in range, and round-trips.
    const res = await f.gw.request(CreateInvoiceDocument, { input: { issuerId: '1', receiverId: '2', amountUsd: '1.00', issueDate: '9999-12-31T23:59:59.999999Z' } });
    assert.equal(res.data?.createInvoice.issueDate, '9999-12-31T23:59:59.999999Z', JSON.stringify(res.errors));
  });
});
