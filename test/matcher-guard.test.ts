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
    expect(regExpPlace(new Map([['k', /x/]]))).toBeUndefined();
  });

  it('fails a toMatchObject given one, where vitest would match anything there, and lets the others through', async () => {
    expect(() => expect({ message: 'abc' }).toMatchObject({ message: /z/ })).toThrow('toMatchObject ignores the RegExp at .message');
    await expect(expect(Promise.reject(new Error('abc'))).rejects.toMatchObject({ message: /z/ })).rejects.toThrow('ignores the RegExp at .message');
    expect({ message: 'abc' }).toMatchObject({ message: expect.stringMatching(/b/) });
    expect(() => expect({ message: 'abc' }).toMatchObject({ message: expect.stringMatching(/z/) })).toThrow();
  });
});
