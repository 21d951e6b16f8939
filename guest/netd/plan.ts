// The pure planner: from the kernel's state (as the agent sees it) and the agent's options,
// what must exist, and which operations bring the kernel there. Nothing here touches the system.
import { GATEWAY_IP, PROVIDER_LINK_GROUP } from '../../shared/scheme.js';
import { type FirewallModel, isUsableInterfaceName } from '../firewall/model.js';
import type { ProviderLink } from '../services-port.js';
import {
  CLIENT_MARK,
  type KernelAddress,
  type KernelEvent,
  type KernelNeighbour,
  type KernelRoute,
  type KernelView,
  RTPROT_BOOT,
  type SysctlKey,
  addressKey,
  applyEvent,
  emptyView,
  neighbourKey,
  routeKey,
  sysctlKeyId,
  sysctlName,
} from './kernel-view.js';
import { type LinkClass, classifyLink } from './link-class.js';

/** `run`: a provider VM (serves clients, forwards); `client`: an app VM (configures its own links). */
export type AgentMode = 'provider' | 'client';

export interface PlanOptions {
  readonly mode: AgentMode;
  readonly ignored: ReadonlySet<string>;
  readonly allowedPairs: FirewallModel['allowedPairs'];
}

/**
 * Provider links known to be configured: reported configured by the previous plan, and touched
 * by no kernel event since (see dirtyLinks). Their per-link checks are skipped, which keeps a
 * plan on a provider with a thousand links cheap; everything global is still computed.
 */
export type KnownConfigured = ReadonlySet<number>;

/**
 * Provider links the agent served, with the client IP each served (ifindex -> IP), carried from
 * one plan to the next (Plan.served): a link that stops serving (its MAC changed, or its name
 * can no longer go into the firewall) loses the gateway address, route and neighbour the agent
 * gave it, and a link already serving a client keeps it when another link claims the same id.
 */
export type ServedLinks = ReadonlyMap<number, string>;

/**
 * The links an event may have changed for the planner: the link it names, and for a route the
 * link serving its destination too (a client's route can be moved to another interface).
 */
export function dirtyLinks(event: KernelEvent, servingIp: ReadonlyMap<string, number>): number[] {
  switch (event.kind) {
    case 'link':
      return [event.link.ifindex];
    case 'address':
      return [event.address.ifindex];
    case 'neighbour':
      return [event.neighbour.ifindex, ...(servingIp.has(event.neighbour.ip) ? [servingIp.get(event.neighbour.ip) as number] : [])];
    case 'route': {
      const dirty = event.route.oif === null ? [] : [event.route.oif];
      const server = servingIp.get(event.route.dst);
      return server === undefined ? dirty : [...dirty, server];
    }
  }
}

export type Operation =
  | { readonly kind: 'sysctl'; readonly key: SysctlKey; readonly value: string }
  /**
   * Bring a link up; with `group`, put it in that device group in the same request (the kernel
   * sets the group before the flags), so a provider link is never up outside the firewall's guard.
   */
  | { readonly kind: 'link-up'; readonly ifindex: number; readonly group?: number }
  /** Put a link that stays as it is (up or down) in a device group: see PROVIDER_LINK_GROUP. */
  | { readonly kind: 'link-group'; readonly ifindex: number; readonly group: number }
  /** A provider link the firewall cannot hold (see UNUSABLE_NAME): down, so it carries nothing unfiltered. */
  | { readonly kind: 'link-down'; readonly ifindex: number }
  | { readonly kind: 'address-add'; readonly address: KernelAddress }
  | { readonly kind: 'address-del'; readonly address: KernelAddress }
  /** Create or replace (same table, prefix and metric). No gateway: a link-scope route. */
  | { readonly kind: 'route-set'; readonly route: KernelRoute }
  | { readonly kind: 'route-del'; readonly route: KernelRoute }
  | { readonly kind: 'neighbour-set'; readonly neighbour: KernelNeighbour & { readonly mac: string } }
  | { readonly kind: 'neighbour-del'; readonly neighbour: KernelNeighbour };

/** How a link stands, for `status`. */
export type LinkState = 'configured' | 'pending' | 'conflict' | 'unmanaged' | 'ignored';

export interface LinkReport {
  readonly ifindex: number;
  readonly name: string;
  readonly role: LinkClass['role'];
  readonly id: number | null;
  /** The client's IP on a provider link; our own IP on a client link. */
  readonly ip: string | null;
  readonly state: LinkState;
  readonly note: string | null;
  /**
   * Client mode: its addresses that this link keeps though it no longer wants them (ip/prefix),
   * as the link's last IPv4 addresses while routes or permanent neighbour entries not ours would
   * go with them (see removeUnwanted).
   */
  readonly kept?: readonly string[];
}

