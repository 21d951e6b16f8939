import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressError } from '../../shared/address-error.js';
import { clientId } from '../../shared/client-id.js';
import {
  clientMacOf,
  decodeLinkMac,
  formatLinkMac,
  formatMacOctets,
  linkMacOctets,
  parseLinkMac,
  parseMacOctets,
  providerMacOf,
  sameMac,
} from '../../shared/link-mac.js';
import { anyClientId, macSpelling } from './arbitraries.js';

const anyRole = fc.constantFrom('client' as const, 'provider' as const);
const anyOctet = fc.integer({ min: 0, max: 255 });

describe('link MAC', () => {
  it('follows the spec example', () => {
    expect(clientMacOf(clientId(42310))).toBe('0A:B3:EC:00:A5:46');
    expect(providerMacOf(clientId(42310))).toBe('0A:B3:EC:80:A5:46');
    expect(parseLinkMac('0A:B3:EC:00:A5:46')).toEqual({ role: 'client', id: 42310 });
    expect(parseLinkMac('0a-b3-ec-80-a5-46')).toEqual({ role: 'provider', id: 42310 });
  });

  it('round-trips every id and role through every spelling', () => {
    fc.assert(
      fc.property(
        anyClientId.chain((id) => anyRole.chain((role) => macSpelling(linkMacOctets({ role, id })).map((text) => ({ id, role, text })))),
        ({ id, role, text }) => {
          expect(parseLinkMac(text)).toEqual({ role, id });
          expect(formatLinkMac(parseLinkMac(text))).toBe(text.toUpperCase().replaceAll('-', ':'));
        },
      ),
    );
  });

  it('formats canonically: upper case, colons, two digits per octet', () => {
    fc.assert(
      fc.property(anyClientId, anyRole, (id, role) => {
        expect(formatLinkMac({ role, id })).toMatch(/^0A:B3:EC:(00|80)(:[0-9A-F]{2}){2}$/);
      }),
    );
  });

  it('rejects any other OUI', () => {
    fc.assert(
      fc.property(fc.tuple(anyOctet, anyOctet, anyOctet), anyClientId, (oui, id) => {
        fc.pre(oui[0] !== 0x0a || oui[1] !== 0xb3 || oui[2] !== 0xec);
        expect(() => decodeLinkMac([...oui, 0x00, id >> 8, id & 0xff])).toThrow(expect.objectContaining({ kind: 'mac-oui' }));
      }),
    );
  });

  it('rejects every role octet but 0x00 and 0x80 (reserved bits)', () => {
    fc.assert(
      fc.property(anyOctet, anyClientId, (roleOctet, id) => {
        fc.pre(roleOctet !== 0x00 && roleOctet !== 0x80);
        expect(() => decodeLinkMac([0x0a, 0xb3, 0xec, roleOctet, id >> 8, id & 0xff])).toThrow(
          expect.objectContaining({ kind: 'mac-role' }),
        );
      }),
    );
  });

  it.each(['0A:B3:EC:00:00:00', '0A:B3:EC:80:FF:FF'])('rejects reserved id in %s', (text) => {
    expect(() => parseLinkMac(text)).toThrow(expect.objectContaining({ kind: 'id-range' }));
  });

  it.each([
    '0A:B3:EC:00:A5',
    '0A:B3:EC:00:A5:46:00',
    '0A:B3:EC:00:A5:4',
    '0A:B3:EC:00:A5:046',
    '0A:B3-EC:00:A5:46',
    '0A.B3.EC.00.A5.46',
    '0AB3EC00A546',
    '0A:B3:EC:00:A5:4G',
    ' 0A:B3:EC:00:A5:46',
    '0A:B3:EC:00:A5:46\n',
    '0A::B3:EC:00:A5:46',
  ])('rejects malformed %j', (text) => {
    expect(() => parseMacOctets(text)).toThrow(expect.objectContaining({ kind: 'mac-syntax' }));
  });

  it('accepts a string exactly when it is six hex pairs with one kind of separator', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), (text) => {
        const wellFormed = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/.test(text);
        let accepted: boolean;
        try {
          parseMacOctets(text);
          accepted = true;
        } catch (error) {
          expect(error).toBeInstanceOf(AddressError);
          accepted = false;
        }
        return accepted === wellFormed;
      }),
    );
  });

  it('formats any octets as upper-case hex pairs', () => {
    fc.assert(
      fc.property(fc.array(anyOctet, { minLength: 6, maxLength: 6 }), (octets) => {
        expect(parseMacOctets(formatMacOctets(octets))).toEqual(octets);
      }),
    );
  });
});

describe('sameMac', () => {
  it('compares addresses, not spellings', () => {
    expect(sameMac('0a-b3-ec-00-a5-46', '0A:B3:EC:00:A5:46')).toBe(true);
    expect(sameMac('0A:B3:EC:00:A5:46', '0A:B3:EC:80:A5:46')).toBe(false);
    expect(sameMac('not a mac', 'not a mac')).toBe(false);
    fc.assert(
      fc.property(fc.array(anyOctet, { minLength: 6, maxLength: 6 }), (octets) => {
        expect(sameMac(formatMacOctets(octets), formatMacOctets(octets).toLowerCase().replaceAll(':', '-'))).toBe(true);
      }),
    );
  });
});
