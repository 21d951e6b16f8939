// Every vitest worker runs this first (vitest.config.ts setupFiles). vitest's toMatchObject
// compares a RegExp in the expected object as an object with no keys, so it matches any value
// (`expect({ m: 'abc' }).toMatchObject({ m: /z/ })` passes): an assertion written so checks
// nothing at that place. Such an assertion fails here instead, saying what to write.
import { chai } from 'vitest';

/** Where in `expected` a RegExp stands (a path such as `.message` or `[2].error`), or undefined. */
export function regExpPlace(expected: unknown, path = ''): string | undefined {
  if (expected instanceof RegExp) return path === '' ? '(the whole object)' : path;
  if (Array.isArray(expected)) {
    for (const [index, item] of expected.entries()) {
      const place = regExpPlace(item, `${path}[${index}]`);
      if (place !== undefined) return place;
    }
    return undefined;
  }
  if (typeof expected !== 'object' || expected === null) return undefined;
  // An asymmetric matcher (expect.stringMatching, expect.objectContaining...) checks its own way.
  if (typeof (expected as { asymmetricMatch?: unknown }).asymmetricMatch === 'function') return undefined;
  const prototype: unknown = Object.getPrototypeOf(expected);
  if (prototype !== Object.prototype && prototype !== null) return undefined;
  for (const [key, value] of Object.entries(expected)) {
    const place = regExpPlace(value, `${path}.${key}`);
    if (place !== undefined) return place;
  }
  return undefined;
}

chai.util.overwriteMethod(chai.Assertion.prototype, 'toMatchObject', (original: (...args: unknown[]) => unknown) =>
  function guardedToMatchObject(this: unknown, ...args: unknown[]): unknown {
    const place = regExpPlace(args[0]);
    if (place !== undefined) {
      throw new Error(`toMatchObject ignores the RegExp at ${place} (it matches anything there): write expect.stringMatching(...) instead`);
    }
    return original.apply(this, args);
  },
);
