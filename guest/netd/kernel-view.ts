// The agent's picture of the kernel's IPv4 networking state in its namespace: links, addresses,
// main-table routes and neighbours, plus the sysctls it has read. Filled by a dump at start and
// kept current by rtnetlink notifications; every update is an idempotent upsert or delete of a
// whole entry, so replaying events on top of a later dump converges to the kernel's state.

export interface KernelLink {
  readonly ifindex: number;
  readonly name: string;
  /** Lower-case aa:bb:cc:dd:ee:ff; '' when the device has no hardware address. */
  readonly mac: string;
  /** Administratively up (IFF_UP). */
  readonly up: boolean;
  readonly loopback: boolean;
  /** Device group (IFLA_GROUP; 0 by default): provider links go into PROVIDER_LINK_GROUP. */
  readonly group: number;
  /**
   * The device it sits on, where IFLA_LINK names another index (a veth's peer, a VLAN's parent);
   * absent for a device of its own (a virtio-net NIC, a bridge, a tap). The kernel's linkwatch
   * handles such a device's link-state events as urgent (see RtnetlinkKernel, link-up).
   */
  readonly lowerIfindex?: number;
  /**
   * IFLA_MTU. Below 1280 the kernel takes IPv6 off the link, its sysctl files with it, and makes
   * it afresh (disable_ipv6 at the default) once the MTU is 1280 again; below 68, IPv4 likewise.
   */
  readonly mtu?: number;
}

export interface KernelAddress {
  readonly ifindex: number;
  readonly ip: string;
  readonly prefixLength: number;
  /**
   * Who made it (IFA_PROTO, Linux 6.3 on): CLIENT_MARK for what client mode adds; 0 where none
   * was given (the provider's, an operator's `ip addr add`), and on older kernels, which drop it.
   */
  readonly proto: number;
}

/** A route of the main table (254). */
export interface KernelRoute {
  readonly dst: string;
  readonly dstLength: number;
  /** Null for a route of several next hops (RTA_MULTIPATH alone names their devices). */
  readonly oif: number | null;
  /**
   * Its next hop: an IPv4 address (RTA_GATEWAY), or an IPv6 one (RTA_VIA, RFC 5549: an IPv4 route
   * via an IPv6 next hop), RFC 5952 text ('fe80::1'); null for none (a link route).
   */
  readonly gateway: string | null;
  readonly priority: number;
  /** Who made it (rtm_protocol): RTPROT_BOOT for the provider's, CLIENT_MARK for client mode's, others' as they gave it. */
  readonly protocol: number;
}

/** What `ip route add` marks its routes with: the provider's look like Spectrum's in `ip route`. */
export const RTPROT_BOOT = 3;

/**
 * What `spectrum-netd client` marks all it configures with: the rtm_protocol of its routes and
 * the IFA_PROTO of its addresses (`ip route show proto 236`; iproute2 6.3 on shows addresses' as
 * `proto 236`). No state file is kept: each run removes what carries this mark and is no longer
 * wanted, and never anything without it. Unassigned in iproute2's rt_protos (kernel values end at
 * 4; daemons' run to 192), and above the kernel's own address protos (1 to 3).
 */
export const CLIENT_MARK = 236;

export interface KernelNeighbour {
  readonly ifindex: number;
  readonly ip: string;
  /** Lower-case; null while unresolved. */
  readonly mac: string | null;
  readonly permanent: boolean;
}

/** A sysctl under /proc/sys, per interface (by ifindex, so a rename keeps it) or global. */
export interface SysctlKey {
  readonly ifindex: number | null;
  /** e.g. 'net/ipv4/ip_forward', or for a link 'net/ipv6/conf/{}/disable_ipv6' ({} = its name). */
  readonly template: string;
}

