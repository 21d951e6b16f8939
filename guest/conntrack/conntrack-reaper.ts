/**
 * Adapter: the reaper. Once a tick (a second) it reads its network namespace's conntrack entry
 * count (/proc/sys/net/netfilter/nf_conntrack_count, a small procfs read), and while the count is
 * at or over the threshold deletes the closed TCP entries, whatever their source (closed-flows.ts
 * says which and why), through the conntrack addon, on libuv's thread pool. When to reap is reap-decision.ts.
 *
 * The threshold: `auto` is half of nf_conntrack_max, read at each tick (an operator may change
 * it). That sysctl is the whole kernel's table size, read-only outside the initial namespace,
 * while the count is the namespace's own: in a VM the agent's namespace is the initial one and
 * both agree; elsewhere (tests in namespaces) give a number of entries.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from '../../shared/log.js';
import type { ConntrackPurgeResult } from '../conntrack-port.js';
import { CONNTRACK_MAX_PATH, readConntrackMax } from '../firewall/conntrack-max.js';
import { ANY_CLOSED_FLOW, type ClosedFlowFilter } from './closed-flows.js';
import { ConntrackError } from './conntrack-error.js';
import { type ConntrackAddon, ConntrackPurger, loadConntrackLibrary } from './conntrack-purge.js';
import { IDLE_REAPER, type ReaperState, autoReapThreshold, countSeen, reapFinished, reapStarted, shouldReap } from './reap-decision.js';

export const CONNTRACK_COUNT_PATH = '/proc/sys/net/netfilter/nf_conntrack_count';

/** --conntrack-reap-threshold: `auto`, or a number of entries (0: never reap). */
export type ReapThresholdOption = 'auto' | number;

/** Most entries --conntrack-reap-threshold takes (nf_conntrack_max is an int). */
export const MAX_REAP_THRESHOLD = 2_147_483_647;

export interface ReaperStatus {
  /** Entries at which it reaps; null: `auto` and nf_conntrack_max not readable yet. */
  readonly threshold: number | null;
  readonly thresholdOption: ReapThresholdOption;
  /** The namespace's entry count at the last check; null: none yet (or nf_conntrack not loaded). */
  readonly count: number | null;
  readonly reaps: number;
  /** Entries deleted by all reaps, failed ones included (what a failed dump matched still goes). */
  readonly reaped: number;
  /** The last reap that deleted something. */
  readonly lastReap: { readonly deleted: number; readonly countBefore: number; readonly countAfter: number; readonly ms: number } | null;
  /** Reaps that failed. */
  readonly failures: number;
  /** Why the last reap, or the last read of the count or table size, failed; null once one succeeded. */
  readonly lastError: string | null;
}

/** What the reaper reads and calls; the real ones by default, fakes in tests. */
export interface ReaperKernel {
  /** The namespace's entry count; undefined while nf_conntrack is not loaded (no such file). */
  readCount(): number | undefined;
  /** nf_conntrack_max; undefined while not loaded. */
  readMax(): number | undefined;
  reap(filter: ClosedFlowFilter): Promise<ConntrackPurgeResult>;
  now(): number;
}

/** The count file's text as a number; throws an Error that names the file otherwise. */
export function parseConntrackCount(text: string, path = CONNTRACK_COUNT_PATH): number {
  const trimmed = text.trim();
  if (!/^[0-9]{1,10}$/.test(trimmed)) throw new Error(`${path} holds ${JSON.stringify(trimmed)}, not a number of entries`);
  return Number(trimmed);
}

export function readConntrackCount(path = CONNTRACK_COUNT_PATH): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (error instanceof Error && 'code' in error && error.code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  return parseConntrackCount(text, path);
}

/** nf_conntrack_max for `auto`; a failure to read it says to give a number instead. */
export function readReapConntrackMax(path = CONNTRACK_MAX_PATH): number | undefined {
  return readConntrackMax(path, 'give --conntrack-reap-threshold a number of entries (0: never reap)');
}

/**
 * The kernel: the namespace's files, and the addon (its own purger: a reap never makes a purge
 * 'busy'; no timeout: a reap ends when the addon does, see ConntrackPurger.reap).
 */
export function kernelReaperParts(lib: ConntrackAddon = loadConntrackLibrary()): ReaperKernel {
  const purger = new ConntrackPurger(lib);
  return {
    readCount: () => readConntrackCount(),
    readMax: () => readReapConntrackMax(),
    reap: (filter) => purger.reap(filter),
    now: () => performance.now(),
  };
}

const TICK_MS = 1000;
const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

