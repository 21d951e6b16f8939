// Per-client token buckets, keyed by client address, in a table of bounded size.
import { type RateLimit, type TokenBucket, checkRateLimit, takeToken } from '../token-bucket.js';

export type { RateLimit } from '../token-bucket.js';

interface Bucket extends TokenBucket {
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
  readonly #limit: RateLimit;
  readonly #maxClients: number;

  constructor(limit: RateLimit, maxClients: number) {
    this.#limit = checkRateLimit({ perSecond: limit.perSecond, burst: limit.burst });
    if (!Number.isInteger(maxClients) || maxClients < 1) throw new RangeError(`maxClients must be a positive integer, got ${maxClients}`);
    this.#maxClients = maxClients;
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Take a token for `client` at time `nowMs` (monotonic); false means drop the query. */
  allow(client: string | number, nowMs: number): boolean {
    let bucket = this.#buckets.get(client);
    if (bucket === undefined) {
      bucket = { tokens: this.#limit.burst, refilledAt: nowMs, seen: nowMs };
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
    }
    return takeToken(bucket, this.#limit, nowMs);
  }
}
