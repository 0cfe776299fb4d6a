import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Metrics } from '../../core/metrics.js';
import { deadlineIn, within, type Deadline } from '../../core/deadline.js';
import { serviceUnavailable, upstreamTimeout } from '../../core/errors.js';
import type { Duck } from '../duckdb/duckdb.js';
import type { ObjectCache } from '../objectStore/objectCache.js';
import { ObjectNotFoundError, type ObjectStore } from '../objectStore/objectStore.js';
import { decodedEnd, UNKNOWN_MAX_ID, type LakeChanges, type LakeStore } from '../postgres/lakeStore.js';
import type { Lsn } from '../postgres/replication.js';
import type { InvoiceColumns, LiveGroups, LiveScope, SnapshotLake, StatsGroup, StatsQuery, StatsSnapshot, StatsStore, StatsWindow } from '../postgres/statsStore.js';
import type { FewAnswers, HeldAnswer } from './fewAnswers.js';
import type { FreshInvoices } from './freshInvoices.js';
import { createHeldPages } from './heldPages.js';
import { cursorKey, heldTableId, lakeStats, pageRecords } from './lakeStats.js';
import { createPageBounds, type GroupKey } from './pageBounds.js';
import { parseManifest, type LakeManifest } from './manifest.js';
import { createWholeAnswers, type AnswerMade, type WholeAnswer } from './wholeAnswers.js';
import { createWindowTables } from './windowTables.js';

/** Something the answer's reader should know: how it was made, or what it had to skip. */
export interface StatsWarning {
  readonly code: string;
  readonly message: string;
}

export interface StatsAnswer {
  readonly groups: StatsGroup[];
  /** The moment the answer is for: its Postgres snapshot (ISO 8601 UTC). */
  readonly asOf: string;
  readonly engine: 'POSTGRES' | 'LAKE';
  /** Invoices counted from the lake's files, and read live from Postgres. */
  readonly lakeRows: number;
  readonly liveRows: number;
  /** When the lake's files were exported (null: not used). */
  readonly lakeAsOf: string | null;
  readonly warnings: StatsWarning[];
  /** What the answer was made from, when it can be proven exact again at a later moment (keptAgain). */
  readonly kept?: AnswerBasis;
}

/**
 * What an answer rests on, by which StatsEngine.keptAgain proves it exact at a later moment:
 * - `few`: a kept few-customer answer (see FewAnswers), held while no commit touches its customers;
 * - `lake`: the lake at a version (see LakeVersion) in the window ending at `thisMonth`. A
 *   snapshot that sees every change recorded at that version, after a barrier, sees the same
 *   invoices, so the same request has the same answer.
 */
export type AnswerBasis =
  | { readonly kind: 'few'; readonly held: HeldAnswer }
  | {
      readonly kind: 'lake';
      readonly version: string;
      readonly thisMonth: string;
      /** LakeStore.batchesRecordedHere when the answer was made: once it has grown, the version has changed. */
      readonly batchesHere: number;
    };

export interface StatsEngineOptions {
  readonly stats: StatsStore;
  readonly lakeStore: LakeStore;
  /** Unset: no lake (Postgres answers everything). */
  readonly lake?: { readonly store: ObjectStore; readonly cache: ObjectCache; readonly duck: Duck };
  /**
   * At or below this many customers, with at most `postgresMaxInvoices` invoices in the window
   * between them, the (party, issue_date) index beats reading the lake.
   */
  readonly postgresMaxCustomers: number;
  readonly postgresMaxInvoices: number;
  /** Time limit of one query, all its stages together (UPSTREAM_TIMEOUT past it). */
  readonly timeoutMs: number;
  /** How long to wait for the feed to record every change that precedes the query. */
  readonly barrierTimeoutMs: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** The invoices this process's change feed delivered (unset: fresh invoices are always read from Postgres). */
  readonly fresh?: FreshInvoices;
  /** Few-customer answers kept while this process's feed proves them current (unset: each is asked of Postgres). */
  readonly few?: FewAnswers;
}

