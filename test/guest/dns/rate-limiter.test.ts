import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../../../guest/dns/rate-limiter.js';

const anyLimit = fc.record({ perSecond: fc.integer({ min: 1, max: 1000 }), burst: fc.integer({ min: 1, max: 100 }) });

describe('per-client rate limiter', () => {
  it('never allows one client more than burst + rate x elapsed time', () => {
    fc.assert(
      fc.property(anyLimit, fc.array(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 500 }), (limit, gaps) => {
        const limiter = new RateLimiter(limit, 16);
        let now = 1000;
        let allowed = 0;
        for (const gap of gaps) {
          now += gap;
          if (limiter.allow('192.0.2.1', now)) allowed += 1;
        }
        expect(allowed).toBeLessThanOrEqual(limit.burst + Math.floor(((now - 1000) * limit.perSecond) / 1000));
      }),
    );
  });

  it('lets a new client send a full burst at once, then throttles it; others are unaffected', () => {
    fc.assert(
      fc.property(anyLimit, (limit) => {
        const limiter = new RateLimiter(limit, 16);
        for (let i = 0; i < limit.burst; i++) expect(limiter.allow('a', 0)).toBe(true);
        expect(limiter.allow('a', 0)).toBe(false);
        expect(limiter.allow('b', 0)).toBe(true);
        // One token's worth of time later, exactly one more.
        const oneToken = Math.ceil(1000 / limit.perSecond);
        expect(limiter.allow('a', oneToken)).toBe(true);
        expect(limiter.allow('a', oneToken)).toBe(false);
      }),
    );
  });

  it('keeps at most maxClients buckets, evicting the least recently seen', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.array(fc.integer({ min: 0, max: 60 }), { maxLength: 300 }), (maxClients, clients) => {
        const limiter = new RateLimiter({ perSecond: 1, burst: 1 }, maxClients);
        clients.forEach((client, t) => {
          limiter.allow(`100.64.0.${client}`, t);
          expect(limiter.size).toBeLessThanOrEqual(maxClients);
        });
      }),
    );
    const limiter = new RateLimiter({ perSecond: 1, burst: 1 }, 2);
    expect(limiter.allow('a', 0)).toBe(true);
    expect(limiter.allow('b', 0)).toBe(true);
    expect(limiter.allow('a', 1000)).toBe(true); // one token refilled; a is now the most recent
    expect(limiter.allow('c', 1000)).toBe(true); // evicts b
    expect(limiter.allow('a', 1000)).toBe(false); // a kept its empty bucket
  });

  it('refuses nonsense limits', () => {
    expect(() => new RateLimiter({ perSecond: 0, burst: 1 }, 1)).toThrow(RangeError);
    expect(() => new RateLimiter({ perSecond: 1, burst: 0 }, 1)).toThrow(RangeError);
    expect(() => new RateLimiter({ perSecond: Number.NaN, burst: 1 }, 1)).toThrow(RangeError);
    expect(() => new RateLimiter({ perSecond: 1, burst: 1 }, 0)).toThrow(RangeError);
  });
});
