// How long to wait before trying again something that failed and may come right on its own (an
// upstream without a route yet, a link socket that failed): soon at first, then less and less often.

export interface Backoff {
  /** The wait before the first retry... */
  readonly firstMs: number;
  /** ...doubled at each retry up to this. */
  readonly maxMs: number;
}

/** Doublings past which every wait is the cap anyway (2^64 times the first wait). */
const MAX_DOUBLINGS = 64;

/** The wait before retry `round` (0 for the first): firstMs doubled `round` times, at most maxMs. */
export function backoffDelayMs(backoff: Backoff, round: number): number {
  const doublings = Math.min(Math.max(0, Math.floor(round)), MAX_DOUBLINGS);
  return Math.min(backoff.maxMs, backoff.firstMs * 2 ** doublings);
}
