import { LRUCache } from 'lru-cache';
import type { FeedTransaction } from '../postgres/replication.js';
import type { StatsGroup, StatsRole } from '../postgres/statsStore.js';
import { fullXid, parseSnapshot, visibility } from './freshInvoices.js';

/**
 * Answers of the few-customer shape (one statement on Postgres's party index), kept in the
 * process whose change feed streams, for as long as the feed proves them current. Asked again (a
 * dashboard's customer, a list's Customer.stats), an answer then costs one Postgres round trip
 * (where the WAL stands, and the moment's snapshot) instead of the statement: the one shape where
 * Postgres alone was faster than the gateway.
 *
 * Exact by transaction ids. An answer holds what its statement's snapshot S saw. A later query's
 * snapshot T, once its barrier has passed, has had every transaction it sees handed to `add`
 * (committed before T, so decoded before the WAL position read with T). The answer is T's too
 * unless one of those touched its customers and S did not see it: `add` drops the answer then.
 * Two ways a transaction could slip past that check are closed:
 * - handed to `add` before the answer was kept, yet not seen by S (decoded from flushed WAL but
 *   not yet visible: a commit waiting for a synchronous standby). The transactions handed to
 *   `add` stay listed (`recent`) until a snapshot taken before the answer's statement began saw
 *   them all (its xmin is past them), and an answer is kept only if S saw every listed one that
 *   touched its customers.
 * - committed before this process's stream began, so never handed here. An answer is kept only
 *   when S's xmin is at or above `begin`'s anchor, an xid taken once the stream had started: a
 *   transaction S does not see then began after the stream did.
 * An UPDATE or DELETE names the invoice's old parties only by its key: it counts as touching
 * every customer, as a TRUNCATE does.
 */
export interface FewAnswers {
  /** The stream has started; `from`: an xid (xid8 text) such that every transaction at or above it began since. */
  begin(from: string): void;
  /** The stream ended: everything is dropped, and nothing is kept until the next begin. */
  end(): void;
  /** The invoice changes of transactions the feed delivered, in commit order, before they are recorded. */
  add(batch: readonly FeedTransaction[]): void;
  /** The answer kept under `key` now (worth a round trip to check), for `answer`; none while no stream runs. */
  held(key: string): HeldAnswer | undefined;
  /** Whether that answer is still kept (no round trip needed to know it is not). */
  holds(held: HeldAnswer): boolean;
  /** A snapshot taken now (pg_current_snapshot() text): transactions below its xmin are seen by every later one. */
  observed(snapshot: string): void;
  /**
   * A held answer's groups if it is still kept and exact at `moment` (a statement's snapshot and
   * month, taken after it was held), once this process's feed has recorded every commit the
   * moment sees. Every begin and end drops what was kept and watched, so an answer or a watch of
   * an earlier stream is never found again.
   */
  answer(held: HeldAnswer, moment: { readonly snapshot: string; readonly thisMonth: string }): readonly StatsGroup[] | undefined;
  /**
   * Before the statement is sent: the transactions that touch these customers from now on are
   * watched, and `keep` stores the statement's answer if nothing it missed touched them.
   */
  watch(key: string, role: StatsRole, customers: readonly number[]): FewWatch | undefined;
  /** Answers kept (for tests). */
  size(): number;
}

export interface FewWatch {
  /** `snapshot` and `thisMonth`: the statement's own (pg_current_snapshot() text; YYYY-MM of now() in UTC). Whether it was kept. */
  keep(answer: { readonly snapshot: string; readonly thisMonth: string; readonly groups: readonly StatsGroup[] }): boolean;
  /** The statement failed or answered nothing to keep. */
  cancel(): void;
}

/** An answer as `held` found it: a handle, so that one kept elsewhere (a replayed response) keeps no groups alive. */
export interface HeldAnswer {
  readonly key: string;
  /** Which keep of that key: an answer kept again under it is another. */
  readonly serial: number;
}

/** Which customers a transaction touched, by role; null: every customer (an update, a delete, a truncate). */
interface Touch {
  readonly xid: number;
  readonly issuers: Set<number> | null;
  readonly receivers: Set<number> | null;
}

interface Kept extends HeldAnswer {
  readonly groups: readonly StatsGroup[];
  /** Its snapshot's xmax (a full xid). */
  readonly xmax: number;
  readonly month: string;
  readonly sees: (xid: number) => boolean;
  readonly indexKeys: readonly string[];
}

interface Watching {
  readonly role: StatsRole;
  readonly customers: ReadonlySet<number>;
  /** Touches removed from `recent` while the statement ran: its snapshot may predate them. */
  readonly missed: Touch[];
}

/**
 * Xids between an answer's snapshot and a later moment past which it is dropped: the feed's xids
 * are 32 bits, read as the full xid nearest the answer's snapshot, so a commit 2^31 xids later
 * would be taken for one it saw.
 */
const XID_HORIZON = 2 ** 30;

/** Answers kept: each is at most a customer's months (a few KB). */
export const ANSWERS_KEPT = 10_000;
/** Touches listed while no snapshot prunes them (no few-customer query for a while): past this, everything is dropped. */
const RECENT_MAX = 100_000;

