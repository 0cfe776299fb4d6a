import { Arg, Args, Ctx, FieldResolver, Int, Query, Resolver, Root, Subscription, type SubscribeResolverData } from 'type-graphql';
import { badUserInput, PublicError } from '../core/errors.js';
import { perPageItem } from '../schema/complexity.js';
import { Invoice } from '../schema/invoice.type.js';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../schema/limits.js';
import { RiskScore, RiskScoreConnection, RiskScoredArgs, RiskScoreFilterArgs } from '../schema/risk.type.js';
import type { InvoiceRecord } from '../sources/postgres/invoiceStore.js';
import type { RiskScoreRecord, ScoreFilter } from '../sources/postgres/riskStore.js';
import type { Context } from './context.js';
import { decodeSeqCursor, encodeSeqCursor } from './cursor.js';
import { parseCustomerId } from './ids.js';
import { riskScoreStream } from './riskSubscription.js';

function parseFilter(args: RiskScoredArgs): ScoreFilter {
  const { minScore } = args;
  if (minScore != null && !(minScore >= 0 && minScore <= 1)) throw badUserInput(`minScore must be between 0 and 1, got ${minScore}`);
  return {
    minScore: minScore ?? null,
    band: args.band ?? null,
    issuerId: args.issuerId == null ? null : parseCustomerId(args.issuerId, 'issuerId'),
    receiverId: args.receiverId == null ? null : parseCustomerId(args.receiverId, 'receiverId'),
  };
}

/** Checked when a subscription starts: a bad argument or a feed that is off is its error, not the socket's. */
function subscribeRiskScored({ args, context }: SubscribeResolverData<unknown, RiskScoredArgs, Context>): AsyncIterable<RiskScoreRecord> {
  const filter = parseFilter(args);
  const after = args.after == null ? null : decodeSeqCursor('live', args.after);
  const feed = context.feed.status();
  if (feed.state === 'off') throw new PublicError('SERVICE_UNAVAILABLE', `risk scores are not being produced: ${feed.reason}`);
  return riskScoreStream({ bus: context.events, store: context.risk, metrics: context.metrics, filter, after, maxQueued: context.limits.subscriptionQueue });
}

@Resolver(() => RiskScore)
export class RiskResolver {
  @Subscription(() => RiskScore, {
    subscribe: subscribeRiskScored,
    description:
      'Every invoice scored from now on (inserted by any client), within milliseconds of its commit. With after, first every score after that cursor, then live ones, with no gap and no duplicate.',
  })
  riskScored(@Root() score: RiskScoreRecord, @Args(() => RiskScoredArgs) _args: RiskScoredArgs): RiskScoreRecord {
    return score;
  }

  @Query(() => RiskScoreConnection, { description: `Risk scores, newest first. first: 1 to ${MAX_PAGE_SIZE}.`, complexity: perPageItem })
  async riskScores(
    @Ctx() ctx: Context,
    @Args(() => RiskScoreFilterArgs) filterArgs: RiskScoreFilterArgs,
    @Arg('first', () => Int, { defaultValue: DEFAULT_PAGE_SIZE }) first: number,
    @Arg('after', () => String, { nullable: true }) after?: string | null,
  ): Promise<RiskScoreConnection> {
    if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) throw badUserInput(`first must be between 1 and ${MAX_PAGE_SIZE}, got ${first}`);
    const filter = parseFilter(filterArgs);
    const before = after == null ? null : decodeSeqCursor('page', after);
    const rows = await ctx.risk.page(before, filter, first + 1);
    const page = rows.slice(0, first);
    const edges = page.map((node) => ({ cursor: encodeSeqCursor('page', node.seq), node: node as unknown as RiskScore }));
    return {
      edges,
      nodes: edges.map((e) => e.node),
      pageInfo: { hasNextPage: rows.length > first, hasPreviousPage: false, startCursor: edges[0]?.cursor ?? null, endCursor: edges.at(-1)?.cursor ?? null },
    };
  }

  @FieldResolver(() => String, { nullable: true })
  cursor(@Root() score: RiskScoreRecord): string | null {
    return score.liveSeq === null ? null : encodeSeqCursor('live', score.liveSeq);
  }

  @FieldResolver(() => Invoice, { nullable: true, description: 'Null once the invoice has been deleted.' })
  invoice(@Root() score: RiskScoreRecord, @Ctx() ctx: Context): Promise<InvoiceRecord | null> {
    return ctx.loaders.invoice.load(score.invoiceId);
  }
}