export interface Plan {
  /** Sysctls whose current value the planner needs but the view lacks: read them, plan again. */
  readonly unknownSysctls: readonly SysctlKey[];
  readonly operations: readonly Operation[];
  readonly links: readonly LinkReport[];
  readonly firewall: FirewallModel;
  readonly providerLinks: readonly ProviderLink[];
  /**
   * A provider's configured link to its own upstream provider (a chained provider), whose
   * gateway 169.254.0.1 is also our address: the DNS forwarder reaches that provider's through it.
   */
  readonly upstreamLink: UpstreamLink | null;
  /**
   * The upstream link exists but is not configured yet: once this plan's operations are done it
   * is, and only a new plan says so (upstreamLink is the one output that depends on them).
   */
  readonly upstreamPending: boolean;
  /** What to pass as `served` to the next plan: the links serving now, and those still to clean. */
  readonly served: ServedLinks;
}

export interface UpstreamLink {
  readonly ifname: string;
  /** What the DNS forwarder's sockets toward the upstream provider are bound by. */
  readonly ifindex: number;
  /** Our address on it. */
  readonly ownIp: string;
}

export const IP_FORWARD: SysctlKey = { ifindex: null, template: 'net/ipv4/ip_forward' };
export const disableIpv6Of = (ifindex: number): SysctlKey => ({ ifindex, template: 'net/ipv6/conf/{}/disable_ipv6' });
/**
 * Answer an ARP request on a link only when our route to its sender leaves by that link. Linux
 * answers a request for one of its addresses from any sender, and first makes (or refreshes) a
 * neighbour entry for that sender on the link. So a client naming a new sender in each request
 * filled the provider's whole neighbour table (gc_thresh3, 1024 by default) in a moment, and kept
 * it full: no new entry could be made, for the uplink's gateway either, and every client lost its
 * traffic upstream. With arp_filter only the link's own client is answered, the one address
 * routed through it; ARP probes (sender 0.0.0.0) still are. The firewall's ARP guard (ruleset.ts,
 * staticArpTableText) holds the same line whatever the sysctls say (arp_accept makes entries from
 * gratuitous ARP and replies, which arp_filter does not look at); this stays as a second line, in
 * force from before the link comes up.
 */
export const arpFilterOf = (ifindex: number): SysctlKey => ({ ifindex, template: 'net/ipv4/conf/{}/arp_filter' });
/**
 * Answer an ARP request on a link only for an address on that link: the gateway, 169.254.0.1.
 * Linux answers by default (arp_ignore 0) for every address of the provider, whatever link it is
 * on: a client could map the uplink's address and others by ARP, which nothing else tells it.
 */
export const arpIgnoreOf = (ifindex: number): SysctlKey => ({ ifindex, template: 'net/ipv4/conf/{}/arp_ignore' });
/** Take packets whose source is one of our addresses: a chained provider's upstream answers from 169.254.0.1. */
export const acceptLocalOf = (ifindex: number): SysctlKey => ({ ifindex, template: 'net/ipv4/conf/{}/accept_local' });

/** Sysctl values the kernel reports when a file is missing (e.g. IPv6 compiled out). */
export const SYSCTL_ABSENT = 'absent';

const ourMac = (mac: string): string => mac.toLowerCase();
const inClientNetwork = (ip: string): boolean => ip.startsWith('100.64.');
/** A unicast address a neighbour entry can be for: not 0.0.0.0, multicast (224/4), class E or broadcast (240/4). */
const isUnicast = (ip: string): boolean => {
  const first = Number(ip.split('.', 1)[0]);
  return ip !== '0.0.0.0' && first < 224;
};

interface Wanted {
  readonly operations: Operation[];
  readonly unknown: SysctlKey[];
}

function wantSysctl(view: KernelView, wanted: Wanted, key: SysctlKey, value: string): boolean {
  const current = view.sysctls.get(sysctlKeyId(key));
  if (current === undefined) {
    wanted.unknown.push(key);
    return false;
  }
  if (current === SYSCTL_ABSENT || current === value) return true;
  wanted.operations.push({ kind: 'sysctl', key, value });
  return false;
}

function wantUp(view: KernelView, wanted: Wanted, ifindex: number, group: number | null = null): boolean {
  const link = view.links.get(ifindex);
  const regroup = group !== null && link?.group !== group;
  if (link?.up === true) return !regroup || wantGroup(view, wanted, ifindex, group);
  wanted.operations.push({ kind: 'link-up', ifindex, ...(regroup && { group }) });
  return false;
}

function wantGroup(view: KernelView, wanted: Wanted, ifindex: number, group: number): boolean {
  if (view.links.get(ifindex)?.group === group) return true;
  wanted.operations.push({ kind: 'link-group', ifindex, group });
  return false;
}

