import { DhcpError } from '../dhcp-error.js';
import { type DhcpHandler, next } from '../dhcp-handler.js';
import { carriesConfiguration, responseType, withOption } from '../dhcp-exchange.js';
import { type ClasslessRoute, encodeClasslessRoutes } from '../classless-route.js';
import { type Ipv4Text, ipv4Octets } from '../ipv4.js';
import { MESSAGE_TYPE, OPTION } from '../option-code.js';
import { ipv4ListValue, uint32Value } from '../option-values.js';

// Handlers that add one piece of configuration to OFFERs and ACKs. Each validates its
// configuration when set up, so a bad value fails at start, never per packet.

function checkedAddresses(what: string, addresses: readonly Ipv4Text[]): Uint8Array {
  try {
    return ipv4ListValue(addresses);
  } catch (error) {
    throw new DhcpError('config', `${what}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Option 54 on every reply, NAK included (RFC 2131 table 3: MUST). */
export function setupServerIdentifier(config: { readonly serverId: Ipv4Text }): DhcpHandler {
  const value = checkedAddresses('server identifier', [config.serverId]);
  return (_request, response) => next(response.drop === undefined ? withOption(response, OPTION.serverId, value) : response);
}

/** Option 1. For Spectrum, 255.255.255.255: the client's address is a /32. */
export function setupSubnetMask(config: { readonly mask: Ipv4Text }): DhcpHandler {
  const octets = ipv4Octets(config.mask);
  const bits = ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0;
  // A mask is ones then zeros: inverting and adding one gives a power of two.
  const inverted = ~bits >>> 0;
  if ((inverted & (inverted + 1)) !== 0) throw new DhcpError('config', `${config.mask} is not a netmask (ones followed by zeros)`);
  const value = Uint8Array.from(octets);
  return (_request, response) => next(carriesConfiguration(response) ? withOption(response, OPTION.subnetMask, value) : response);
}

/** Option 3: for clients (and scripts) that ignore option 121. */
export function setupRouter(config: { readonly routers: readonly Ipv4Text[] }): DhcpHandler {
  if (config.routers.length === 0) throw new DhcpError('config', 'router option: give at least one router');
  const value = checkedAddresses('router', config.routers);
  return (_request, response) => next(carriesConfiguration(response) ? withOption(response, OPTION.router, value) : response);
}

/** Option 121 (RFC 3442): the gateway on-link as a /32, then the default route through it. */
export function setupClasslessRoutes(config: { readonly routes: readonly ClasslessRoute[] }): DhcpHandler {
  if (config.routes.length === 0) throw new DhcpError('config', 'option 121: give at least one route');
  const value = encodeClasslessRoutes(config.routes);
  return (_request, response) => next(carriesConfiguration(response) ? withOption(response, OPTION.classlessRoutes, value) : response);
}

/** Option 6, also in the ACK to an INFORM (which is how INFORM clients learn DNS). */
export function setupDnsServers(config: { readonly servers: readonly Ipv4Text[] }): DhcpHandler {
  if (config.servers.length === 0) throw new DhcpError('config', 'DNS option: give at least one server, or leave the handler out');
  const value = checkedAddresses('DNS server', config.servers);
  return (_request, response) => next(carriesConfiguration(response) ? withOption(response, OPTION.dnsServers, value) : response);
}

export const MIN_LEASE_SECONDS = 60;
/** 0xffffffff means "infinite" (RFC 2131 3.3); this server always gives finite leases. */
export const MAX_LEASE_SECONDS = 0xfffffffe;

/** Options 51, 58, 59: lease time, T1 = 50 % and T2 = 87.5 % of it (RFC 2131 4.4.5). Not on INFORM ACKs. */
export function setupLeaseTime(config: { readonly leaseSeconds: number }): DhcpHandler {
  const seconds = config.leaseSeconds;
  if (!Number.isInteger(seconds) || seconds < MIN_LEASE_SECONDS || seconds > MAX_LEASE_SECONDS) {
    throw new DhcpError('config', `lease time ${seconds} s must be an integer from ${MIN_LEASE_SECONDS} to ${MAX_LEASE_SECONDS}`);
  }
  const lease = uint32Value(seconds);
  const renewal = uint32Value(Math.floor(seconds / 2));
  const rebinding = uint32Value(Math.floor((seconds * 7) / 8));
  return (request, response) => {
    if (!carriesConfiguration(response) || request.messageType === MESSAGE_TYPE.inform) return next(response);
    return next(withOption(withOption(withOption(response, OPTION.leaseTime, lease), OPTION.renewalTime, renewal), OPTION.rebindingTime, rebinding));
  };
}

/** RFC 6842: a client identifier sent by the client MUST come back in every reply. */
export function setupClientIdentifierEcho(): DhcpHandler {
  return (request, response) => {
    const id = request.packet.options.get(OPTION.clientIdentifier);
    return next(id !== undefined && response.drop === undefined ? withOption(response, OPTION.clientIdentifier, id) : response);
  };
}

/** Options a reply keeps whatever the client asked for (RFC 2131 4.3.1 and table 3). */
export const ALWAYS_SENT: readonly number[] = [
  OPTION.messageType,
  OPTION.serverId,
  OPTION.leaseTime,
  OPTION.message,
  OPTION.clientIdentifier,
];

/**
 * Last in the chain: when the client sent a parameter request list (55), keep only what it asked
 * for plus the mandatory options; a client that sent none gets everything configured.
 */
export function setupParameterRequestFilter(config: { readonly alwaysSent?: readonly number[] } = {}): DhcpHandler {
  const always = new Set(config.alwaysSent ?? ALWAYS_SENT);
  return (request, response) => {
    const asked = request.packet.options.get(OPTION.parameterRequestList);
    if (asked === undefined || response.drop !== undefined || responseType(response) === undefined) return next(response);
    // The chain's own reply: trimmed in place (deleting the current key while iterating a Map is safe).
    for (const code of response.packet.options.keys()) {
      if (!always.has(code) && !asked.includes(code)) response.packet.options.delete(code);
    }
    return next(response);
  };
}
