import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { duplicateKeys } from '../../host/json-duplicate-keys.js';
import { parseState, serializeState } from '../../host/link-state.js';

const link = '{"client":"appvm-lynx","provider":"netvm","id":42310}';

describe('duplicateKeys', () => {
  it('finds each key an object holds twice, where that object is, in the order met, and none in strings, arrays or other objects', () => {
    const text = '{"a":1,"b":{"a":[{"x":1,"x\\"":2,"x":3}],"a":"{\\"a\\":1,\\"a\\":2}"},"c":[1,2,{"a b":0,"a b":1}],"a":2}';
    expect(duplicateKeys(text, 10)).toEqual({
      shown: [
        { at: 'b.a[0]', key: 'x' },
        { at: 'b', key: 'a' },
        { at: 'c[2]', key: 'a b' },
        { at: '', key: 'a' },
      ],
      count: 4,
    });
    expect(duplicateKeys(text, 1)).toEqual({ shown: [{ at: 'b.a[0]', key: 'x' }], count: 4 });
    expect(duplicateKeys('{"a":{"b":1},"c":{"b":2}}', 10)).toEqual({ shown: [], count: 0 });
    // A key ending in an escaped backslash, and one with an escaped quote: each one key.
    expect(duplicateKeys('{"a\\\\":1,"a\\\"":2,"a\\\\":3}', 10)).toEqual({ shown: [{ at: '', key: 'a\\' }], count: 1 });
  });

  it('finds none in JSON that JSON.stringify wrote (no object of it holds a key twice)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(duplicateKeys(JSON.stringify(value, null, 1), 5).count).toBe(0);
      }),
    );
  });
});

describe('a state file holding a key twice', () => {
  it('is malformed, said as a duplicate (not as what JSON.parse made of the last value: an unknown key, or no links)', () => {
    const file = `{"version":2,"version":1,"devicePrefix":"sn","links":[${link}]}`;
    expect(() => parseState(file, 'test')).toThrow(
      expect.objectContaining({
        kind: 'bad-schema',
        message: expect.stringMatching(/^state file test is malformed: duplicate key "version" \(which of the values is meant cannot be told\)\. The file was left untouched/),
      }),
    );
    // The last value would pass: all the links lost.
    expect(() => parseState(`{"version":2,"links":[${link}],"links":[]}`, 'test')).toThrow(expect.objectContaining({ kind: 'bad-schema', message: expect.stringContaining('malformed: duplicate key "links"') }));
    const twice = `{"version":2,"links":[{"client":"appvm-lynx","provider":"netvm","id":42310,"id":7}]}`;
    expect(() => parseState(twice, 'test')).toThrow(expect.objectContaining({ kind: 'bad-schema', message: expect.stringContaining('malformed: links[0] has duplicate key "id"') }));
    // A file as spectrum-link writes it has none.
    const state = parseState(`{"version":2,"devicePrefix":"sn","links":[${link}]}`, 'test');
    expect(parseState(serializeState(state), 'test')).toEqual(state);
  });
});
