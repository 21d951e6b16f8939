import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelayMs } from '../../guest/backoff.js';
import { SOCKET_RETRY } from '../../guest/dhcp/dhcp-server.js';

const anyBackoff = fc
  .tuple(fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 0, max: 100_000 }))
  .map(([firstMs, extraMs]) => ({ firstMs, maxMs: firstMs + extraMs }));
const anyRound = fc.integer({ min: 0, max: 1_000_000 });

describe('retry backoff', () => {
  it('waits the first delay first, doubles it each round and stays at the cap, whatever the round', () => {
    fc.assert(
      fc.property(anyBackoff, anyRound, (backoff, round) => {
        const delay = backoffDelayMs(backoff, round);
        expect(backoffDelayMs(backoff, 0)).toBe(backoff.firstMs);
        expect(delay).toBeGreaterThanOrEqual(backoff.firstMs);
        expect(delay).toBeLessThanOrEqual(backoff.maxMs);
        expect(backoffDelayMs(backoff, round + 1)).toBe(Math.min(backoff.maxMs, 2 * delay));
      }),
    );
  });

  it('reaches the cap within log2(cap / first) + 1 rounds, and treats a negative or fractional round as its floor, at least 0', () => {
    fc.assert(
      fc.property(anyBackoff, fc.double({ min: -10, max: 40, noNaN: true }), (backoff, round) => {
        expect(backoffDelayMs(backoff, Math.ceil(Math.log2(backoff.maxMs / backoff.firstMs)))).toBe(backoff.maxMs);
        expect(backoffDelayMs(backoff, round)).toBe(backoffDelayMs(backoff, Math.max(0, Math.floor(round))));
      }),
    );
  });

  it('reopens a failed DHCP link socket after 1 s, then 2, 4 ... up to every minute', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 1000].map((round) => backoffDelayMs(SOCKET_RETRY, round) / 1000)).toEqual([1, 2, 4, 8, 16, 32, 60, 60, 60]);
  });
});
