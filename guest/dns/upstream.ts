import { createRequire } from 'node:module';
import { isIPv4, isIPv6 } from 'node:net';
import type { IPv4, IPv6 } from 'ip-num';
import { INTERFACE_NAME_MAX_BYTES, isInterfaceName } from '../interface-name.js';
import { DnsError } from './dns-error.js';

// ip-num is loaded on first use (as in shared/client-ip.ts): only parsing an upstream needs it;
// ipaddr.js too, only reading a resolv.conf nameserver in inet_aton's forms (inetAtonAddress).
const require = createRequire(import.meta.url);
let ipNum: typeof import('ip-num') | undefined;
function ipNumModule(): typeof import('ip-num') {
  ipNum ??= require('ip-num') as typeof import('ip-num');
  return ipNum;
}
let ipaddr: typeof import('ipaddr.js') | undefined;
function ipaddrModule(): typeof import('ipaddr.js') {
  ipaddr ??= require('ipaddr.js') as typeof import('ipaddr.js');
  return ipaddr;
}

/**
 * The IPv4 address (dotted decimal) that glibc reads `text` as, a resolv.conf nameserver's value
 * (resolv/res_init.c reads it with __inet_aton_exact, resolv/inet_addr.c, before trying IPv6):
 * inet_aton's forms, its parts parted by '.', each a number as C writes one (0x hex, a leading 0
 * octal, else decimal), up to four parts, the last filling the bytes left (`127.1` is 127.0.0.1,
 * `2130706433` too, `010.0.0.1` is 8.0.0.1), the whole text, nothing after it. Undefined where
 * it reads none. ipaddr.js's IPv4 parser reads exactly these (checked against glibc's own
 * function in resolv-conf.test.ts).
 */
export function inetAtonAddress(text: string): string | undefined {
  // What inet_aton reads begins with a digit and holds hex digits, 'x' and dots alone.
  if (text.length > MAX_UPSTREAM_TEXT || !/^[0-9][0-9a-fx.]*$/i.test(text)) return undefined;
  try {
    return ipaddrModule().IPv4.parse(text).toString();
  } catch {
    return undefined;
  }
}

export const DNS_PORT = 53;

