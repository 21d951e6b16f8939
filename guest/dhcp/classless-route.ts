import { DhcpError } from './dhcp-error.js';
import { type Ipv4Text, ipv4Octets, readIpv4 } from './ipv4.js';

/** One RFC 3442 route: destination/prefix via router (0.0.0.0 = on-link). */
export interface ClasslessRoute {
  readonly destination: Ipv4Text;
  readonly prefixLength: number;
  readonly router: Ipv4Text;
}

/** Option 121 value: per route, the prefix length, the significant destination octets, the router. */
export function encodeClasslessRoutes(routes: readonly ClasslessRoute[]): Uint8Array {
  const bytes: number[] = [];
  for (const route of routes) {
    if (!Number.isInteger(route.prefixLength) || route.prefixLength < 0 || route.prefixLength > 32) {
      throw new DhcpError('config', `route prefix length ${route.prefixLength} is not 0..32`);
    }
    const significant = Math.ceil(route.prefixLength / 8);
    const destination = ipv4Octets(route.destination);
    // A destination with host bits set would be silently cut; refuse it so the config says what it means.
    const mask = route.prefixLength === 0 ? 0 : (0xffffffff << (32 - route.prefixLength)) >>> 0;
    const value = ((destination[0] << 24) | (destination[1] << 16) | (destination[2] << 8) | destination[3]) >>> 0;
    if ((value & ~mask) >>> 0 !== 0) {
      throw new DhcpError('config', `route ${route.destination}/${route.prefixLength} has host bits set: use the network address`);
    }
    bytes.push(route.prefixLength, ...destination.slice(0, significant), ...ipv4Octets(route.router));
  }
  return Uint8Array.from(bytes);
}

export function decodeClasslessRoutes(value: Uint8Array): ClasslessRoute[] {
  const routes: ClasslessRoute[] = [];
  let offset = 0;
  while (offset < value.length) {
    const prefixLength = value[offset] ?? 0;
    if (prefixLength > 32) throw new DhcpError('bad-option', `option 121: prefix length ${prefixLength} is more than 32`);
    const significant = Math.ceil(prefixLength / 8);
    if (offset + 1 + significant + 4 > value.length) throw new DhcpError('bad-option', 'option 121: a route is cut short');
    const destination = new Uint8Array(4);
    destination.set(value.subarray(offset + 1, offset + 1 + significant));
    routes.push({ destination: readIpv4(destination, 0), prefixLength, router: readIpv4(value, offset + 1 + significant) });
    offset += 1 + significant + 4;
  }
  return routes;
}
