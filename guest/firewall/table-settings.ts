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
}

/** nft keeps a `ct count over N` limit in 32 bits. */
export const MAX_CLIENT_FLOW_LIMIT = 0xffff_ffff;

/**
 * By default one client may hold this fraction (1/8) of the conntrack table: a single hostile
 * client leaves seven eighths to the others and the provider, and it takes eight to fill it.
 */
export const CLIENT_FLOW_SHARE = 8;

/**
 * The kernel's nf_conntrack_max when it has none (0 means no limit): what the largest default,
 * 262144 (more than 4 GB of RAM), gives, so that one client still cannot take memory without end.
 */
const UNLIMITED_TABLE_FLOW_LIMIT = 262_144 / CLIENT_FLOW_SHARE;

/**
 * The default cap for a conntrack table of `conntrackMax` entries. The kernel sizes the table by
 * RAM (1024 entries at least, about 4096 on 512 MB, 65536 from 1 GB, 262144 from 4 GB), so a
 * fixed cap would be no cap on a small VM and needlessly tight on a large one.
 */
export function defaultClientFlowLimit(conntrackMax: number): number {
  if (!Number.isSafeInteger(conntrackMax) || conntrackMax < 0) {
    throw new FirewallError('flow-limit', `nf_conntrack_max ${String(conntrackMax)} is not a count of entries: check /proc/sys/net/netfilter/nf_conntrack_max`);
  }
  if (conntrackMax === 0) return UNLIMITED_TABLE_FLOW_LIMIT;
  return Math.max(1, Math.floor(conntrackMax / CLIENT_FLOW_SHARE));
}

/** Refuse settings nft cannot hold, with what to give instead. */
export function assertTableSettings(settings: TableSettings): void {
  const limit = settings.clientFlowLimit;
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > MAX_CLIENT_FLOW_LIMIT) {
    throw new FirewallError('flow-limit', `client flow limit ${String(limit)} is not valid: give a whole number of flows from 0 (no limit) to ${MAX_CLIENT_FLOW_LIMIT}`);
  }
}