export class ConntrackReaper {
  #state: ReaperState = IDLE_REAPER;
  #timer: NodeJS.Timeout | undefined;
  #count: number | null = null;
  #threshold: number | null = null;
  #reaps = 0;
  #reaped = 0;
  #failures = 0;
  #lastReap: ReaperStatus['lastReap'] = null;
  #lastError: string | null = null;
  /** Whether #lastError is a read's (cleared by the next read that works). */
  #readFailed = false;
  /** The read failure last warned of: said again only for another reason, or after a read worked. */
  #readWarned: string | null = null;

  constructor(
    private readonly option: ReapThresholdOption,
    private readonly log: Logger,
    private readonly kernel: ReaperKernel = kernelReaperParts(),
  ) {
    this.#threshold = typeof option === 'number' ? option : null;
  }

  /**
   * Check now (status then has the threshold and count) and every tickMs; the timer does not keep
   * the process alive. With a threshold of 0, nothing.
   */
  start(tickMs = TICK_MS): void {
    if (this.#timer !== undefined || this.option === 0) return;
    this.#timer = setInterval(() => void this.tick(), tickMs);
    this.#timer.unref();
    void this.tick();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** A read that failed: said once per reason, not each second (nor after each failed reap between). */
  #readFailure(text: string, warning: string): void {
    if (this.#readWarned !== text) this.log.warn({ err: text }, warning);
    this.#readWarned = text;
    this.#lastError = text;
    this.#readFailed = true;
  }

  status(): ReaperStatus {
    return {
      threshold: this.#threshold,
      thresholdOption: this.option,
      count: this.#count,
      reaps: this.#reaps,
      reaped: this.#reaped,
      lastReap: this.#lastReap,
      failures: this.#failures,
      lastError: this.#lastError,
    };
  }

  /**
   * One check: read the count (and for `auto` the table size), and reap when the decision says so.
   * A table size that cannot be read keeps the threshold it last gave (warned once).
   */
  async tick(): Promise<void> {
    if (this.#state.reaping) return;
    let count: number | undefined;
    let unreadable: string | null = null;
    try {
      count = this.kernel.readCount();
    } catch (error) {
      this.#readFailure(message(error), 'the reaper cannot read the conntrack table size; retrying each second');
      return;
    }
    if (this.option === 'auto') {
      try {
        this.#threshold = autoReapThreshold(this.kernel.readMax());
      } catch (error) {
        unreadable = message(error);
        this.#readFailure(unreadable, `the reaper cannot read nf_conntrack_max; it keeps the threshold it last gave (${this.#threshold ?? 'none'}) until it can`);
      }
    }
    if (unreadable === null && this.#readFailed) {
      this.#readFailed = false;
      this.#lastError = null;
    }
    if (unreadable === null) this.#readWarned = null;
    this.#count = count ?? null;
    if (count !== undefined) this.#state = countSeen(this.#state, count);
    const started = this.kernel.now();
    if (count === undefined || !shouldReap(this.#state, count, this.#threshold, started)) return;
    this.#state = reapStarted(this.#state, started);
    try {
      const result = await this.kernel.reap(ANY_CLOSED_FLOW);
      // After the deletes: what the log and the decision's no-use rule read.
      let after = count - result.deleted;
      try {
        after = this.kernel.readCount() ?? after;
      } catch {
        // Keep the estimate: the next tick says what the read is missing.
      }
      const ms = this.kernel.now() - started;
      this.#state = reapFinished(this.#state, { ok: true, deleted: result.deleted, countAfter: after }, this.kernel.now());
      this.#count = after;
      this.#reaps += 1;
      this.#reaped += result.deleted;
      // A read that failed this tick is still the news.
      if (!this.#readFailed) this.#lastError = null;
      const what = { deleted: result.deleted, scanned: result.scanned, countBefore: count, countAfter: after, threshold: this.#threshold, ms: Number(ms.toFixed(1)) };
      if (result.deleted > 0) {
        this.#lastReap = { deleted: result.deleted, countBefore: count, countAfter: after, ms: what.ms };
        this.log.info(what, "the conntrack table reached the reaper's threshold: deleted closed TCP entries");
      } else this.log.debug(what, "the conntrack table is at the reaper's threshold, but holds no closed TCP entries");
    } catch (error) {
      this.#state = reapFinished(this.#state, { ok: false }, this.kernel.now());
      this.#failures += 1;
      // What a failed reap matched before it failed is deleted all the same.
      const deleted = error instanceof ConntrackError ? error.deleted : 0;
      this.#reaped += deleted;
      this.#lastError = message(error);
      this.log.warn({ err: error, deleted, count, threshold: this.#threshold, failures: this.#state.failures }, "deleting closed TCP conntrack entries failed; retrying later");
    }
  }
}
