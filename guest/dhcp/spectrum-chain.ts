import { GATEWAY_IP } from '../../shared/scheme.js';
import type { DhcpHandler } from './dhcp-handler.js';
import { setupClientMac } from './handlers/client-mac.js';
import {
  setupClasslessRoutes,
  setupClientIdentifierEcho,
  setupDnsServers,
  setupLeaseTime,
  setupParameterRequestFilter,
  setupRouter,
  setupServerIdentifier,
  setupSubnetMask,
} from './handlers/configuration.js';
import { setupMessageType } from './handlers/message-type.js';
import type { Ipv4Text } from './ipv4.js';

export const DEFAULT_LEASE_SECONDS = 3600;

export interface SpectrumChainConfig {
  readonly leaseSeconds?: number;
  /** Default [169.254.0.1]: the provider answers DNS on the gateway. Empty: no option 6. */
  readonly dnsServers?: readonly Ipv4Text[];
}

/**
 * The handlers that give a client exactly the configuration the spec gives it: its address as a
 * /32, the gateway 169.254.0.1 on-link (option 121's /32 via 0.0.0.0), the default route through
 * it, and DNS on it. Router and mask /32 serve clients without RFC 3442 (udhcpc's default.script
 * special-cases a /32 mask and adds the router on-link); RFC 3442 clients ignore option 3.
 */
export function spectrumChain(config: SpectrumChainConfig = {}): DhcpHandler[] {
  const dnsServers = config.dnsServers ?? [GATEWAY_IP];
  return [
    setupClientMac(),
    setupMessageType({ serverId: GATEWAY_IP }),
    setupServerIdentifier({ serverId: GATEWAY_IP }),
    setupLeaseTime({ leaseSeconds: config.leaseSeconds ?? DEFAULT_LEASE_SECONDS }),
    setupSubnetMask({ mask: '255.255.255.255' }),
    setupRouter({ routers: [GATEWAY_IP] }),
    setupClasslessRoutes({
      routes: [
        { destination: GATEWAY_IP, prefixLength: 32, router: '0.0.0.0' },
        { destination: '0.0.0.0', prefixLength: 0, router: GATEWAY_IP },
      ],
    }),
    ...(dnsServers.length > 0 ? [setupDnsServers({ servers: dnsServers })] : []),
    setupClientIdentifierEcho(),
    setupParameterRequestFilter(),
  ];
}