/** The invoices of a window, exact as of a Postgres snapshot, for joins in DuckDB. */
export interface InvoiceSet {
  readonly window: StatsWindow;
  readonly engine: 'POSTGRES' | 'LAKE';
  /** Local raw Parquet files of the window's months, with their rows (none when Postgres answers alone). */
  readonly rawFiles: readonly { readonly path: string; readonly rows: number }[];
  /** Invoices whose version in those files is stale or gone: left out of them. */
  readonly staleIds: string[];
  /** Invoices read from Postgres, in the window: the ones the lake lacks or holds stale. */
  readonly live: InvoiceColumns;
  readonly lakeAsOf: string | null;
  readonly warnings: StatsWarning[];
  /** How many of these invoice ids no invoice has, in the same snapshot. */
  unknownInvoices(ids: readonly string[]): Promise<number>;
  /**
   * Every month's raw files of the lake this set was read from, with the manifest's key (which
   * names them for a cache); null when Postgres answered alone.
   */
  readonly lakeFiles: { readonly key: string; all(): Promise<string[]> } | null;
}

export interface StatsEngine {
  invoiceStats(query: StatsQuery): Promise<StatsAnswer>;
  /**
   * The moment (asOf) at which an answer made from `basis` (StatsAnswer.kept) is still exact, or
   * undefined: a short statement instead of the query (for the lake's, when this process's feed
   * had not recorded up to it, the barrier and a second one), within PROOF_MS (past it, or when a
   * statement fails, the error is thrown: the caller answers with the query instead).
   */
  keptAgain(basis: AnswerBasis): Promise<string | undefined>;
  /**
   * Runs `work` on the window's invoices (lake plus live rows, or Postgres alone), within
   * `deadline` (the query's time limit, begun by the caller).
   */
  withInvoices<T>(months: number, deadline: Deadline, work: (set: InvoiceSet) => Promise<T>): Promise<T>;
}

/**
 * Chooses the engine per query shape and makes the lake's answer exact: the query's Postgres
 * snapshot is taken first; a barrier through the change feed then proves every change committed
 * before it has been recorded in lake_changes (the feed's report that it has decoded the WAL past
 * the snapshot, or a message written and passed); the lake answers for everything but those
 * invoices, and Postgres, in the same snapshot, for them. When the lake cannot be trusted (not
 * exported yet, the feed not recording), Postgres answers alone, and the answer says so.
 */
