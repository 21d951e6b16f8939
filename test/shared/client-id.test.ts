import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressError } from '../../shared/address-error.js';
import { clientId, idOctets, isClientId, parseClientId } from '../../shared/client-id.js';
import { anyClientId } from './arbitraries.js';

describe('client id', () => {
  it('accepts exactly the integers 1..65534', () => {
    expect([0, 1, 65534, 65535, -1, 1.5, Number.NaN].map(isClientId)).toEqual([false, true, true, false, false, false, false]);
    fc.assert(fc.property(fc.integer(), (n) => isClientId(n) === (n >= 1 && n <= 65534)));
  });

  it('round-trips every id through its decimal text', () => {
    fc.assert(fc.property(anyClientId, (id) => {
      expect(parseClientId(String(id))).toBe(id);
    }));
  });

  it('splits an id into its address octets', () => {
    expect(idOctets(clientId(42310))).toEqual([0xa5, 0x46]);
    fc.assert(fc.property(anyClientId, (id) => {
      const [high, low] = idOctets(id);
      return high * 256 + low === id && high >= 0 && high <= 255 && low >= 0 && low <= 255;
    }));
  });

  it.each([
    ['0', 'id-range'],
    ['65535', 'id-range'],
    ['99999', 'id-range'],
    ['123456789012', 'id-range'],
    ['042310', 'id-syntax'],
    ['+5', 'id-syntax'],
    ['-5', 'id-syntax'],
    ['0x10', 'id-syntax'],
    ['1e3', 'id-syntax'],
    ['1.0', 'id-syntax'],
    [' 5', 'id-syntax'],
    ['', 'id-syntax'],
  ])('rejects %j as %s', (text, kind) => {
    expect(() => parseClientId(text)).toThrow(AddressError);
    expect(() => parseClientId(text)).toThrow(expect.objectContaining({ kind }));
  });

  it('says how an id is written, for a sign as for any other syntax', () => {
    expect(() => parseClientId('-1')).toThrow('"-1" is not a client id: write it as a decimal number from 1 to 65534, without sign or leading zeros');
  });

  it('rejects every string that is not a canonical decimal id', () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        const canonical = /^[1-9][0-9]*$/.test(text) && Number(text) <= 65534;
        let accepted: boolean;
        try {
          parseClientId(text);
          accepted = true;
        } catch (error) {
          expect(error).toBeInstanceOf(AddressError);
          accepted = false;
        }
        return accepted === canonical;
      }),
    );
  });
});
