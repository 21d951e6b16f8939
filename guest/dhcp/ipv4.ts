import { dottedOctets } from '../ipv4-text.js';
import { DhcpError } from './dhcp-error.js';

/** IPv4 addresses in DHCP values are dotted-quad text: readable in logs, tests and lease lists. */
export type Ipv4Text = string;

export const ZERO_IP: Ipv4Text = '0.0.0.0';
export const BROADCAST_IP: Ipv4Text = '255.255.255.255';


export function isIpv4Text(text: string): boolean {
  return dottedOctets(text) !== null;
}

/** The four octets of dotted-quad text; configuration errors say which value was wrong. */
export function ipv4Octets(text: Ipv4Text): [number, number, number, number] {
  const octets = dottedOctets(text);
  if (octets === null) throw new DhcpError('config', `${JSON.stringify(text)} is not an IPv4 address like 169.254.0.1`);
  return octets;
}

/** Read four bytes at `offset` as dotted text; the caller has checked the bounds. */
export function readIpv4(bytes: Uint8Array, offset: number): Ipv4Text {
  return `${bytes[offset] ?? 0}.${bytes[offset + 1] ?? 0}.${bytes[offset + 2] ?? 0}.${bytes[offset + 3] ?? 0}`;
}

export function writeIpv4(bytes: Uint8Array, offset: number, ip: Ipv4Text): void {
  bytes.set(ipv4Octets(ip), offset);
}

/** Netmask text for a prefix length (0..32). */
export function prefixMask(length: number): Ipv4Text {
  const value = length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
  return `${value >>> 24}.${(value >>> 16) & 0xff}.${(value >>> 8) & 0xff}.${value & 0xff}`;
}
