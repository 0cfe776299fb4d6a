import type { Logger } from 'pino';
import type { InvoiceStore } from '../sources/postgres/invoiceStore.js';
import type { Loaders } from './loaders.js';

/** What every resolver receives; built fresh for each request. */
export interface Context {
  readonly loaders: Loaders;
  readonly invoices: InvoiceStore;
  readonly logger: Logger;
}
