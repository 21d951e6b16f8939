import { createRequire } from 'node:module';
import { isIPv4, isIPv6 } from 'node:net';
import { DnsError } from './dns-error.js';

// ip-num is loaded on first use (as in shared/client-ip.ts): only parsing an upstream needs it.
const require = createRequire(import.meta.url);
let ipNum: typeof import('ip-num') | undefined;
function ipNumModule(): typeof import('ip-num') {
  ipNum ??= require('ip-num') as typeof import('ip-num');
  return ipNum;
}

export const DNS_PORT = 53;

/** An upstream resolver the forwarder sends queries to. */
export interface Upstream {
  /** Literal address; IPv6 may carry a zone ("fe80::1%eth0"). */
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
  /**
   * The address as parsed, in one form however it was written (`2001:DB8:0::1` and `2001:db8::1`,
   * `::ffff:192.0.2.1` and `192.0.2.1`: the same server): what upstreams are compared by (see
   * sameUpstream), `address` being kept for what logs and status show.
   */
  readonly addressKey: string;
}

const MAX_UPSTREAM_TEXT = 80;

/** A text that is no upstream: `shown` as messages show it (quoted; a long one cut short), and why. */
export class UpstreamSyntaxError extends DnsError {
  constructor(
    readonly shown: string,
    readonly reason: string,
  ) {
    super('upstream-syntax', `upstream ${shown}: ${reason}`);
  }
}

function parsePort(text: string, whole: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) throw new UpstreamSyntaxError(JSON.stringify(whole), 'port must be 1..65535');
  const port = Number(text);
  if (port < 1 || port > 65_535) throw new UpstreamSyntaxError(JSON.stringify(whole), 'port must be 1..65535');
  return port;
}

function ipv6Of(text: string): boolean {
  const percent = text.indexOf('%');
  const bare = percent === -1 ? text : text.slice(0, percent);
  const zone = percent === -1 ? '' : text.slice(percent + 1);
  if (percent !== -1 && !/^[A-Za-z0-9_.-]{1,15}$/.test(zone)) return false;
  return isIPv6(bare);
}

const IPV4_MAPPED_PREFIX = 0xffffn;

/**
 * `address` (one isIPv4 or ipv6Of accepts) as a number in text, IPv4 as `4:` and IPv6 as `6:` with
 * its zone; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it reaches. Zones are
 * compared as written (`%2` and `%eth0` may be the same link; nothing here can tell).
 */
function addressKeyOf(address: string, family: 4 | 6, shown: string): string {
  const { IPv4, IPv6 } = ipNumModule();
  try {
    if (family === 4) return `4:${IPv4.fromString(address).getValue()}`;
    const percent = address.indexOf('%');
    const bare = percent === -1 ? address : address.slice(0, percent);
    const zone = percent === -1 ? '' : address.slice(percent);
    const value = IPv6.fromString(bare).getValue();
    return value >> 32n === IPV4_MAPPED_PREFIX && zone === '' ? `4:${value & 0xffffffffn}` : `6:${value}${zone}`;
  } catch {
    // Node's parser took it, ip-num does not: refused rather than compared by its text.
    throw new UpstreamSyntaxError(shown, 'not an IP address that can be compared with the others');
  }
}

function upstreamOf(address: string, port: number, family: 4 | 6, shown: string): Upstream {
  return { address, port, family, addressKey: addressKeyOf(address, family, shown) };
}

/**
 * Parse "ip", "ip:port" (IPv4), "ipv6", "[ipv6]" or "[ipv6]:port". IPv6 may carry a zone.
 */
export function parseUpstream(text: string): Upstream {
  const shown = JSON.stringify(text.length > MAX_UPSTREAM_TEXT ? `${text.slice(0, MAX_UPSTREAM_TEXT)}…` : text);
  if (text.length === 0 || text.length > MAX_UPSTREAM_TEXT) {
    throw new UpstreamSyntaxError(shown, 'expected an IP address, optionally with :port');
  }
  if (isIPv4(text)) return upstreamOf(text, DNS_PORT, 4, shown);
  if (ipv6Of(text)) return upstreamOf(text, DNS_PORT, 6, shown);
  const bracketed = /^\[([^\]]+)\](?::([^:]*))?$/.exec(text);
  if (bracketed !== null) {
    const address = bracketed[1] ?? '';
    if (!ipv6Of(address)) throw new UpstreamSyntaxError(shown, 'not an IPv6 address in brackets');
    return upstreamOf(address, bracketed[2] === undefined ? DNS_PORT : parsePort(bracketed[2], text), 6, shown);
  }
  const colon = text.lastIndexOf(':');
  if (colon > 0 && isIPv4(text.slice(0, colon))) {
    return upstreamOf(text.slice(0, colon), parsePort(text.slice(colon + 1), text), 4, shown);
  }
  throw new UpstreamSyntaxError(shown, 'expected an IP address, optionally with :port (IPv6 as [addr]:port)');
}

export function upstreamText(upstream: Upstream): string {
  return upstream.family === 6 ? `[${upstream.address}]:${upstream.port}` : `${upstream.address}:${upstream.port}`;
}

/** The same server: the same address, however written (see Upstream.addressKey), and port. */
export function sameUpstream(a: Upstream, b: Upstream): boolean {
  return a.addressKey === b.addressKey && a.port === b.port;
}

/** What sameUpstream compares, as one string (a map's key). */
export function upstreamKey(upstream: Upstream): string {
  return `${upstream.addressKey}#${upstream.port}`;
}
