import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientId } from '../../../shared/client-id.js';
import { linkClientOf, readRequest, replyTo } from '../../../guest/dhcp/dhcp-exchange.js';
import { runChain } from '../../../guest/dhcp/dhcp-handler.js';
import type { DhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';
import { MESSAGE_TYPE, OPTION } from '../../../guest/dhcp/option-code.js';
import { replyDestination } from '../../../guest/dhcp/reply-destination.js';
import { spectrumChain } from '../../../guest/dhcp/spectrum-chain.js';
import { ipv4Arb, packetArb } from './dhcp-arbitraries.js';

const chain = spectrumChain();
const LINK = linkClientOf(clientId(0xa546));
const CLIENT_IP = '100.64.165.70';

/** A request from the link's own client (its MAC, option 53 of any type), other fields arbitrary. */
const ownRequestArb = fc
  .record({
    packet: packetArb(false),
    type: fc.integer({ min: 1, max: 8 }),
    ciaddr: fc.oneof(ipv4Arb, fc.constantFrom('0.0.0.0', CLIENT_IP, '100.64.0.9', '169.254.0.1', '127.0.0.1', '255.255.255.255')),
    requested: fc.option(fc.constantFrom(CLIENT_IP, '100.64.0.9'), { nil: undefined }),
    serverId: fc.option(fc.constantFrom('169.254.0.1', '10.0.0.1'), { nil: undefined }),
  })
  .map(({ packet, type, ciaddr, requested, serverId }): DhcpPacket => {
    const chaddr = new Uint8Array(16);
    chaddr.set(LINK.clientMac);
    const options = new Map(packet.options);
    for (const code of [OPTION.requestedIp, OPTION.serverId, OPTION.clientIdentifier, OPTION.parameterRequestList]) options.delete(code);
    options.set(OPTION.messageType, Uint8Array.of(type));
    if (requested !== undefined) options.set(OPTION.requestedIp, Uint8Array.from(requested.split('.').map(Number)));
    if (serverId !== undefined) options.set(OPTION.serverId, Uint8Array.from(serverId.split('.').map(Number)));
    return { ...packet, op: 1, htype: 1, hlen: 6, giaddr: '0.0.0.0', chaddr, ciaddr, options };
  });

describe('replyDestination', () => {
  it('unicasts only to the link client address, whatever ciaddr a request names; otherwise broadcasts on the link', () => {
    fc.assert(
      fc.property(ownRequestArb, (packet) => {
        const request = readRequest(packet, LINK);
        const response = runChain(chain, request, replyTo(request));
        if (response.drop !== undefined) return;
        expect([CLIENT_IP, '255.255.255.255']).toContain(replyDestination(request, response));
      }),
      { numRuns: 2000 },
    );
  });

  it('answers a DISCOVER naming another address in ciaddr at the offered address, not at that one', () => {
    const chaddr = new Uint8Array(16);
    chaddr.set(LINK.clientMac);
    for (const ciaddr of ['100.64.0.9', '192.0.2.77', '169.254.0.1']) {
      const packet: DhcpPacket = {
        op: 1, htype: 1, hlen: 6, hops: 0, xid: 1, secs: 0, flags: 0,
        ciaddr, yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0',
        chaddr, sname: new Uint8Array(64), file: new Uint8Array(128),
        options: new Map([[OPTION.messageType, Uint8Array.of(MESSAGE_TYPE.discover)]]),
      };
      const request = readRequest(packet, LINK);
      const response = runChain(chain, request, replyTo(request));
      expect(response.packet.yiaddr).toBe(CLIENT_IP);
      expect(replyDestination(request, response)).toBe(CLIENT_IP);
      expect(replyDestination({ ...request, packet: { ...packet, flags: 0x8000 } }, response)).toBe('255.255.255.255');
    }
  });
});
