import type { StatsGroup, StatsPosition, StatsQuery, StatsWindow } from '../postgres/statsStore.js';
import { groupsOf } from './lakeStats.js';

/**
 * Whole answers of paged analytics queries, kept so that the pages after the second are slices
 * of one computation: a client reading 100,000 groups 10,000 at a time made DuckDB group, sort
 * and format them ten times. An answer is kept with the lake's version (generation, manifest
 * and batches of changes recorded) and only if its snapshot saw every recorded change; a later
 * query whose snapshot sees the same generation and every change recorded at the same version
 * sees the same invoices, so the answer is still exact for it (see LakeVersion). One answer per
 * shape (the query without its page), the least recently used dropped past `maxGroups` groups in all.
 */
export interface WholeAnswers {
  /** The answer kept for the query's shape in this window, if any (its version still to be checked). */
  find(query: StatsQuery, window: StatsWindow): WholeAnswer | undefined;
  keep(query: StatsQuery, window: StatsWindow, answer: KeptAbout & { readonly records: string }): WholeAnswer;
}

/** How a lake answer was made (what its freshness says), and its invoices over every group. */
export interface AnswerMade {
  readonly allInvoices: string;
  readonly lakeRows: number;
  readonly liveRows: number;
  readonly lakeAsOf: string | null;
}

/** What a kept answer knows of itself: how it was made, and the lake's version (see LakeVersion) and generation it was computed at. */
type KeptAbout = AnswerMade & { readonly version: string; readonly generation: number };

export interface WholeAnswer extends KeptAbout {
  /** Where the page after `after` starts; undefined when that is not a group of this answer. */
  start(after: StatsPosition | null): number | undefined;
  /** `limit` groups from `start` on. */
  groups(start: number, limit: number): StatsGroup[];
}

interface Entry {
  readonly answer: WholeAnswer;
  /** What it counts against `maxGroups` (weightOf). */
  readonly weight: number;
}

export function createWholeAnswers(maxGroups: number): WholeAnswers {
  // A Map's order is insertion order: a used entry is moved to the end, the first is the least recently used.
  const entries = new Map<string, Entry>();
  let held = 0;

  // Ids in order: the same customers asked in another order are the same answer.
  const shapeOf = (query: StatsQuery, window: StatsWindow) =>
    JSON.stringify([query.role, query.granularity, query.orderBy, query.customerIds && [...query.customerIds].sort((a, b) => a - b), window.months]);
  // An entry weighs its groups, plus one for itself and its key's length (up to 1,000 ids): empty
  // answers of ever new id lists counted nothing, and were never dropped.
  const weightOf = (groups: number, shape: string) => groups + 1 + Math.ceil(shape.length / 64);

  const forget = (shape: string) => {
    const entry = entries.get(shape);
    if (!entry) return;
    entries.delete(shape);
    held -= entry.weight;
  };

  return {
    find(query, window) {
      const shape = shapeOf(query, window);
      const entry = entries.get(shape);
      if (!entry) return undefined;
      entries.delete(shape);
      entries.set(shape, entry);
      return entry.answer;
    },

    keep(query, window, { records, ...about }) {
      const lines = records === '' ? [] : records.split(',');
      const answer = wholeAnswer(lines, query, about);
      const shape = shapeOf(query, window);
      forget(shape);
      const weight = weightOf(lines.length, shape);
      // An answer of up to maxGroups groups is kept (the engine makes whole answers that large),
      // alone if it must: the budget is then passed by its key's weight at most.
      if (lines.length > maxGroups) return answer;
      while (held + weight > maxGroups && entries.size > 0) forget(entries.keys().next().value!);
      entries.set(shape, { answer, weight });
      held += weight;
      return answer;
    },
  };
}

function wholeAnswer(lines: readonly string[], query: StatsQuery, about: KeptAbout): WholeAnswer {
  // Where each group is, by `customer month` (a record's first two fields), built on the first page asked for.
  let positions: Map<string, number> | undefined;
  const indexed = () => {
    positions = new Map();
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      positions.set(line.slice(0, line.indexOf(' ', line.indexOf(' ') + 1)), i);
    }
    return positions;
  };
  const sortField = query.orderBy === 'TOTAL_DESC' ? 3 : query.orderBy === 'COUNT_DESC' ? 2 : null;
  return {
    ...about,
    start(after) {
      if (!after) return 0;
      const at = (positions ?? indexed()).get(`${after.customerId} ${after.month ?? ''}`);
      if (at === undefined) return undefined;
      // The cursor's sort value must be this group's: a cursor from another version is not a position here.
      if (sortField !== null && lines[at]!.split(' ')[sortField] !== after.sortValue) return undefined;
      return at + 1;
    },
    groups: (start, limit) => groupsOf(lines.slice(start, start + limit), about.allInvoices),
  };
}
