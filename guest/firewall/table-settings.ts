/**
 * What the table's text depends on besides the model: set once per agent run (an option), so the
 * audit compares the live table with the same text all along. Pure.
 */
import { FirewallError } from './firewall-error.js';

export interface TableSettings {
  /**
   * Most conntrack entries one client address may hold at once (nftables connlimit, `ct count`);
   * a new flow past it is dropped and counted as `flowLimitDrops`. 0: no cap (the table then has
   * neither the set nor the rules that count).
   */
  readonly clientFlowLimit: number;
  /**
   * New flows one client address may open per second, on average (an nft `limit` per address, in
   * a dynamic set); it may open twice as many at once (the burst, CLIENT_NEW_FLOW_BURST_SECONDS).
   * A new flow past it is dropped and counted as `flowRateDrops` before the cap counts anything.
   * 0: no rate limit (neither the set nor its rules).
   */
  readonly clientNewFlowRate: number;
}

/**
 * The default new-flow rate: a browser opening a hundred connections for a page at once (the
 * burst), its DNS lookups, a P2P client's DHT queries stay under it, while it bounds what a client
 * makes the provider do. Each packet that opens a flow walks the client's conntrack entries (`ct
 * count`): about 40 us at a 4096-entry cap, so 100 a second cost a client at its cap well under 1 %
 * of a core, and the packets past the rate cost a hash lookup. It also bounds what the cap does not
 * count, TCP connections closed but kept 120 s in TIME_WAIT: 120 s x 100 = 12,000 entries at most,
 * where 500 a second would let one client take most of a 65,536-entry table (a 1 GB VM's) that way.
 */
export const DEFAULT_CLIENT_NEW_FLOW_RATE = 100;

/** The burst: this many seconds of the rate, at once (200 new flows at the default 100/s). */
export const CLIENT_NEW_FLOW_BURST_SECONDS = 2;

/** Most new flows per second --client-new-flow-rate takes; the burst (twice it) fits nft's 32 bits. */
export const MAX_CLIENT_NEW_FLOW_RATE = 1_000_000;

/** The burst of new flows a client may open at once under `settings`. */
export function clientNewFlowBurst(settings: TableSettings): number {
  return settings.clientNewFlowRate * CLIENT_NEW_FLOW_BURST_SECONDS;
}

/** nft keeps a `ct count over N` limit in 32 bits. */
export const MAX_CLIENT_FLOW_LIMIT = 0xffff_ffff;

/**
 * By default one client may hold this fraction (1/8) of the conntrack table: a single hostile
 * client leaves seven eighths to the others and the provider, and it takes eight to fill it.
 */
export const CLIENT_FLOW_SHARE = 8;

/**
 * The most the default cap gives, however large the table (also when it has no limit, 0). The
 * cost of the cap grows with it: each packet that opens a flow walks every entry its client
 * holds (`ct count`), about 300 us at 32768 entries (an eighth of 262144, the default from 4 GB
 * of RAM) against 6-8 us for plain conntrack, and 17 us at 1000. 4096 flows at once is plenty for
 * a desktop app VM (a busy browser holds a few hundred); a client that needs more (a P2P node, a
 * server VM) gets it from --client-flow-limit.
 */
export const MAX_DEFAULT_CLIENT_FLOW_LIMIT = 4096;

/**
 * The default cap for a conntrack table of `conntrackMax` entries: an eighth of it, at most
 * MAX_DEFAULT_CLIENT_FLOW_LIMIT. The kernel sizes the table by RAM (1024 entries at least, about
 * 4096 on 512 MB, 65536 from 1 GB, 262144 from 4 GB), so a fixed cap would be no cap on a small VM.
 */
export function defaultClientFlowLimit(conntrackMax: number): number {
  if (!Number.isSafeInteger(conntrackMax) || conntrackMax < 0) {
    throw new FirewallError('flow-limit', `nf_conntrack_max ${String(conntrackMax)} is not a count of entries: check /proc/sys/net/netfilter/nf_conntrack_max`);
  }
  if (conntrackMax === 0) return MAX_DEFAULT_CLIENT_FLOW_LIMIT;
  return Math.min(MAX_DEFAULT_CLIENT_FLOW_LIMIT, Math.max(1, Math.floor(conntrackMax / CLIENT_FLOW_SHARE)));
}

/** Refuse settings nft cannot hold, with what to give instead. */
export function assertTableSettings(settings: TableSettings): void {
  const limit = settings.clientFlowLimit;
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > MAX_CLIENT_FLOW_LIMIT) {
    throw new FirewallError('flow-limit', `client flow limit ${String(limit)} is not valid: give a whole number of flows from 0 (no limit) to ${MAX_CLIENT_FLOW_LIMIT}`);
  }
  const rate = settings.clientNewFlowRate;
  if (!Number.isSafeInteger(rate) || rate < 0 || rate > MAX_CLIENT_NEW_FLOW_RATE) {
    throw new FirewallError('flow-rate', `client new-flow rate ${String(rate)} is not valid: give a whole number of new flows per second from 0 (no limit) to ${MAX_CLIENT_NEW_FLOW_RATE}`);
  }
}
