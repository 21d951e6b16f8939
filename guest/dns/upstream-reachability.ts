// Upstreams the forwarder cannot reach yet: the netvm's uplink gets its address and route by
// DHCP seconds after the agent starts, and may lose them and get them back (or a new address)
// at any time. Such an upstream is tried again on a timer, with backoff up to a few seconds, so
// that it is used soon after its route appears without any link event; and each one is logged
// once when it becomes unreachable and once when it is reached again, not at every attempt.

import { type Backoff, backoffDelayMs } from '../backoff.js';

/** The first retry comes soon (a route often follows its address by milliseconds)... */
export const RECONNECT_FIRST_MS = 250;
/** ...then the wait doubles up to this: how long a route that appeared may go unused. */
export const RECONNECT_MAX_MS = 2000;

const RECONNECT_BACKOFF: Backoff = { firstMs: RECONNECT_FIRST_MS, maxMs: RECONNECT_MAX_MS };

/** How long to wait before retry `round` (0 for the first) of upstreams not reached yet. */
export function reconnectDelayMs(round: number): number {
  return backoffDelayMs(RECONNECT_BACKOFF, round);
}

/** What a failed or successful attempt changed: worth a log line only when not undefined. */
export type ReachabilityChange = 'lost' | 'regained' | undefined;

/**
 * Which upstreams (by their text) the last attempt could not reach, with its error. One not
 * listed counts as reachable, so the first failure is a change and a first success is not.
 */
export class UpstreamReachability {
  readonly #unreachable = new Map<string, string>();

  failed(upstream: string, error: string): ReachabilityChange {
    const known = this.#unreachable.has(upstream);
    this.#unreachable.set(upstream, error);
    return known ? undefined : 'lost';
  }

  reached(upstream: string): ReachabilityChange {
    return this.#unreachable.delete(upstream) ? 'regained' : undefined;
  }

  /** Forget upstreams no longer configured. */
  retain(upstreams: readonly string[]): void {
    for (const upstream of [...this.#unreachable.keys()]) if (!upstreams.includes(upstream)) this.#unreachable.delete(upstream);
  }

  /** `upstream (error)` for each unreachable one, in the order they became so. */
  list(): string[] {
    return [...this.#unreachable].map(([upstream, error]) => `${upstream} (${error})`);
  }
}
