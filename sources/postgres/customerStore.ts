import { inKeyOrder, type Database, type Statement } from './database.js';

export interface CustomerRecord {
  readonly id: string;
  readonly name: string;
}

const BY_IDS: Statement = {
  name: 'customers_by_ids',
  text: `SELECT customer_id::text AS id, customer_name AS name FROM customers WHERE customer_id = ANY($1::int[])`,
};

export interface CustomerStore {
  /** Customers in `ids` order, `null` where absent. */
  byIds(ids: readonly string[]): Promise<(CustomerRecord | null)[]>;
}

export function createCustomerStore(db: Database): CustomerStore {
  return {
    async byIds(ids) {
      const rows = await db.query<CustomerRecord>(BY_IDS, [ids]);
      return inKeyOrder(ids, rows);
    },
  };
}
