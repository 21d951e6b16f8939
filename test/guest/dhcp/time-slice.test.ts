import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runSlice } from '../../../guest/dhcp/time-slice.js';

/** A clock that each step moves on by that step's cost. */
function work(costs: readonly number[]): { step: () => boolean; now: () => number; done: () => number } {
  let clock = 0;
  let index = 0;
  return {
    step: () => {
      clock += costs[index] ?? 0;
      index += 1;
      return index < costs.length;
    },
    now: () => clock,
    done: () => index,
  };
}

describe('runSlice', () => {
  it('stops once the budget is spent, after at least one step, and says whether work is left', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 20, noNaN: true }), { minLength: 1, maxLength: 200 }), fc.double({ min: 0.1, max: 5, noNaN: true }), (costs, budget) => {
        const { step, now, done } = work(costs);
        const more = runSlice(step, budget, now);
        const steps = done();
        expect(steps).toBeGreaterThanOrEqual(1);
        expect(more).toBe(steps < costs.length);
        const spent = costs.slice(0, steps).reduce((sum, cost) => sum + cost, 0);
        // Over budget only by the last step; under it only when the work ran out.
        if (steps > 1) expect(spent - (costs[steps - 1] ?? 0)).toBeLessThan(budget);
        if (more) expect(spent).toBeGreaterThanOrEqual(budget);
      }),
    );
  });

  it('yields after one slow step (uncompiled code), many fast ones (compiled)', () => {
    const slow = work([15, 1, 1]);
    expect(runSlice(slow.step, 2, slow.now)).toBe(true);
    expect(slow.done()).toBe(1);
    const fast = work(Array.from({ length: 100 }, () => 0.25));
    expect(runSlice(fast.step, 2, fast.now)).toBe(true);
    expect(fast.done()).toBe(8);
  });
});
