/**
 * One slice of background work: `step` runs until it says it is done or `budgetMs` has passed
 * (it runs at least once). Returns whether work is left. A budget rather than a number of steps:
 * the same step can cost ten times more before V8 has compiled it.
 */
export function runSlice(step: () => boolean, budgetMs: number, now: () => number = () => performance.now()): boolean {
  const until = now() + budgetMs;
  for (;;) {
    if (!step()) return false;
    if (now() >= until) return true;
  }
}
