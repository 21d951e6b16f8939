import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { backoffDelayMs } from '../../../guest/backoff.js';
import {
  IDLE_REAPER,
  REAP_POLICY,
  type ReapOutcome,
  type ReaperState,
  autoReapThreshold,
  countSeen,
  reapFinished,
  reapStarted,
  shouldReap,
} from '../../../guest/conntrack/reap-decision.js';

const outcome: fc.Arbitrary<ReapOutcome> = fc.oneof(
  fc.record({ ok: fc.constant(true as const), deleted: fc.nat(1000), countAfter: fc.nat(100_000) }),
  fc.constant({ ok: false as const }),
);

/** A state some history of reaps left, and the clock after it. */
const history = fc.array(fc.tuple(fc.nat(5000), fc.nat(5000), outcome), { maxLength: 8 }).map((steps) => {
  let state: ReaperState = IDLE_REAPER;
  let now = 0;
  for (const [before, duration, result] of steps) {
    now += before;
    state = reapStarted(state, now);
    now += duration;
    state = reapFinished(state, result, now);
  }
  return { state, now };
});

describe('shouldReap', () => {
  it('never reaps under the threshold, without one (unknown or 0), or while a reap runs', () => {
    fc.assert(
      fc.property(history, fc.nat(100_000), fc.nat(100_000), fc.nat(100_000), ({ state, now }, count, threshold, later) => {
        if (count < threshold) expect(shouldReap(state, count, threshold, now + later)).toBe(false);
        expect(shouldReap(state, count, null, now + later)).toBe(false);
        expect(shouldReap(state, count, 0, now + later)).toBe(false);
        expect(shouldReap(reapStarted(state, now), count, threshold, now + later)).toBe(false);
      }),
    );
  });

  it('reaps at once at or over the threshold the first time', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 100_000 }), fc.nat(100_000), fc.nat(), (threshold, over, now) => {
        expect(shouldReap(IDLE_REAPER, threshold + over, threshold, now)).toBe(true);
      }),
    );
  });

  it('starts reaps at least a second apart, and after a pause at least as long as the last reap took', () => {
    fc.assert(
      fc.property(fc.nat(10_000), fc.nat(5000), fc.nat(1000), fc.nat(6000), (start, duration, deleted, wait) => {
        const done = reapFinished(reapStarted(IDLE_REAPER, start), { ok: true, deleted: deleted + 1, countAfter: 10 }, start + duration);
        const at = start + duration + wait;
        expect(shouldReap(done, 1_000_000, 1, at)).toBe(at - start >= REAP_POLICY.minIntervalMs && wait >= duration);
      }),
    );
    // A reap of 3 s: not again at once (start-to-start alone would allow it), but 3 s after its end.
    const slow = reapFinished(reapStarted(IDLE_REAPER, 0), { ok: true, deleted: 1, countAfter: 10 }, 3000);
    expect(shouldReap(slow, 100, 1, 3000)).toBe(false);
    expect(shouldReap(slow, 100, 1, 5999)).toBe(false);
    expect(shouldReap(slow, 100, 1, 6000)).toBe(true);
  });

  it('after a failed reap waits the back-off, and at least as long as the reap took', () => {
    fc.assert(
      fc.property(history, fc.nat(20_000), fc.nat(70_000), ({ state, now }, duration, wait) => {
        const failed = reapFinished(reapStarted(state, now), { ok: false }, now + duration);
        const at = now + duration + wait;
        const backoff = backoffDelayMs(REAP_POLICY.failureBackoff, state.failures);
        expect(shouldReap(failed, 1_000_000, 1, at)).toBe(wait >= Math.max(backoff, duration));
      }),
    );
  });

  it('after failures in a row waits 1 s, 2 s, 4 s... up to a minute from the last, and a success starts afresh', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.nat(100_000), (failures, wait) => {
        let state: ReaperState = IDLE_REAPER;
        let now = 0;
        for (let round = 0; round < failures; round++) {
          state = reapFinished(reapStarted(state, now), { ok: false }, now + 5);
          now += 5;
          const delay = backoffDelayMs(REAP_POLICY.failureBackoff, round);
          expect(delay).toBeLessThanOrEqual(60_000);
          expect(shouldReap(state, 100, 1, now + delay - 1)).toBe(false);
          expect(shouldReap(state, 100, 1, now + delay)).toBe(true);
          now += delay + wait;
        }
        expect(state.failures).toBe(failures);
        const recovered = reapFinished(reapStarted(state, now), { ok: true, deleted: 3, countAfter: 10 }, now);
        expect(recovered.failures).toBe(0);
        expect(shouldReap(recovered, 100, 1, now + REAP_POLICY.minIntervalMs)).toBe(true);
      }),
    );
  });

  it('after a reap that deleted nothing, waits for the count to pass what it left', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1000 }), fc.nat(1000), fc.nat(1000), (threshold, left, later) => {
        const futile = reapFinished(reapStarted(IDLE_REAPER, 0), { ok: true, deleted: 0, countAfter: threshold + left }, 10);
        const now = 10_000 + later;
        expect(shouldReap(futile, threshold + left, threshold, now)).toBe(false);
        expect(shouldReap(futile, threshold + left + 1, threshold, now)).toBe(true);
        // One that deleted something asks for no growth.
        const useful = reapFinished(reapStarted(IDLE_REAPER, 0), { ok: true, deleted: 1, countAfter: threshold + left }, 10);
        expect(shouldReap(useful, threshold, threshold, now)).toBe(true);
      }),
    );
  });

  it('after a futile reap, measures growth from the lowest count seen since: a dip and a refill is reaped', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 1000 }), (threshold, left, dip) => {
        const futile = reapFinished(reapStarted(IDLE_REAPER, 0), { ok: true, deleted: 0, countAfter: threshold + left }, 10);
        const low = Math.max(0, threshold + left - dip);
        const seen = countSeen(countSeen(futile, low), low + 1);
        // Refilled to one over the low, and at the threshold: reaped, though under the old high.
        if (low + 1 >= threshold) expect(shouldReap(seen, low + 1, threshold, 10_000)).toBe(true);
        expect(shouldReap(seen, low, threshold, 10_000)).toBe(false);
        // A count that only grows keeps the mark where the reap left it.
        expect(countSeen(futile, threshold + left + 5)).toEqual(futile);
        expect(countSeen(IDLE_REAPER, 0)).toEqual(IDLE_REAPER);
      }),
    );
  });
});

describe('autoReapThreshold', () => {
  it('is half the table, at least 1; none for an unknown or unlimited table', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (max) => {
        const threshold = autoReapThreshold(max) ?? 0;
        expect(threshold).toBeGreaterThanOrEqual(1);
        expect(threshold).toBeLessThanOrEqual(Math.max(1, max / 2));
        expect(threshold).toBeGreaterThan(max / 2 - 1);
      }),
    );
    expect(autoReapThreshold(8192)).toBe(4096);
    expect(autoReapThreshold(undefined)).toBeNull();
    expect(autoReapThreshold(0)).toBeNull();
  });
});
