// Every vitest worker runs this first (vitest.config.ts setupFiles). vitest's toMatchObject
// compares a RegExp in the expected object as an object with no keys, so it matches any value
// (`expect({ m: 'abc' }).toMatchObject({ m: /z/ })` passes): an assertion written so checks
// nothing at that place. Such an assertion fails here instead, saying what to write.
import { chai } from 'vitest';
import { regExpPlace } from './regexp-place.js';

chai.util.overwriteMethod(chai.Assertion.prototype, 'toMatchObject', (original: (...args: unknown[]) => unknown) =>
  function guardedToMatchObject(this: unknown, ...args: unknown[]): unknown {
    const place = regExpPlace(args[0]);
    if (place !== undefined) {
      throw new Error(`toMatchObject ignores the RegExp at ${place} (it matches anything there): write expect.stringMatching(...) instead`);
    }
    return original.apply(this, args);
  },
);
