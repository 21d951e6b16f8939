import { describe, expect, it } from 'vitest';
import { regExpPlace } from './regexp-place.js';

describe('the toMatchObject guard (test/matcher-guard.ts)', () => {
  it('finds a RegExp in an expected object, however deep, and says where', () => {
    expect(regExpPlace(/x/)).toBe('(the whole object)');
    expect(regExpPlace({ message: /x/ })).toBe('.message');
    expect(regExpPlace({ failed: [{ vm: 'c0' }, { error: { message: /x/ } }] })).toBe('.failed[1].error.message');
  });

  it('passes over what checks its own way or holds none', () => {
    expect(regExpPlace({ message: expect.stringMatching(/x/) })).toBeUndefined();
    expect(regExpPlace({ error: expect.objectContaining({ message: 'x' }) })).toBeUndefined();
    expect(regExpPlace({ a: 1, b: ['x', null, { c: undefined }] })).toBeUndefined();
  });

  it('finds one wherever toMatchObject matches anything at it: in a Map, a Set, a class instance, an Error', () => {
    class Box {
      constructor(readonly message: unknown) {}
    }
    expect(regExpPlace({ m: new Map([['k', /x/]]) })).toBe('.m.get("k")');
    expect(regExpPlace(new Map([[/x/, 'v']]))).toBe('.keys()[0]');
    expect(regExpPlace({ s: new Set(['a', /x/]) })).toBe('.s.values()[1]');
    expect(regExpPlace({ box: new Box(/x/) })).toBe('.box.message');
    expect(regExpPlace({ error: new Error('e', { cause: /x/ }) })).toBe('.error.cause');
    expect(regExpPlace({ error: Object.assign(new Error('e'), { detail: /x/ }) })).toBe('.error.detail');
    expect(regExpPlace(new AggregateError([new Error('e', { cause: /x/ })]))).toBe('.errors[0].cause');
    expect(regExpPlace({ bytes: new Uint8Array([1]), when: new Date(0), box: new Box('x') })).toBeUndefined();
  });

  it('looks through an expected object that refers to itself, without following it for ever', () => {
    const expected: Record<string, unknown> = { a: 1 };
    expected['self'] = expected;
    const actual: Record<string, unknown> = { a: 1 };
    actual['self'] = actual;
    expect(regExpPlace(expected)).toBeUndefined();
    expect(actual).toMatchObject(expected);
    expected['m'] = /x/;
    expect(regExpPlace(expected)).toBe('.m');
  });

  it('fails a toMatchObject given one, where vitest would match anything there, and lets the others through', async () => {
    expect(() => expect({ message: 'abc' }).toMatchObject({ message: /z/ })).toThrow('toMatchObject ignores the RegExp at .message');
    await expect(expect(Promise.reject(new Error('abc'))).rejects.toMatchObject({ message: /z/ })).rejects.toThrow('ignores the RegExp at .message');
    expect(() => expect({ m: new Map([['k', 'abc']]) }).toMatchObject({ m: new Map([['k', /z/]]) })).toThrow('toMatchObject ignores the RegExp at .m.get("k")');
    expect({ message: 'abc' }).toMatchObject({ message: expect.stringMatching(/b/) });
    expect(() => expect({ message: 'abc' }).toMatchObject({ message: expect.stringMatching(/z/) })).toThrow();
  });
});
