/**
 * What the provider's firewall must enforce, as computed by the agent from the links it sees.
 * providerLinks: one entry per provider-side link, the only source address allowed on it;
 * uplinks: interfaces clients are NAT'ed out of; allowedPairs: client IPs that may talk directly.
 */
export interface FirewallModel {
  readonly providerLinks: readonly { ifname: string; clientIp: string }[];
  readonly uplinks: readonly string[];
  readonly allowedPairs: readonly { from: string; to: string }[];
}
