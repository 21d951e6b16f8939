import { createRequire } from 'node:module';
import type { IPv4 } from 'ip-num';
import { AddressError, quoteInput } from './address-error.js';
import { type ClientId, isClientId } from './client-id.js';
import { CLIENT_ID_MAX, CLIENT_ID_MIN, CLIENT_NETWORK, CLIENT_NETWORK_BASE } from './scheme.js';

// ip-num takes ~130 ms to load, more than a whole `spectrum-link link` should; it is loaded on
// first use, which only parsing IPv4 text or asking for an IPv4 value needs.
const require = createRequire(import.meta.url);
let ipNum: typeof import('ip-num') | undefined;
function ipv4Class(): typeof IPv4 {
  ipNum ??= require('ip-num') as typeof import('ip-num');
  return ipNum.IPv4;
}

/** The client IPv4 address for an id: 100.64.<id high octet>.<id low octet>. */
export function clientIpOf(id: ClientId): IPv4 {
  return ipv4Class().fromNumber(BigInt(CLIENT_NETWORK_BASE + id));
}

/**
 * The same address as dotted text, built directly: an id is already validated, and this is on
 * the agent's hot path, where a BigInt round trip through ip-num would cost ten times more.
 */
export function clientIpTextOf(id: ClientId): string {
  return `100.64.${id >> 8}.${id & 0xff}`;
}

/** The client id that an IPv4 address encodes, or an error when it is not a client address. */
export function idOfClientIp(ip: IPv4): ClientId {
  const offset = Number(ip.getValue()) - CLIENT_NETWORK_BASE;
  if (offset < 0 || offset > 0xffff) {
    throw new AddressError('ip-network', `${ip.toString()} is not a client address: client addresses are in ${CLIENT_NETWORK}`);
  }
  if (!isClientId(offset)) {
    throw new AddressError(
      'id-range',
      `${ip.toString()} is not a usable client address: the last two octets must give an id from ${CLIENT_ID_MIN} to ${CLIENT_ID_MAX}`,
    );
  }
  return offset;
}

// The canonical form of a client address, as the agent and the codecs print it: recognised
// without ip-num, which keeps per-link work on a host with thousands of links cheap. Anything
// else (or out of range) takes ip-num's path, which also words the error.
const CANONICAL_CLIENT_IP = /^100\.64\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$/;

/** Parse dotted-quad text (no leading zeros, no whitespace) as a client address. */
export function parseClientIp(text: string): ClientId {
  const canonical = CANONICAL_CLIENT_IP.exec(text);
  if (canonical !== null) {
    const high = Number(canonical[1]);
    const low = Number(canonical[2]);
    const id = high * 256 + low;
    if (high <= 255 && low <= 255 && isClientId(id)) return id;
  }
  let ip: IPv4;
  try {
    ip = ipv4Class().fromString(text);
  } catch {
    throw new AddressError('ip-syntax', `${quoteInput(text)} is not an IPv4 address: expected four decimal octets like 100.64.165.70`);
  }
  return idOfClientIp(ip);
}
