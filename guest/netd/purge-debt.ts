// Which client IPs' conntrack entries the agent must delete before serving those IPs again, pure.
//
// Why: an entry outlives the client that made it (UDP 30-120 s, established TCP 5 days). Once a
// client IP serves another VM, replies to the old VM's masqueraded flows would be de-NATed to
// that IP and routed to the new VM (the firewall lets established flows through). Qubes deletes
// them (`conntrack -D -s IP`, `-d IP`) as a VM's IP goes away; the agent does so as a client IP
// stops being served by its link, and holds back any link serving that IP until that is done.
import type { ConntrackFilter } from '../conntrack/conntrack-filter.js';
import type { ProviderLink } from '../services-port.js';
import { type KernelView, routeKey } from './kernel-view.js';

/** Client IPs are the agent's own business: 100.64.0.0/16. */
export const CLIENT_SWEEP_NETWORK = '100.64.0.0';
export const CLIENT_SWEEP_PREFIX = 16;

const inClientNetwork = (ip: string): boolean => ip.startsWith('100.64.');

/**
 * The client IPs whose conntrack entries may belong to a VM the agent no longer serves under
 * them: each must be purged before it is served again.
 */
export interface PurgeDebt {
  /** IPs that stopped being served by their link (gone, given another client, held back, or taken down) since the last purge that succeeded. */
  readonly released: ReadonlySet<string>;
  /**
   * From the agent's start until a purge succeeds: every client IP but `keep`. A restarted agent
   * cannot know what it served before, so it keeps only the entries of the IPs its first plan
   * serves on the link their route already leads out of (what a previous agent configured, so
   * the VM behind it is the one whose entries they are), and of its own addresses (a chained
   * provider's address on its upstream link: its own flows, and its clients' masqueraded to it).
   */
  readonly sweep: { readonly keep: ReadonlySet<string> } | null;
}

export const NO_PURGE_DEBT: PurgeDebt = { released: new Set(), sweep: null };

/** Which link serves each client IP (IP -> ifindex), as a plan's provider links say. */
export function servingLinks(links: readonly Pick<ProviderLink, 'clientIp' | 'ifindex'>[]): Map<string, number> {
  const serving = new Map<string, number>();
  for (const link of links) serving.set(link.clientIp, link.ifindex);
  return serving;
}

/**
 * The client IPs that `before` had served and `after` serves no more by the same link: their
 * link went, or now serves another client, or is held back or taken down, or the IP moved to
 * another link. An IP its link keeps serving is never among them. Sorted.
 */
export function releasedClientIps(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>): string[] {
  const released: string[] = [];
  for (const [ip, ifindex] of before) if (after.get(ip) !== ifindex) released.push(ip);
  return released.sort();
}

/**
 * The debt of an agent that starts: `view` as the agent read it (before its first changes), and
 * the provider links its first plan serves.
 */
export function startPurgeDebt(view: KernelView, links: readonly Pick<ProviderLink, 'clientIp' | 'ifindex'>[], purged: Iterable<string> = []): PurgeDebt {
  // Those whose entries were deleted on their own since the start (purgedAlone): what they have now is their VM's.
  const keep = new Set<string>(purged);
  for (const link of links) {
    if (view.routes.get(routeKey({ dst: link.clientIp, dstLength: 32, priority: 0 }))?.oif === link.ifindex) keep.add(link.clientIp);
  }
  for (const address of view.addresses.values()) {
    // A client route to it would say a previous agent served it to a VM: then only the first rule keeps it.
    if (inClientNetwork(address.ip) && !view.routes.has(routeKey({ dst: address.ip, dstLength: 32, priority: 0 }))) keep.add(address.ip);
  }
  return { released: new Set(), sweep: { keep } };
}

/**
 * `debt` once the entries of `ips` were deleted on their own, while its sweep was still owed: none
 * of them is released any more, and the sweep keeps them (what they have from then on is their
 * VM's).
 */
export function purgedAlone(debt: PurgeDebt, ips: readonly string[]): PurgeDebt {
  const released = new Set([...debt.released].filter((ip) => !ips.includes(ip)));
  return { released, sweep: debt.sweep === null ? null : { keep: new Set([...debt.sweep.keep, ...ips]) } };
}

/** `debt` with `ips` released too. */
export function withReleased(debt: PurgeDebt, ips: readonly string[]): PurgeDebt {
  if (ips.every((ip) => debt.released.has(ip))) return debt;
  return { released: new Set([...debt.released, ...ips]), sweep: debt.sweep };
}

/** Whether the entries of `ip` must be purged before it is served. */
export function owes(debt: PurgeDebt, ip: string): boolean {
  return debt.released.has(ip) || (debt.sweep !== null && inClientNetwork(ip) && !debt.sweep.keep.has(ip));
}

export function isSettled(debt: PurgeDebt): boolean {
  return debt.released.size === 0 && debt.sweep === null;
}

/** The entries to delete to settle `debt` (matching exactly the IPs it owes); null when it is settled. */
export function purgeFilter(debt: PurgeDebt): ConntrackFilter | null {
  if (isSettled(debt)) return null;
  return {
    addresses: [...debt.released].sort(),
    sweep: debt.sweep === null ? null : { network: CLIENT_SWEEP_NETWORK, prefixLength: CLIENT_SWEEP_PREFIX, keep: [...debt.sweep.keep].sort() },
  };
}

/** The provider links to hold back (configure nothing on) while `debt` is owed: those serving an IP it owes. */
export function heldForPurge(debt: PurgeDebt, links: readonly Pick<ProviderLink, 'clientIp' | 'ifindex'>[]): Set<number> {
  const held = new Set<number>();
  if (isSettled(debt)) return held;
  for (const link of links) if (owes(debt, link.clientIp)) held.add(link.ifindex);
  return held;
}