/** An upstream resolver the forwarder sends queries to. */
export interface Upstream {
  /**
   * Literal address; a link-local IPv6 address may carry a zone ("fe80::1%eth0", "fe80::1%2"),
   * as written; one on any other IPv6 address is dropped, as is one glibc reads as none (see
   * zoneOf). An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is its IPv4 address (family 4): the
   * forwarder's IPv6 sockets are IPv6-only, and one connected to a mapped address gets ENETUNREACH.
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

/**
 * How a zone (`%eth0`) is read. `glibc`: as glibc's resolver reads a resolv.conf nameserver's
 * (resolv/res_init.c, res_vinit_1): the address is whatever comes before the first '%', the zone
 * whatever follows, and one that can name no interface is no zone (see zoneOf). `interface-name`:
 * as --dns-upstream takes one, a name Linux takes for an interface's (isInterfaceName), which an
 * index is too, else the text is no address.
 */
type ZoneReading = 'glibc' | 'interface-name';

/**
 * Whether `text` is an IPv6 address, with a zone or without. A zone runs from the first '%' to the
 * end (as glibc reads it); read as `zones` says.
 */
function ipv6Of(text: string, zones: ZoneReading): boolean {
  const percent = text.indexOf('%');
  if (percent !== -1 && zones === 'interface-name' && !isInterfaceName(text.slice(percent + 1))) return false;
  return isIPv6(percent === -1 ? text : text.slice(0, percent));
}

/**
 * The largest index an interface can have: Linux's are ints (1 to 2^31 - 1). glibc reads a zone
 * that is a number up to 2^32 - 1 (sin6_scope_id), but one above this names no interface that can
 * exist (the kernel sends through none: EADDRNOTAVAIL at every connect). The least that names
 * one is 1: 0 is none (the address taken without one).
 */
const MAX_INTERFACE_INDEX = 0x7fff_ffffn;

/**
 * Whether glibc may read `zone` (without its '%') as an interface (inet/inet6_scopeid_pton.c,
 * __inet6_scopeid_pton, which resolv.conf's nameservers and getaddrinfo, the forwarder's
 * connects, both go through): an interface's name, which the kernel may know (if_nametoindex:
 * 15 bytes at most, and the kernel looks it up only up to a ':', an alias label's, SIOCGIFINDEX
 * in net/core/dev_ioctl.c, so `eth0:1` is eth0); else a number, of any length (leading zeros),
 * 1 to 2^32 - 1. Any other zone (empty, `a/b`, 16 bytes or more but a number) glibc reads as
 * none (scope id 0), its error ignored; so is one that is 0 but could be no name (16 zeros or
 * more: `0` could, an interface may be so named). One that could be no name and is above 2^31 - 1
 * glibc takes for its scope id, but it names no interface that can exist (see
 * MAX_INTERFACE_INDEX): its resolver can never send there, as to one without a zone, and it is
 * read as none too (tried again, as a zone naming no interface yet is, it was for ever).
 */
function zoneGlibcReads(zone: string): boolean {
  if (isInterfaceName(zone)) return true;
  const colon = zone.indexOf(':');
  if (colon !== -1 && Buffer.byteLength(zone, 'utf8') <= INTERFACE_NAME_MAX_BYTES && isInterfaceName(zone.slice(0, colon))) return true;
  if (!/^[0-9]+$/.test(zone)) return false;
  const index = BigInt(zone);
  return index >= 1n && index <= MAX_INTERFACE_INDEX;
}

/** ASCII bytes that the kernel takes for blanks in a name (isspace in lib/ctype.c; 0xa0 too). */
const NAME_BLANKS: ReadonlySet<number> = new Set([0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20]);

/**
 * What is wrong with `zone` (without its '%'), one that glibc reads as no interface (see
 * zoneGlibcReads), for messages: why it can name no interface, neither by name nor by index.
 */
export function zoneProblem(zone: string): string {
  if (zone === '') return 'the zone is empty';
  if (/^[0-9]+$/.test(zone)) {
    return `the zone is no interface's index (Linux's are 1 to ${MAX_INTERFACE_INDEX}), and too long for an interface's name (${INTERFACE_NAME_MAX_BYTES} bytes at most)`;
  }
  if (Buffer.byteLength(zone, 'utf8') > INTERFACE_NAME_MAX_BYTES) return `the zone is longer than an interface's name can be (${INTERFACE_NAME_MAX_BYTES} bytes at most)`;
  // The kernel looks a name up only to its first ':' (an alias label follows).
  const name = zone.split(':')[0] ?? '';
  if (name === '') return "the zone has no interface's name before its ':'";
  if (name === '.' || name === '..') return `'${name}' is no interface's name`;
  if (name.includes('/')) return "'/' is not allowed in an interface's name";
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.some((byte) => NAME_BLANKS.has(byte))) return "a blank is not allowed in an interface's name";
  if (bytes.includes(0xa0)) return "the byte 0xa0, a blank to the kernel (UTF-8 characters such as 'à' hold it), is not allowed in an interface's name";
  return "the zone can be no interface's name";
}

/**
 * The zone written on the resolv.conf nameserver `text` (as parseUpstream reads it), without its
 * '%', or undefined where it has none.
 */
export function writtenZone(text: string): string | undefined {
  const { address } = writtenUpstream(text, shownUpstream(text), 'glibc');
  const percent = address.indexOf('%');
  return percent === -1 ? undefined : address.slice(percent + 1);
}

/**
 * An address as ip-num parsed it: IPv4 as such, an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as
 * the IPv4 address it reaches, IPv6 with the zone (`%eth0`) that picks its link, empty where none
 * does (see zoneOf).
 */
type ParsedAddress = { readonly family: 4; readonly ip: IPv4; readonly zone: '' } | { readonly family: 6; readonly ip: IPv6; readonly zone: string };

/**
 * `address` (one isIPv4 or ipv6Of accepts) as ip-num parses it (see ParsedAddress). A zone on an
 * IPv4-mapped address is dropped: Linux sends to that IPv4 address whatever the scope id, as
 * glibc's resolver does with such a nameserver.
 */
function parsedAddressOf(address: string, family: 4 | 6, shown: string): ParsedAddress {
  const { IPv4, IPv6 } = ipNumModule();
  try {
    if (family === 4) return { family: 4, ip: IPv4.fromString(address), zone: '' };
    const percent = address.indexOf('%');
    const ip = IPv6.fromString(percent === -1 ? address : address.slice(0, percent));
    if (ip.isIPv4Mapped()) return { family: 4, ip: new IPv4(ip.getValue() & 0xffffffffn), zone: '' };
    return { family: 6, ip, zone: percent === -1 ? '' : zoneOf(ip, address.slice(percent)) };
  } catch {
    // Node's parser took it, ip-num does not: refused rather than compared by its text.
    throw new UpstreamSyntaxError(shown, 'not an IP address that can be compared with the others');
  }
}

