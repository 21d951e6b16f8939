// Per-client token buckets, keyed by client address, in a table of bounded size.

export interface RateLimit {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Bucket size: how many queries a quiet client may send at once. */
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  /** When tokens were last added. */
  last: number;
  /** When the bucket last moved to the recent end of the eviction order. */
  seen: number;
}

const REFRESH_MS = 1000;

/**
 * Token-bucket rate limiter. The table keeps at most `maxClients` buckets, least recently seen
 * evicted first (Map order, refreshed on use at most once a second); an evicted client comes back with a full
 * bucket, which is the same as a client that has been quiet long enough.
 */
export class RateLimiter {
  readonly #buckets = new Map<string | number, Bucket>();
  readonly #perMs: number;
  readonly #burst: number;
  readonly #maxClients: number;

  constructor(limit: RateLimit, maxClients: number) {
    if (!(limit.perSecond > 0) || !(limit.burst >= 1) || !Number.isFinite(limit.perSecond) || !Number.isFinite(limit.burst)) {
      throw new RangeError(`rate limit needs perSecond > 0 and burst >= 1, got ${limit.perSecond}/${limit.burst}`);
    }
    if (!Number.isInteger(maxClients) || maxClients < 1) throw new RangeError(`maxClients must be a positive integer, got ${maxClients}`);
    this.#perMs = limit.perSecond / 1000;
    this.#burst = limit.burst;
    this.#maxClients = maxClients;
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Take a token for `client` at time `nowMs` (monotonic); false means drop the query. */
  allow(client: string | number, nowMs: number): boolean {
    let bucket = this.#buckets.get(client);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, last: nowMs, seen: nowMs };
      if (this.#buckets.size >= this.#maxClients) {
        for (const oldest of this.#buckets.keys()) {
          this.#buckets.delete(oldest);
          break;
        }
      }
      this.#buckets.set(client, bucket);
    } else {
      // Refresh the client's place in the eviction order at most once a second: a Map
      // delete+insert on every query costs more than the rest of the bucket arithmetic.
      if (nowMs - bucket.seen >= REFRESH_MS) {
        bucket.seen = nowMs;
        this.#buckets.delete(client);
        this.#buckets.set(client, bucket);
      }
      const elapsed = nowMs - bucket.last;
      if (elapsed > 0) {
        bucket.tokens = Math.min(this.#burst, bucket.tokens + elapsed * this.#perMs);
        bucket.last = nowMs;
      }
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}