function wantAddress(view: KernelView, wanted: Wanted, address: KernelAddress): boolean {
  if (view.addresses.has(addressKey(address))) return true;
  wanted.operations.push({ kind: 'address-add', address });
  return false;
}

function wantRoute(view: KernelView, wanted: Wanted, route: KernelRoute): boolean {
  const current = view.routes.get(routeKey(route));
  if (current !== undefined && current.oif === route.oif && current.gateway === route.gateway) return true;
  wanted.operations.push({ kind: 'route-set', route });
  return false;
}

function wantNeighbour(view: KernelView, wanted: Wanted, neighbour: KernelNeighbour & { mac: string }): boolean {
  const current = view.neighbours.get(neighbourKey(neighbour));
  if (current !== undefined && current.permanent && current.mac === neighbour.mac) return true;
  wanted.operations.push({ kind: 'neighbour-set', neighbour });
  return false;
}

/** Compute the desired state and the operations that reach it. */
export function plan(view: KernelView, options: PlanOptions, knownConfigured: KnownConfigured = new Set(), served: ServedLinks = new Map()): Plan {
  const wanted: Wanted = { operations: [], unknown: [] };
  const reports: LinkReport[] = [];
  const providerLinks: ProviderLink[] = [];
  const uplinks: string[] = [];
  const links = [...view.links.values()].sort((a, b) => a.ifindex - b.ifindex);
  const classes = new Map(links.map((link) => [link.ifindex, classifyLink(link, options.ignored)]));
  const holders = options.mode === 'provider' ? holdersById(view, links, classes, served) : new Map<number, number>();
  const isolatedLinks: string[] = [];
  // What the client side is marked with: client mode's own mark (see CLIENT_MARK); in a provider,
  // its upstream link is configured as before, like the provider's own links.
  const marks = options.mode === 'client' ? { address: CLIENT_MARK, route: CLIENT_MARK } : { address: 0, route: RTPROT_BOOT };
  const unwantedOwn = options.mode === 'client' ? unwantedMarkedAddresses(view, classes) : new Map<number, KernelAddress[]>();
  let primaryClientLink: number | null = null;
  let upstreamLink: UpstreamLink | null = null;
  let upstreamPending = false;

  if (options.mode === 'provider') wantSysctl(view, wanted, IP_FORWARD, '1');

  for (const link of links) {
    const linkClass = classes.get(link.ifindex) ?? { role: 'ignored', reason: 'unclassified' };
    const report = (state: LinkState, note: string | null = null): void => {
      const id = linkClass.role === 'provider' || linkClass.role === 'client' ? linkClass.id : null;
      const ip = linkClass.role === 'provider' ? linkClass.clientIp : linkClass.role === 'client' ? linkClass.ownIp : null;
      reports.push({ ifindex: link.ifindex, name: link.name, role: linkClass.role, id, ip, state, note });
    };
    // The firewall's guard drops what comes from (or goes to) a link of PROVIDER_LINK_GROUP whose
    // name is not among its client links: in a provider, a link that is no provider link any more
    // (its MAC changed) leaves the group, or all its traffic would be dropped.
    // (A client link does so as it comes up.) In a client VM no link is guarded: groups are left alone.
    const leaveGroup = options.mode === 'provider' && linkClass.role !== 'provider' && link.group === PROVIDER_LINK_GROUP;
    if (leaveGroup && linkClass.role !== 'client') wantGroup(view, wanted, link.ifindex, 0);
    switch (linkClass.role) {
      case 'ignored':
        report('ignored', linkClass.reason);
        break;
      case 'uplink':
        if (options.mode === 'client') report('ignored', 'addressing is left to the network manager');
        else if (!isUsableInterfaceName(link.name)) report('unmanaged', `not masqueraded: ${UNUSABLE_NAME}`);
        else {
          uplinks.push(link.name);
          report('unmanaged', 'addressing is left to the network manager');
        }
        break;
      case 'provider': {
        if (options.mode === 'client') {
          report('ignored', 'provider-side link in client mode');
          break;
        }
        if (!isUsableInterfaceName(link.name)) {
          // The firewall's sets cannot name it, so only the group guard filters it (all its traffic
          // dropped, from the rename on: renamed while up, which Linux allows since 6.2). Down as
          // well, which the guard makes redundant but costs nothing and reads plainly in status.
          wantGroup(view, wanted, link.ifindex, PROVIDER_LINK_GROUP);
          if (link.up) wanted.operations.push({ kind: 'link-down', ifindex: link.ifindex });
          report('conflict', `not served, kept down: ${UNUSABLE_NAME}`);
          break;
        }
        const holder = holders.get(linkClass.id);
        if (holder !== link.ifindex) {
          // Never moved to this link: the client served on the other one keeps its traffic, and
          // this link's, whoever is behind it, is dropped.
          isolatedLinks.push(link.name);
          wantGroup(view, wanted, link.ifindex, PROVIDER_LINK_GROUP);
          report('conflict', `client id ${linkClass.id} is already served on ${view.links.get(holder ?? -1)?.name ?? '?'}; all its traffic is dropped`);
          break;
        }
        // IPv6 off before the link comes up, so it never autoconfigures or solicits routers.
        const done = knownConfigured.has(link.ifindex) || [
          wantSysctl(view, wanted, disableIpv6Of(link.ifindex), '1'),
          // Before it comes up as well, so that no client can fill the neighbour table meanwhile.
          wantSysctl(view, wanted, arpFilterOf(link.ifindex), '1'),
          wantSysctl(view, wanted, arpIgnoreOf(link.ifindex), '1'),
          // Into the guarded group before (or as) it comes up: see PROVIDER_LINK_GROUP.
          wantUp(view, wanted, link.ifindex, PROVIDER_LINK_GROUP),
          wantAddress(view, wanted, { ifindex: link.ifindex, ip: GATEWAY_IP, prefixLength: 32, proto: 0 }),
          wantRoute(view, wanted, { dst: linkClass.clientIp, dstLength: 32, oif: link.ifindex, gateway: null, priority: 0, protocol: RTPROT_BOOT }),
          wantNeighbour(view, wanted, {
            ifindex: link.ifindex,
            ip: linkClass.clientIp,
            mac: ourMac(linkClass.clientMac),
            permanent: true,
          }),
        ].every(Boolean);
        providerLinks.push({
          ifname: link.name,
          ifindex: link.ifindex,
          id: linkClass.id,
          clientIp: linkClass.clientIp,
          clientMac: linkClass.clientMac,
        });
        report(done ? 'configured' : 'pending');
        break;
      }
      case 'client': {
        if (options.mode === 'provider' && isUsableInterfaceName(link.name)) uplinks.push(link.name);
        const steps = [
          wantUp(view, wanted, link.ifindex, leaveGroup ? 0 : null),
          wantAddress(view, wanted, { ifindex: link.ifindex, ip: linkClass.ownIp, prefixLength: 32, proto: marks.address }),
        ];
        // The /32 of another client id on this link (its MAC changed): the kernel would keep
        // sending from it, and the provider now serving this link drops it as spoofed. Client
        // mode removes only its own (removeUnwanted); a chained provider, any such /32.
        if (options.mode === 'provider') {
          for (const address of view.addresses.values()) {
            if (address.ifindex !== link.ifindex || address.prefixLength !== 32 || !inClientNetwork(address.ip) || address.ip === linkClass.ownIp) continue;
            wanted.operations.push({ kind: 'address-del', address });
            steps.push(false);
          }
        } else if (unwantedOwn.has(link.ifindex)) steps.push(false);
        let note: string | null = null;
        // Like Spectrum's app VM script, the first client link gets the gateway and default
        // routes; a second one would collide with them (the same /32 to 169.254.0.1).
        if (primaryClientLink === null) {
          primaryClientLink = link.ifindex;
          steps.push(wantRoute(view, wanted, { dst: GATEWAY_IP, dstLength: 32, oif: link.ifindex, gateway: null, priority: 0, protocol: marks.route }));
          if (options.mode === 'provider') steps.push(wantSysctl(view, wanted, acceptLocalOf(link.ifindex), '1'));
          // Any default route but ours (whatever its metric) is left alone: replacing the metric-0
          // one would take a physical NIC's default away when ours was given a higher metric.
          // One the dump could not read counts: a default it does not know of is still someone's.
          // Client mode's own through another link (a former primary's) goes instead (removeUnwanted).
          const otherDefaults = [...view.routes.values()].filter(
            (route) =>
              route.dstLength === 0 &&
              !(route.oif === link.ifindex && route.gateway === GATEWAY_IP) &&
              !(options.mode === 'client' && route.protocol === CLIENT_MARK),
          );
          if (view.unreadableDefaultRoute !== true && otherDefaults.length === 0) {
            steps.push(wantRoute(view, wanted, { dst: '0.0.0.0', dstLength: 0, oif: link.ifindex, gateway: GATEWAY_IP, priority: 0, protocol: marks.route }));
          } else if (otherDefaults.length > 0 && otherDefaults.every((route) => route.oif === link.ifindex)) {
            // Through this link, by another next hop (an IPv6 one, say: RFC 5549) or none; read so
            // whatever a dump could not read besides.
            const hops = otherDefaults.map((route) => (route.gateway === null ? 'with no gateway' : `via ${route.gateway}`));
            note = `a default route not ours through this link ${[...new Set(hops)].join(' and ')} exists; left alone`;
          } else if (otherDefaults.length === 0 && view.cutShort?.has('routes') === true) {
            // None read: the dump ended before it came to one, if there is one (or was refused, and came to none).
            note = 'the routes could not be read whole (their dump failed, or was refused: see the log): a default route the dump did not come to would be left alone, so ours is not added yet';
          } else note = 'a default route through another interface exists; left alone';
        } else note = 'not the first client link: address only';
        const configured = steps.every(Boolean);
        if (options.mode === 'provider' && primaryClientLink === link.ifindex) {
          if (configured) upstreamLink = { ifname: link.name, ifindex: link.ifindex, ownIp: linkClass.ownIp };
          else upstreamPending = true;
        }
        report(configured ? 'configured' : 'pending', note);
        break;
      }
    }
  }

  // What we made for a client that a provider link no longer serves (its MAC changed): gone.
  const servedNow = new Map(providerLinks.map((link) => [link.ifindex, link.clientIp]));
  // The links still to clean join the next plan's map; copied only then (a plan runs per event).
  let nextServed = servedNow;
  if (options.mode === 'provider') {
    for (const route of view.routes.values()) {
      if (route.oif === null || !servedNow.has(route.oif)) continue;
      if (route.dstLength === 32 && inClientNetwork(route.dst) && route.dst !== servedNow.get(route.oif)) {
        wanted.operations.push({ kind: 'route-del', route });
      }
    }
    for (const neighbour of view.neighbours.values()) {
      const clientIp = servedNow.get(neighbour.ifindex);
      if (clientIp === undefined || neighbour.ip === clientIp) continue;
      // Permanent: one we made for a former client of the link (another address's is an operator's).
      // Not permanent: learnt from the client's ARP for an address not its own, which nothing here
      // routes through the link. The firewall's ARP guard makes no new one, but one made before it
      // (an agent upgraded on a running provider, arp_accept set before the table was made) stays:
      // any ARP from its address refreshed it, arp_filter or not, and once the guard stops that
      // the kernel evicts it only under pressure (at gc_thresh1, 60 s after it went stale; at
      // gc_thresh2, 5 s after its last update), so a few hundred such entries could sit there
      // until the table is nearly full. Deleted now, they free their room at once. The provider's
      // own traffic to such an address (a socket bound to the link) makes one too, which never
      // resolves (the guard drops any answer): deleted as it fails (the kernel says so after its
      // probes, every ~3 s while that traffic lasts, deleted or not), a request and a reconcile
      // each time. Only unicast:
      // the kernel makes a NOARP entry for a broadcast or multicast address it sends to (a DHCP
      // reply to 255.255.255.255) and would make it again at the next send.
      if (neighbour.permanent ? inClientNetwork(neighbour.ip) : isUnicast(neighbour.ip)) {
        wanted.operations.push({ kind: 'neighbour-del', neighbour });
      }
    }
    // A link that served and serves no more (now an uplink, a client link, a duplicate, or named
    // so that the firewall cannot hold it): the gateway address, route and neighbour we gave it
    // go, or it would answer for the gateway and draw the client's traffic while unfiltered.
    for (const [ifindex, clientIp] of served) {
      if (servedNow.has(ifindex) || !view.links.has(ifindex)) continue;
      const before = wanted.operations.length;
      const gateway = view.addresses.get(addressKey({ ifindex, ip: GATEWAY_IP, prefixLength: 32 }));
      if (gateway !== undefined) wanted.operations.push({ kind: 'address-del', address: gateway });
      const route = view.routes.get(routeKey({ dst: clientIp, dstLength: 32, priority: 0 }));
      if (route?.oif === ifindex) wanted.operations.push({ kind: 'route-del', route });
      const neighbour = view.neighbours.get(neighbourKey({ ifindex, ip: clientIp }));
      if (neighbour?.permanent === true) wanted.operations.push({ kind: 'neighbour-del', neighbour });
      if (wanted.operations.length === before) continue;
      if (nextServed === servedNow) nextServed = new Map(servedNow);
      nextServed.set(ifindex, clientIp);
    }
  }

  if (options.mode === 'client') removeUnwanted(view, wanted, unwantedOwn, primaryClientLink, reports);

  return {
    unknownSysctls: wanted.unknown,
    // Sysctls first (IPv6 off before link up), then links up before routes through them.
    operations: orderOperations(wanted.operations),
    links: reports,
    firewall: {
      providerLinks: providerLinks.map((link) => ({ ifname: link.ifname, clientIp: link.clientIp })),
      uplinks,
      allowedPairs: options.allowedPairs,
      ...(isolatedLinks.length > 0 && { isolatedLinks }),
    },
    providerLinks,
    upstreamLink,
    upstreamPending,
    served: nextServed,
  };
}