/**
 * The zone `zone` (`%eth0`) of `ip` where it picks a link, else empty. Linux heeds a scope id only
 * where the address needs one (__ipv6_addr_needs_scope_id: link-local unicast, fe80::/10, and
 * link- or interface-local multicast, never an upstream): sent to any other address, a datagram
 * or connection goes where the routes say, the scope id ignored (as glibc's resolver leaves it).
 * Kept there, it would only part the upstream from itself written without one, and fail where it
 * names no interface, for nothing. Nor does a zone that glibc reads as none (see zoneGlibcReads:
 * `fe80::1%` is `fe80::1` to it), which the forwarder's connects would refuse (getaddrinfo) where
 * glibc's resolver takes the address without it.
 */
function zoneOf(ip: IPv6, zone: string): string {
  return ip.isLinkLocal() && zoneGlibcReads(zone.slice(1)) ? zone : '';
}

/**
 * The upstream at `address`, its key the address as a number in text, IPv4 as `4:` and IPv6 as
 * `6:` with its zone (see parsedAddressOf). Zones are compared as written here (`%2` and `%eth0`
 * may be the same link, which only the interfaces of the moment tell: see withoutDuplicates). An
 * IPv4-mapped address is given as the IPv4 address it reaches: an IPv6-only socket (the
 * forwarder's) cannot send to it; an IPv6 address with a zone that picks no link (see zoneOf),
 * without it.
 */
function upstreamOf(address: string, port: number, family: 4 | 6, shown: string): Upstream {
  const parsed = parsedAddressOf(address, family, shown);
  const addressKey = `${parsed.family}:${parsed.ip.getValue()}${parsed.zone}`;
  if (parsed.family === 4 && family === 6) return { address: parsed.ip.toString(), port, family: 4, addressKey };
  if (parsed.family === 6 && parsed.zone === '' && address.includes('%')) return { address: address.slice(0, address.indexOf('%')), port, family, addressKey };
  return { address, port, family, addressKey };
}

/** An upstream's text taken apart: the address as written (its zone with it), the port, the family. */
interface WrittenUpstream {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/**
 * "ip", "ip:port" (IPv4), "ipv6", "[ipv6]" or "[ipv6]:port" taken apart. IPv6 may carry a zone;
 * in brackets, one may hold `]` (a name Linux takes): the address ends at the last `]` before
 * the port. IPv4 is in dotted decimal; read as glibc reads a resolv.conf nameserver (`zones`
 * 'glibc'), a bare one in inet_aton's forms too (see inetAtonAddress), given as dotted decimal.
 */
function writtenUpstream(text: string, shown: string, zones: ZoneReading): WrittenUpstream {
  if (text.length === 0 || text.length > MAX_UPSTREAM_TEXT) {
    throw new UpstreamSyntaxError(shown, 'expected an IP address, optionally with :port');
  }
  if (isIPv4(text)) return { address: text, port: DNS_PORT, family: 4 };
  const inetAton = zones === 'glibc' ? inetAtonAddress(text) : undefined;
  if (inetAton !== undefined) return { address: inetAton, port: DNS_PORT, family: 4 };
  if (ipv6Of(text, zones)) return { address: text, port: DNS_PORT, family: 6 };
  const bracketed = /^\[(.+)\](?::([^:\]]*))?$/.exec(text);
  if (bracketed !== null) {
    const address = bracketed[1] ?? '';
    if (!ipv6Of(address, zones)) throw new UpstreamSyntaxError(shown, 'not an IPv6 address in brackets');
    return { address, port: bracketed[2] === undefined ? DNS_PORT : parsePort(bracketed[2], text), family: 6 };
  }
  const colon = text.lastIndexOf(':');
  if (colon > 0 && isIPv4(text.slice(0, colon))) {
    return { address: text.slice(0, colon), port: parsePort(text.slice(colon + 1), text), family: 4 };
  }
  throw new UpstreamSyntaxError(shown, 'expected an IP address, optionally with :port (IPv6 as [addr]:port)');
}

/**
 * Parse "ip", "ip:port" (IPv4), "ipv6", "[ipv6]" or "[ipv6]:port". IPv6 may carry a zone, read as
 * glibc's resolver reads a resolv.conf nameserver's (see ZoneReading): `fe80::1%eth0:1` is on
 * eth0, `fe80::1%` has none; a bare IPv4 address is read as glibc reads one too, in inet_aton's
 * forms (`127.1` is 127.0.0.1: see inetAtonAddress).
 */
