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
  /** ARP the ARP guard dropped: a sender address not the link's client's, or a link not served. */
  arpDrops: number;
  flowLimitDrops: number;
  flowRateDrops: number;
}

/** The agent's view of the firewall: make the ruleset match a model, read its counters. */
export interface FirewallPort {
  reconcile(model: FirewallModel): Promise<void>;
  /** Read the ruleset back and repair what differs from `model`; true when something was repaired. */
  verify(model: FirewallModel): Promise<boolean>;
  counters(): Promise<FirewallCounters>;
  /**
   * The flow limits the table was made with, while it stands as made: null until a reconcile (or
   * audit) has applied them, once one finds the table missing or changed and cannot make it
   * again (until one can), and when no table of ours filters.
   */
  flowLimits(): FlowLimits | null;
}

/** Stand-in until the nftables firewall is plugged in: remembers the last model, counts nothing. */
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

  counters(): Promise<FirewallCounters> {
    return Promise.resolve({ antispoofDrops: 0, isolationDrops: 0, inputDrops: 0, arpDrops: 0, flowLimitDrops: 0, flowRateDrops: 0 });
  }

  flowLimits(): FlowLimits | null {
    return null;
  }
}