/** What the kernel marks the routes it makes itself with (an address's prefix route). */
const RTPROT_KERNEL = 2;

/** Client mode's addresses that it no longer wants, by link: all but each client link's own /32. */
function unwantedMarkedAddresses(view: KernelView, classes: ReadonlyMap<number, LinkClass>): Map<number, KernelAddress[]> {
  const unwanted = new Map<number, KernelAddress[]>();
  for (const address of view.addresses.values()) {
    if (address.proto !== CLIENT_MARK) continue;
    const linkClass = classes.get(address.ifindex);
    // On a link the view lacks (after a links dump cut short): not known to be unwanted.
    if (linkClass === undefined) continue;
    if (linkClass.role === 'client' && address.ip === linkClass.ownIp && address.prefixLength === 32) continue;
    const ofLink = unwanted.get(address.ifindex);
    if (ofLink === undefined) unwanted.set(address.ifindex, [address]);
    else ofLink.push(address);
  }
  return unwanted;
}

/** Whether `route` is one client mode configures on its primary link `primary`: the gateway's /32, or the default through it. */
function isPrimaryRoute(route: KernelRoute, primary: number | null): boolean {
  if (primary === null || route.oif !== primary || route.priority !== 0) return false;
  return (route.dstLength === 32 && route.dst === GATEWAY_IP && route.gateway === null) || (route.dstLength === 0 && route.gateway === GATEWAY_IP);
}

