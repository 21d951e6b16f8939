// Where a RegExp stands in an object a test expects (test/matcher-guard.ts refuses those in
// toMatchObject, which matches anything at a RegExp).

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
