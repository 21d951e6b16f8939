import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RECONNECT_FIRST_MS, RECONNECT_MAX_MS, UpstreamReachability, reconnectDelayMs } from '../../../guest/dns/upstream-reachability.js';

describe('reconnect backoff', () => {
  it('starts at the first delay, doubles, and stays at the cap', () => {
    expect([0, 1, 2, 3, 4, 100].map(reconnectDelayMs)).toEqual([250, 500, 1000, 2000, 2000, 2000]);
  });

  it('never waits less than the first delay nor more than the cap, and never less than the round before', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), (round) => {
        const delay = reconnectDelayMs(round);
        expect(delay).toBeGreaterThanOrEqual(RECONNECT_FIRST_MS);
        expect(delay).toBeLessThanOrEqual(RECONNECT_MAX_MS);
        expect(delay).toBeGreaterThanOrEqual(reconnectDelayMs(round - 1));
      }),
    );
  });
});

describe('upstream reachability', () => {
  it('reports a change once per flip between reachable and unreachable, starting from reachable', () => {
    const event = fc.record({ upstream: fc.constantFrom('a', 'b', 'c'), ok: fc.boolean(), error: fc.constantFrom('ENETUNREACH', 'EINVAL') });
    fc.assert(
      fc.property(fc.array(event, { maxLength: 100 }), (events) => {
        const reachability = new UpstreamReachability();
        const down = new Map<string, string>();
        for (const { upstream, ok, error } of events) {
          const change = ok ? reachability.reached(upstream) : reachability.failed(upstream, error);
          const wasDown = down.has(upstream);
          expect(change).toBe(ok ? (wasDown ? 'regained' : undefined) : wasDown ? undefined : 'lost');
          if (ok) down.delete(upstream);
          else down.set(upstream, error);
        }
        // Listed with the latest error, in the order they went down.
        expect(reachability.list()).toEqual([...down].map(([upstream, error]) => `${upstream} (${error})`));
      }),
    );
  });

  it('forgets upstreams no longer configured: one configured again is new, its first failure a change', () => {
    const reachability = new UpstreamReachability();
    expect(reachability.failed('a', 'ENETUNREACH')).toBe('lost');
    expect(reachability.failed('b', 'ENETUNREACH')).toBe('lost');
    reachability.retain(['b']);
    expect(reachability.list()).toEqual(['b (ENETUNREACH)']);
    expect(reachability.reached('a')).toBeUndefined();
    expect(reachability.failed('a', 'ENETUNREACH')).toBe('lost');
  });
});
