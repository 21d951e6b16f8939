import fc from 'fast-check';
import { collapseIPv6Number } from 'ip-num';
import { describe, expect, it } from 'vitest';
import { ipv6Text } from '../../shared/ipv6-text.js';

const bytesOf = (groups: readonly number[]): Uint8Array => Uint8Array.from(groups.flatMap((group) => [group >> 8, group & 0xff]));

// Zero groups made common, so that runs of every length and position come up.
const anyGroup = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
const anyGroups = fc.array(anyGroup, { minLength: 8, maxLength: 8 });

describe('ipv6Text', () => {
  it('writes the forms RFC 5952 gives (section 4)', () => {
    expect(ipv6Text(bytesOf([0xfe80, 0, 0, 0, 0, 0, 0, 1]))).toBe('fe80::1');
    expect(ipv6Text(bytesOf([0, 0, 0, 0, 0, 0, 0, 0]))).toBe('::');
    expect(ipv6Text(bytesOf([0, 0, 0, 0, 0, 0, 0, 1]))).toBe('::1');
    expect(ipv6Text(bytesOf([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1]))).toBe('2001:db8:0:1:1:1:1:1'); // 4.2.2: one zero group stays
    expect(ipv6Text(bytesOf([0x2001, 0, 0, 1, 0, 0, 0, 1]))).toBe('2001:0:0:1::1'); // 4.2.3: the longest run
    expect(ipv6Text(bytesOf([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1]))).toBe('2001:db8::1:0:0:1'); // 4.2.3: the first of equals
    expect(ipv6Text(bytesOf([0x2001, 0xdb8, 0xabcd, 0x12, 0, 0, 0, 0]))).toBe('2001:db8:abcd:12::');
  });

  it('agrees with ip-num, which compresses the same way, for any address', () => {
    fc.assert(
      fc.property(anyGroups, (groups) => {
        expect(ipv6Text(bytesOf(groups))).toBe(collapseIPv6Number(groups.map((group) => group.toString(16)).join(':')));
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses anything but 16 bytes', () => {
    expect(() => ipv6Text(new Uint8Array(4))).toThrow('Unexpected length (got 4, expected 16)');
    expect(() => ipv6Text(new Uint8Array(17))).toThrow('Unexpected length (got 17, expected 16)');
  });
});
