import { dottedOctets } from '../ipv4-text.js';

/**
 * Which conntrack entries to delete, as a value: the addresses whose entries go, and at most one
 * network swept but for the addresses it keeps. An entry goes when one of its four addresses
 * (original and reply direction, source and destination) matches. The native adapter applies the
 * same predicate in C over a dump of the table; filterMatches is its reference.
 */
export interface ConntrackFilter {
  /** Dotted-quad IPv4 addresses: every entry naming one goes. */
  readonly addresses: readonly string[];
  /** Every entry naming an address of this network goes too, unless the address is in `keep`. */
  readonly sweep: ConntrackSweep | null;
}

export interface ConntrackSweep {
  /** The network's address (host bits are ignored), dotted quad. */
  readonly network: string;
  /** 0 to 32. */
  readonly prefixLength: number;
  readonly keep: readonly string[];
}

/** An IPv4 address as an unsigned 32-bit number (host order); null when `text` is no dotted quad. */
export function ipv4Number(text: string): number | null {
  const octets = dottedOctets(text);
  if (octets === null) return null;
  return ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0;
}

/** The network mask of a prefix length (0 to 32), unsigned. */
export function prefixMaskNumber(prefixLength: number): number {
  return prefixLength <= 0 ? 0 : (0xffffffff << (32 - Math.min(prefixLength, 32))) >>> 0;
}

/** Whether an entry naming `ip` goes under `filter`. */
export function filterMatches(filter: ConntrackFilter, ip: string): boolean {
  if (filter.addresses.includes(ip)) return true;
  const { sweep } = filter;
  if (sweep === null) return false;
  const address = ipv4Number(ip);
  const network = ipv4Number(sweep.network);
  if (address === null || network === null) return false;
  const mask = prefixMaskNumber(sweep.prefixLength);
  return ((address & mask) >>> 0) === ((network & mask) >>> 0) && !sweep.keep.includes(ip);
}

/** Whether the filter matches nothing at all (no call to make). */
export function isEmptyFilter(filter: ConntrackFilter): boolean {
  return filter.addresses.length === 0 && filter.sweep === null;
}
