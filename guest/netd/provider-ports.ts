// The provider agent's real ports: the nftables firewall and the per-link services (DHCP on
// every provider link, DNS on the gateway), behind the interfaces the agent core talks to.
import type { Logger } from '../../shared/log.js';
import { clientId } from '../../shared/client-id.js';
import type { DhcpServer } from '../dhcp/dhcp-server.js';
import type { LeaseInfo } from '../dhcp/lease-table.js';
import type { DnsForwarder } from '../dns/forwarder.js';
import type { FirewallCounters, FirewallModel, FirewallPort, FlowLimits } from '../firewall-port.js';
import { type TcpTimeouts, clientTcpTimeouts, sameTcpTimeouts, tcpTimeoutPolicyText } from '../firewall/client-tcp-timeouts.js';
import { readConntrackMax } from '../firewall/conntrack-max.js';
import { FirewallError } from '../firewall/firewall-error.js';
import { FirewallReconciler, firewallCounters } from '../firewall/nft.js';
import { loadNftLibrary } from '../firewall/nft-library.js';
import {
  MAX_DEFAULT_CLIENT_NEW_FLOW_RATE,
  type TableSettings,
  assertTableSettings,
  clientTcpTimeoutsOf,
  defaultClientFlowLimit,
  defaultClientNewFlowRate,
} from '../firewall/table-settings.js';
import { readTcpTimeouts } from '../firewall/tcp-timeout-sysctls.js';
import type { ProviderLink, ServicesPort, UpstreamLinkInfo } from '../services-port.js';

/** --client-flow-limit: a number of conntrack entries per client (0: none), or derived from nf_conntrack_max. */
export type ClientFlowLimitOption = number | 'auto';

/** --client-new-flow-rate: new flows a second per client (0: none), or derived from nf_conntrack_max. */
export type ClientNewFlowRateOption = number | 'auto';

/** The agent's own firewall, changed in-process through libnftables. */
export class NftablesFirewall implements FirewallPort {
  #reconciler: FirewallReconciler | undefined;
  /** What #reconciler makes the table with. */
  #settings: TableSettings | undefined;
  /** The limits of #reconciler's settings. */
  #settingsLimits: FlowLimits | undefined;
  /** Why the provider's TCP timeouts could not be read at the last audit (warned once per reason). */
  #tcpTimeoutsUnreadable: string | undefined;
  /** The limits the last reconcile that succeeded applied (undefined: none has yet). */
  #flowLimits: FlowLimits | undefined;

  constructor(
    private readonly clientFlowLimit: ClientFlowLimitOption,
    private readonly clientNewFlowRate: ClientNewFlowRateOption,
    private readonly log: Logger,
    /** nf_conntrack_max, undefined while nf_conntrack is not loaded; tests give their own. */
    private readonly conntrackMax: () => number | undefined = readConntrackMax,
    /** The provider's conntrack TCP timeouts (sysctls), likewise. */
    private readonly tcpTimeouts: () => TcpTimeouts | undefined = readTcpTimeouts,
  ) {
    assertTableSettings({ clientFlowLimit: clientFlowLimit === 'auto' ? 0 : clientFlowLimit, clientNewFlowRate: clientNewFlowRate === 'auto' ? 0 : clientNewFlowRate });
    // A broken install (addon not built, libnftables missing) fails when the agent starts.
    loadNftLibrary();
  }