export function createStatsEngine(options: StatsEngineOptions): StatsEngine {
  /** Manifests by key: the read in flight, and once done its result (taken without waiting by freshEarly). */
  const manifests = new Map<string, ManifestEntry>();
  const windowTables = createWindowTables(WINDOW_ROWS_HELD);
  const wholeAnswers = createWholeAnswers(WHOLE_ANSWER_GROUPS);
  const pageBounds = createPageBounds();
  const heldPages = createHeldPages(HELD_PAGE_CHARS);
  /**
   * Sets of customers found to have more invoices in a window than Postgres answers for, by role,
   * months and granularity: asked again (a dashboard's busy customer), they go to the lake without
   * being counted again. That count was more than half of the busiest issuer's answer at 10M
   * (11.9 of 21.1 ms in bench/HISTORY.md's run at fb5bd7a). Either engine is exact; this only routes.
   * Forgotten after a while (a window moves, rows are deleted); bounded by the keys' characters.
   */
  const busyCustomers = new LRUCache<string, true>({ maxSize: BUSY_KEY_CHARS, sizeCalculation: (_busy, key) => key.length, ttl: BUSY_FOR_MS });
  const manifest = (store: ObjectStore, key: string) => {
    let entry = manifests.get(key);
    if (!entry) {
      const made: ManifestEntry = { pending: store.read(key).then(parseManifest) };
      made.pending.then((read) => (made.read = read), () => manifests.delete(key));
      entry = made;
      manifests.set(key, entry);
      // Immutable per generation; only the last few are worth keeping.
      if (manifests.size > 8) manifests.delete(manifests.keys().next().value!);
    }
    return entry.pending;
  };

  /**
   * Whether the lake may answer in the query's snapshot: it has been exported, and the feed has
   * recorded every commit before the snapshot (a barrier). Otherwise why Postgres answers alone.
   */
  async function lakeUnusable(window: StatsWindow, deadline: Deadline, listed: LakeChanges | undefined): Promise<StatsWarning | undefined> {
    if (window.lakeGeneration === 0) return NOT_EXPORTED;
    const waitMs = Math.min(options.barrierTimeoutMs, deadline.remainingMs());
    const passed = await timed('barrier', async () => (listed ? ('recorded' as const) : options.lakeStore.recordedUpTo(window.wal, waitMs, deadline.signal)));
    if (!passed) return NOT_CURRENT;
    options.metrics.analyticsBarriers.inc({ kind: passed });
    return undefined;
  }

  /**
   * The change list the snapshot read, if complete: this process's feed had recorded (committed)
   * every change up to where the WAL stood at the snapshot before it began (`recordedBefore`),
   * so the snapshot sees all of them. Then the barrier is passed too.
   */
  const listedInSnapshot = (window: StatsWindow, recordedBefore: Lsn): LakeChanges | undefined => {
    // Recorded that far, the WAL was decoded, so flushed, that far too.
    return window.changes && recordedBefore >= decodedEnd(window.wal) ? window.changes : undefined;
  };

  /** After the barrier: the lake's manifest and the invoices it does not reflect; or why Postgres must answer alone. */
  async function lakeChanges(
    lake: NonNullable<StatsEngineOptions['lake']>,
    window: StatsWindow,
    listed: LakeChanges | undefined,
    keeping = false,
  ): Promise<{ manifest: LakeManifest; changes: LakeChanges } | StatsWarning> {
    // Whether the snapshot sees every change is asked of invoiceStats' answers (they may be kept or replayed), not of joins.
    const changes = listed ?? (await options.lakeStore.changesForQuery(keeping ? window.snapshot : null));
    if (changes.generation === 0 || !changes.manifestKey) return RESET;
    // An export that finished after the snapshot describes rows the snapshot cannot see, and has
    // dropped the changes the snapshot's generation needed.
    if (changes.generation !== window.lakeGeneration) return EXPORTED_MEANWHILE;
    try {
      return { manifest: await manifest(lake.store, changes.manifestKey), changes };
    } catch (err) {
      if (err instanceof ObjectNotFoundError) return OBJECTS_MISSING;
      throw err;
    }
  }

  /**
   * After the barrier: whether a kept answer is this snapshot's too. It is when both snapshots
   * see the same generation and every change recorded at one version (see LakeVersion).
   */
  async function keptStillExact(kept: WholeAnswer, window: StatsWindow, listed: LakeChanges | undefined): Promise<boolean> {
    if (kept.generation !== window.lakeGeneration) return false;
    const now = listed ?? (await options.lakeStore.version(window.snapshot));
    return now.seenBySnapshot && now.version === kept.version;
  }

  /** The lake as a query may use it, in the query's snapshot (see lakeUnusable and lakeChanges). */
  async function currentLake(lake: NonNullable<StatsEngineOptions['lake']>, window: StatsWindow, deadline: Deadline, recordedBefore: Lsn) {
    const listed = listedInSnapshot(window, recordedBefore);
    return (await lakeUnusable(window, deadline, listed)) ?? timed('changes', () => lakeChanges(lake, window, listed));
  }

  /**
   * A first page's fresh inserts, read on the snapshot's connection as soon as its window is
   * known, while the barrier and the change list run on the other pool: the invoices above the
   * export's highest id as the snapshot sees lake_state. Those are the rows the change list's
   * range would read: after the barrier every such invoice the snapshot sees is recorded, and
   * within one generation the highest id does not move. Its scope is the answer's (a first page
   * never wants a whole answer), its bound the one a lake with nothing stale takes; invoiceStats
   * uses the read only when its own bound is the same.
   * Nothing here waits: the statement is queued before any later one of the snapshot's.
   */
  function freshEarly(snapshot: StatsSnapshot, query: StatsQuery): EarlyFresh | undefined {
    const { window } = snapshot;
    // An unknown highest id: the change list lists every change instead.
    if (window.lakeMaxId === UNKNOWN_MAX_ID) return undefined;
    const scope = query.orderBy === 'CUSTOMER_ASC' ? 'page' : 'all';
    // The manifest: only one already read, so that nothing waits for the store.
    const read = window.lakeManifestKey ? manifests.get(window.lakeManifestKey)?.read : undefined;
    // This process's feed kept every invoice the export lacks: grouped from memory after the barrier.
    if (read && options.fresh?.covers(read)) return undefined;
    let bound: GroupKey | undefined;
    if (scope === 'page' && query.customerIds === null) {
      // The bound comes from the manifest.
      if (!read) return undefined;
      bound = pageBounds.bound(heldTableId(read, window.months, query), cursorKey(null), query.limit);
    }
    const groups = snapshot.freshGroups(window.lakeMaxId, query, scope, bound?.customer);
    // Awaited before the snapshot's connection answers anything else: a failure is reported there.
    groups.catch(() => undefined);
    return { bound, groups };
  }

  /** The fresh invoices' groups as this process's feed kept them (see FreshInvoices); undefined when it did not keep them all. */
  function keptFresh(window: StatsWindow, exported: LakeManifest, maxId: string, query: StatsQuery, scope: LiveScope, upTo: number | undefined) {
    const groups = options.fresh?.liveGroups({ snapshot: window.snapshot, exported, maxId, from: window.from, to: window.to, query, scope, upTo });
    return groups && Promise.resolve(groups);
  }

  /**
   * A few customers' answer kept by this process (see FewAnswers), if still exact: one statement
   * reads the moment and where the WAL stands; once this process's own feed has recorded that far
   * (briefly waited for: the statement costs about as much), every commit the moment sees was
   * handed to the kept answers, which drop an answer such a commit touched.
   */
  async function keptFew(key: string, deadline: Deadline): Promise<{ asOf: string; groups: StatsGroup[]; held: HeldAnswer } | undefined> {
    // The answer kept now: one kept later, by a statement that began after this moment, may see later commits.
    const held = options.few?.held(key);
    const proven = held && (await provenAt(held, deadline));
    return proven && { asOf: proven.asOf, groups: [...proven.groups], held: held! };
  }

  /** A held answer's groups and the moment they are exact at, if they still are. */
  async function provenAt(held: HeldAnswer, deadline: Deadline): Promise<{ asOf: string; groups: readonly StatsGroup[] } | undefined> {
    const few = options.few;
    if (!few) return undefined;
    const moment = await timed('snapshot', () => options.stats.moment());
    few.observed(moment.snapshot);
    const waitMs = Math.min(FEW_BARRIER_WAIT_MS, deadline.remainingMs());
    const passed = await timed('barrier', () => options.lakeStore.recordedHereUpTo(moment.wal, waitMs, deadline.signal));
    if (!passed) return undefined;
    options.metrics.analyticsBarriers.inc({ kind: passed });
    const groups = few.answer(held, moment);
    options.metrics.analyticsFewAnswers.inc({ outcome: groups ? 'served' : 'stale' });
    return groups && { asOf: moment.asOf, groups };
  }

  /**
   * The moment at which the lake answers as it did at `version` in the window ending at
   * `thisMonth`, if it still does: the version read once every commit before the moment is
   * recorded. That is the moment's own statement when this process's feed had recorded past it
   * before it began (as listedInSnapshot), else a read after the barrier. The same version means
   * the same recorded changes, all seen by the answer's snapshot, so by this later one too.
   * 'unproven': the barrier did not pass in time (the query then waits for its own).
   */
  async function lakeProvenAt(basis: Extract<AnswerBasis, { kind: 'lake' }>, deadline: Deadline): Promise<Proof> {
    const recordedBefore = options.lakeStore.recordedHere();
    const moment = await timed('snapshot', () => options.stats.moment());
    if (moment.thisMonth !== basis.thisMonth) return { outcome: 'stale' };
    let version = moment.lakeVersion;
    if (recordedBefore >= decodedEnd(moment.wal)) {
      options.metrics.analyticsBarriers.inc({ kind: 'recorded' });
    } else {
      // The query's own barrier (recordedUpTo: this process's feed waited for, a barrier written
      // when it stays behind or the WAL is unflushed). This process's streaming feed is waited
      // for the proof's whole time: the query a failed proof leaves would wait for the same feed
      // (after 10,000 inserts at 10M a proof gave up at 100 ms with 46 ms left). Another
      // process's feed, or none, for REPLAY_BARRIER_WAIT_MS.
      const waitMs = Math.min(options.lakeStore.streamsHere() ? Infinity : REPLAY_BARRIER_WAIT_MS, deadline.remainingMs());
      const passed = await timed('barrier', () => options.lakeStore.recordedUpTo(moment.wal, waitMs, deadline.signal));
      if (!passed) return { outcome: 'unproven' };
      options.metrics.analyticsBarriers.inc({ kind: passed });
      version = (await timed('changes', () => options.lakeStore.version(null))).version;
    }
    return version === basis.version ? { asOf: moment.asOf, outcome: 'replayed' } : { outcome: 'stale' };
  }

  const observe = (engine: string, started: number) => {
    options.metrics.analyticsQueries.inc({ engine });
    options.metrics.analyticsDuration.observe({ engine }, (performance.now() - started) / 1000);
  };
  const observeStage = (stage: Stage, started: number) => options.metrics.analyticsStageDuration.observe({ stage }, (performance.now() - started) / 1000);
  /** `work`, its time counted as `stage` of the query (the metric says where a query's time goes). */
  const timed = async <T>(stage: Stage, work: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await work();
    } finally {
      observeStage(stage, started);
    }
  };
  /** The stats store's snapshot, its opening (BEGIN and the window) counted as a stage (its COMMIT follows the answer). */
  const inSnapshot = <T>(months: number, deadline: Deadline, work: (snapshot: StatsSnapshot) => Promise<T>, lake: SnapshotLake): Promise<T> => {
    const opening = performance.now();
    return options.stats.withSnapshot(months, (snapshot) => {
      observeStage('snapshot', opening);
      return work(snapshot);
    }, deadline, lake);
  };

  // The answers, each stage given what is left of the deadline; the public methods below race
  // them against the deadline itself (within).
  const answers: { withInvoices: StatsEngine['withInvoices']; invoiceStats(query: StatsQuery, deadline: Deadline): Promise<StatsAnswer> } = {
    async withInvoices(months, deadline, work) {
      const started = performance.now();
      let engine = 'POSTGRES';
      // The join runs in DuckDB whichever engine supplied the invoices.
      const runJoin = (set: InvoiceSet) => timed('lake', () => work(set));
      const recordedBefore = options.lakeStore.recordedHere();
      const result = await inSnapshot(months, deadline, async (snapshot) => {
        const base = { window: snapshot.window, unknownInvoices: (ids: readonly string[]) => snapshot.unknownInvoices(ids), lakeFiles: null };
        const fromPostgres = async (warning?: StatsWarning) =>
          runJoin({ ...base, engine: 'POSTGRES', rawFiles: [], staleIds: [], live: await timed('postgres', () => snapshot.invoices(null)), lakeAsOf: null, warnings: warning ? [warning] : [] });
        if (!options.lake) return fromPostgres();
        const lake = await currentLake(options.lake, snapshot.window, deadline, recordedBefore);
        if ('code' in lake) return fromPostgres(lake);
        const { store, cache } = options.lake;
        const wanted = new Set(snapshot.window.months);
        const raw = lake.manifest.months.filter((m) => wanted.has(m.month)).flatMap((m) => m.raw);
        let rawFiles: { path: string; rows: number }[];
        try {
          rawFiles = await Promise.all(raw.map(async (f) => ({ path: await cache.fetch(store, f.key, f.etag), rows: f.rows })));
        } catch (err) {
          if (err instanceof ObjectNotFoundError) return fromPostgres(OBJECTS_MISSING);
          throw err;
        }
        engine = 'LAKE';
        const live = await timed('live', () => snapshot.invoices(lake.changes));
        const lakeFiles = {
          key: lake.changes.manifestKey!,
          // Read later, in the join: too late to answer from Postgres instead, so a missing object is the store's failure.
          all: () =>
            Promise.all(lake.manifest.months.flatMap((m) => m.raw.map((f) => cache.fetch(store, f.key, f.etag)))).catch((err: unknown) => {
              throw err instanceof ObjectNotFoundError ? serviceUnavailable('The lake\u2019s object store', err) : err;
            }),
        };
        // Stale in the files: the listed changes, and changed invoices above the highest id (read live by the range).
        const staleIds = [...new Set([...lake.changes.ids, ...lake.changes.changed])];
        return runJoin({ ...base, engine: 'LAKE', rawFiles, staleIds, live, lakeAsOf: lake.changes.exportedAt, warnings: [], lakeFiles });
      }, { keeping: false, recordedBefore });
      observe(engine, started);
      return result;
    },

    async invoiceStats(query, deadline) {
      const started = performance.now();
      const postgresAnswer = (asOf: string, groups: StatsGroup[], warning?: StatsWarning): StatsAnswer => {
        const rows = Number(groups[0]?.allInvoices ?? 0);
        return { groups, asOf, engine: 'POSTGRES', lakeRows: 0, liveRows: rows, lakeAsOf: null, warnings: warning ? [warning] : [] };
      };
      const { customerIds } = query;
      const busyKey =
        options.lake && customerIds && customerIds.length <= options.postgresMaxCustomers
          ? `${query.role} ${query.months} ${query.granularity} ${[...customerIds].sort((a, b) => a - b).join(',')}`
          : undefined;
      if (customerIds !== null && busyKey !== undefined && !busyCustomers.has(busyKey)) {
        const fewKey = `${busyKey} ${query.orderBy} ${query.limit} ${JSON.stringify(query.after)}`;
        const kept = await keptFew(fewKey, deadline);
        if (kept) {
          observe('POSTGRES', started);
          return { ...postgresAnswer(kept.asOf, kept.groups), kept: { kind: 'few', held: kept.held } };
        }
        // One statement: their invoices counted on the index up to the limit, and grouped only
        // under it. A busy customer's months are a dozen rollup rows in the lake instead.
        const watch = options.few?.watch(fewKey, query.role, customerIds);
        const few = await timed('postgres', () => options.stats.fewCustomers({ ...query, customerIds }, options.postgresMaxInvoices)).catch((err: unknown) => {
          watch?.cancel();
          throw err;
        });
        if (few) {
          if (watch?.keep(few)) options.metrics.analyticsFewAnswers.inc({ outcome: 'kept' });
          observe('POSTGRES', started);
          return postgresAnswer(few.asOf, few.groups);
        }
        watch?.cancel();
        busyCustomers.set(busyKey, true);
      }
      // Taken before the snapshot begins: what was recorded by then, the snapshot sees.
      const recordedBefore = options.lakeStore.recordedHere();
      const answer = await inSnapshot(query.months, deadline, async (snapshot): Promise<StatsAnswer> => {
        const { window } = snapshot;
        const listed = listedInSnapshot(window, recordedBefore);
        const early = query.after === null && options.lake && window.lakeGeneration !== 0 ? freshEarly(snapshot, query) : undefined;
        const fromPostgres = async (warning?: StatsWarning) => {
          // The early read went first on the snapshot's connection: its failure (a timeout) is the answer's.
          await early?.groups;
          return postgresAnswer(window.asOf, await timed('postgres', () => snapshot.groups(query)), warning);
        };
        if (!options.lake) return fromPostgres();
        /**
         * `version`: the lake's, when the snapshot saw every change recorded at it; the answer then
         * rests on it (AnswerBasis). Not when its lakeAsOf is its asOf (the same microsecond): the
         * replay's text could not tell them apart.
         */
        const lakeAnswer = (groups: StatsGroup[], made: AnswerMade, version?: string): StatsAnswer => ({
          groups, asOf: window.asOf, engine: 'LAKE', lakeRows: made.lakeRows, liveRows: made.liveRows, lakeAsOf: made.lakeAsOf, warnings: [],
          kept:
            version !== undefined && made.lakeAsOf !== window.asOf
              ? { kind: 'lake', version, thisMonth: window.months.at(-1)!, batchesHere: options.lakeStore.batchesRecordedHere() }
              : undefined,
        });
        try {
          // A page after the first: a whole answer kept at an unchanged version holds it.
          const kept = query.after ? wholeAnswers.find(query, window) : undefined;
          const keptStart = kept?.start(query.after);
          const unusable = await lakeUnusable(window, deadline, listed);
          if (unusable) return fromPostgres(unusable);
          if (keptStart !== undefined) {
            const exact = await timed('changes', () => keptStillExact(kept!, window, listed));
            options.metrics.analyticsWholeAnswers.inc({ outcome: exact ? 'served' : 'stale' });
            if (exact) return lakeAnswer(kept!.groups(keptStart, query.limit), kept!, kept!.version);
          }
          // Whether the snapshot sees every recorded change is asked of every answer (about 1 ms
          // with 10,000 changes listed): only then may it be kept whole for later pages, or replayed.
          const lake = await timed('changes', () => lakeChanges(options.lake!, window, listed, true));
          if ('code' in lake) return fromPostgres(lake);
          const { store, cache, duck } = options.lake;
          const { changes } = lake;
          const held = heldTableId(lake.manifest, window.months, query);
          // A window whose groups are known (marked) to be more than a whole answer keeps.
          const tooManyToKeep = (pageBounds.groups(held) ?? 0) > WHOLE_ANSWER_GROUPS;
          // A client reading page after page: the whole answer, once, if the snapshot saw every recorded change.
          const wantsWhole = query.after !== null && changes.seenBySnapshot && !tooManyToKeep;
          // Otherwise a page in customer order needs only the live groups it can show.
          const scope = query.orderBy === 'CUSTOMER_ASC' && !wantsWhole ? 'page' : 'all';
          // Nothing stale in the lake: merging only adds groups, and the held groups bound the page.
          const bounded = scope === 'page' && changes.changed.length === 0 && query.customerIds === null;
          // The early read is this answer's if it took this bound (the manifest check is a guard: same generation, same key).
          const fresh = early && changes.manifestKey === window.lakeManifestKey && (bounded || early.bound === undefined) ? early : undefined;
          // One not taken went first on the snapshot's connection all the same: its failure is the answer's.
          if (early && !fresh) await early.groups;
          const bound = bounded ? (fresh ? fresh.bound : pageBounds.bound(held, cursorKey(query.after), query.limit)) : undefined;
          // The invoices above the export's highest id: kept by this process's feed, else read in the snapshot.
          const fromFeed = fresh || changes.above === null ? undefined : keptFresh(window, lake.manifest, changes.above, query, scope, bound?.customer);
          if (changes.above !== null) options.metrics.analyticsFreshReads.inc({ source: fromFeed ? 'feed' : 'postgres' });
          const live = await timed('live', () => snapshot.liveGroups(changes, query, scope, bound?.customer, fresh?.groups ?? fromFeed));
          const deps = { duck, cache, store, windowTables, pageBounds, heldPages, timeoutMs: deadline.remainingMs() };
          const input = { manifest: lake.manifest, months: window.months, query, changedIds: changes.changed, live, upTo: bound?.customer };
          const page = await timed('lake', () => lakeStats(deps, { ...input, whole: wantsWhole ? WHOLE_ANSWER_GROUPS : undefined }));
          const liveRows = live.invoices;
          // An empty page has no count of the answer's invoices: it is the live ones, as before.
          const all = page.records === '' ? liveRows : Number(page.allInvoices);
          const made: AnswerMade = { allInvoices: page.allInvoices, lakeRows: all - liveRows, liveRows, lakeAsOf: changes.exportedAt };
          const version = changes.seenBySnapshot ? changes.version : undefined;
          if (!page.whole) return lakeAnswer(pageRecords(page.records, page.allInvoices), made, version);
          const whole = wholeAnswers.keep(query, window, { ...made, version: changes.version, generation: changes.generation, records: page.records });
          options.metrics.analyticsWholeAnswers.inc({ outcome: 'kept' });
          const start = whole.start(query.after);
          if (start !== undefined) return lakeAnswer(whole.groups(start, query.limit), made, version);
          // The cursor names no group of the answer (made for another version): its page proper.
          return lakeAnswer(pageRecords((await timed('lake', () => lakeStats({ ...deps, timeoutMs: deadline.remainingMs() }, input))).records, page.allInvoices), made, version);
        } catch (err) {
          // An object of the lake gone from the store (the next export writes everything again).
          if (err instanceof ObjectNotFoundError) return fromPostgres(OBJECTS_MISSING);
          throw err;
        }
      }, { keeping: true, recordedBefore });
      observe(answer.engine, started);
      return answer;
    },
  };

  return {
    withInvoices: (months, deadline, work) => within(deadline, answers.withInvoices(months, deadline, work), late),
    invoiceStats(query) {
      const deadline = deadlineIn(options.timeoutMs);
      return within(deadline, answers.invoiceStats(query, deadline), late);
    },
    keptAgain(basis) {
      // Gone already (a commit touched the few customers, a new stream, a later month; this
      // process's feed recorded another batch of changes): no round trip.
      if (basis.kind === 'few' ? !options.few?.holds(basis.held) : options.lakeStore.batchesRecordedHere() !== basis.batchesHere) {
        if (basis.kind === 'lake') options.metrics.analyticsLakeReplays.inc({ outcome: 'stale' });
        return Promise.resolve(undefined);
      }
      const started = performance.now();
      // Short: a proof that fails is followed by the query itself, which has the whole time limit.
      const deadline = deadlineIn(Math.min(options.timeoutMs, PROOF_MS));
      const proven: Promise<Proof> =
        basis.kind === 'few'
          ? provenAt(basis.held, deadline).then((answer) => (answer ? { asOf: answer.asOf, outcome: 'replayed' } : { outcome: 'stale' }))
          : lakeProvenAt(basis, deadline);
      // Counted once the race is decided: a proof done past the limit answers nothing. (A few
      // customers' stale answer is counted by provenAt, as for a query.)
      return within(deadline, proven, late).then(
        ({ asOf, outcome }) => {
          if (basis.kind === 'lake') options.metrics.analyticsLakeReplays.inc({ outcome });
          else if (asOf !== undefined) options.metrics.analyticsFewAnswers.inc({ outcome: 'replayed' });
          if (asOf !== undefined) observe('REPLAY', started);
          return asOf;
        },
        (err: unknown) => {
          if (basis.kind === 'lake') options.metrics.analyticsLakeReplays.inc({ outcome: 'unproven' });
          throw err;
        },
      );
    },
  };
}

