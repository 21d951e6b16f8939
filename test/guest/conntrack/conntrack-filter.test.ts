import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { filterMatches, ipv4Number, isEmptyFilter, prefixMaskNumber } from '../../../guest/conntrack/conntrack-filter.js';

const octets = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
const dotted = (parts: readonly number[]): string => parts.join('.');
const bits = (parts: readonly number[]): string => parts.map((part) => part.toString(2).padStart(8, '0')).join('');

describe('ipv4Number', () => {
  it('reads dotted quads as unsigned numbers, octet by octet', () => {
    fc.assert(
      fc.property(octets, (parts) => {
        expect(ipv4Number(dotted(parts))).toBe(parseInt(bits(parts), 2));
      }),
    );
  });

  it('refuses what is no dotted quad', () => {
    for (const text of ['', '100.64.0', '100.64.0.256', '100.64.0.01', ' 100.64.0.1', '100.64.0.1/32', '::1']) expect(ipv4Number(text)).toBeNull();
  });
});

describe('filterMatches', () => {
  it('matches the listed addresses, and a swept network by its leading bits, but for what it keeps', () => {
    fc.assert(
      fc.property(octets, octets, fc.nat(32), fc.boolean(), fc.boolean(), (address, network, prefixLength, listed, kept) => {
        const ip = dotted(address);
        const filter = { addresses: listed ? [ip] : [], sweep: { network: dotted(network), prefixLength, keep: kept ? [ip] : [] } };
        const inNetwork = bits(address).slice(0, prefixLength) === bits(network).slice(0, prefixLength);
        expect(filterMatches(filter, ip)).toBe(listed || (inNetwork && !kept));
        expect(filterMatches({ addresses: filter.addresses, sweep: null }, ip)).toBe(listed);
      }),
    );
  });

  it('sweeps every address with a prefix of 0, and only the network itself with 32', () => {
    expect(prefixMaskNumber(0)).toBe(0);
    expect(prefixMaskNumber(32)).toBe(0xffffffff);
    expect(filterMatches({ addresses: [], sweep: { network: '0.0.0.0', prefixLength: 0, keep: [] } }, '203.0.113.9')).toBe(true);
    expect(filterMatches({ addresses: [], sweep: { network: '100.64.0.1', prefixLength: 32, keep: [] } }, '100.64.0.2')).toBe(false);
    expect(isEmptyFilter({ addresses: [], sweep: null })).toBe(true);
  });
});
