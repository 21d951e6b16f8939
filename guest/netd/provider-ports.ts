// The provider agent's real ports: the nftables firewall and the per-link services (DHCP on
// every provider link, DNS on the gateway), behind the interfaces the agent core talks to.
import type { Logger } from '../../shared/log.js';
import { clientId } from '../../shared/client-id.js';
import type { DhcpServer } from '../dhcp/dhcp-server.js';
import type { LeaseInfo } from '../dhcp/lease-table.js';
import type { DnsForwarder } from '../dns/forwarder.js';
import type { FirewallCounters, FirewallModel, FirewallPort } from '../firewall-port.js';
import { FirewallReconciler, firewallCounters } from '../firewall/nft.js';
import { loadNftLibrary } from '../firewall/nft-library.js';
import type { ProviderLink, ServicesPort, UpstreamLinkInfo } from '../services-port.js';

/** The agent's own firewall, changed in-process through libnftables. */
export class NftablesFirewall implements FirewallPort {
  readonly #reconciler = new FirewallReconciler();

  constructor() {
    // A broken install (addon not built, libnftables missing) fails when the agent starts.
    loadNftLibrary();
  }

  async reconcile(model: FirewallModel): Promise<void> {
    await this.#reconciler.reconcile(model);
  }

  async verify(model: FirewallModel): Promise<boolean> {
    return (await this.#reconciler.reconcile(model, { verify: true })).changed;
  }

  counters(): Promise<FirewallCounters> {
    return firewallCounters();
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
