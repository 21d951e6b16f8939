import { DhcpError } from './dhcp-error.js';
import { type Ipv4Text, readIpv4, writeIpv4 } from './ipv4.js';

/** A UDP datagram as a raw IPPROTO_UDP socket delivers it: IPv4 header first. */
export interface UdpDatagram {
  readonly source: Ipv4Text;
  readonly destination: Ipv4Text;
  readonly sourcePort: number;
  readonly destinationPort: number;
  /** A view into the received buffer: parse it before the buffer is reused. */
  readonly payload: Uint8Array;
}

const PROTOCOL_UDP = 17;
const UDP_HEADER = 8;
export const IP_HEADER = 20;
const DEFAULT_TTL = 64;

/** Read the IPv4 and UDP headers of a received packet. Throws only DhcpError. */
export function parseUdpDatagram(bytes: Uint8Array): UdpDatagram {
  if (bytes.length < IP_HEADER) throw new DhcpError('ip-header', `${bytes.length} bytes is shorter than an IPv4 header`);
  const first = bytes[0] ?? 0;
  if (first >> 4 !== 4) throw new DhcpError('ip-header', `IP version ${first >> 4} is not 4`);
  const headerLength = (first & 0x0f) * 4;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const totalLength = view.getUint16(2);
  if (headerLength < IP_HEADER || totalLength < headerLength + UDP_HEADER || totalLength > bytes.length) {
    throw new DhcpError('ip-header', `IPv4 header length ${headerLength} / total length ${totalLength} do not fit ${bytes.length} bytes`);
  }
  const fragment = view.getUint16(6);
  if ((fragment & 0x3fff) !== 0) throw new DhcpError('ip-header', 'IPv4 fragments are not reassembled here');
  if (bytes[9] !== PROTOCOL_UDP) throw new DhcpError('ip-header', `IP protocol ${bytes[9] ?? 0} is not UDP`);
  const udpLength = view.getUint16(headerLength + 4);
  if (udpLength < UDP_HEADER || headerLength + udpLength > totalLength) {
    throw new DhcpError('udp-header', `UDP length ${udpLength} does not fit the ${totalLength - headerLength} bytes after the IP header`);
  }
  return {
    source: readIpv4(bytes, 12),
    destination: readIpv4(bytes, 16),
    sourcePort: view.getUint16(headerLength),
    destinationPort: view.getUint16(headerLength + 2),
    payload: bytes.subarray(headerLength + UDP_HEADER, headerLength + udpLength),
  };
}

function onesComplementSum(bytes: Uint8Array, start: number, end: number, initial: number): number {
  let sum = initial;
  for (let index = start; index < end; index += 2) sum += ((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * A complete IPv4 + UDP packet, checksums included, for a raw socket with IP_HDRINCL: the source
 * is exactly what we say (169.254.0.1), whatever the kernel would pick.
 */
export function buildUdpDatagram(datagram: Omit<UdpDatagram, 'payload'> & { readonly payload: Uint8Array; readonly ttl?: number }): Uint8Array {
  const udpLength = UDP_HEADER + datagram.payload.length;
  const total = IP_HEADER + udpLength;
  if (total > 0xffff) throw new DhcpError('too-long', `a ${datagram.payload.length}-byte payload does not fit one IPv4 packet`);
  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  bytes[0] = 0x45;
  bytes[1] = 0x10; // TOS low delay, as ISC dhcpd and dnsmasq send
  view.setUint16(2, total);
  view.setUint16(6, 0x4000); // don't fragment
  bytes[8] = datagram.ttl ?? DEFAULT_TTL;
  bytes[9] = PROTOCOL_UDP;
  writeIpv4(bytes, 12, datagram.source);
  writeIpv4(bytes, 16, datagram.destination);
  view.setUint16(10, ~onesComplementSum(bytes, 0, IP_HEADER, 0) & 0xffff);
  view.setUint16(IP_HEADER, datagram.sourcePort);
  view.setUint16(IP_HEADER + 2, datagram.destinationPort);
  view.setUint16(IP_HEADER + 4, udpLength);
  bytes.set(datagram.payload, IP_HEADER + UDP_HEADER);
  // Pseudo header: source, destination, protocol, UDP length.
  let sum = onesComplementSum(bytes, 12, 20, PROTOCOL_UDP + udpLength);
  sum = onesComplementSum(bytes, IP_HEADER, total + (total % 2), sum);
  const checksum = ~sum & 0xffff;
  view.setUint16(IP_HEADER + 6, checksum === 0 ? 0xffff : checksum);
  return bytes;
}
