import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DhcpError } from '../../../guest/dhcp/dhcp-error.js';
import { buildUdpDatagram, parseUdpDatagram } from '../../../guest/dhcp/udp-frame.js';
import { ipv4Arb } from './dhcp-arbitraries.js';

function checksumOk(bytes: Uint8Array, start: number, end: number, initial = 0): boolean {
  let sum = initial;
  for (let index = start; index < end; index += 2) sum += ((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum === 0xffff;
}

describe('IPv4/UDP framing', () => {
  it('builds packets whose IP and UDP checksums verify, and parses them back', () => {
    fc.assert(
      fc.property(ipv4Arb, ipv4Arb, fc.nat(0xffff), fc.nat(0xffff), fc.uint8Array({ maxLength: 700 }), (source, destination, sourcePort, destinationPort, payload) => {
        const bytes = buildUdpDatagram({ source, destination, sourcePort, destinationPort, payload });
        expect(checksumOk(bytes, 0, 20)).toBe(true);
        const udpLength = 8 + payload.length;
        const pseudo = Uint8Array.from([...bytes.subarray(12, 20), 0, 17, udpLength >> 8, udpLength & 0xff, ...bytes.subarray(20)]);
        expect(checksumOk(pseudo, 0, pseudo.length)).toBe(true);
        const parsed = parseUdpDatagram(bytes);
        expect(parsed).toMatchObject({ source, destination, sourcePort, destinationPort });
        expect(parsed.payload).toEqual(payload);
      }),
    );
  });

  it('throws only DhcpError for any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100, size: 'max' }), fc.boolean(), (bytes, ipv4) => {
        if (ipv4 && bytes.length > 0) bytes[0] = 0x45;
        try {
          parseUdpDatagram(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(DhcpError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