export function parseUpstream(text: string): Upstream {
  const shown = shownUpstream(text);
  const { address, port, family } = writtenUpstream(text, shown, 'glibc');
  return upstreamOf(address, port, family, shown);
}

/**
 * An upstream given as configuration (--dns-upstream, DnsForwarderOptions.upstreams): parsed as
 * parseUpstream does but for its zone, which must be an interface's name or index (see
 * ZoneReading: not `eth0:1`, whose alias label `:1` the kernel ignores, nor an empty one), then
 * refused where no resolver can be there (see unusableUpstream), or where part of it would be
 * ignored (a zone that picks no link, see zoneIgnored), once, at setup, as a typo is. (The
 * nameservers of a resolv.conf are not: glibc takes them as written.)
 */
export function parseConfiguredUpstream(text: string): Upstream {
  const shown = shownUpstream(text);
  const written = writtenUpstream(text, shown, 'interface-name');
  const upstream = upstreamOf(written.address, written.port, written.family, shown);
  const reason = unusableUpstream(upstream) ?? zoneIgnored(written.address, upstream);
  if (reason !== undefined) throw new UnusableUpstreamError(shown, reason);
  return upstream;
}

/** `upstream` as an operator would give it: the address alone where the port is DNS's. */
export function givenAs(upstream: Upstream): string {
  return upstream.port === DNS_PORT ? upstream.address : upstreamText(upstream);
}

/**
 * Why the zone of `address` (as written), parsed as `upstream`, would be ignored, or undefined
 * where it has none or one that counts. Only a link-local address's zone picks a link (see zoneOf): an IPv4-mapped
 * address is asked over IPv4, where the routes pick it, as the kernel does for a mapped address on
 * a dual-stack socket; any other IPv6 address, Linux sends to where the routes say, the scope id
 * ignored. A --dns-upstream written with one (meant to pin a link, or naming none) would be taken
 * without it, without a word.
 */
function zoneIgnored(address: string, upstream: Upstream): string | undefined {
  const percent = address.indexOf('%');
  if (percent === -1 || upstream.address.includes('%')) return undefined;
  const zone = address.slice(percent);
  if (upstream.family === 4) return `an IPv4-mapped address is asked over IPv4, where a zone (${zone}) picks no link (the routes do): give ${givenAs(upstream)}`;
  return `a zone (${zone}) picks a link only for a link-local address (fe80::/10); Linux ignores it on any other, sending where the routes say: give ${givenAs(upstream)}`;
}

const GIVE_ITS_ADDRESS = "give the resolver's own address";

/**
 * Why no resolver can answer from `upstream`, or undefined where one can. The forwarder connects
 * its sockets to the upstream and takes answers only from that address and port, so it must be
 * one server's unicast address: not the unspecified address (Linux takes it for this host's
 * loopback, which 127.0.0.1 or ::1 says plainly), nor the broadcast address (a send there is
 * refused without SO_BROADCAST), nor a multicast group (answers come from each member's own
 * address); nor one no server can have: another address of 0.0.0.0/8 ("this network", which RFC
 * 1122 allows only as a source; Linux sends to it by the default route, and routers drop it), or
 * an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291: Linux sends to it over IPv6
 * as to any IPv6 address, never to a.b.c.d); nor a link-local one without a zone (the kernel
 * refuses to send to one through no link, EINVAL). Loopback (a resolver on this VM) is one; so is the
 * gateway 169.254.0.1, the upstream provider's forwarder for a chained provider (reached through
 * its link to that provider; a provider with no such link leaves it out at run time, saying why).
 * A port of 0 never parses.
 */
