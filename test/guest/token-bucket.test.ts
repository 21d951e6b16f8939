import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LINK_REQUEST_LIMIT } from '../../guest/dhcp/dhcp-server.js';
import { type RateLimit, type TokenBucket, checkRateLimit, takeToken } from '../../guest/token-bucket.js';

const anyLimit = fc.record({ perSecond: fc.integer({ min: 1, max: 1000 }), burst: fc.integer({ min: 1, max: 100 }) });
/** Gaps in ms between a sender's datagrams. */
const anyGaps = fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 500 });

function full(limit: RateLimit, nowMs: number): TokenBucket {
  return { tokens: limit.burst, refilledAt: nowMs };
}

describe('token bucket', () => {
  it('never lets through more than burst + rate x elapsed time, and keeps between 0 and burst tokens', () => {
    fc.assert(
      fc.property(anyLimit, anyGaps, (limit, gaps) => {
        const bucket = full(limit, 1000);
        let now = 1000;
        let allowed = 0;
        for (const gap of gaps) {
          now += gap;
          if (takeToken(bucket, limit, now)) allowed += 1;
          expect(bucket.tokens).toBeGreaterThanOrEqual(0);
          expect(bucket.tokens).toBeLessThanOrEqual(limit.burst);
        }
        expect(allowed).toBeLessThanOrEqual(limit.burst + Math.floor(((now - 1000) * limit.perSecond) / 1000));
      }),
    );
  });

  it('never refuses a sender that keeps to the rate, however it started', () => {
    fc.assert(
      fc.property(anyLimit, fc.array(fc.integer({ min: 0, max: 2000 }), { minLength: 1, maxLength: 300 }), (limit, extras) => {
        const bucket = full(limit, 0);
        const interval = Math.ceil(1000 / limit.perSecond);
        let now = 0;
        for (const extra of extras) {
          expect(takeToken(bucket, limit, now)).toBe(true);
          now += interval + extra;
        }
      }),
    );
  });

  it('lets a sender quiet for burst / rate seconds send a whole burst at once, then refuses it until a token is due', () => {
    fc.assert(
      fc.property(anyLimit, anyGaps, (limit, gaps) => {
        const bucket = full(limit, 0);
        let now = 0;
        for (const gap of gaps) takeToken(bucket, limit, (now += gap));
        now += Math.ceil((limit.burst * 1000) / limit.perSecond);
        for (let i = 0; i < limit.burst; i++) expect(takeToken(bucket, limit, now)).toBe(true);
        expect(takeToken(bucket, limit, now)).toBe(false);
        expect(bucket.tokens).toBeGreaterThanOrEqual(0);
        expect(takeToken(bucket, limit, now + Math.ceil(1000 / limit.perSecond))).toBe(true);
      }),
    );
  });

  it('takes nothing when it refuses, and nothing back when time runs backwards', () => {
    const limit = { perSecond: 1, burst: 2 };
    const bucket = full(limit, 5000);
    expect([takeToken(bucket, limit, 5000), takeToken(bucket, limit, 5000), takeToken(bucket, limit, 5000)]).toEqual([true, true, false]);
    expect(bucket).toEqual({ tokens: 0, refilledAt: 5000 });
    expect(takeToken(bucket, limit, 4000)).toBe(false);
    expect(bucket).toEqual({ tokens: 0, refilledAt: 5000 });
  });

  it('refuses nonsense limits', () => {
    for (const limit of [{ perSecond: 0, burst: 1 }, { perSecond: 1, burst: 0 }, { perSecond: Number.NaN, burst: 1 }, { perSecond: 1, burst: Infinity }]) {
      expect(() => checkRateLimit(limit)).toThrow(RangeError);
    }
    expect(checkRateLimit(LINK_REQUEST_LIMIT)).toBe(LINK_REQUEST_LIMIT);
  });

  it("gives a DHCP link's client 16 requests at once and 8 a second: a stock client retransmitting every second never meets it", () => {
    expect(LINK_REQUEST_LIMIT).toEqual({ perSecond: 8, burst: 16 });
    const bucket = full(LINK_REQUEST_LIMIT, 0);
    // Four clients of one VM starting at once (DISCOVER, REQUEST each), then one retransmitting every second for ten minutes.
    for (let i = 0; i < 8; i++) expect(takeToken(bucket, LINK_REQUEST_LIMIT, 0)).toBe(true);
    for (let t = 1000; t <= 600_000; t += 1000) expect(takeToken(bucket, LINK_REQUEST_LIMIT, t)).toBe(true);
  });
});