  async reconcile(model: FirewallModel): Promise<void> {
    await (await this.#ready(model)).reconcile(model);
    this.#flowLimits = this.#settingsLimits;
  }

  /**
   * The audit: also where clients' TCP timeouts follow a change of the provider's sysctls (an
   * operator's, after start). The table is then replaced once, which is not counted as a repair.
   */
  async verify(model: FirewallModel): Promise<boolean> {
    const reconciler = await this.#ready(model);
    const follow = this.#followTcpTimeouts();
    const { changed } = await (follow?.reconciler ?? reconciler).reconcile(model, { verify: true });
    // Taken on only once the table has it: after a refusal the next audit follows again (still
    // not a repair), and a reconcile meanwhile keeps to the table as it is.
    if (follow !== undefined) {
      this.#settings = follow.settings;
      this.#reconciler = follow.reconciler;
      this.log.info(
        { from: tcpTimeoutPolicyText(clientTcpTimeoutsOf(follow.from)), to: tcpTimeoutPolicyText(clientTcpTimeoutsOf(follow.settings)) },
        "firewall: the provider's TCP timeouts changed; clients' TCP flows follow (the table is replaced, its counters start from 0)",
      );
    }
    this.#flowLimits = this.#settingsLimits;
    return changed && follow === undefined;
  }

  /**
   * The settings with clients' TCP timeouts taken anew from the provider's sysctls, and a
   * reconciler for them, when they differ from the table's; undefined when they do not.
   */
  #followTcpTimeouts(): { readonly from: TableSettings; readonly settings: TableSettings; readonly reconciler: FirewallReconciler } | undefined {
    const from = this.#settings;
    if (from === undefined) return undefined;
    let wanted: TcpTimeouts;
    try {
      const provider = this.tcpTimeouts();
      if (provider === undefined) return undefined;
      wanted = clientTcpTimeouts(provider);
    } catch (error) {
      // The table keeps the policy it has; the audit goes on. Said once, not at every audit.
      const message = error instanceof Error ? error.message : String(error);
      if (message !== this.#tcpTimeoutsUnreadable) this.log.warn({ err: message }, "firewall: cannot read the provider's TCP timeouts; clients' keep theirs until they can be read");
      this.#tcpTimeoutsUnreadable = message;
      return undefined;
    }
    this.#tcpTimeoutsUnreadable = undefined;
    if (sameTcpTimeouts(wanted, clientTcpTimeoutsOf(from))) return undefined;
    const settings: TableSettings = { ...from, clientTcpTimeouts: wanted };
    return { from, settings, reconciler: new FirewallReconciler(settings) };
  }

  /**
   * The reconciler, made on the first call with `auto` resolved and the clients' TCP timeouts
   * taken from the provider's (read again at each audit: #followTcpTimeouts).
   */
  async #ready(model: FirewallModel): Promise<FirewallReconciler> {
    if (this.#reconciler !== undefined) return this.#reconciler;
    const limit = this.clientFlowLimit;
    const rate = this.clientNewFlowRate;
    const needsMax = limit === 'auto' || rate === 'auto';
    const read = (): { conntrackMax: number | undefined; tcpTimeouts: TcpTimeouts | undefined } => ({
      conntrackMax: needsMax ? this.conntrackMax() : undefined,
      tcpTimeouts: this.tcpTimeouts(),
    });
    let kernel = read();
    if (kernel.tcpTimeouts === undefined || (needsMax && kernel.conntrackMax === undefined)) {
      // nf_conntrack is not loaded yet (a fresh boot, a modular kernel): the table's ct rules
      // load it. Made with what is known first (no cap, the most the default rate gives, the
      // kernel's default timeouts), then as it should be, before any client has a flow.
      await new FirewallReconciler({
        clientFlowLimit: limit === 'auto' ? 0 : limit,
        clientNewFlowRate: rate === 'auto' ? MAX_DEFAULT_CLIENT_NEW_FLOW_RATE : rate,
      }).reconcile(model);
      kernel = read();
    }
    const { conntrackMax, tcpTimeouts } = kernel;
    if (needsMax && conntrackMax === undefined) {
      throw new FirewallError(
        limit === 'auto' ? 'flow-limit' : 'flow-rate',
        'nf_conntrack_max does not exist even with the firewall table loaded: is nf_conntrack in the kernel? Else give --client-flow-limit and --client-new-flow-rate numbers',
      );
    }
    if (tcpTimeouts === undefined) {
      throw new FirewallError('tcp-timeouts', 'the nf_conntrack_tcp_timeout_* sysctls do not exist even with the firewall table loaded: is nf_conntrack in the kernel?');
    }
    const settings: TableSettings = {
      clientFlowLimit: limit === 'auto' ? defaultClientFlowLimit(conntrackMax ?? 0) : limit,
      clientNewFlowRate: rate === 'auto' ? defaultClientNewFlowRate(conntrackMax ?? 0) : rate,
      clientTcpTimeouts: clientTcpTimeouts(tcpTimeouts),
    };
    if (limit === 'auto') {
      this.log.info({ clientFlowLimit: settings.clientFlowLimit, conntrackMax }, 'firewall: each client may hold this many conntrack entries (an eighth of the table, at most 4096)');
    }
    if (rate === 'auto') {
      this.log.info(
        { clientNewFlowRate: settings.clientNewFlowRate, conntrackMax },
        'firewall: each client may open this many new flows a second (an eighth of the table per 22 s, at most 100)',
      );
    }
    this.#settingsLimits = { clientFlowLimit: settings.clientFlowLimit, clientNewFlowRate: settings.clientNewFlowRate };
    this.#settings = settings;
    this.#reconciler = new FirewallReconciler(settings);
    return this.#reconciler;
  }

  counters(): Promise<FirewallCounters> {
    return firewallCounters();
  }

  /** Only once a reconcile applied them: a table that could not be made holds no client to anything. */
  flowLimits(): FlowLimits | null {
    return this.#flowLimits ?? null;
  }
}

/** What `status` shows of the services. */
export interface ServicesStatus {
  readonly leases: readonly LeaseInfo[];
  readonly dhcp: Readonly<Record<string, number>> | null;
  readonly dns: Readonly<Record<string, unknown>> | null;
}

/** DHCP and DNS, told of every change to the set of provider links. */
export class ProviderServices implements ServicesPort {
  constructor(
    private readonly dhcp: DhcpServer | null,
    private readonly dns: DnsForwarder | null,
    private readonly log: Logger,
  ) {}

  async linksChanged(links: readonly ProviderLink[], upstreamLink: UpstreamLinkInfo | null): Promise<void> {
    await this.dhcp?.setLinks(links.map((link) => ({ ifname: link.ifname, ifindex: link.ifindex, id: clientId(link.id) })));
    // A chained provider reaches its upstream provider's forwarder (at our own gateway address) through that link.
    await this.dns?.setUpstreamLink(upstreamLink === null ? null : { device: upstreamLink.ifname, ifindex: upstreamLink.ifindex, source: upstreamLink.ownIp });
    // The gateway address exists once a provider link carries it: the forwarder can bind then.
    // Upstreams with no route yet it retries on its own (DHCP on the uplink raises no link
    // event here); a link change is just an early chance to connect them.
    if (this.dns !== null && links.length > 0) {
      const wasListening = this.dns.listening();
      await this.dns.rebind();
      if (!wasListening && this.dns.listening()) this.log.info('DNS forwarder listening on the gateway');
    }
  }

  status(): ServicesStatus {
    return {
      leases: this.dhcp?.leases() ?? [],
      dhcp: this.dhcp?.counters() ?? null,
      dns: this.dns === null ? null : { ...this.dns.counters() },
    };
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.dhcp?.close(), this.dns?.close()]);
  }
}
