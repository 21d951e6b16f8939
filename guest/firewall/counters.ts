import { FirewallError } from './firewall-error.js';
import { ARP_COUNTER, ARP_TABLE_FAMILY, COUNTERS, TABLE_FAMILY, TABLE_NAME } from './ruleset.js';

/** Packets the firewall dropped, by reason, since the table was (re)created. */
export interface FirewallCounters {
  /**
   * Wrong source address from a provider link (IPv6 included), a client address arriving
   * elsewhere, or anything from a provider link the table does not name (renamed while up).
   */
  readonly antispoofDrops: number;
  /**
   * Forwarding refused: client to client (not an allowed pair), outside to client, client to a
   * non-uplink, anything toward a provider link the table does not name.
   */
  readonly isolationDrops: number;
  /** From a provider link to anything on the provider but the agent's gateway services. */
  readonly inputDrops: number;
  /**
   * ARP from a provider link whose sender address is neither its client's nor a probe's
   * 0.0.0.0, and any ARP from a provider link the table does not serve (ARP guard).
   */
  readonly arpDrops: number;
  /**
   * New flows (forwarded, or to the gateway's services) from a client that already held its
   * flow limit of conntrack entries (see TableSettings.clientFlowLimit).
   */
  readonly flowLimitDrops: number;
  /**
   * New flows from a client past its new-flow rate (see TableSettings.clientNewFlowRate), dropped
   * before the flow limit counted anything.
   */
  readonly flowRateDrops: number;
  /**
   * IPv4 fragments from a client past its fragment rate (FRAGMENT_RATE_SET), dropped before the
   * kernel queued them for reassembly.
   */
  readonly fragmentDrops: number;
  /**
   * Packets that would have left by an uplink toward a client address no link serves (a client
   * gone), or from the gateway address (the agent's answers to a client gone).
   */
  readonly leakDrops: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The packet count of each counter of table `family` TABLE_NAME in `nft -j list counters` output. */
function countersOf(text: string, family: string): Map<string, number> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new FirewallError('listing', 'nft printed counters that are not JSON: check that nft supports -j (nftables >= 0.9)', { cause: error });
  }
  const packets = new Map<string, number>();
  const entries = isRecord(parsed) && Array.isArray(parsed['nftables']) ? (parsed['nftables'] as unknown[]) : undefined;
  if (entries === undefined) throw new FirewallError('listing', 'nft counters JSON has no "nftables" array');
  for (const entry of entries) {
    const counter = isRecord(entry) ? entry['counter'] : undefined;
    // Both tables have our name: a counter is ours by its family too.
    if (!isRecord(counter) || counter['table'] !== TABLE_NAME || counter['family'] !== family) continue;
    const name = counter['name'];
    const value = counter['packets'];
    if (typeof name === 'string' && typeof value === 'number') packets.set(name, value);
  }
  return packets;
}

/** The inet table's counters: all but the ARP guard's. */
export type InetCounters = Omit<FirewallCounters, 'arpDrops'>;

/** The packet count of counter `name` of table `family` TABLE_NAME; 'table-changed' when it has none. */
function read(packets: ReadonlyMap<string, number>, family: string, name: string): number {
  const value = packets.get(name);
  if (value === undefined) {
    // A table of our name without our counters is not ours (someone replaced it): no listing problem.
    throw new FirewallError('table-changed', `counter ${name} is missing from table ${family} ${TABLE_NAME}: reconcile the firewall to recreate it`);
  }
  return value;
}

/** Read `nft -j list counters table inet spectrum_netd` output. */
export function parseInetCountersJson(text: string): InetCounters {
  const inet = countersOf(text, TABLE_FAMILY);
  return {
    antispoofDrops: read(inet, TABLE_FAMILY, COUNTERS.antispoofDrops),
    isolationDrops: read(inet, TABLE_FAMILY, COUNTERS.isolationDrops),
    inputDrops: read(inet, TABLE_FAMILY, COUNTERS.inputDrops),
    // Before the flow drops, which status shows next to the flow limits.
    fragmentDrops: read(inet, TABLE_FAMILY, COUNTERS.fragmentDrops),
    flowLimitDrops: read(inet, TABLE_FAMILY, COUNTERS.flowLimitDrops),
    flowRateDrops: read(inet, TABLE_FAMILY, COUNTERS.flowRateDrops),
    leakDrops: read(inet, TABLE_FAMILY, COUNTERS.leakDrops),
  };
}

/** Read `nft -j list counters table arp spectrum_netd` output: the ARP guard's drops. */
export function parseArpDropsJson(text: string): number {
  return read(countersOf(text, ARP_TABLE_FAMILY), ARP_TABLE_FAMILY, ARP_COUNTER);
}

/** Read `nft -j list counters table inet spectrum_netd` output, and the same of `arp spectrum_netd`. */
export function parseCountersJson(text: string, arpText: string): FirewallCounters {
  const { antispoofDrops, isolationDrops, inputDrops, flowLimitDrops, flowRateDrops, fragmentDrops, leakDrops } = parseInetCountersJson(text);
  return { antispoofDrops, isolationDrops, inputDrops, arpDrops: parseArpDropsJson(arpText), flowLimitDrops, flowRateDrops, fragmentDrops, leakDrops };
}
