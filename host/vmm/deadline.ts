// A bound on a whole series of VMM requests (each is bounded on its own too): an AbortSignal the
// VMM clients end their session or request on, with a reason that says which bound passed.

export interface Deadline {
  /** Aborts after the time given, its reason an Error saying why. */
  readonly signal: AbortSignal;
  /** Stop the timer (it keeps nothing alive meanwhile). */
  clear(): void;
}

/** A deadline `ms` from now; `why`: what the abort reason says (e.g. "the whole attach took over 2000 ms"). */
export function deadline(ms: number, why: string): Deadline {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(why)), ms);
  timer.unref();
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}
