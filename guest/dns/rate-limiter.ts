// Per-client token buckets, keyed by client address, in a table of bounded size.

export interface RateLimit {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Bucket size: how many queries a quiet client may send at once. */
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  last: number;
}

/**
 * Token-bucket rate limiter. The table keeps at most `maxClients` buckets, least recently seen
 * evicted first (Map order, refreshed on every use); an evicted client comes back with a full
 * bucket, which is the same as a client that has been quiet long enough.
 */
export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
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
  allow(client: string, nowMs: number): boolean {
    let bucket = this.#buckets.get(client);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, last: nowMs };
      if (this.#buckets.size >= this.#maxClients) {
        for (const oldest of this.#buckets.keys()) {
          this.#buckets.delete(oldest);
          break;
        }
      }
    } else {
      this.#buckets.delete(client);
      const elapsed = nowMs - bucket.last;
      if (elapsed > 0) {
        bucket.tokens = Math.min(this.#burst, bucket.tokens + elapsed * this.#perMs);
        bucket.last = nowMs;
      }
    }
    this.#buckets.set(client, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}
