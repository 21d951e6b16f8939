import type { FirewallModel } from './firewall/model.js';
import type { TableSettings } from './firewall/table-settings.js';

export type { FirewallModel };

/** The flow limits each client is held to (0: none), as the table has them: `auto` resolved. */
export type FlowLimits = Pick<TableSettings, 'clientFlowLimit' | 'clientNewFlowRate'>;

/** Packet counters the firewall keeps; the agent reports them in `status`. */
export interface FirewallCounters {
  antispoofDrops: number;
  isolationDrops: number;
  inputDrops: number;
  /**
   * ARP the ARP guard dropped: a sender address not the link's client's, or a link not served;
   * null while the guard is not in force (FirewallReading.arpGuard says why).
   */
  arpDrops: number | null;
  flowLimitDrops: number;
  flowRateDrops: number;
  fragmentDrops: number;
  /** Packets toward a client gone, or from the gateway address, that would have left by an uplink. */
  leakDrops: number;
}

/**
 * The ARP guard (table arp spectrum_netd): in force (its counter read), missing (no table of its
 * name, or one without our counter: deleted or replaced since the last update), or unsupported
 * (nft refused the arp family: a kernel without CONFIG_NF_TABLES_ARP; the rest of the firewall
 * stands without it).
 */
export type ArpGuardState = 'in-force' | 'missing' | 'unsupported';

/** What `status` reads of the firewall's tables. */
export interface FirewallTablesReading {
  /** The drop counters; null when the inet table's cannot be read (inetGone says whether it is gone). */
  readonly counters: FirewallCounters | null;
  /** The inet table is missing, or a table of its name holds none of our counters: it holds nobody to anything. */
  readonly inetGone: boolean;
  /** null: no firewall of ours, or its counter could not be read for another reason. */
  readonly arpGuard: ArpGuardState | null;
}

/**
 * What `status` reads of the firewall: its tables, or `off` where there is none (run with
 * --no-firewall): nothing filters, so there is nothing to count (not "nothing dropped").
 */
export type FirewallReading = FirewallTablesReading | { readonly off: true };

/** The agent's view of the firewall: make the ruleset match a model, read its counters. */
export interface FirewallPort {
  reconcile(model: FirewallModel): Promise<void>;
  /** Read the ruleset back and repair what differs from `model`; true when something was repaired. */
  verify(model: FirewallModel): Promise<boolean>;
  /** Read both tables' counters: never rejects for a table missing, says so instead; `off` without a firewall. */
  counters(): Promise<FirewallReading>;
  /**
   * The flow limits the table was made with, while it stands as made: null until a reconcile (or
   * audit) has applied them, once one finds the table missing or changed and cannot make it
   * again (until one can), and when no table of ours filters.
   */
  flowLimits(): FlowLimits | null;
}

/** No firewall (run with --no-firewall): remembers the last model, filters nothing, and says it is off. */
export class NoopFirewall implements FirewallPort {
  #model: FirewallModel | undefined;

  get lastModel(): FirewallModel | undefined {
    return this.#model;
  }

  reconcile(model: FirewallModel): Promise<void> {
    this.#model = model;
    return Promise.resolve();
  }

  verify(model: FirewallModel): Promise<boolean> {
    this.#model = model;
    return Promise.resolve(false);
  }

  counters(): Promise<FirewallReading> {
    return Promise.resolve({ off: true });
  }

  flowLimits(): FlowLimits | null {
    return null;
  }
}