const touches = (touch: Touch, role: StatsRole, customers: Iterable<number>) => {
  const parties = role === 'issuer' ? touch.issuers : touch.receivers;
  if (parties === null) return true;
  for (const customer of customers) if (parties.has(customer)) return true;
  return false;
};

export function createFewAnswers(): FewAnswers {
  /** Set while a stream runs (see begin). */
  let anchor: number | undefined;
  /** Counts keeps, so that each kept answer is told apart from one kept before under its key. */
  let serials = 0;
  /** Touches in the order the feed delivered them, not yet seen by every snapshot from now on. */
  let recent: Touch[] = [];
  const watching = new Set<Watching>();
  /** Keys of kept answers by `role customer`, to drop them on a touch. */
  const byCustomer = new Map<string, Set<string>>();
  const kept = new LRUCache<string, Kept>({
    max: ANSWERS_KEPT,
    dispose: (answer, key) => {
      for (const indexKey of answer.indexKeys) {
        const keys = byCustomer.get(indexKey);
        keys?.delete(key);
        if (keys?.size === 0) byCustomer.delete(indexKey);
      }
    },
  });

  const dropAll = () => {
    kept.clear();
    recent = [];
    // A statement running now cannot know what was dropped.
    watching.clear();
  };
  const dropUnseen = (keys: Iterable<string>, xid: number) => {
    for (const key of [...keys]) {
      const answer = kept.peek(key);
      if (answer && !answer.sees(xid)) kept.delete(key);
    }
  };

  /** Drops from `recent` what every snapshot from now on sees; a statement running now keeps it in view. */
  function observed(snapshot: string) {
    if (recent.length === 0) return;
    const parsed = parseSnapshot(snapshot);
    // Delivered in commit order, not xid order: the listed prefix below xmin goes.
    let n = 0;
    while (n < recent.length && fullXid(parsed, recent[n]!.xid) < parsed.xmin) n++;
    if (n === 0) return;
    const gone = recent.slice(0, n);
    recent = recent.slice(n);
    for (const w of watching) {
      for (const touch of gone) if (touches(touch, w.role, w.customers)) w.missed.push(touch);
    }
  }

  return {
    begin(from) {
      dropAll();
      anchor = Number(from);
    },
    end() {
      dropAll();
      anchor = undefined;
    },
    held(key) {
      const answer = anchor === undefined ? undefined : kept.peek(key);
      return answer && { key, serial: answer.serial };
    },
    holds: (held) => anchor !== undefined && kept.peek(held.key)?.serial === held.serial,
    size: () => kept.size,

    add(batch) {
      if (anchor === undefined) return;
      for (const tx of batch) {
        let issuers: Set<number> | null = new Set();
        let receivers: Set<number> | null = new Set();
        let any = false;
        for (const change of tx.changes) {
          if (change.table !== 'invoices') continue;
          any = true;
          if (change.op === 'insert' && change.row) {
            issuers?.add(Number(change.row.issuer_id));
            receivers?.add(Number(change.row.receiver_id));
          } else {
            issuers = receivers = null;
          }
        }
        if (!any) continue;
        const touch: Touch = { xid: tx.xid, issuers, receivers };
        recent.push(touch);
        if (issuers === null || receivers === null) {
          dropUnseen(kept.keys(), tx.xid);
          continue;
        }
        for (const [role, parties] of [['issuer', issuers], ['receiver', receivers]] as const) {
          for (const customer of parties) {
            const keys = byCustomer.get(`${role} ${customer}`);
            if (keys) dropUnseen(keys, tx.xid);
          }
        }
      }
      if (recent.length > RECENT_MAX) dropAll();
    },

    observed,

    answer(held, moment) {
      const answer = kept.get(held.key);
      if (answer?.serial !== held.serial) return undefined;
      if (answer.month !== moment.thisMonth) {
        // A later month's window: this answer is never asked for again.
        if (moment.thisMonth > answer.month) kept.delete(held.key);
        return undefined;
      }
      if (parseSnapshot(moment.snapshot).xmax - answer.xmax > XID_HORIZON) {
        kept.delete(held.key);
        return undefined;
      }
      return answer.groups;
    },

    watch(key, role, customers) {
      if (anchor === undefined) return undefined;
      const w: Watching = { role, customers: new Set(customers), missed: [] };
      watching.add(w);
      return {
        cancel: () => void watching.delete(w),
        keep(answer) {
          const watched = watching.delete(w);
          if (!watched || anchor === undefined) return false;
          const snapshot = parseSnapshot(answer.snapshot);
          // A transaction this snapshot misses may have committed before the stream began.
          if (snapshot.xmin < anchor) return false;
          const sees = visibility(snapshot);
          for (const touch of [...w.missed, ...recent]) {
            if (!sees(touch.xid) && touches(touch, role, w.customers)) return false;
          }
          // Its snapshot prunes the list too (statements run where no answer is asked again).
          observed(answer.snapshot);
          const indexKeys = [...w.customers].map((customer) => `${role} ${customer}`);
          kept.set(key, { key, serial: ++serials, groups: answer.groups, xmax: snapshot.xmax, month: answer.thisMonth, sees, indexKeys });
          for (const indexKey of indexKeys) {
            let keys = byCustomer.get(indexKey);
            if (!keys) byCustomer.set(indexKey, (keys = new Set()));
            keys.add(key);
          }
          return true;
        },
      };
    },
  };
}
