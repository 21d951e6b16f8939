import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RttEstimator } from '../../../guest/dns/rtt-estimator.js';

const BOUNDS = { initialMs: 1000, minMs: 100, maxMs: 1500 };

describe('round-trip estimate (RFC 6298)', () => {
  it('waits the initial timeout before any sample', () => {
    expect(new RttEstimator(BOUNDS).timeoutMs()).toBe(1000);
    expect(new RttEstimator({ ...BOUNDS, initialMs: 5000 }).timeoutMs()).toBe(1500);
  });

  it('follows RFC 6298: first sample R gives SRTT R, RTTVAR R/2; later ones alpha 1/8, beta 1/4', () => {
    const rtt = new RttEstimator({ initialMs: 1000, minMs: 1, maxMs: 60_000 });
    rtt.sample(200);
    expect(rtt.smoothedMs).toBe(200);
    expect(rtt.timeoutMs()).toBe(200 + 4 * 100);
    rtt.sample(400);
    // RTTVAR = 3/4 * 100 + 1/4 * |200 - 400| = 125; SRTT = 7/8 * 200 + 1/8 * 400 = 225
    expect(rtt.smoothedMs).toBe(225);
    expect(rtt.timeoutMs()).toBe(225 + 4 * 125);
  });

  it('stays within its bounds and above the smoothed round trip, whatever it is fed', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.double({ min: 0, max: 10_000, noNaN: true }), fc.constant(Number.NaN), fc.constant(-1)), { maxLength: 200 }), (samples) => {
        const rtt = new RttEstimator(BOUNDS);
        for (const sample of samples) {
          rtt.sample(sample);
          const timeout = rtt.timeoutMs();
          expect(timeout).toBeGreaterThanOrEqual(BOUNDS.minMs);
          expect(timeout).toBeLessThanOrEqual(BOUNDS.maxMs);
          const smoothed = rtt.smoothedMs;
          if (smoothed !== undefined) expect(timeout).toBeGreaterThanOrEqual(Math.min(BOUNDS.maxMs, smoothed));
        }
      }),
    );
  });

  it('settles near a steady round trip', () => {
    const rtt = new RttEstimator({ initialMs: 1000, minMs: 1, maxMs: 60_000 });
    for (let i = 0; i < 200; i++) rtt.sample(30);
    expect(rtt.smoothedMs).toBeCloseTo(30, 5);
    expect(rtt.timeoutMs()).toBeCloseTo(31, 3);
  });

  it('refuses bounds that cannot hold', () => {
    expect(() => new RttEstimator({ initialMs: 1000, minMs: 0, maxMs: 100 })).toThrow(RangeError);
    expect(() => new RttEstimator({ initialMs: 1000, minMs: 200, maxMs: 100 })).toThrow(RangeError);
  });
});
