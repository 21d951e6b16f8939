// Where a RegExp stands in an object a test expects (test/matcher-guard.ts refuses those in
// toMatchObject, which matches anything at a RegExp).

/**
 * Where in `expected` a RegExp stands (a path such as `.message` or `[2].error`), or undefined.
 * Looks wherever toMatchObject compares with its subset rule, which matches anything at a RegExp:
 * arrays, Maps (keys and values) and Sets, an Error's cause, errors and own properties, and any
 * other object's own properties (a class instance's too). Each object is looked into once, so an
 * expected object that refers to itself is looked through, not followed for ever.
 */
export function regExpPlace(expected: unknown, path = '', seen = new Set<object>()): string | undefined {
  if (expected instanceof RegExp) return path === '' ? '(the whole object)' : path;
  if (typeof expected !== 'object' || expected === null) return undefined;
  // An asymmetric matcher (expect.stringMatching, expect.objectContaining...) checks its own way.
  if (typeof (expected as { asymmetricMatch?: unknown }).asymmetricMatch === 'function') return undefined;
  // Bytes only: compared as such.
  if (ArrayBuffer.isView(expected) || expected instanceof ArrayBuffer) return undefined;
  if (seen.has(expected)) return undefined;
  seen.add(expected);
  const places: [unknown, string][] = [];
  if (Array.isArray(expected)) {
    for (const [index, item] of expected.entries()) places.push([item, `${path}[${index}]`]);
  } else if (expected instanceof Map) {
    for (const [index, [key, value]] of [...expected.entries()].entries()) {
      places.push([key, `${path}.keys()[${index}]`], [value, `${path}.get(${typeof key === 'string' ? JSON.stringify(key) : `keys()[${index}]`})`]);
    }
  } else if (expected instanceof Set) {
    for (const [index, item] of [...expected].entries()) places.push([item, `${path}.values()[${index}]`]);
  } else {
    if (expected instanceof Error) {
      places.push([expected.cause, `${path}.cause`]);
      if (expected instanceof AggregateError) places.push([expected.errors, `${path}.errors`]);
    }
    for (const [key, value] of Object.entries(expected)) places.push([value, `${path}.${key}`]);
  }
  for (const [value, place] of places) {
    const found = regExpPlace(value, place, seen);
    if (found !== undefined) return found;
  }
  return undefined;
}