/**
 * Client mode: what carries its mark (CLIENT_MARK) and is no longer wanted goes, whatever run
 * made it, and nothing without the mark: an address on a link that is no client link any more
 * (its MAC changed, it is --ignore'd) or of its former client id, the routes of a former primary
 * link. Kept while another route is being set in its place (the replace does it), and so is a
 * link's last IPv4 address while routes not ours go out of it or permanent neighbour entries are
 * on it (client mode makes none): the kernel drops every route through a link with its last
 * address, and flushes its neighbour table, permanent entries too (fib_disable_ip), and ours must
 * not take anyone else's along (the link's report says so: its note, and `kept`). Kept as well
 * while the last re-read's dump of the routes or neighbours was cut short by an error
 * (KernelView.cutShort): one not listed may go out of it, or be on it. Nothing on a link the view
 * lacks goes: a links dump cut short did not list it (the kernel drops a gone link's own).
 */
function removeUnwanted(view: KernelView, wanted: Wanted, unwanted: ReadonlyMap<number, readonly KernelAddress[]>, primary: number | null, reports: LinkReport[]): void {
  const replaced = new Set<string>();
  const added = new Set<number>();
  for (const operation of wanted.operations) {
    if (operation.kind === 'route-set') replaced.add(routeKey(operation.route));
    if (operation.kind === 'address-add') added.add(operation.address.ifindex);
  }
  for (const route of view.routes.values()) {
    if (route.protocol !== CLIENT_MARK || isPrimaryRoute(route, primary) || replaced.has(routeKey(route))) continue;
    // Out of a link the view lacks (after a links dump cut short): maybe the primary's. One of a
    // link gone went with it (the kernel drops a device's routes; the view forgets them).
    if (route.oif !== null && !view.links.has(route.oif)) continue;
    wanted.operations.push({ kind: 'route-del', route });
  }
  for (const [ifindex, addresses] of unwanted) {
    const othersStay = added.has(ifindex) || [...view.addresses.values()].some((address) => address.ifindex === ifindex && !addresses.includes(address));
    // The kernel's own routes through it are those of these addresses (their prefixes); one this
    // plan replaces with its own leaves the link.
    const theirs = othersStay
      ? []
      : [...view.routes.values()].filter(
          (route) => route.oif === ifindex && route.protocol !== CLIENT_MARK && route.protocol !== RTPROT_KERNEL && !replaced.has(routeKey(route)),
        );
    const pinned = othersStay ? [] : [...view.neighbours.values()].filter((neighbour) => neighbour.ifindex === ifindex && neighbour.permanent);
    // What a dump cut short did not come to may go out of it, or be on it, all the same.
    const unlisted = othersStay ? [] : (['routes', 'neighbours'] as const).filter((table) => view.cutShort?.has(table) === true);
    if (theirs.length === 0 && pinned.length === 0 && unlisted.length === 0) {
      for (const address of addresses) wanted.operations.push({ kind: 'address-del', address });
      continue;
    }
    const at = reports.findIndex((report) => report.ifindex === ifindex);
    const report = reports[at];
    if (report === undefined) continue;
    const kept = addresses.map((address) => `${address.ip}/${address.prefixLength}`);
    const what = [theirs.length > 0 ? 'routes' : null, pinned.length > 0 ? 'permanent neighbour entries' : null].filter((part) => part !== null).join(' and ');
    const entries = [
      ...theirs.map((route) => (route.dstLength === 0 ? 'default' : `${route.dst}/${route.dstLength}`)),
      ...pinned.map((neighbour) => `neighbour ${neighbour.ip}`),
    ].join(', ');
    const why =
      what === ''
        ? `keeps ${kept.join(', ')} of client mode's: deleting its last IPv4 address would take any route or neighbour entry not ours with it, and the ${unlisted.join(' and ')} could not be read whole (a dump failed, or was refused: see the log)`
        : `keeps ${kept.join(', ')} of client mode's: deleting its last IPv4 address would take ${what} not ours with it (${entries})`;
    reports[at] = { ...report, note: report.note === null ? why : `${report.note}; ${why}`, kept };
  }
}