export function unusableUpstream(upstream: Upstream): string | undefined {
  const parsed = parsedAddressOf(upstream.address, upstream.family, shownUpstream(upstream.address));
  const { IPv4, IPv4CidrRange, IPv6CidrRange } = ipNumModule();
  if (parsed.ip.isUnspecified()) return `the unspecified address names no server: ${GIVE_ITS_ADDRESS} (127.0.0.1 or ::1 for one on this VM)`;
  if (parsed.family === 4) {
    const { ip } = parsed;
    if (ip.isBroadcast()) return `the broadcast address names no one server: ${GIVE_ITS_ADDRESS}`;
    if (ip.isMulticast()) return `a multicast address (224.0.0.0/4) names no one server: ${GIVE_ITS_ADDRESS}`;
    if (IPv4CidrRange.fromCidr('0.0.0.0/8').contains(ip)) return `an address in 0.0.0.0/8 ("this network") is no destination: ${GIVE_ITS_ADDRESS}`;
    return undefined;
  }
  const { ip } = parsed;
  if (ip.isMulticast()) return `a multicast address (ff00::/8) names no one server: ${GIVE_ITS_ADDRESS}`;
  if (ip.isLinkLocal() && parsed.zone === '') {
    return `a link-local address (fe80::/10) is one on each link: Linux sends to it only through the link its zone names, and refuses it without one: give that link's name or index as its zone (${zonedExample(upstream)})`;
  }
  if (IPv6CidrRange.fromCidr('::/96').contains(ip) && !ip.isLoopback()) {
    // What was likely meant: the IPv4 address, where one can be there.
    const ipv4: Upstream = { address: new IPv4(ip.getValue()).toString(), port: upstream.port, family: 4, addressKey: '' };
    const give = unusableUpstream(ipv4) === undefined ? `give ${givenAs(ipv4)} for the IPv4 address` : GIVE_ITS_ADDRESS;
    return `an IPv4-compatible address (::/96, deprecated) is asked over IPv6, as any IPv6 address, where no resolver is: ${give}`;
  }
  return undefined;
}

/**
 * Whether `upstream` is a link-local address without a zone: one on each link, to which the
 * kernel sends through none (every send and connect EINVAL, glibc's resolver failing alike), so
 * no resolver can answer from it (see unusableUpstream).
 */
export function lacksItsZone(upstream: Upstream): boolean {
  if (upstream.family !== 6 || upstream.address.includes('%')) return false;
  return parsedAddressOf(upstream.address, 6, shownUpstream(upstream.address)).ip.isLinkLocal();
}

/** `upstream` as given with a zone, `%eth0`, for messages saying to give one. */
export function zonedExample(upstream: Upstream): string {
  return givenAs({ ...upstream, address: `${upstream.address}%eth0` });
}

/** `address`:`port` as messages show it: an IPv6 address in brackets (`[fe80::1%eth0]:53`). */
export function endpointText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export function upstreamText(upstream: Upstream): string {
  return endpointText(upstream.address, upstream.port);
}

/** The same server: the same address, however written (see Upstream.addressKey), and port. */
export function sameUpstream(a: Upstream, b: Upstream): boolean {
  return a.addressKey === b.addressKey && a.port === b.port;
}

/** What sameUpstream compares, as one string (a map's key). */
export function upstreamKey(upstream: Upstream): string {
  return `${upstream.addressKey}#${upstream.port}`;
}

/**
 * The index of the interface that the zone of a link-local `upstream` (`%eth0`, `%2`) names now,
 * read as a connect reads it (udp-socket.ts, zoneIndexOf); undefined where it names none (yet).
 */
export type ZoneIndex = (upstream: Upstream) => number | undefined;

/**
 * What withoutDuplicates compares: upstreamKey, but for a zone `zoneIndex` reads, the interface
 * it names by its index, however the zone names it.
 */
function linkKey(upstream: Upstream, zoneIndex: ZoneIndex | undefined): string {
  const percent = upstream.addressKey.indexOf('%');
  const index = percent === -1 || zoneIndex === undefined ? undefined : zoneIndex(upstream);
  return index === undefined ? upstreamKey(upstream) : `${upstream.addressKey.slice(0, percent)} on link ${index}#${upstream.port}`;
}

/**
 * `upstreams` less each that is the same server (sameUpstream) as one before it, however written:
 * the first kept, the order kept, as resolv.conf's nameservers are taken (parseResolvConf). Given
 * `zoneIndex`, also each link-local one whose zone names the same interface as one before it,
 * by name or by index (`fe80::1%eth0`, `fe80::1%2` where eth0 has index 2): the same server,
 * which would be asked twice and take two places. A zone that names no interface (yet) is
 * compared as written: it may come to name one, a new interface or that of one before it (it is
 * compared again then: the forwarder does at each reconnect round).
 */
export function withoutDuplicates(upstreams: readonly Upstream[], zoneIndex?: ZoneIndex): Upstream[] {
  return [...distinctUpstreams(upstreams, zoneIndex)];
}

/**
 * withoutDuplicates one at a time: a zone's interface is looked up only as far as the upstreams
 * are read (the forwarder reads up to the MAX_UPSTREAMS it can use).
 */
export function* distinctUpstreams(upstreams: Iterable<Upstream>, zoneIndex?: ZoneIndex): Generator<Upstream, void, undefined> {
  const seen = new Set<string>();
  for (const upstream of upstreams) {
    const key = linkKey(upstream, zoneIndex);
    if (seen.has(key)) continue;
    seen.add(key);
    yield upstream;
  }
}
