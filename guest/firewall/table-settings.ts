/**
 * What the table's text depends on besides the model: the flow limits (options, or with `auto`
 * derived from nf_conntrack_max) and clients' TCP timeouts (from the provider's sysctls). The audit
 * compares the live table with the text of the settings it was last made with; `auto` limits and
 * the timeouts follow their sysctls, read again at each audit (provider-ports.ts). Pure.
 */
import { CLIENT_UNCOUNTED_SECONDS, DEFAULT_CLIENT_TCP_TIMEOUTS, type TcpTimeouts, assertClientTcpTimeouts } from './client-tcp-timeouts.js';
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
  /**
   * The conntrack timeouts of clients' TCP flows (client-tcp-timeouts.ts): the provider's, with
   * TIME_WAIT and CLOSE at most 10 s. Default: DEFAULT_CLIENT_TCP_TIMEOUTS (the kernel's defaults
   * so shortened).
   */
  readonly clientTcpTimeouts?: TcpTimeouts;
}

/** The TCP timeouts the table gives clients' flows under `settings`. */
export function clientTcpTimeoutsOf(settings: TableSettings): TcpTimeouts {
  return settings.clientTcpTimeouts ?? DEFAULT_CLIENT_TCP_TIMEOUTS;
}

/**
 * The most the default new-flow rate gives, however large the table: a browser opening a hundred
 * connections for a page at once (twice this, the burst), its DNS lookups, a P2P client's DHT
 * queries stay under it, while it bounds what a client makes the provider do. Each packet that
 * opens a flow walks the client's conntrack entries (`ct count`): about 40 us at a 4096-entry cap,
 * so 100 a second cost a client at its cap well under 1 % of a core, and the packets past the rate
 * cost a hash lookup.
 */
export const MAX_DEFAULT_CLIENT_NEW_FLOW_RATE = 100;

/** The burst: this many seconds of the rate, at once (200 new flows at 100/s). */
export const CLIENT_NEW_FLOW_BURST_SECONDS = 2;

/**
 * Seconds of the rate a client's entries add to its cap at most (see defaultClientNewFlowRate):
 * its closed TCP flows stay CLIENT_UNCOUNTED_SECONDS uncounted, and the burst is
 * CLIENT_NEW_FLOW_BURST_SECONDS of the rate on top.
 */
export const CLIENT_UNCOUNTED_RATE_SECONDS = CLIENT_UNCOUNTED_SECONDS + CLIENT_NEW_FLOW_BURST_SECONDS;

/**
 * The default new-flow rate for a conntrack table of `conntrackMax` entries. The cap does not
 * count a client's closed TCP flows (TIME_WAIT, CLOSE: 20 s at most for a client's), so a client
 * holds at most its cap plus what it opened in the last 20 s: cap + rate x 20 s + the burst
 * (rate x 2 s). The rate gets the same share of the table as the cap, an eighth:
 * rate = conntrackMax / (8 x 22 s), at least 1 and at most MAX_DEFAULT_CLIENT_NEW_FLOW_RATE. So with
 * both defaults a client that leaves its closed flows alone holds at most a quarter of the table,
 * whatever its size: 46/s on a 1 GB VM (8192 entries), 23/s on 512 MB, 5/s at the kernel's least
 * (1024), 100/s above 1 GB. One that keeps sending on them restarts their timeouts, and holds
 * more, until the agent's reaper deletes them (guest/conntrack/closed-flows.ts; README, Known
 * limitations). (The floor of 1/s breaks the quarter below 176 entries.)
 * 0 (no limit on the table): MAX_DEFAULT_CLIENT_NEW_FLOW_RATE, as the cap.
 */
export function defaultClientNewFlowRate(conntrackMax: number): number {
  assertConntrackMax(conntrackMax);
  if (conntrackMax === 0) return MAX_DEFAULT_CLIENT_NEW_FLOW_RATE;
  return Math.min(MAX_DEFAULT_CLIENT_NEW_FLOW_RATE, Math.max(1, Math.floor(conntrackMax / (CLIENT_FLOW_SHARE * CLIENT_UNCOUNTED_RATE_SECONDS))));
}

/** Most new flows per second --client-new-flow-rate takes; the burst (twice it) fits nft's 32 bits. */
export const MAX_CLIENT_NEW_FLOW_RATE = 1_000_000;

/** The burst of new flows a client may open at once under `settings`. */
export function clientNewFlowBurst(settings: TableSettings): number {
  return settings.clientNewFlowRate * CLIENT_NEW_FLOW_BURST_SECONDS;
}

/** nft keeps a `ct count over N` limit in 32 bits. */
export const MAX_CLIENT_FLOW_LIMIT = 0xffff_ffff;

/**
 * By default one client's cap is this fraction (1/8) of the conntrack table, and so is what its
 * new-flow rate lets it hold uncounted on top (defaultClientNewFlowRate): a client holds at most a
 * quarter, as long as it leaves its closed TCP flows alone (see defaultClientNewFlowRate).
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
 * MAX_DEFAULT_CLIENT_FLOW_LIMIT. The kernel sizes the table by RAM, 8 entries per MB up to 1 GB
 * (1024 at least, at 128 MB; about 4096 at 512 MB, 8192 at 1 GB), 65,536 above 1 GB and 262,144
 * above 4 GB, so a fixed cap would be no cap on a small VM.
 */
export function defaultClientFlowLimit(conntrackMax: number): number {
  assertConntrackMax(conntrackMax);
  if (conntrackMax === 0) return MAX_DEFAULT_CLIENT_FLOW_LIMIT;
  return Math.min(MAX_DEFAULT_CLIENT_FLOW_LIMIT, Math.max(1, Math.floor(conntrackMax / CLIENT_FLOW_SHARE)));
}

function assertConntrackMax(conntrackMax: number): void {
  if (!Number.isSafeInteger(conntrackMax) || conntrackMax < 0) {
    throw new FirewallError('flow-limit', `nf_conntrack_max ${String(conntrackMax)} is not a count of entries: check /proc/sys/net/netfilter/nf_conntrack_max`);
  }
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
  if (settings.clientTcpTimeouts !== undefined) assertClientTcpTimeouts(settings.clientTcpTimeouts);
}