const UNUSABLE_NAME = "its name cannot go into the nftables ruleset: rename it (letters, digits, '_', '.', '-')";

/**
 * Which link serves each client id that several provider links claim: the one that served it at
 * the last plan, else the one its route already leads out of (an agent restarted), else the
 * oldest (lowest ifindex). A link whose name the firewall cannot hold serves nobody.
 */
function holdersById(
  view: KernelView,
  links: readonly { readonly ifindex: number; readonly name: string }[],
  classes: ReadonlyMap<number, LinkClass>,
  served: ServedLinks,
): Map<number, number> {
  const holders = new Map<number, number>();
  const rank = (ifindex: number, clientIp: string): number => {
    if (served.get(ifindex) === clientIp) return 0;
    return view.routes.get(routeKey({ dst: clientIp, dstLength: 32, priority: 0 }))?.oif === ifindex ? 1 : 2;
  };
  for (const link of links) {
    const linkClass = classes.get(link.ifindex);
    if (linkClass?.role !== 'provider' || !isUsableInterfaceName(link.name)) continue;
    const current = holders.get(linkClass.id);
    // Links come sorted by ifindex: a later one wins only by a better rank.
    if (current === undefined || rank(link.ifindex, linkClass.clientIp) < rank(current, linkClass.clientIp)) holders.set(linkClass.id, link.ifindex);
  }
  return holders;
}

