import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientId } from '../../../shared/client-id.js';
import { linkClientOf } from '../../../guest/dhcp/dhcp-exchange.js';
import { MAX_MESSAGE_LENGTH, encodeDhcpPacket, parseDhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';
import { MESSAGE_TYPE, OPTION } from '../../../guest/dhcp/option-code.js';
import { serveDatagram, warmUpFrames } from '../../../guest/dhcp/serve-datagram.js';
import { spectrumChain } from '../../../guest/dhcp/spectrum-chain.js';
import { buildUdpDatagram, parseUdpDatagram } from '../../../guest/dhcp/udp-frame.js';
import { packetArb } from './dhcp-arbitraries.js';

const chain = spectrumChain({ leaseSeconds: 600 });
const CLIENT = linkClientOf(clientId(0xa546));
const [DISCOVER, REQUEST, UNICAST_DISCOVER, UNICAST_REQUEST] = warmUpFrames(CLIENT) as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];

function reframe(frame: Uint8Array, edit: (payload: Uint8Array) => Uint8Array, destinationPort = 67): Uint8Array {
  const datagram = parseUdpDatagram(frame);
  return buildUdpDatagram({ ...datagram, destinationPort, payload: edit(datagram.payload) });
}

describe('serveDatagram', () => {
  it('answers a DISCOVER with an OFFER and a REQUEST with an ACK for the link client, from 169.254.0.1:67 to :68', () => {
    const offer = serveDatagram(chain, CLIENT, 'snp1', DISCOVER, undefined, 1000);
    expect(offer.kind).toBe('answered');
    if (offer.kind !== 'answered' || offer.reply === undefined) throw new Error('no reply');
    expect(offer.replyType).toBe(MESSAGE_TYPE.offer);
    expect(offer.lease).toMatchObject({ ifname: 'snp1', clientIp: '100.64.165.70', state: 'offered', firstSeen: 1000 });
    // The made-up frames set the BROADCAST flag, so the reply is broadcast on the link.
    expect(offer.reply.destination).toBe('255.255.255.255');
    const sent = parseUdpDatagram(offer.reply.frame);
    expect(sent).toMatchObject({ source: '169.254.0.1', destination: '255.255.255.255', sourcePort: 67, destinationPort: 68 });
    expect(parseDhcpPacket(sent.payload).yiaddr).toBe('100.64.165.70');

    const ack = serveDatagram(chain, CLIENT, 'snp1', REQUEST, offer.lease, 2000);
    expect(ack.kind === 'answered' && ack.replyType).toBe(MESSAGE_TYPE.ack);
    expect(ack.kind === 'answered' && ack.lease).toMatchObject({ state: 'bound', firstSeen: 1000, lastRenewed: 2000, hostname: 'warm-up' });
  });

  it('the second made-up client takes unicast replies to its new address and echoes an xid above 2^31', () => {
    const offer = serveDatagram(chain, CLIENT, 'snp1', UNICAST_DISCOVER, undefined, 1000);
    if (offer.kind !== 'answered' || offer.reply === undefined) throw new Error('no reply');
    expect(offer.reply.destination).toBe('100.64.165.70');
    const sent = parseDhcpPacket(parseUdpDatagram(offer.reply.frame).payload);
    expect(sent.xid).toBe(0xdeadbeef);
    expect(sent.xid).toBeGreaterThan(2 ** 31);
    const ack = serveDatagram(chain, CLIENT, 'snp1', UNICAST_REQUEST, offer.lease, 2000);
    expect(ack.kind === 'answered' && ack.lease).toMatchObject({ state: 'bound', lastRenewed: 2000, hostname: undefined });
    // The same key order, whichever client: one record shape for the optimised request path.
    if (ack.kind !== 'answered' || ack.lease === undefined || offer.lease === undefined) throw new Error('no lease');
    expect(Object.keys(ack.lease)).toEqual(Object.keys(offer.lease));
  });

  it('leaves other UDP alone, and reports relayed and malformed datagrams without answering', () => {
    expect(serveDatagram(chain, CLIENT, 'snp1', reframe(DISCOVER, (p) => p, 53), undefined, 0)).toEqual({ kind: 'not-dhcp' });
    const relayed = reframe(DISCOVER, (payload) => encodeDhcpPacket({ ...parseDhcpPacket(payload), giaddr: '100.64.0.9' }));
    expect(serveDatagram(chain, CLIENT, 'snp1', relayed, undefined, 0)).toEqual({ kind: 'relayed' });
    const truncated = reframe(DISCOVER, (payload) => payload.subarray(0, 100));
    expect(serveDatagram(chain, CLIENT, 'snp1', truncated, undefined, 0).kind).toBe('malformed');
    expect(serveDatagram(chain, CLIENT, 'snp1', Uint8Array.of(0x45, 0), undefined, 0).kind).toBe('malformed');
  });

  it('never answers another MAC on the link, and keeps the lease as it was', () => {
    const stranger = linkClientOf(clientId(7));
    const [strangerDiscover] = warmUpFrames(stranger) as [Uint8Array];
    const served = serveDatagram(chain, CLIENT, 'snp1', strangerDiscover, undefined, 0);
    expect(served.kind === 'answered' && served.response.drop).toBe('wrong-mac');
    expect(served.kind === 'answered' && served.reply).toBeUndefined();
    expect(served.kind === 'answered' && served.lease).toBeUndefined();
  });

  it('turns any bytes into an outcome and throws nothing (fuzzed DHCP payloads and raw bytes)', () => {
    fc.assert(
      fc.property(packetArb(true), fc.uint8Array({ maxLength: 700, size: 'max' }), (packet, bytes) => {
        const framed = buildUdpDatagram({ source: '0.0.0.0', destination: '255.255.255.255', sourcePort: 68, destinationPort: 67, payload: encodeDhcpPacket(packet, MAX_MESSAGE_LENGTH) });
        for (const datagram of [framed, bytes]) {
          const served = serveDatagram(chain, CLIENT, 'snp1', datagram, undefined, 0);
          expect(['not-dhcp', 'malformed', 'relayed', 'answered']).toContain(served.kind);
          if (served.kind === 'answered' && served.reply !== undefined) {
            expect(parseDhcpPacket(parseUdpDatagram(served.reply.frame).payload).options.get(OPTION.serverId)).toEqual(Uint8Array.of(169, 254, 0, 1));
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
