/** One configured provider-side link, as handed to the per-link services (DHCP, DNS). */
export interface ProviderLink {
  readonly ifname: string;
  readonly ifindex: number;
  readonly id: number;
  readonly clientIp: string;
  /** The client end's MAC, canonical upper-case form (0A:B3:EC:00:hi:lo). */
  readonly clientMac: string;
}

/** A chained provider's link to its upstream provider (see Plan.upstreamLink). */
export interface UpstreamLinkInfo {
  readonly ifname: string;
  readonly ifindex: number;
  readonly ownIp: string;
}

/**
 * Per-link services: told the full list of provider links, and the upstream link, whenever they
 * change; and told them again when the gateway address first comes onto one of the links (not
 * when it leaves them: the forwarder's sockets stay bound, and answer once it is back), where the
 * DNS forwarder binds it.
 */
export interface ServicesPort {
  linksChanged(links: readonly ProviderLink[], upstreamLink: UpstreamLinkInfo | null): Promise<void>;
  /** A link, address or route of any link (the uplink's included) changed: where a route to an upstream resolver may have gone. */
  routesChanged?(): void;
}

/** Stand-in until DHCP and DNS are plugged in. */
export class NoopServices implements ServicesPort {
  linksChanged(_links: readonly ProviderLink[], _upstreamLink: UpstreamLinkInfo | null): Promise<void> {
    return Promise.resolve();
  }
}
