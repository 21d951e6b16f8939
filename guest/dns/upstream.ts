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
  /**
   * Literal address; IPv6 may carry a zone ("fe80::1%eth0"). An IPv4-mapped IPv6 address
   * (::ffff:a.b.c.d) is its IPv4 address (family 4): the forwarder's IPv6 sockets are IPv6-only,
   * and one connected to a mapped address gets ENETUNREACH.
   */
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

/** `text` as messages show it: quoted, a long one cut short. */
function shownUpstream(text: string): string {
  return JSON.stringify(text.length > MAX_UPSTREAM_TEXT ? `${text.slice(0, MAX_UPSTREAM_TEXT)}…` : text);
}

/**
 * A well-formed configured upstream at which no resolver can be (see unusableUpstream), or part of
 * which would be ignored (see zoneIgnored): `shown` as UpstreamSyntaxError's, and why.
 */
export class UnusableUpstreamError extends DnsError {
  constructor(
    readonly shown: string,
    readonly reason: string,
  ) {
    super('upstream-unusable', `upstream ${shown}: ${reason}`);
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

/** An address as a number: IPv4 as such, IPv6 with its zone (`%eth0`, or empty). */
interface AddressValue {
  readonly family: 4 | 6;
  readonly value: bigint;
  readonly zone: string;
}

/**
 * `address` (one isIPv4 or ipv6Of accepts) as a number; an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) as the IPv4 address it reaches, with a zone too (Linux sends to that IPv4
 * address whatever the scope id, as glibc's resolver does with such a nameserver).
 */
function addressValueOf(address: string, family: 4 | 6, shown: string): AddressValue {
  const { IPv4, IPv6 } = ipNumModule();
  try {
    if (family === 4) return { family: 4, value: IPv4.fromString(address).getValue(), zone: '' };
    const percent = address.indexOf('%');
    const bare = percent === -1 ? address : address.slice(0, percent);
    const zone = percent === -1 ? '' : address.slice(percent);
    const value = IPv6.fromString(bare).getValue();
    return value >> 32n === IPV4_MAPPED_PREFIX ? { family: 4, value: value & 0xffffffffn, zone: '' } : { family: 6, value, zone };
  } catch {
    // Node's parser took it, ip-num does not: refused rather than compared by its text.
    throw new UpstreamSyntaxError(shown, 'not an IP address that can be compared with the others');
  }
}

/**
 * The upstream at `address`, its key the address as a number in text, IPv4 as `4:` and IPv6 as
 * `6:` with its zone (see addressValueOf). Zones are compared as written (`%2` and `%eth0` may be
 * the same link; nothing here can tell). An IPv4-mapped address is given as the IPv4 address it
 * reaches: an IPv6-only socket (the forwarder's) cannot send to it.
 */
function upstreamOf(address: string, port: number, family: 4 | 6, shown: string): Upstream {
  const { family: reached, value, zone } = addressValueOf(address, family, shown);
  const addressKey = `${reached}:${value}${zone}`;
  if (reached === 4 && family === 6) return { address: ipv4Text(value), port, family: 4, addressKey };
  return { address, port, family, addressKey };
}

function ipv4Text(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
}

/**
 * Parse "ip", "ip:port" (IPv4), "ipv6", "[ipv6]" or "[ipv6]:port". IPv6 may carry a zone.
 */
export function parseUpstream(text: string): Upstream {
  const shown = shownUpstream(text);
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

/**
 * An upstream given as configuration (--dns-upstream, DnsForwarderOptions.upstreams): parsed as
 * parseUpstream does, then refused where no resolver can be there (see unusableUpstream), or where
 * part of it would be ignored (a zone on an IPv4-mapped address, see zoneIgnored), once, at setup,
 * as a typo is. (The nameservers of a resolv.conf are not: glibc takes them as written.)
 */
export function parseConfiguredUpstream(text: string): Upstream {
  const upstream = parseUpstream(text);
  const reason = unusableUpstream(upstream) ?? zoneIgnored(text, upstream);
  if (reason !== undefined) throw new UnusableUpstreamError(shownUpstream(text), reason);
  return upstream;
}

/**
 * Why the zone of `text`, parsed as `upstream`, would be ignored, or undefined where it has none
 * or one that counts. An IPv4-mapped address is asked over IPv4 (see Upstream.address), where no
 * zone picks a link: the routes do, as the kernel does for a mapped address on a dual-stack
 * socket. A --dns-upstream written with one (meant to pin a link, or naming none) would be taken
 * as its IPv4 address without a word.
 */
function zoneIgnored(text: string, upstream: Upstream): string | undefined {
  const zone = /%[^\]]*/.exec(text)?.[0];
  if (zone === undefined || upstream.family !== 4) return undefined;
  const plain = upstream.port === DNS_PORT ? upstream.address : upstreamText(upstream);
  return `an IPv4-mapped address is asked over IPv4, where a zone (${zone}) picks no link (the routes do): give ${plain}`;
}

const GIVE_ITS_ADDRESS = "give the resolver's own address";

/**
 * Why no resolver can answer from `upstream`, or undefined where one can. The forwarder connects
 * its sockets to the upstream and takes answers only from that address and port, so it must be
 * one server's unicast address: not the unspecified address (Linux takes it for this host's
 * loopback, which 127.0.0.1 or ::1 says plainly), nor the broadcast address (a send there is
 * refused without SO_BROADCAST), nor a multicast group (answers come from each member's own
 * address). Loopback (a resolver on this VM) is one; so is the gateway 169.254.0.1, the upstream
 * provider's forwarder for a chained provider (reached through its link to that provider; a
 * provider with no such link leaves it out at run time, saying why). A port of 0 never parses.
 */
export function unusableUpstream(upstream: Upstream): string | undefined {
  const { family, value } = addressValueOf(upstream.address, upstream.family, shownUpstream(upstream.address));
  if (value === 0n) return `the unspecified address names no server: ${GIVE_ITS_ADDRESS} (127.0.0.1 or ::1 for one on this VM)`;
  if (family === 4 && value === 0xffffffffn) return `the broadcast address names no one server: ${GIVE_ITS_ADDRESS}`;
  if (family === 4 && value >> 28n === 0xen) return `a multicast address (224.0.0.0/4) names no one server: ${GIVE_ITS_ADDRESS}`;
  if (family === 6 && value >> 120n === 0xffn) return `a multicast address (ff00::/8) names no one server: ${GIVE_ITS_ADDRESS}`;
  return undefined;
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
