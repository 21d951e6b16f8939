/**
 * Which conntrack entries the reaper deletes, as a value, pure: TCP flows already closed, whoever
 * opened them, IPv4 and IPv6 (the provider's own flows to an IPv6 upstream resolver count in the
 * table as much as any). The native adapter (guest/native/conntrack-purge.c, `reap`) applies the same
 * predicate in C over a dump of the table; reapMatches is its reference.
 *
 * Why these: connlimit (the per-client flow cap) leaves out TCP entries in TIME_WAIT and CLOSE
 * (nf_conncount's already_closed()), and each in-window packet restarts an entry's timeout, those
 * states' too. A client that re-sends the last ACK of each closed connection keeps such entries,
 * uncounted, as long as it likes; and each query a client sends the gateway's DNS forwarder over
 * TCP leaves one of the provider's own (its connection upstream), which no cap counts either
 * (README, Known limitations). The reaper deletes both kinds once the table reaches its threshold.
 *
 * Why it is safe, whatever the source: both states are a connection over; each end's TCP keeps
 * its own TIME_WAIT in its socket (the provider's too), and a late packet of a deleted entry is
 * only seen as a new flow (or dropped). The kernel does the same when its table is full: a new
 * flow that finds no room (and no unassured entry to evict in its buckets) sets the gc worker's
 * early_drop, and its next pass (nf_conntrack_core.c, gc_worker) kills, while the count is at or
 * over 95% of nf_conntrack_max, every entry gc_worker_can_early_drop accepts: any not assured,
 * and assured TCP in FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT or CLOSE (tcp_can_early_drop,
 * nf_conntrack_proto_tcp.c), whatever its source. The reaper does a part of that earlier, at its
 * threshold, so that new flows are not dropped until that pass (the worker runs every 1 to 60 s,
 * GC_SCAN_INTERVAL_MIN/MAX, spaced by the entries' mean time left).
 *
 * Why no other state: FIN_WAIT, CLOSE_WAIT and LAST_ACK are counted by the cap, so a client holds
 * no more of them than its cap allows, and they may be live: a client that shut down its sending
 * side (FIN_WAIT, CLOSE_WAIT) still reads its answer, and its masquerading would be lost with the
 * entry. LAST_ACK ends in 30 s (its timeout) unless the client keeps it alive, and is counted too.
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

/** The entries to delete: TCP, in one of `tcpStates`, opened from one of `sources` (null: from anywhere, either family). */
export interface ClosedFlowFilter {
  /** Dotted-quad IPv4 original sources (IPv4 entries only); null: any source, IPv4 or IPv6 (the reaper's). An empty list matches nothing. */
  readonly sources: readonly string[] | null;
  readonly tcpStates: readonly TcpConntrackState[];
}

/** What the predicate reads of an entry. */
export interface ConntrackEntryFacts {
  /** IP version of its tuples. */
  readonly family: 4 | 6;
  /** IP protocol number (6: TCP). */
  readonly protocol: number;
  /** Its TCP state; null for another protocol. */
  readonly tcpState: TcpConntrackState | null;
  /** Original direction's source: a dotted quad for IPv4, IPv6 text otherwise. */
  readonly originalSource: string;
}

/** The filter of closed flows from `sources`; null (the reaper's): from any source. */
export function closedFlowFilter(sources: readonly string[] | null): ClosedFlowFilter {
  return { sources, tcpStates: REAPED_TCP_STATES };
}

/** What the reaper deletes: every closed TCP flow. */
export const ANY_CLOSED_FLOW: ClosedFlowFilter = closedFlowFilter(null);

/** Whether the reaper deletes `entry` under `filter`. A list of sources names IPv4 entries only. */
export function reapMatches(filter: ClosedFlowFilter, entry: ConntrackEntryFacts): boolean {
  if (entry.protocol !== IPPROTO_TCP || entry.tcpState === null || !filter.tcpStates.includes(entry.tcpState)) return false;
  return filter.sources === null || (entry.family === 4 && filter.sources.includes(entry.originalSource));
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
