import { describe, expect, it } from 'vitest';
import { clientId } from '../../../shared/client-id.js';
import { decodeClasslessRoutes } from '../../../guest/dhcp/classless-route.js';
import { type DhcpResponse, linkClientOf, readRequest, replyTo } from '../../../guest/dhcp/dhcp-exchange.js';
import { runChain } from '../../../guest/dhcp/dhcp-handler.js';
import type { DhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';
import { setupLeaseTime, setupRouter, setupSubnetMask } from '../../../guest/dhcp/handlers/configuration.js';
import { setupMessageType } from '../../../guest/dhcp/handlers/message-type.js';
import { MESSAGE_TYPE, OPTION } from '../../../guest/dhcp/option-code.js';
import { readUint32Option } from '../../../guest/dhcp/option-values.js';
import { replyDestination } from '../../../guest/dhcp/reply-destination.js';
import { spectrumChain } from '../../../guest/dhcp/spectrum-chain.js';

const ID = clientId(0xa546);
const LINK = linkClientOf(ID);
const CLIENT_IP = '100.64.165.70';
const CLIENT_MAC = [0x0a, 0xb3, 0xec, 0x00, 0xa5, 0x46];
const chain = spectrumChain({ leaseSeconds: 1000 });

interface RequestSpec {
  type: number;
  ciaddr?: string;
  requested?: string;
  serverId?: string;
  flags?: number;
  chaddr?: number[];
  prl?: number[];
  extra?: [number, number[]][];
}

function request({ type, ciaddr = '0.0.0.0', requested, serverId, flags = 0, chaddr = CLIENT_MAC, prl, extra = [] }: RequestSpec): DhcpPacket {
  const options = new Map<number, Uint8Array>([[OPTION.messageType, Uint8Array.of(type)]]);
  const ip = (text: string): Uint8Array => Uint8Array.from(text.split('.').map(Number));
  if (requested !== undefined) options.set(OPTION.requestedIp, ip(requested));
  if (serverId !== undefined) options.set(OPTION.serverId, ip(serverId));
  if (prl !== undefined) options.set(OPTION.parameterRequestList, Uint8Array.from(prl));
  for (const [code, value] of extra) options.set(code, Uint8Array.from(value));
  const fullChaddr = new Uint8Array(16);
  fullChaddr.set(chaddr);
  return {
    op: 1, htype: 1, hlen: 6, hops: 0, xid: 77, secs: 0, flags,
    ciaddr, yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0',
    chaddr: fullChaddr, sname: new Uint8Array(64), file: new Uint8Array(128), options,
  };
}

function serve(spec: RequestSpec): { response: DhcpResponse; destination: string | undefined; type: number | undefined } {
  const req = readRequest(request(spec), LINK);
  const response = runChain(chain, req, replyTo(req));
  const type = response.drop === undefined ? response.packet.options.get(OPTION.messageType)?.[0] : undefined;
  return { response, type, destination: response.drop === undefined ? replyDestination(req, response) : undefined };
}

describe('the Spectrum handler chain', () => {
  it('offers the MAC-derived address with the whole Spectrum configuration', () => {
    const { response, type, destination } = serve({ type: MESSAGE_TYPE.discover });
    expect(type).toBe(MESSAGE_TYPE.offer);
    expect(response.packet.yiaddr).toBe(CLIENT_IP);
    const options = response.packet.options;
    expect(options.get(OPTION.subnetMask)).toEqual(Uint8Array.of(255, 255, 255, 255));
    expect(options.get(OPTION.router)).toEqual(Uint8Array.of(169, 254, 0, 1));
    expect(options.get(OPTION.dnsServers)).toEqual(Uint8Array.of(169, 254, 0, 1));
    expect(options.get(OPTION.serverId)).toEqual(Uint8Array.of(169, 254, 0, 1));
    expect(decodeClasslessRoutes(options.get(OPTION.classlessRoutes) ?? new Uint8Array())).toEqual([
      { destination: '169.254.0.1', prefixLength: 32, router: '0.0.0.0' },
      { destination: '0.0.0.0', prefixLength: 0, router: '169.254.0.1' },
    ]);
    expect(readUint32Option(options, OPTION.leaseTime)).toBe(1000);
    expect(readUint32Option(options, OPTION.renewalTime)).toBe(500);
    expect(readUint32Option(options, OPTION.rebindingTime)).toBe(875);
    expect(destination).toBe(CLIENT_IP); // unicast to yiaddr via the permanent neighbour entry
    expect(serve({ type: MESSAGE_TYPE.discover, flags: 0x8000 }).destination).toBe('255.255.255.255');
  });

  it('ignores a client whose chaddr is not the MAC its link encodes', () => {
    for (const chaddr of [[0x0a, 0xb3, 0xec, 0x00, 0xa5, 0x47], [0x0a, 0xb3, 0xec, 0x80, 0xa5, 0x46], [2, 0, 0, 0, 0, 1]]) {
      expect(serve({ type: MESSAGE_TYPE.discover, chaddr }).response.drop).toBe('wrong-mac');
      expect(serve({ type: MESSAGE_TYPE.request, chaddr, requested: CLIENT_IP }).response.drop).toBe('wrong-mac');
    }
  });

  it('SELECTING: ACKs its own offer, NAKs another address, stays silent when the client chose another server', () => {
    const ack = serve({ type: MESSAGE_TYPE.request, serverId: '169.254.0.1', requested: CLIENT_IP });
    expect(ack.type).toBe(MESSAGE_TYPE.ack);
    expect(ack.response.packet.yiaddr).toBe(CLIENT_IP);
    const nak = serve({ type: MESSAGE_TYPE.request, serverId: '169.254.0.1', requested: '100.64.1.1' });
    expect(nak.type).toBe(MESSAGE_TYPE.nak);
    expect(nak.destination).toBe('255.255.255.255');
    expect(nak.response.packet.yiaddr).toBe('0.0.0.0');
    expect([...nak.response.packet.options.keys()].sort((a, b) => a - b)).toEqual([OPTION.messageType, OPTION.serverId, OPTION.message]);
    expect(serve({ type: MESSAGE_TYPE.request, serverId: '169.254.0.2', requested: CLIENT_IP }).response.drop).toBe('other-server');
  });

  it('INIT-REBOOT: ACKs the right remembered address, NAKs a wrong one', () => {
    expect(serve({ type: MESSAGE_TYPE.request, requested: CLIENT_IP }).type).toBe(MESSAGE_TYPE.ack);
    expect(serve({ type: MESSAGE_TYPE.request, requested: '100.64.0.9' }).type).toBe(MESSAGE_TYPE.nak);
  });

  it('RENEWING and REBINDING: ACKs ciaddr when it is the client address (unicast back to it), NAKs another', () => {
    const renew = serve({ type: MESSAGE_TYPE.request, ciaddr: CLIENT_IP });
    expect(renew.type).toBe(MESSAGE_TYPE.ack);
    expect(renew.response.packet.ciaddr).toBe(CLIENT_IP);
    expect(renew.destination).toBe(CLIENT_IP);
    const rebind = serve({ type: MESSAGE_TYPE.request, ciaddr: CLIENT_IP, flags: 0x8000 });
    expect(rebind.type).toBe(MESSAGE_TYPE.ack);
    const wrong = serve({ type: MESSAGE_TYPE.request, ciaddr: '100.64.9.9' });
    expect(wrong.type).toBe(MESSAGE_TYPE.nak);
    expect(wrong.destination).toBe('255.255.255.255');
    expect(serve({ type: MESSAGE_TYPE.request }).response.drop).toBe('invalid-request');
  });

  it('RELEASE and DECLINE get no reply; INFORM gets an ACK without lease time or address', () => {
    expect(serve({ type: MESSAGE_TYPE.release, ciaddr: CLIENT_IP, serverId: '169.254.0.1' }).response.drop).toBe('released');
    expect(serve({ type: MESSAGE_TYPE.decline, requested: CLIENT_IP, serverId: '169.254.0.1' }).response.drop).toBe('declined');
    expect(serve({ type: MESSAGE_TYPE.release, ciaddr: CLIENT_IP, serverId: '10.0.0.1' }).response.drop).toBe('other-server');
    const inform = serve({ type: MESSAGE_TYPE.inform, ciaddr: CLIENT_IP });
    expect(inform.type).toBe(MESSAGE_TYPE.ack);
    expect(inform.response.packet.yiaddr).toBe('0.0.0.0');
    expect(inform.response.packet.options.has(OPTION.leaseTime)).toBe(false);
    expect(inform.response.packet.options.get(OPTION.dnsServers)).toEqual(Uint8Array.of(169, 254, 0, 1));
    expect(inform.destination).toBe(CLIENT_IP);
    expect(serve({ type: MESSAGE_TYPE.offer }).response.drop).toBe('unexpected-type');
  });

  it('sends only the requested options plus the mandatory ones, and echoes the client identifier', () => {
    const { response } = serve({ type: MESSAGE_TYPE.discover, prl: [OPTION.subnetMask, OPTION.classlessRoutes], extra: [[OPTION.clientIdentifier, [1, 2, 3]]] });
    expect([...response.packet.options.keys()].sort((a, b) => a - b)).toEqual(
      [OPTION.subnetMask, OPTION.leaseTime, OPTION.messageType, OPTION.serverId, OPTION.clientIdentifier, OPTION.classlessRoutes].sort((a, b) => a - b),
    );
    expect(response.packet.options.get(OPTION.clientIdentifier)).toEqual(Uint8Array.of(1, 2, 3));
  });

  it('validates handler configuration once, at setup', () => {
    expect(() => setupLeaseTime({ leaseSeconds: 10 })).toThrow(expect.objectContaining({ kind: 'config' }));
    expect(() => setupLeaseTime({ leaseSeconds: 1.5e3 + 0.5 })).toThrow(/integer/);
    expect(() => setupSubnetMask({ mask: '255.0.255.0' })).toThrow(/netmask/);
    expect(() => setupRouter({ routers: ['169.254.0.300'] })).toThrow(/not an IPv4/);
    expect(() => setupMessageType({ serverId: '0.0.0.0' })).toThrow(/unicast/);
    expect(() => spectrumChain({ dnsServers: ['x'] })).toThrow(expect.objectContaining({ kind: 'config' }));
  });

  it('refuses messages that are not requests or lack option 53', () => {
    expect(() => readRequest({ ...request({ type: 1 }), op: 2 }, LINK)).toThrow(expect.objectContaining({ kind: 'bad-field' }));
    expect(() => readRequest({ ...request({ type: 1 }), options: new Map() }, LINK)).toThrow(expect.objectContaining({ kind: 'bad-option' }));
  });
});
