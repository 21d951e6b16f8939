// The provider agent's real ports: the nftables firewall and the per-link services (DHCP on
// every provider link, DNS on the gateway), behind the interfaces the agent core talks to.
import type { Logger } from '../../shared/log.js';
import { clientId } from '../../shared/client-id.js';
import type { DhcpServer } from '../dhcp/dhcp-server.js';
import type { LeaseInfo } from '../dhcp/lease-table.js';
import type { DnsForwarder } from '../dns/forwarder.js';
import type { FirewallCounters, FirewallModel, FirewallPort, FlowLimits } from '../firewall-port.js';
import { readConntrackMax } from '../firewall/conntrack-max.js';
import { FirewallError } from '../firewall/firewall-error.js';
import { FirewallReconciler, firewallCounters } from '../firewall/nft.js';
import { loadNftLibrary } from '../firewall/nft-library.js';
import { assertTableSettings, defaultClientFlowLimit } from '../firewall/table-settings.js';
import type { ProviderLink, ServicesPort, UpstreamLinkInfo } from '../services-port.js';

/** --client-flow-limit: a number of conntrack entries per client (0: none), or derived from nf_conntrack_max. */
export type ClientFlowLimitOption = number | 'auto';

/** The agent's own firewall, changed in-process through libnftables. */
export class NftablesFirewall implements FirewallPort {
  #reconciler: FirewallReconciler | undefined;
  #flowLimits: FlowLimits | undefined;

  constructor(
    private readonly clientFlowLimit: ClientFlowLimitOption,
    /** --client-new-flow-rate: new flows a second per client (0: none). */
    private readonly clientNewFlowRate: number,
    private readonly log: Logger,
    /** nf_conntrack_max, undefined while nf_conntrack is not loaded; tests give their own. */
    private readonly conntrackMax: () => number | undefined = readConntrackMax,
  ) {
    assertTableSettings({ clientFlowLimit: clientFlowLimit === 'auto' ? 0 : clientFlowLimit, clientNewFlowRate });
    // A broken install (addon not built, libnftables missing) fails when the agent starts.
    loadNftLibrary();
  }

  async reconcile(model: FirewallModel): Promise<void> {
    await (await this.#ready(model)).reconcile(model);
  }

  async verify(model: FirewallModel): Promise<boolean> {
    return (await (await this.#ready(model)).reconcile(model, { verify: true })).changed;
  }

  /** The reconciler, made on the first call with the cap resolved (once per run: see FirewallOptions). */
  async #ready(model: FirewallModel): Promise<FirewallReconciler> {
    if (this.#reconciler !== undefined) return this.#reconciler;
    let limit = this.clientFlowLimit;
    if (limit === 'auto') {
      let conntrackMax = this.conntrackMax();
      if (conntrackMax === undefined) {
        // nf_conntrack is not loaded yet (a fresh boot, a modular kernel): the table's ct rules
        // load it. Made without the cap first, then with it, before any client has a flow.
        await new FirewallReconciler({ clientFlowLimit: 0, clientNewFlowRate: this.clientNewFlowRate }).reconcile(model);
        conntrackMax = this.conntrackMax();
        if (conntrackMax === undefined) {
          throw new FirewallError('flow-limit', 'nf_conntrack_max does not exist even with the firewall table loaded: is nf_conntrack in the kernel? Else give --client-flow-limit a number');
        }
      }
      limit = defaultClientFlowLimit(conntrackMax);
      this.log.info({ clientFlowLimit: limit, conntrackMax }, 'firewall: each client may hold this many conntrack entries (an eighth of the table, at most 4096)');
    }
    this.#flowLimits = { clientFlowLimit: limit, clientNewFlowRate: this.clientNewFlowRate };
    this.#reconciler = new FirewallReconciler(this.#flowLimits);
    return this.#reconciler;
  }

  counters(): Promise<FirewallCounters> {
    return firewallCounters();
  }

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
    await this.dns?.setUpstreamLink(upstreamLink === null ? null : { device: upstreamLink.ifname, source: upstreamLink.ownIp });
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