export interface KernelView {
  readonly links: Map<number, KernelLink>;
  readonly addresses: Map<string, KernelAddress>;
  readonly routes: Map<string, KernelRoute>;
  readonly neighbours: Map<string, KernelNeighbour>;
  /** Values read from or written to /proc/sys, keyed by sysctlKeyId. */
  readonly sysctls: Map<string, string>;
  /**
   * The last re-read listed a default route it could not decode (SkippedEntry.defaultRoute), or
   * its dump of the routes ended with an error (KernelDump.failed) before all were listed: the
   * planner leaves default routes alone, as for any other. An undecodable one's notifications
   * cannot be decoded either, so any change to it asks for another re-read, which says again; a
   * failed dump is taken again a second on while it fails.
   */
  unreadableDefaultRoute?: boolean;
  /**
   * The tables whose dump, in the last re-read, the kernel ended with an error (KernelDump.failed):
   * each lacks what came after the error, which is not gone for that (a links dump's are kept as
   * last known). Nothing is done that needs to know all of one: absent, every table was whole.
   */
  cutShort?: ReadonlySet<DumpTable>;
  /**
   * The links a links dump cut short did not list, kept as last known (no notification has told of
   * them since). A name is one link's at a time: one known since by a kept link's name says that
   * link is gone (its deletion unheard) or renamed, and the kept link is forgotten (applyEvent).
   */
  lastKnown?: Set<number>;
}

/** What a re-read reads: each table the kernel dumps on its own. */
export type DumpTable = 'links' | 'addresses' | 'routes' | 'neighbours';

export type KernelEvent =
  | { readonly kind: 'link'; readonly op: 'new' | 'del'; readonly link: KernelLink }
  | { readonly kind: 'address'; readonly op: 'new' | 'del'; readonly address: KernelAddress }
  | { readonly kind: 'route'; readonly op: 'new' | 'del'; readonly route: KernelRoute }
  | { readonly kind: 'neighbour'; readonly op: 'new' | 'del'; readonly neighbour: KernelNeighbour };

export function emptyView(): KernelView {
  return { links: new Map(), addresses: new Map(), routes: new Map(), neighbours: new Map(), sysctls: new Map() };
}

export const addressKey = (a: Pick<KernelAddress, 'ifindex' | 'ip' | 'prefixLength'>): string => `${a.ifindex}/${a.ip}/${a.prefixLength}`;
// The kernel identifies an IPv4 route by table, prefix, TOS and priority (metric).
export const routeKey = (r: Pick<KernelRoute, 'dst' | 'dstLength' | 'priority'>): string => `${r.dst}/${r.dstLength}@${r.priority}`;
export const neighbourKey = (n: Pick<KernelNeighbour, 'ifindex' | 'ip'>): string => `${n.ifindex}/${n.ip}`;
export const sysctlKeyId = (k: SysctlKey): string => `${k.ifindex ?? '-'}:${k.template}`;

/**
 * A sysctl's name (its template) for a link of this name. The name goes in by a function: as a
 * replacement string, '$&', '$`' or "$'" in it (a link's name may hold '$') would be read as patterns.
 */
export function sysctlName(template: string, linkName: string): string {
  return template.replace('{}', () => linkName);
}

/** The /proc/sys path of a sysctl for the link's current name. */
export function sysctlPath(key: SysctlKey, view: KernelView): string | null {
  if (key.ifindex === null) return `/proc/sys/${key.template}`;
  const link = view.links.get(key.ifindex);
  return link === undefined ? null : `/proc/sys/${sysctlName(key.template, link.name)}`;
}

/** Everything the kernel drops together with a device. */
function forgetLink(view: KernelView, ifindex: number): void {
  view.links.delete(ifindex);
  view.lastKnown?.delete(ifindex);
  for (const [key, address] of view.addresses) if (address.ifindex === ifindex) view.addresses.delete(key);
  for (const [key, route] of view.routes) if (route.oif === ifindex) view.routes.delete(key);
  for (const [key, neighbour] of view.neighbours) if (neighbour.ifindex === ifindex) view.neighbours.delete(key);
  for (const key of view.sysctls.keys()) if (key.startsWith(`${ifindex}:`)) view.sysctls.delete(key);
}

