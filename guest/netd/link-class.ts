import type { ClientId } from '../../shared/client-id.js';
import { clientIpTextOf } from '../../shared/client-ip.js';
import { clientMacOf, decodeLinkMac, parseMacOctets } from '../../shared/link-mac.js';
import { LINK_OUI } from '../../shared/scheme.js';
import type { KernelLink } from './kernel-view.js';

/**
 * What a link is to this VM, from its MAC (networking-facts.md 1(a), 1(d)):
 * - provider: our end of a client's link (OUI, octet 4 = 0x80): we serve client `id`;
 * - client: our end of a link to another provider (octet 4 = 0x00): we are its client;
 * - uplink: anything else but loopback, a physical NIC whose addressing belongs to others;
 * - ignored: loopback, --ignore'd, or an inter-VM MAC with reserved bits or a reserved id.
 */
export type LinkClass =
  | { readonly role: 'provider'; readonly id: ClientId; readonly clientIp: string; readonly clientMac: string }
  | { readonly role: 'client'; readonly id: ClientId; readonly ownIp: string }
  | { readonly role: 'uplink' }
  | { readonly role: 'ignored'; readonly reason: string };

export type LinkRoleName = LinkClass['role'];

// The planner classifies every link on every reconcile; what a MAC means never changes.
const byMac = new Map<string, LinkClass>();
const BY_MAC_MAX = 100_000;

export function classifyLink(link: KernelLink, ignored: ReadonlySet<string>): LinkClass {
  if (link.loopback) return { role: 'ignored', reason: 'loopback' };
  if (ignored.has(link.name)) return { role: 'ignored', reason: 'ignored by --ignore' };
  const known = byMac.get(link.mac);
  if (known !== undefined) return known;
  if (byMac.size >= BY_MAC_MAX) byMac.clear();
  const linkClass = classifyMac(link.mac);
  byMac.set(link.mac, linkClass);
  return linkClass;
}

function classifyMac(linkMac: string): LinkClass {
  let octets: number[];
  try {
    octets = parseMacOctets(linkMac);
  } catch {
    return { role: 'ignored', reason: 'no Ethernet address' };
  }
  if (octets[0] !== LINK_OUI[0] || octets[1] !== LINK_OUI[1] || octets[2] !== LINK_OUI[2]) return { role: 'uplink' };
  try {
    const mac = decodeLinkMac(octets);
    return mac.role === 'provider'
      ? { role: 'provider', id: mac.id, clientIp: clientIpTextOf(mac.id), clientMac: clientMacOf(mac.id) }
      : { role: 'client', id: mac.id, ownIp: clientIpTextOf(mac.id) };
  } catch (error) {
    // An inter-VM MAC we cannot decode is never a physical NIC: leave it alone, say why.
    return { role: 'ignored', reason: error instanceof Error ? error.message : 'undecodable inter-VM MAC' };
  }
}
