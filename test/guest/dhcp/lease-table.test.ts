import { describe, expect, it } from 'vitest';
import { clientId } from '../../../shared/client-id.js';
import { linkClientOf, readRequest, replyTo } from '../../../guest/dhcp/dhcp-exchange.js';
import { runChain } from '../../../guest/dhcp/dhcp-handler.js';
import { type LeaseInfo, leaseAt, nextLease } from '../../../guest/dhcp/lease-table.js';
import { MESSAGE_TYPE, OPTION } from '../../../guest/dhcp/option-code.js';
import { spectrumChain } from '../../../guest/dhcp/spectrum-chain.js';

const LINK = linkClientOf(clientId(258));
const chain = spectrumChain({ leaseSeconds: 100 });

function step(previous: LeaseInfo | undefined, type: number, now: number, extra: [number, Uint8Array][] = [], ciaddr = '0.0.0.0'): LeaseInfo | undefined {
  const chaddr = new Uint8Array(16);
  chaddr.set(LINK.clientMac);
  const options = new Map<number, Uint8Array>([[OPTION.messageType, Uint8Array.of(type)], ...extra]);
  const packet = { op: 1, htype: 1, hlen: 6, hops: 0, xid: 1, secs: 0, flags: 0, ciaddr, yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0', chaddr, sname: new Uint8Array(64), file: new Uint8Array(128), options };
  const request = readRequest(packet, LINK);
  return nextLease(previous, 'p258', request, runChain(chain, request, replyTo(request)), now);
}

describe('lease records', () => {
  it('follows a client from first DISCOVER through ACK, renewal, expiry and RELEASE', () => {
    const hostname = new TextEncoder().encode('lynx\u0001box');
    const offered = step(undefined, MESSAGE_TYPE.discover, 1000, [[OPTION.hostname, hostname], [OPTION.clientIdentifier, Uint8Array.of(1, 0xab)]]);
    expect(offered).toMatchObject({ state: 'offered', firstSeen: 1000, hostname: 'lynx?box', clientIdentifier: '01ab', clientIp: '100.64.1.2', clientMac: '0A:B3:EC:00:01:02' });
    const bound = step(offered, MESSAGE_TYPE.request, 2000, [[OPTION.requestedIp, Uint8Array.of(100, 64, 1, 2)], [OPTION.serverId, Uint8Array.of(169, 254, 0, 1)]]);
    expect(bound).toMatchObject({ state: 'bound', firstSeen: 1000, lastRenewed: 2000, expires: 102_000, hostname: 'lynx?box' });
    const renewed = step(bound, MESSAGE_TYPE.request, 50_000, [], '100.64.1.2');
    expect(renewed).toMatchObject({ state: 'bound', lastRenewed: 50_000, expires: 150_000 });
    expect(leaseAt(renewed as LeaseInfo, 150_000).state).toBe('expired');
    const released = step(renewed, MESSAGE_TYPE.release, 60_000, [], '100.64.1.2');
    expect(released).toMatchObject({ state: 'released', expires: 60_000 });
    // Every record, in every state, has the same keys in the same order (one shape for V8).
    const keys = Object.keys(offered as LeaseInfo);
    for (const lease of [bound, renewed, leaseAt(renewed as LeaseInfo, 150_000), released, step(undefined, MESSAGE_TYPE.discover, 0)]) {
      expect(Object.keys(lease as LeaseInfo)).toEqual(keys);
    }
    // A later request without hostname or identifier keeps what the client said before.
    expect(renewed).toMatchObject({ hostname: 'lynx?box', clientIdentifier: '01ab' });
  });

  it('keeps hostnames and client identifiers bounded', () => {
    const lease = step(undefined, MESSAGE_TYPE.discover, 0, [[OPTION.hostname, new Uint8Array(1000).fill(65)], [OPTION.clientIdentifier, new Uint8Array(1000)]]);
    expect(lease?.hostname?.length).toBe(63);
    expect(lease?.clientIdentifier?.length).toBe(128);
  });
});