function sameEntry(a: object | undefined, b: object): boolean {
  if (a === undefined) return false;
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  return Object.keys(right).every((key) => left[key] === right[key]);
}

/**
 * Whether an event would change the view: the echoes of the agent's own changes (already in
 * the view) and carrier flaps that change nothing it tracks need no reconcile.
 */
export function changesView(view: KernelView, event: KernelEvent): boolean {
  switch (event.kind) {
    case 'link':
      return event.op === 'del' ? view.links.has(event.link.ifindex) : !sameEntry(view.links.get(event.link.ifindex), event.link);
    case 'address':
      // A new mark is a change too: a mark of ours that someone gave (or took) decides what client mode removes.
      return event.op === 'del' ? view.addresses.has(addressKey(event.address)) : !sameEntry(view.addresses.get(addressKey(event.address)), event.address);
    case 'route': {
      const current = view.routes.get(routeKey(event.route));
      return event.op === 'del' ? current !== undefined : !sameEntry(current, event.route);
    }
    case 'neighbour': {
      const current = view.neighbours.get(neighbourKey(event.neighbour));
      return event.op === 'del' ? current !== undefined : !sameEntry(current, event.neighbour);
    }
  }
}

/** The kernel object a notification is about (a link, an address, a route, a neighbour entry). */
export function eventObjectKey(event: KernelEvent): string {
  switch (event.kind) {
    case 'link':
      return `link ${event.link.ifindex}`;
    case 'address':
      return `address ${addressKey(event.address)}`;
    case 'route':
      return `route ${routeKey(event.route)}`;
    case 'neighbour':
      return `neighbour ${neighbourKey(event.neighbour)}`;
  }
}

/** `link` is known now: not as last known, and no link kept as last known has its name any more (see KernelView.lastKnown). */
function forgetNamesakes(view: KernelView, link: KernelLink): void {
  const kept = view.lastKnown;
  if (kept === undefined) return;
  kept.delete(link.ifindex);
  for (const ifindex of kept) if (view.links.get(ifindex)?.name === link.name) forgetLink(view, ifindex);
}

/** Apply one notification (or dump entry) to the view. */
export function applyEvent(view: KernelView, event: KernelEvent): void {
  switch (event.kind) {
    case 'link':
      if (event.op === 'del') forgetLink(view, event.link.ifindex);
      else {
        forgetNamesakes(view, event.link);
        const before = view.links.get(event.link.ifindex);
        view.links.set(event.link.ifindex, event.link);
        // Renamed: its sysctls were read by a path that may have named it no longer (udev renames
        // a new link a moment after it comes): missing then ('absent', taken as nothing to set),
        // or another link's. Read again under the new name.
        // Its MTU changed: its IPv6 (or IPv4) may have gone, or come back made afresh with the
        // default sysctls (disable_ipv6 0 again on a link we turned it off on). Read again.
        if (before !== undefined && (before.name !== event.link.name || before.mtu !== event.link.mtu)) {
          for (const key of view.sysctls.keys()) if (key.startsWith(`${event.link.ifindex}:`)) view.sysctls.delete(key);
        }
        // Taking a device down flushes its routes and neighbours (permanent ones too); the
        // kernel sends no per-entry notification for all of them, so forget them here.
        if (before?.up === true && !event.link.up) {
          for (const [key, route] of view.routes) if (route.oif === event.link.ifindex) view.routes.delete(key);
          for (const [key, n] of view.neighbours) if (n.ifindex === event.link.ifindex) view.neighbours.delete(key);
        }
      }
      return;
    case 'address':
      if (event.op === 'del') view.addresses.delete(addressKey(event.address));
      else view.addresses.set(addressKey(event.address), event.address);
      return;
    case 'route':
      if (event.op === 'del') view.routes.delete(routeKey(event.route));
      else view.routes.set(routeKey(event.route), event.route);
      return;
    case 'neighbour':
      if (event.op === 'del') view.neighbours.delete(neighbourKey(event.neighbour));
      else view.neighbours.set(neighbourKey(event.neighbour), event.neighbour);
      return;
  }
}
