/**
 * Which conntrack entries the reaper deletes, as a value, pure: clients' TCP flows already closed.
 * The native adapter (guest/native/conntrack-purge.c, `reap`) applies the same predicate in C over
 * a dump of the table; reapMatches is its reference.
 *
 * Why these: connlimit (the per-client flow cap) leaves out TCP entries in TIME_WAIT and CLOSE
 * (nf_conncount's already_closed()), and each in-window packet restarts an entry's timeout, those
 * states' too. A client that re-sends the last ACK of each closed connection keeps such entries,
 * uncounted, as long as it likes (README, Known limitations): the reaper deletes them. Both states
 * are a connection over (the client's TCP keeps its own TIME_WAIT): deleting the entry costs the
 * client nothing but a late retransmission seen as a new flow (or dropped).
 *
 * Why no other state: FIN_WAIT, CLOSE_WAIT and LAST_ACK are counted by the cap, so a client holds
 * no more of them than its cap allows, and they may be live: a client that shut down its sending
 * side (FIN_WAIT, CLOSE_WAIT) still reads its answer, and its masquerading would be lost with the
 * entry. LAST_ACK ends in 30 s (its timeout) unless the client keeps it alive, and is counted too.
 *
 * Why the original source only: a client's flows are the ones it opened (forwarded or to the
 * gateway), whose original source is its address (masquerading changes the reply tuple). The
 * provider's own flows have its own address there (which may be in 100.64.0.0/16 when it is
 * itself a client of another provider), so the sources are the client IPs the agent serves, not
 * the whole client network.
 */
import { ipv4Number } from './conntrack-filter.js';

/** The kernel's TCP conntrack states (enum tcp_conntrack, linux/netfilter/nf_conntrack_tcp.h), by value. */
export const TCP_CONNTRACK_STATES = [
  'NONE',
  'SYN_SENT',
  'SYN_RECV',
  'ESTABLISHED',
  'FIN_WAIT',
  'CLOSE_WAIT',
  'LAST_ACK',
  'TIME_WAIT',
  'CLOSE',
  'SYN_SENT2',
] as const;

export type TcpConntrackState = (typeof TCP_CONNTRACK_STATES)[number];

/** The states the reaper deletes (see above). */
export const REAPED_TCP_STATES: readonly TcpConntrackState[] = ['TIME_WAIT', 'CLOSE'];

/** IANA protocol number of TCP. */
export const IPPROTO_TCP = 6;

/** The entries to delete: TCP, in one of `tcpStates`, opened from one of `sources`. */
export interface ClosedFlowFilter {
  /** Dotted-quad IPv4 addresses: the clients the agent serves. */
  readonly sources: readonly string[];
  readonly tcpStates: readonly TcpConntrackState[];
}

/** What the predicate reads of an entry. */
export interface ConntrackEntryFacts {
  /** IP protocol number (6: TCP). */
  readonly protocol: number;
  /** Its TCP state; null for another protocol. */
  readonly tcpState: TcpConntrackState | null;
  /** Original direction's source, dotted quad. */
  readonly originalSource: string;
}

/** The filter of clients' closed flows from `sources`. */
export function closedFlowFilter(sources: readonly string[]): ClosedFlowFilter {
  return { sources, tcpStates: REAPED_TCP_STATES };
}

/** Whether the reaper deletes `entry` under `filter`. */
export function reapMatches(filter: ClosedFlowFilter, entry: ConntrackEntryFacts): boolean {
  return entry.protocol === IPPROTO_TCP && entry.tcpState !== null && filter.tcpStates.includes(entry.tcpState) && filter.sources.includes(entry.originalSource);
}

/** The states as the addon takes them: bit N for the state of value N. */
export function tcpStateMask(states: readonly TcpConntrackState[]): number {
  let mask = 0;
  for (const state of states) mask |= 1 << TCP_CONNTRACK_STATES.indexOf(state);
  return mask >>> 0;
}

/** The sources as the addon takes them (host order); null when one is no dotted quad. */
export function sourceNumbers(sources: readonly string[]): Uint32Array | null {
  const numbers = new Uint32Array(sources.length);
  for (const [index, text] of sources.entries()) {
    const value = ipv4Number(text);
    if (value === null) return null;
    numbers[index] = value;
  }
  return numbers;
}
