// A token bucket: a quiet sender may send `burst` at once, then `perSecond` on average. Two numbers
// per bucket, changed in place, so that a caller holding thousands of them (one per DHCP link, one
// per DNS client) allocates nothing per datagram.

export interface RateLimit {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Bucket size: how many a quiet sender may send at once. */
  readonly burst: number;
}

/** One sender's bucket. A new one is full: { tokens: burst, refilledAt: now }. */
export interface TokenBucket {
  tokens: number;
  /** When tokens were last added (monotonic milliseconds). */
  refilledAt: number;
}

/** `limit` if it is one (perSecond > 0, burst >= 1, both finite); a RangeError otherwise. */
export function checkRateLimit(limit: RateLimit): RateLimit {
  if (!(limit.perSecond > 0) || !(limit.burst >= 1) || !Number.isFinite(limit.perSecond) || !Number.isFinite(limit.burst)) {
    throw new RangeError(`rate limit needs perSecond > 0 and burst >= 1, got ${limit.perSecond}/${limit.burst}`);
  }
  return limit;
}

/**
 * Refill `bucket` for the time since its last refill, then take a token from it at `nowMs`
 * (monotonic): false (and nothing taken) when it has less than one, i.e. drop what was sent.
 */
export function takeToken(bucket: TokenBucket, limit: RateLimit, nowMs: number): boolean {
  const elapsed = nowMs - bucket.refilledAt;
  if (elapsed > 0) {
    // elapsed x perSecond first: a whole number of tokens' worth of time gives whole tokens.
    bucket.tokens = Math.min(limit.burst, bucket.tokens + (elapsed * limit.perSecond) / 1000);
    bucket.refilledAt = nowMs;
  }
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}
