import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientId } from '../../../shared/client-id.js';
import { linkClientOf } from '../../../guest/dhcp/dhcp-exchange.js';
import { MAX_MESSAGE_LENGTH, encodeDhcpPacket, parseDhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';
import { MESSAGE_TYPE, OPTION } from '../../../guest/dhcp/option-code.js';
import { type LinkMtuSource, serveDatagram, warmUpFrames } from '../../../guest/dhcp/serve-datagram.js';
import { spectrumChain } from '../../../guest/dhcp/spectrum-chain.js';
import { buildUdpDatagram, parseUdpDatagram } from '../../../guest/dhcp/udp-frame.js';
import { packetArb } from './dhcp-arbitraries.js';

const chain = spectrumChain({ leaseSeconds: 600 });
/** A link of Ethernet's MTU, as the kernel would say. */
const ETHERNET = { linkMtu: (): number => 1500 };
const CLIENT = linkClientOf(clientId(0xa546));
const [DISCOVER, REQUEST, UNICAST_DISCOVER, UNICAST_REQUEST] = warmUpFrames(CLIENT) as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];

function reframe(frame: Uint8Array, edit: (payload: Uint8Array) => Uint8Array, destinationPort = 67): Uint8Array {
  const datagram = parseUdpDatagram(frame);
  return buildUdpDatagram({ ...datagram, destinationPort, payload: edit(datagram.payload) });
}

