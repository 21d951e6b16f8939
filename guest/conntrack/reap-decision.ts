/**
 * When the reaper deletes closed TCP entries (closed-flows.ts), pure: the adapter
 * (conntrack-reaper.ts) reads the table's entry count once a tick and asks shouldReap; it records
 * each reap's start and end here.
 *
 * A reap is one dump of the whole table and a delete per match: milliseconds to tens of them on a
 * large table, more on a huge one, on libuv's thread pool. So it runs only at or over the
 * threshold, at most once a REAP_POLICY.minIntervalMs and after a pause at least as long as the
 * last reap took (else one that takes longer than the interval starts again at once, keeping a
 * pool thread, which the firewall's nft work shares, busy for good), never two at once, later and
 * later after failures (the cause may pass: the kernel short of memory), and not again after one
 * that deleted nothing until the count has grown past what it left (a table held by live flows
 * has nothing for it: it would only dump it again every second).
 */
import { type Backoff, backoffDelayMs } from '../backoff.js';

export interface ReapPolicy {
  /**
   * Least time from the start of one reap to the start of the next; and from the end of one to
   * the start of the next, at least the time it took.
   */
  readonly minIntervalMs: number;
  /** The wait after consecutive failures, from the end of the last (at least the time it took). */
  readonly failureBackoff: Backoff;
}

/** At most once a second (the count is read as often); after failures 1 s, 2 s... up to a minute. */
export const REAP_POLICY: ReapPolicy = { minIntervalMs: 1000, failureBackoff: { firstMs: 1000, maxMs: 60_000 } };

export interface ReaperState {
  readonly reaping: boolean;
  /** No reap starts before this (ms, the adapter's clock); 0: any time. */
  readonly notBeforeMs: number;
  /** When the running or last reap started (ms); null: none yet. */
  readonly startedMs: number | null;
  /** Failures in a row. */
  readonly failures: number;
  /**
   * After a reap that deleted nothing: the least count seen since (countSeen), which the count
   * must pass before the next; so a table that empties a little and fills again with closed
   * flows is reaped when it grows, not only past the old high.
   */
  readonly futileAt: number | null;
}

export const IDLE_REAPER: ReaperState = { reaping: false, notBeforeMs: 0, startedMs: null, failures: 0, futileAt: null };

/** What a finished reap did. */
export type ReapOutcome = { readonly ok: true; readonly deleted: number; readonly countAfter: number } | { readonly ok: false };

/**
 * Whether to start a reap now: the table holds `threshold` entries or more (null: not known yet,
 * 0: never reap), none is running, the interval or back-off has passed, and the count has
 * grown since a reap that found nothing.
 */
export function shouldReap(state: ReaperState, count: number, threshold: number | null, nowMs: number): boolean {
  if (threshold === null || threshold === 0 || count < threshold) return false;
  if (state.reaping || nowMs < state.notBeforeMs) return false;
  return state.futileAt === null || count > state.futileAt;
}

/** The adapter read `count`: after a futile reap, growth is measured from the lowest count since. */
export function countSeen(state: ReaperState, count: number): ReaperState {
  return state.futileAt !== null && count < state.futileAt ? { ...state, futileAt: count } : state;
}

export function reapStarted(state: ReaperState, nowMs: number): ReaperState {
  return { ...state, reaping: true, startedMs: nowMs };
}

export function reapFinished(state: ReaperState, outcome: ReapOutcome, nowMs: number, policy: ReapPolicy = REAP_POLICY): ReaperState {
  const started = state.startedMs ?? nowMs;
  // The pool thread is left idle at least as long as the reap held it: at most half its time.
  const rested = nowMs + Math.max(0, nowMs - started);
  if (!outcome.ok) {
    return { reaping: false, startedMs: started, failures: state.failures + 1, futileAt: null, notBeforeMs: Math.max(rested, nowMs + backoffDelayMs(policy.failureBackoff, state.failures)) };
  }
  return {
    reaping: false,
    startedMs: started,
    failures: 0,
    futileAt: outcome.deleted === 0 ? outcome.countAfter : null,
    notBeforeMs: Math.max(rested, started + policy.minIntervalMs),
  };
}

/**
 * The threshold `auto` comes to for a table of `conntrackMax` entries: half of it. Reaping costs
 * a dump of the whole table, so it should not run on a provider that is merely busy (with the
 * default limits a client that leaves its closed flows alone holds at most a quarter of the
 * table), and it must run while the table still has room for what arrives before the next check
 * (every client's new-flow rate for a second or so: 46/s each on a 1 GB VM, 8,192 entries): half
 * is both. What it deletes is connections over, so reaping early costs next to nothing (README: a NAT port freed early).
 * Unknown (undefined: nf_conntrack not loaded yet) or 0 (no limit: the table cannot fill): null,
 * no reaping.
 */
export function autoReapThreshold(conntrackMax: number | undefined): number | null {
  if (conntrackMax === undefined || conntrackMax === 0) return null;
  return Math.max(1, Math.floor(conntrackMax / 2));
}