const late = () => upstreamTimeout('The analytics query');

/** A proof's outcome (StatsEngine.keptAgain): the moment it holds at, or why not. */
interface Proof {
  readonly asOf?: string;
  readonly outcome: 'replayed' | 'stale' | 'unproven';
}

/**
 * Rows of windows' groups kept in DuckDB tables (a 12-month window by month of 10,000 customers
 * is at most 120,000); a window past this is read from its rollup files every time.
 */
const WINDOW_ROWS_HELD = 2_000_000;

/**
 * How long a kept few-customer answer waits for this process's feed to record up to its moment
 * before the statement runs instead (about 1 ms): the feed records a commit within a millisecond
 * or so of its flush (see LakeStore.recordedUpTo).
 */
const FEW_BARRIER_WAIT_MS = 5;

/**
 * How long a lake replay's proof waits for another process's feed to pass its barrier (a few ms
 * when that feed is current): the query that follows a failed proof waits its own,
 * barrierTimeoutMs, and a feed that is stopped would otherwise cost that twice.
 */
const REPLAY_BARRIER_WAIT_MS = 100;

/**
 * How long proving a kept response again (StatsEngine.keptAgain) may take: the statements and the
 * barrier take milliseconds; past this the query runs instead, with its own time limit.
 */
const PROOF_MS = 1_000;

