import fc from 'fast-check';
import { IPv4 } from 'ip-num';
import { describe, expect, it } from 'vitest';
import { AddressError } from '../../shared/address-error.js';
import { clientId } from '../../shared/client-id.js';
import { clientIpOf, clientIpTextOf, idOfClientIp, parseClientIp } from '../../shared/client-ip.js';
import { anyClientId } from './arbitraries.js';

describe('client IP', () => {
  it('follows the spec example: id 42310 is 100.64.165.70', () => {
    expect(clientIpOf(clientId(42310)).toString()).toBe('100.64.165.70');
    expect(parseClientIp('100.64.165.70')).toBe(42310);
  });

  it('round-trips every id', () => {
    fc.assert(fc.property(anyClientId, (id) => {
      expect(parseClientIp(clientIpOf(id).toString())).toBe(id);
    }));
  });

  it('puts the id in the last two octets', () => {
    fc.assert(
      fc.property(anyClientId, (id) => {
        expect(clientIpOf(id).toString()).toBe(`100.64.${Math.floor(id / 256)}.${id % 256}`);
      }),
    );
  });

  it('rejects addresses outside 100.64.0.0/16', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (value) => {
        fc.pre(value >>> 16 !== ((100 << 8) | 64));
        expect(() => idOfClientIp(IPv4.fromNumber(BigInt(value)))).toThrow(expect.objectContaining({ kind: 'ip-network' }));
      }),
    );
  });

  it.each([
    ['100.64.0.0', 'id-range'],
    ['100.64.255.255', 'id-range'],
    ['100.65.0.1', 'ip-network'],
    ['169.254.0.1', 'ip-network'],
    ['100.64.1', 'ip-syntax'],
    ['100.64.1.2.3', 'ip-syntax'],
    ['100.64.01.2', 'ip-syntax'],
    ['100.64.1.256', 'ip-syntax'],
    ['100.64.1.2 ', 'ip-syntax'],
    ['100.64.1.-2', 'ip-syntax'],
    ['100.64..2', 'ip-syntax'],
  ])('rejects %j as %s', (text, kind) => {
    expect(() => parseClientIp(text)).toThrow(AddressError);
    expect(() => parseClientIp(text)).toThrow(expect.objectContaining({ kind }));
  });
});

describe('client IP text', () => {
  it('is what ip-num makes of the same address', () => {
    fc.assert(fc.property(anyClientId, (id) => {
      expect(clientIpTextOf(id)).toBe(clientIpOf(id).toString());
    }));
  });
});

describe('client IP parsing fast path', () => {
  it('agrees with ip-num on every dotted quad: the same id, or an error', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.tuple(fc.nat(300), fc.nat(300)).map(([a, b]) => `100.64.${a}.${b}`)), (text) => {
        let viaIpNum: number | 'error';
        try {
          viaIpNum = idOfClientIp(IPv4.fromString(text));
        } catch {
          viaIpNum = 'error';
        }
        let parsed: number | 'error';
        try {
          parsed = parseClientIp(text);
        } catch (error) {
          expect(error).toBeInstanceOf(AddressError);
          parsed = 'error';
        }
        expect(parsed).toBe(viaIpNum);
      }),
    );
  });
});