describe('serveDatagram', () => {
  it('answers a DISCOVER with an OFFER and a REQUEST with an ACK for the link client, from 169.254.0.1:67 to :68', () => {
    const offer = serveDatagram(chain, CLIENT, 'snp1', DISCOVER, undefined, 1000, ETHERNET);
    expect(offer.kind).toBe('answered');
    if (offer.kind !== 'answered' || offer.reply === undefined) throw new Error('no reply');
    expect(offer.replyType).toBe(MESSAGE_TYPE.offer);
    expect(offer.lease).toMatchObject({ ifname: 'snp1', clientIp: '100.64.165.70', state: 'offered', firstSeen: 1000 });
    // The made-up frames set the BROADCAST flag, so the reply is broadcast on the link.
    expect(offer.reply.destination).toBe('255.255.255.255');
    const sent = parseUdpDatagram(offer.reply.frame);
    expect(sent).toMatchObject({ source: '169.254.0.1', destination: '255.255.255.255', sourcePort: 67, destinationPort: 68 });
    expect(parseDhcpPacket(sent.payload).yiaddr).toBe('100.64.165.70');

    const ack = serveDatagram(chain, CLIENT, 'snp1', REQUEST, offer.lease, 2000, ETHERNET);
    expect(ack.kind === 'answered' && ack.replyType).toBe(MESSAGE_TYPE.ack);
    expect(ack.kind === 'answered' && ack.lease).toMatchObject({ state: 'bound', firstSeen: 1000, lastRenewed: 2000, hostname: 'warm-up' });
  });

  it('the second made-up client takes unicast replies to its new address and echoes an xid above 2^31', () => {
    const offer = serveDatagram(chain, CLIENT, 'snp1', UNICAST_DISCOVER, undefined, 1000, ETHERNET);
    if (offer.kind !== 'answered' || offer.reply === undefined) throw new Error('no reply');
    expect(offer.reply.destination).toBe('100.64.165.70');
    const sent = parseDhcpPacket(parseUdpDatagram(offer.reply.frame).payload);
    expect(sent.xid).toBe(0xdeadbeef);
    expect(sent.xid).toBeGreaterThan(2 ** 31);
    const ack = serveDatagram(chain, CLIENT, 'snp1', UNICAST_REQUEST, offer.lease, 2000, ETHERNET);
    expect(ack.kind === 'answered' && ack.lease).toMatchObject({ state: 'bound', lastRenewed: 2000, hostname: undefined });
    // The same key order, whichever client: one record shape for the optimised request path.
    if (ack.kind !== 'answered' || ack.lease === undefined || offer.lease === undefined) throw new Error('no lease');
    expect(Object.keys(ack.lease)).toEqual(Object.keys(offer.lease));
  });

  it('leaves other UDP alone, and reports relayed and malformed datagrams without answering', () => {
    expect(serveDatagram(chain, CLIENT, 'snp1', reframe(DISCOVER, (p) => p, 53), undefined, 0, ETHERNET)).toEqual({ kind: 'not-dhcp' });
    const relayed = reframe(DISCOVER, (payload) => encodeDhcpPacket({ ...parseDhcpPacket(payload), giaddr: '100.64.0.9' }));
    expect(serveDatagram(chain, CLIENT, 'snp1', relayed, undefined, 0, ETHERNET)).toEqual({ kind: 'relayed' });
    const truncated = reframe(DISCOVER, (payload) => payload.subarray(0, 100));
    expect(serveDatagram(chain, CLIENT, 'snp1', truncated, undefined, 0, ETHERNET).kind).toBe('malformed');
    expect(serveDatagram(chain, CLIENT, 'snp1', Uint8Array.of(0x45, 0), undefined, 0, ETHERNET).kind).toBe('malformed');
  });

  it('never answers another MAC on the link, and keeps the lease as it was', () => {
    const stranger = linkClientOf(clientId(7));
    const [strangerDiscover] = warmUpFrames(stranger) as [Uint8Array];
    const served = serveDatagram(chain, CLIENT, 'snp1', strangerDiscover, undefined, 0, ETHERNET);
    expect(served.kind === 'answered' && served.response.drop).toBe('wrong-mac');
    expect(served.kind === 'answered' && served.reply).toBeUndefined();
    expect(served.kind === 'answered' && served.lease).toBeUndefined();
  });

  it('turns any bytes into an outcome and throws nothing (fuzzed DHCP payloads and raw bytes)', () => {
    fc.assert(
      fc.property(packetArb(true), fc.uint8Array({ maxLength: 700, size: 'max' }), (packet, bytes) => {
        const framed = buildUdpDatagram({ source: '0.0.0.0', destination: '255.255.255.255', sourcePort: 68, destinationPort: 67, payload: encodeDhcpPacket(packet, MAX_MESSAGE_LENGTH) });
        for (const datagram of [framed, bytes]) {
          const served = serveDatagram(chain, CLIENT, 'snp1', datagram, undefined, 0, ETHERNET);
          expect(['not-dhcp', 'malformed', 'relayed', 'answered']).toContain(served.kind);
          // Whatever a client sends, a reply that cannot be built is its doing (a drop), never the server's error.
          if (served.kind === 'answered' && served.replyError !== undefined) expect(served.response.drop).toBe('oversized-client-id');
          if (served.kind === 'answered' && served.reply !== undefined) {
            expect(parseDhcpPacket(parseUdpDatagram(served.reply.frame).payload).options.get(OPTION.serverId)).toEqual(Uint8Array.of(169, 254, 0, 1));
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});

/** The made-up DISCOVER with client identifier `id` and, where given, option 57 `maxSize`. */
function discoverWith(id: Uint8Array, maxSize: number | undefined): Uint8Array {
  return reframe(DISCOVER, (payload) => {
    const packet = parseDhcpPacket(payload);
    const options = new Map(packet.options);
    options.set(OPTION.clientIdentifier, id);
    if (maxSize === undefined) options.delete(OPTION.maxMessageSize);
    else options.set(OPTION.maxMessageSize, Uint8Array.of(maxSize >> 8, maxSize & 0xff));
    return encodeDhcpPacket({ ...packet, options }, MAX_MESSAGE_LENGTH);
  });
}

/** A link of MTU `mtu` that counts how often it is asked. */
function linkOf(mtu: number | undefined): LinkMtuSource & { asked: number } {
  return {
    asked: 0,
    linkMtu() {
      this.asked += 1;
      return mtu;
    },
  };
}

describe('serveDatagram: how long a reply may be', () => {
  it("keeps every reply within the link's MTU and the client's option 57, echoing its identifier whole, or drops the request when the identifier cannot fit", () => {
    fc.assert(
      fc.property(
        // Mostly lengths about the bounds of Ethernet-sized replies; some up to a datagram's worth.
        fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 3000 }) }, { weight: 1, arbitrary: fc.integer({ min: 3000, max: 60_000 }) }),
        fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
        // Ethernet's and larger, and some below 576 (spectrum-link's --mtu goes down to 68; below 328 no reply fits).
        fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 576, max: 65_535 }) }, { weight: 1, arbitrary: fc.integer({ min: 328, max: 575 }) }),
        (idLength, maxSize, mtu) => {
          const id = new Uint8Array(idLength).map((_, index) => index % 251);
          const served = serveDatagram(chain, CLIENT, 'snp1', discoverWith(id, maxSize), undefined, 0, linkOf(mtu));
          if (served.kind !== 'answered') throw new Error(`not answered: ${served.kind}`);
          // What the client takes: its option 57 (a whole datagram, at least 576), else 576.
          const clientDatagram = maxSize !== undefined && maxSize >= 576 ? maxSize : 576;
          if (served.reply !== undefined) {
            expect(served.replyError).toBeUndefined();
            expect(served.reply.frame.length).toBeLessThanOrEqual(clientDatagram);
            // A reply of at most 548 bytes goes as it is, unread MTU (a link below 576 says EMSGSIZE); any longer one fits the link.
            const payload = parseUdpDatagram(served.reply.frame).payload;
            if (payload.length > 548 || payload[240] === OPTION.overload) expect(served.reply.frame.length).toBeLessThanOrEqual(mtu);
            expect(parseDhcpPacket(parseUdpDatagram(served.reply.frame).payload).options.get(OPTION.clientIdentifier)).toEqual(id);
          } else {
            // The client's doing, said as such, and nothing offered.
            expect(served.response.drop).toBe('oversized-client-id');
            expect(served.replyError?.message).toEqual(expect.stringMatching(new RegExp(`^request dropped: its ${idLength}-byte client identifier \\(option 61\\), which a reply must echo \\(RFC 6842\\), does not fit the \\d+-byte reply`)));
            expect(served.lease).toBeUndefined();
            // Any identifier a real client sends (a DUID-based one is at most 135 bytes) fits.
            expect(idLength).toBeGreaterThan(200);
          }
        },
      ),
      { numRuns: 120 },
    );
  });

  it("drops a DISCOVER asking 65535 bytes with a 51,000-byte identifier (200 instances of 255, RFC 3396) on an Ethernet link, naming the link's MTU", () => {
    const served = serveDatagram(chain, CLIENT, 'snp1', discoverWith(new Uint8Array(200 * 255).fill(0x61), 0xffff), undefined, 0, ETHERNET);
    expect(served).toMatchObject({ kind: 'answered', replyType: undefined, lease: undefined, response: { drop: 'oversized-client-id' } });
    expect(served.kind === 'answered' && served.reply).toBeUndefined();
    expect(served.kind === 'answered' && served.replyError?.message).toBe(
      "request dropped: its 51000-byte client identifier (option 61), which a reply must echo (RFC 6842), does not fit the 1472-byte reply the link's MTU of 1500 allows",
    );
  });

  it('drops a DISCOVER with no option 57 and a 2550-byte identifier, as the client\'s doing, not an error of the server', () => {
    const served = serveDatagram(chain, CLIENT, 'snp1', discoverWith(new Uint8Array(2550).fill(0x61), undefined), undefined, 0, ETHERNET);
    expect(served.kind === 'answered' && served.response.drop).toBe('oversized-client-id');
    expect(served.kind === 'answered' && served.replyError?.message).toBe(
      'request dropped: its 2550-byte client identifier (option 61), which a reply must echo (RFC 6842), does not fit the 548-byte reply every client takes (it allowed no more with option 57)',
    );
  });

  it('answers a 1300-byte identifier within 1500 bytes, sname and file overloaded, when the client asks 65535 on an Ethernet link', () => {
    const id = new Uint8Array(1300).fill(0x62);
    const served = serveDatagram(chain, CLIENT, 'snp1', discoverWith(id, 0xffff), undefined, 0, ETHERNET);
    if (served.kind !== 'answered' || served.reply === undefined) throw new Error('no reply');
    expect(served.reply.frame.length).toBeLessThanOrEqual(1500);
    const payload = parseUdpDatagram(served.reply.frame).payload;
    // Longer than fits the options field alone: option 52 says sname and file carry the rest.
    expect(payload[240]).toBe(OPTION.overload);
    expect(parseDhcpPacket(payload).options.get(OPTION.clientIdentifier)).toEqual(id);
    expect(served.lease).toMatchObject({ state: 'offered' });
  });

  it("keeps a reply longer than 548 bytes within a link's MTU below 576 (spectrum-link's --mtu goes down to 68) when the client sent no option 57, as when it did", () => {
    // A 300-byte identifier: a 576-byte datagram, overloaded, went out on a link of MTU 500 (EMSGSIZE, a send error of the server's).
    const id = new Uint8Array(300).fill(0x63);
    for (const maxSize of [undefined, 576, 1500]) {
      const served = serveDatagram(chain, CLIENT, 'snp1', discoverWith(id, maxSize), undefined, 0, linkOf(500));
      if (served.kind !== 'answered' || served.reply === undefined) throw new Error(`no reply (option 57 ${maxSize})`);
      expect(served.reply.frame.length).toBe(500);
      expect(parseDhcpPacket(parseUdpDatagram(served.reply.frame).payload).options.get(OPTION.clientIdentifier)).toEqual(id);
    }
    // One that does not fit 472 bytes is the client's doing, said with the link's MTU, not a send error.
    const served = serveDatagram(chain, CLIENT, 'snp1', discoverWith(new Uint8Array(450), undefined), undefined, 0, linkOf(500));
    expect(served).toMatchObject({ kind: 'answered', response: { drop: 'oversized-client-id' } });
    expect(served.kind === 'answered' && served.replyError?.message).toBe(
      "request dropped: its 450-byte client identifier (option 61), which a reply must echo (RFC 6842), does not fit the 472-byte reply the link's MTU of 500 allows",
    );
  });

  it("reads the link's MTU only for a reply longer than 548 bytes, keeps a client without option 57 to 548 on a larger MTU, and to 548 when it cannot be read", () => {
    const small = linkOf(1500);
    expect(serveDatagram(chain, CLIENT, 'snp1', DISCOVER, undefined, 0, small)).toMatchObject({ kind: 'answered', replyType: MESSAGE_TYPE.offer });
    expect(small.asked).toBe(0);
    const noOption57 = linkOf(1500);
    const longer = serveDatagram(chain, CLIENT, 'snp1', discoverWith(new Uint8Array(400), undefined), undefined, 0, noOption57);
    expect(noOption57.asked).toBe(1);
    expect(longer.kind === 'answered' && longer.reply?.frame.length).toBe(576);
    const unknown = linkOf(undefined);
    const served = serveDatagram(chain, CLIENT, 'snp1', discoverWith(new Uint8Array(1000), 0xffff), undefined, 0, unknown);
    expect(unknown.asked).toBe(1);
    expect(served.kind === 'answered' && served.replyError?.message).toEqual(expect.stringMatching(/does not fit the 548-byte reply every client takes \(the link's MTU could not be read\)$/));
    // A small identifier still fits 548 bytes.
    const fits = serveDatagram(chain, CLIENT, 'snp1', discoverWith(new Uint8Array(100), 0xffff), undefined, 0, linkOf(undefined));
    expect(fits.kind === 'answered' && fits.replyType).toBe(MESSAGE_TYPE.offer);
  });
});
