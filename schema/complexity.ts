import type { ComplexityEstimatorArgs } from 'graphql-query-complexity';

/**
 * Cost estimators for list fields, so that one operation cannot ask for millions of rows
 * (1,000 customers x 500 invoices x their parties...). A field costs 1; a list costs its
 * selection times the number of items it may return. The gateway refuses an operation whose
 * total exceeds MAX_QUERY_COMPLEXITY before running it.
 */
export const perId = ({ args, childComplexity }: ComplexityEstimatorArgs): number =>
  1 + childComplexity * (Array.isArray(args.ids) ? args.ids.length : 1);

export const perPageItem = ({ args, childComplexity }: ComplexityEstimatorArgs): number =>
  1 + childComplexity * (typeof args.first === 'number' ? Math.max(args.first, 0) : 1);
