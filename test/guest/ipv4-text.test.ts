import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dottedOctets } from '../../guest/ipv4-text.js';

describe('dottedOctets', () => {
  it('reads back the octets of every dotted quad', () => {
    fc.assert(
      fc.property(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)), (octets) => {
        expect(dottedOctets(octets.join('.'))).toEqual(octets);
      }),
    );
  });

  it('refuses what is not a plain dotted quad', () => {
    for (const text of ['', '100.64.0', '100.64.0.256', '100.64.0.01', ' 100.64.0.1', '100.64.0.1 ', '100.64.0.1/32', '1.2.3.4.5', '::1', '+1.2.3.4']) {
      expect(dottedOctets(text), text).toBeNull();
    }
  });
});
