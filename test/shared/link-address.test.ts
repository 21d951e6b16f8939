import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressError } from '../../shared/address-error.js';
import { clientId } from '../../shared/client-id.js';
import { linkAddressesOf, parseAddress } from '../../shared/link-address.js';
import { anyClientId } from './arbitraries.js';

describe('link addresses', () => {
  it('derives the spec example from id 42310', () => {
    expect(linkAddressesOf(clientId(42310))).toEqual({
      id: 42310,
      clientIp: '100.64.165.70',
      clientMac: '0A:B3:EC:00:A5:46',
      providerMac: '0A:B3:EC:80:A5:46',
      gateway: '169.254.0.1',
    });
  });

  it('parses every form of every id back to that id', () => {
    fc.assert(
      fc.property(anyClientId, (id) => {
        const { clientIp, clientMac, providerMac } = linkAddressesOf(id);
        expect(parseAddress(String(id))).toEqual({ id, given: { form: 'id' } });
        expect(parseAddress(clientIp)).toEqual({ id, given: { form: 'ip' } });
        expect(parseAddress(clientMac)).toEqual({ id, given: { form: 'mac', role: 'client' } });
        expect(parseAddress(providerMac)).toEqual({ id, given: { form: 'mac', role: 'provider' } });
      }),
    );
  });

  it('never throws anything but an AddressError, whatever the input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.stringMatching(/^[0-9a-fA-F:.\-]{0,24}$/)), (text) => {
        try {
          const { id } = parseAddress(text);
          // Whatever was accepted must be one of the three forms of that id.
          const forms = linkAddressesOf(id);
          const canonical = text.toUpperCase().replaceAll('-', ':');
          expect([String(id), forms.clientIp, forms.clientMac, forms.providerMac]).toContain(canonical);
        } catch (error) {
          expect(error).toBeInstanceOf(AddressError);
        }
      }),
    );
  });

  it.each([
    ['', 'empty'],
    ['x'.repeat(33), 'too-long'],
    ['lynx', 'unrecognised'],
    ['0A:B3:EC:40:A5:46', 'mac-role'],
    ['00:16:3E:00:A5:46', 'mac-oui'],
    ['10.0.0.1', 'ip-network'],
    ['65535', 'id-range'],
  ])('rejects %j as %s', (text, kind) => {
    expect(() => parseAddress(text)).toThrow(expect.objectContaining({ kind }));
  });
});
