import fc from 'fast-check';
import type { DhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';

export const ipv4Arb = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((octets) => octets.join('.'));

/** Options as the codec returns them: codes 1..254 except 52, values of any length. */
export const optionsArb = fc
  .uniqueArray(
    fc.tuple(
      fc.integer({ min: 1, max: 254 }).filter((code) => code !== 52),
      fc.uint8Array({ maxLength: 600 }),
    ),
    { selector: ([code]) => code, maxLength: 12 },
  )
  .map((entries) => new Map(entries));

export const packetArb = (withNames: boolean): fc.Arbitrary<DhcpPacket> =>
  fc.record({
    op: fc.nat(255),
    htype: fc.nat(255),
    hlen: fc.nat(16),
    hops: fc.nat(255),
    xid: fc.nat(0xffffffff),
    secs: fc.nat(0xffff),
    flags: fc.nat(0xffff),
    ciaddr: ipv4Arb,
    yiaddr: ipv4Arb,
    siaddr: ipv4Arb,
    giaddr: ipv4Arb,
    chaddr: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    sname: withNames ? fc.uint8Array({ minLength: 64, maxLength: 64 }) : fc.constant(new Uint8Array(64)),
    file: withNames ? fc.uint8Array({ minLength: 128, maxLength: 128 }) : fc.constant(new Uint8Array(128)),
    options: optionsArb,
  });