const PHASE: Record<Operation['kind'], number> = {
  sysctl: 0,
  'route-del': 1,
  'neighbour-del': 1,
  // Joining the group only takes away (isRemoval: before the firewall); leaving it goes with the
  // link's other changes (the sets still name the link until the firewall drops it), and before a
  // client link's routes.
  'link-group': 1,
  'link-up': 2,
  // After the route and neighbour deletions it makes moot (they would fail once it is down).
  'link-down': 2,
  'address-add': 3,
  // After the additions: a link losing its last IPv4 address has all its routes flushed by the
  // kernel, with no notification for each (the view would keep them).
  'address-del': 3,
  'route-set': 4,
  'neighbour-set': 4,
};

function orderOperations(operations: readonly Operation[]): Operation[] {
  // Stable sort keeps a link's gateway route ahead of its default route.
  return [...operations].sort((a, b) => PHASE[a.kind] - PHASE[b.kind]);
}

/** What a successful operation changes in the view (the kernel's notification will agree). */
export function applyOperation(view: KernelView, operation: Operation): void {
  switch (operation.kind) {
    case 'sysctl':
      view.sysctls.set(sysctlKeyId(operation.key), operation.value);
      return;
    case 'link-up': {
      const link = view.links.get(operation.ifindex);
      if (link !== undefined) view.links.set(link.ifindex, { ...link, up: true, group: operation.group ?? link.group });
      return;
    }
    case 'link-group': {
      const link = view.links.get(operation.ifindex);
      if (link !== undefined) view.links.set(link.ifindex, { ...link, group: operation.group });
      return;
    }
    case 'link-down': {
      // As the kernel's notification would: down flushes the link's routes and neighbours.
      const link = view.links.get(operation.ifindex);
      if (link !== undefined) applyEvent(view, { kind: 'link', op: 'new', link: { ...link, up: false } });
      return;
    }
    case 'address-add':
      view.addresses.set(addressKey(operation.address), operation.address);
      return;
    case 'address-del':
      view.addresses.delete(addressKey(operation.address));
      return;
    case 'route-set':
      view.routes.set(routeKey(operation.route), operation.route);
      return;
    case 'route-del':
      view.routes.delete(routeKey(operation.route));
      return;
    case 'neighbour-set':
      view.neighbours.set(neighbourKey(operation.neighbour), operation.neighbour);
      return;
    case 'neighbour-del':
      view.neighbours.delete(neighbourKey(operation.neighbour));
      return;
  }
}