/** Characters of the sets of customers remembered as busy (see busyCustomers), and for how long. */
const BUSY_KEY_CHARS = 1_000_000;
const BUSY_FOR_MS = 10 * 60_000;

/** Text of pages in customer order kept from held tables: a 100-group page is about 5,000 characters. */
const HELD_PAGE_CHARS = 8_000_000;

/** Groups of whole answers kept for paging clients (a few MB of text per 100,000). */
const WHOLE_ANSWER_GROUPS = 300_000;

/** A manifest's read, and its result once done. */
interface ManifestEntry {
  readonly pending: Promise<LakeManifest>;
  read?: LakeManifest;
}

/** A first page's fresh inserts, read early (see freshEarly), with the bound it was read for. */
interface EarlyFresh {
  readonly bound: GroupKey | undefined;
  readonly groups: Promise<LiveGroups>;
}

/** The stages of an analytics query, as gateway_analytics_stage_seconds names them. */
type Stage = 'snapshot' | 'barrier' | 'changes' | 'live' | 'lake' | 'postgres';

const NOT_EXPORTED: StatsWarning = { code: 'LAKE_NOT_READY', message: 'the lake has not been exported yet; answered from Postgres' };
const NOT_CURRENT: StatsWarning = { code: 'LAKE_NOT_CURRENT', message: 'the change feed has not confirmed the lake is current; answered from Postgres' };
const EXPORTED_MEANWHILE: StatsWarning = { code: 'LAKE_NOT_CURRENT', message: 'a lake export finished as the query began; answered from Postgres' };
const OBJECTS_MISSING: StatsWarning = {
  code: 'LAKE_NOT_READY',
  message: 'objects of the lake are missing from the object store; answered from Postgres until the next export writes them again',
};
const RESET: StatsWarning = { code: 'LAKE_NOT_READY', message: 'the lake was reset and is being exported again; answered from Postgres' };