/**
 * Whether an operation only takes away (a route, a neighbour, a link's up state, a link joining
 * the guarded group): never a way in for a client, so the agent applies these before the firewall
 * changes, the rest after.
 */
export function isRemoval(operation: Operation): boolean {
  switch (operation.kind) {
    case 'route-del':
    case 'neighbour-del':
    case 'link-down':
      return true;
    case 'link-group':
      return operation.group === PROVIDER_LINK_GROUP;
    default:
      return false;
  }
}

/**
 * The notification the kernel sends once `operation` is done, as `view` (before it) lets us know
 * it: the link with its new state, the address, route or neighbour entry made or deleted. Null
 * for a sysctl (no notification) or a link the view does not have.
 */
export function expectedEvent(view: KernelView, operation: Operation): KernelEvent | null {
  switch (operation.kind) {
    case 'sysctl':
      return null;
    case 'link-up':
    case 'link-down':
    case 'link-group': {
      const link = view.links.get(operation.ifindex);
      if (link === undefined) return null;
      // What applyOperation makes of the link alone is what the kernel announces.
      const alone = emptyView();
      alone.links.set(link.ifindex, link);
      applyOperation(alone, operation);
      const after = alone.links.get(link.ifindex);
      return after === undefined ? null : { kind: 'link', op: 'new', link: after };
    }
    case 'address-add':
    case 'address-del':
      return { kind: 'address', op: operation.kind === 'address-add' ? 'new' : 'del', address: operation.address };
    case 'route-set':
    case 'route-del':
      return { kind: 'route', op: operation.kind === 'route-set' ? 'new' : 'del', route: operation.route };
    case 'neighbour-set':
    case 'neighbour-del':
      return { kind: 'neighbour', op: operation.kind === 'neighbour-set' ? 'new' : 'del', neighbour: operation.neighbour };
  }
}

/** The link an operation concerns, for per-link error reports. */
export function operationIfindex(operation: Operation): number | null {
  switch (operation.kind) {
    case 'sysctl':
      return operation.key.ifindex;
    case 'link-up':
    case 'link-down':
    case 'link-group':
      return operation.ifindex;
    case 'address-add':
    case 'address-del':
      return operation.address.ifindex;
    case 'route-set':
    case 'route-del':
      return operation.route.oif;
    case 'neighbour-set':
    case 'neighbour-del':
      return operation.neighbour.ifindex;
  }
}

/** One line per operation, in `ip` words, for logs. */
export function describeOperation(operation: Operation, nameOf: (ifindex: number | null) => string): string {
  switch (operation.kind) {
    case 'sysctl':
      return `sysctl ${sysctlName(operation.key.template, nameOf(operation.key.ifindex))}=${operation.value}`;
    case 'link-up':
      return `link set ${nameOf(operation.ifindex)}${operation.group === undefined ? '' : ` group ${operation.group}`} up`;
    case 'link-group':
      return `link set ${nameOf(operation.ifindex)} group ${operation.group}`;
    case 'link-down':
      return `link set ${nameOf(operation.ifindex)} down`;
    case 'address-add':
      return `address add ${operation.address.ip}/${operation.address.prefixLength} dev ${nameOf(operation.address.ifindex)}${operation.address.proto === 0 ? '' : ` proto ${operation.address.proto}`}`;
    case 'address-del':
      return `address del ${operation.address.ip}/${operation.address.prefixLength} dev ${nameOf(operation.address.ifindex)}`;
    case 'route-set': {
      const { route } = operation;
      const via = route.gateway === null ? '' : ` via ${route.gateway}`;
      return `route replace ${route.dstLength === 0 ? 'default' : `${route.dst}/${route.dstLength}`}${via} dev ${nameOf(route.oif)} proto ${route.protocol}`;
    }
    case 'route-del':
      // Client mode's own are deleted only while they carry its mark (RtnetlinkKernel).
      return `route del ${operation.route.dst}/${operation.route.dstLength} dev ${nameOf(operation.route.oif)}${operation.route.protocol === CLIENT_MARK ? ` proto ${CLIENT_MARK}` : ''}`;
    case 'neighbour-set':
      return `neigh replace ${operation.neighbour.ip} lladdr ${operation.neighbour.mac} dev ${nameOf(operation.neighbour.ifindex)} nud permanent`;
    case 'neighbour-del':
      return `neigh del ${operation.neighbour.ip} dev ${nameOf(operation.neighbour.ifindex)}`;
  }
}
