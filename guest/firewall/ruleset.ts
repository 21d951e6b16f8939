/**
 * The provider firewall as nft text, pure: the fixed table (chains never depend on the model),
 * the set elements a model needs, reading a table listing back, and the smallest nft script that
 * turns what exists into what should. See nft.ts for the adapter that runs it.
 *
 * Per-packet cost does not grow with the number of clients: every rule is fixed, and clients
 * only add elements to hash sets, looked up once per rule that names them.
 */
import { CLIENT_NETWORK, GATEWAY_IP, PROVIDER_LINK_GROUP } from '../../shared/scheme.js';
import type { ValidFirewallModel } from './model.js';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'spectrum_netd';
export const TABLE = `${TABLE_FAMILY} ${TABLE_NAME}`;

/** Named counters; firewallCounters() reads them. */
export const COUNTERS = {
  antispoofDrops: 'antispoof_drops',
  isolationDrops: 'isolation_drops',
  inputDrops: 'input_drops',
} as const;

/** The sets clients change, with their nft key types. */
export const SETS = {
  /** Provider-side links (isolated ones too): traffic from these is client traffic. */
  client_links: 'ifname',
  /** The one source address each provider-side link may use. */
  client_sources: 'ifname . ipv4_addr',
  /** Every client address: seen arriving on any other interface, it is spoofed. */
  client_ips: 'ipv4_addr',
  /** Interfaces client traffic may leave by, masqueraded. */
  uplinks: 'ifname',
  /** (from, to): `from` may open connections to `to`. */
  allowed_pairs: 'ipv4_addr . ipv4_addr',
} as const;

export type SetName = keyof typeof SETS;
export const SET_NAMES = Object.keys(SETS) as SetName[];

/** Elements of every set, each in the text nft prints (`"snp1" . 100.64.0.1`), sorted, unique. */
export type FirewallElements = Readonly<Record<SetName, readonly string[]>>;

const COMMENT = 'spectrum-netd provider firewall v1: owned by spectrum-netd, edits are replaced';

/*
 * Values as `nft -n` prints them (nft 1.0.6), named as nft prints them otherwise. Why numbers:
 * some of those names come from files in /etc (a device group's from /etc/iproute2/group, a
 * protocol's from /etc/protocols), so a listing with names would differ from one system to the
 * next, and an audit would find every table changed and replace it forever.
 */
const PRIORITY = { raw: -300, filter: 0, srcnat: 100 } as const;
/** Conntrack state bits: invalid, then 1 << (IP_CT_* + 1), as the kernel matches them. */
const CT_STATE = { invalid: '0x1', established: '0x2', related: '0x4' } as const;
/** TCP header flag bits. */
const TCP_FLAG = { syn: '0x2', rst: '0x4' } as const;
const IP_PROTOCOL = { tcp: 6, udp: 17 } as const;
const ICMP_ECHO_REQUEST = 8;
/** A packet's conntrack flow has the client of the link it came from as an endpoint. */
const OWN_FLOW = ['iifname . ct original ip saddr @client_sources', 'iifname . ct original ip daddr @client_sources'] as const;

/**
 * The table without elements, written exactly as `nft -n -s list table inet spectrum_netd`
 * prints it (nft 1.0.6), so a listing with its elements taken out compares equal byte for byte
 * while the structure is right, whatever names /etc files give to its values (nft.ts lists it
 * so). nft reads this text back as input unchanged.
 *
 * Why each rule is there:
 * - the guard, first in prerouting and forward: the chains below recognise provider links by
 *   name, and pass what comes from (or goes to) a link they do not name. The agent puts every
 *   provider link in PROVIDER_LINK_GROUP before it brings it up, and a group survives a rename:
 *   a provider link renamed while up (Linux allows it since 6.2) to a name not in the sets has
 *   all its traffic dropped, even before the agent has heard of the rename. Prerouting sees
 *   everything received (input and forward); forward also guards what is routed toward such a
 *   link. The group is a number here and in the listings the audit reads, whatever name
 *   /etc/iproute2/group gives it.
 * - prerouting at raw priority, before conntrack, so spoofed packets never create state. From a
 *   provider link only `link . own client IP` passes, plus a DHCP client's first packets
 *   (0.0.0.0:68 -> 255.255.255.255:67); everything else from it, IPv6 included (no `ip saddr`
 *   matches it), is counted and dropped. A client address arriving on any other interface is
 *   spoofed too (Qubes' `downstream` rule).
 * - related packets (ICMP errors mostly) from a provider link, in input and forward: conntrack
 *   ties an ICMP error to whichever flow the header embedded in it names, and a client writes that
 *   header as it likes. So one passes only when the link's own client is an endpoint of the flow
 *   it relates to (its original tuple holds the client's real address: masquerading changes only
 *   the reply tuple); else a client could break another's flows (port unreachable, a lowered
 *   path MTU), pass it bytes despite isolation, or break the agent's own flows. Related packets
 *   from elsewhere pass: a router's errors about a client's flow (PMTU discovery).
 * - input: from provider links only the agent's services on the gateway (DHCP, DNS, ping) and
 *   replies to the agent's own traffic. The gateway address is for provider links and the agent
 *   itself (lo) only: a neighbour on an uplink that routes it to us must not find an open
 *   resolver. (A chained provider's upstream gateway has that address too, but its answers come
 *   to our own address on the upstream link.) Anything else from elsewhere: not ours to police.
 * - forward: replies pass; toward a provider link only allowed pairs open connections (so
 *   nothing from an uplink or another client does); from a provider link only uplinks.
 * - MSS clamping, in forward right after the guard: a forwarded SYN (RST clear) gets its MSS
 *   option lowered (never raised) to what the route allows (`rt mtu`: the smaller MTU of the
 *   routes toward its destination and back toward its source, less the IP and TCP headers). A
 *   path with a smaller MTU behind the provider (a PPPoE uplink at 1492, a WireGuard uplink at
 *   1420) otherwise relies on ICMP "fragmentation needed" coming back, which routers on the
 *   internet often drop or never send: the connection opens, then stalls at the first full-size
 *   segment. Both directions: the client's SYN on its way out and the server's SYN-ACK on its way
 *   in, which conntrack already counts as established, so the rule comes before the established
 *   accept. It lives in this chain, not one of its own at mangle priority, because a second base
 *   chain on the forward hook costs every packet another chain entry, while here a packet that is
 *   no SYN costs the flags compare the rule starts with and nothing more. Only in forward: the
 *   provider's own connections know its routes' MTUs already.
 * - postrouting: client addresses leaving by an uplink are masqueraded.
 */
export function staticTableText(): string {
  const counter = (name: string): string[] => [`\tcounter ${name} {`, '\t}', ''];
  const set = (name: SetName): string[] => [`\tset ${name} {`, `\t\ttype ${SETS[name]}`, '\t}', ''];
  const chain = (name: string, rules: readonly string[], last = false): string[] => [
    `\tchain ${name} {`,
    ...rules.map((rule) => `\t\t${rule}`),
    '\t}',
    ...(last ? [] : ['']),
  ];
  const drop = (counterName: string): string => `counter name "${counterName}" drop`;
  const lines = [
    `table ${TABLE} {`,
    `\tcomment "${COMMENT}"`,
    ...counter(COUNTERS.antispoofDrops),
    ...counter(COUNTERS.isolationDrops),
    ...counter(COUNTERS.inputDrops),
    ...SET_NAMES.flatMap(set),
    ...chain('prerouting', [
      `type filter hook prerouting priority ${PRIORITY.raw}; policy accept;`,
      `iifgroup ${PROVIDER_LINK_GROUP} iifname != @client_links ${drop(COUNTERS.antispoofDrops)}`,
      'iifname @client_links jump from_client_link',
      `ip saddr @client_ips ${drop(COUNTERS.antispoofDrops)}`,
    ]),
    ...chain('from_client_link', [
      'iifname . ip saddr @client_sources accept',
      'ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept',
      drop(COUNTERS.antispoofDrops),
    ]),
    ...chain('input', [
      `type filter hook input priority ${PRIORITY.filter}; policy accept;`,
      'iifname @client_links jump input_from_client_link',
      `ip daddr ${GATEWAY_IP} iif != "lo" ${drop(COUNTERS.inputDrops)}`,
    ]),
    ...chain('input_from_client_link', [
      `ct state ${CT_STATE.established} accept`,
      // Related to another flow: no service below takes an ICMP error, so the last rule counts it.
      ...OWN_FLOW.map((endpoint) => `ct state ${CT_STATE.related} ${endpoint} accept`),
      `ip daddr { ${GATEWAY_IP}, 255.255.255.255 } udp dport 67 accept`,
      `ip daddr ${GATEWAY_IP} meta l4proto { ${IP_PROTOCOL.tcp}, ${IP_PROTOCOL.udp} } th dport 53 accept`,
      `ip daddr ${GATEWAY_IP} icmp type ${ICMP_ECHO_REQUEST} accept`,
      drop(COUNTERS.inputDrops),
    ]),
    ...chain('forward', [
      `type filter hook forward priority ${PRIORITY.filter}; policy accept;`,
      `oifgroup ${PROVIDER_LINK_GROUP} oifname != @client_links ${drop(COUNTERS.isolationDrops)}`,
      `tcp flags ${TCP_FLAG.syn} / ${TCP_FLAG.syn},${TCP_FLAG.rst} tcp option maxseg size set rt mtu`,
      `ct state ${CT_STATE.established} accept`,
      `ct state ${CT_STATE.related} jump forward_related`,
      'oifname @client_links jump forward_to_client_link',
      'iifname @client_links jump forward_from_client_link',
    ]),
    ...chain('forward_related', ['iifname != @client_links accept', ...OWN_FLOW.map((endpoint) => `${endpoint} accept`), drop(COUNTERS.isolationDrops)]),
    ...chain('forward_to_client_link', ['ip saddr . ip daddr @allowed_pairs accept', drop(COUNTERS.isolationDrops)]),
    // Invalid packets would leave unmasqueraded (NAT needs a conntrack entry): never let them out.
    ...chain('forward_from_client_link', [`ct state ${CT_STATE.invalid} drop`, 'oifname @uplinks accept', drop(COUNTERS.isolationDrops)]),
    ...chain(
      'postrouting',
      [`type nat hook postrouting priority ${PRIORITY.srcnat}; policy accept;`, `oifname @uplinks ip saddr ${CLIENT_NETWORK} masquerade`],
      true,
    ),
    '}',
  ];
  return `${lines.join('\n')}\n`;
}

const ifnameElement = (name: string): string => `"${name}"`;

function uniqueSorted(elements: Iterable<string>): string[] {
  return [...new Set(elements)].sort();
}

/** The elements a (validated) model needs in each set. */
export function desiredElements(model: ValidFirewallModel): FirewallElements {
  return {
    client_links: uniqueSorted([...model.providerLinks.map((link) => link.ifname), ...(model.isolatedLinks ?? [])].map(ifnameElement)),
    client_sources: uniqueSorted(model.providerLinks.map((link) => `${ifnameElement(link.ifname)} . ${link.clientIp}`)),
    client_ips: uniqueSorted(model.providerLinks.map((link) => link.clientIp)),
    uplinks: uniqueSorted(model.uplinks.map(ifnameElement)),
    allowed_pairs: uniqueSorted(model.allowedPairs.map((pair) => `${pair.from} . ${pair.to}`)),
  };
}

export function emptyElements(): FirewallElements {
  return { client_links: [], client_sources: [], client_ips: [], uplinks: [], allowed_pairs: [] };
}

/** Split the inside of `{ ... }` into elements, whitespace normalised as nft prints it. */
export function parseElementList(inner: string): string[] {
  return inner
    .split(',')
    .map((element) => element.trim().replace(/\s+/g, ' '))
    .filter((element) => element !== '');
}

/** A table listing split into its structure (elements taken out) and the elements per set. */
export interface TableListing {
  readonly structure: string;
  readonly elements: FirewallElements;
  /** Elements listed in sets this module does not know: the structure differs then anyway. */
  readonly unknownSets: readonly string[];
}

const SET_HEADER = /^\tset (\S+) \{$/;
const ELEMENTS_START = /^\t\telements = \{(.*)$/;

/**
 * Read `nft -s list table` output. Element lists (which nft wraps over several lines) are
 * removed from the text and collected per set; what remains is the structure.
 */
export function parseTableListing(text: string): TableListing {
  const kept: string[] = [];
  const found = new Map<string, string[]>();
  let currentSet: string | undefined;
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] ?? '';
    const header = SET_HEADER.exec(line);
    if (header !== null) currentSet = header[1];
    else if (line === '\t}') currentSet = undefined;
    const start = ELEMENTS_START.exec(line);
    if (start === null) {
      kept.push(line);
      continue;
    }
    // Our element types never contain braces, so the list ends at the first `}`.
    let inner = start[1] ?? '';
    while (!inner.includes('}') && index + 1 < lines.length) {
      index += 1;
      inner += `\n${lines[index] ?? ''}`;
    }
    const end = inner.indexOf('}');
    kept.push(...(end >= 0 && inner.slice(end + 1).trim() !== '' ? [inner.slice(end + 1)] : []));
    const name = currentSet ?? '';
    found.set(name, [...(found.get(name) ?? []), ...parseElementList(end >= 0 ? inner.slice(0, end) : inner)]);
  }
  const elements: Record<SetName, readonly string[]> = { ...emptyElements() };
  const unknownSets: string[] = [];
  for (const [name, list] of found) {
    if (isSetName(name)) elements[name] = uniqueSorted(list);
    else unknownSets.push(name);
  }
  return { structure: kept.join('\n'), elements, unknownSets };
}

function isSetName(name: string): name is SetName {
  return Object.hasOwn(SETS, name);
}

export interface ElementDiff {
  readonly add: FirewallElements;
  readonly delete: FirewallElements;
}

export function diffElements(current: FirewallElements, desired: FirewallElements): ElementDiff {
  const add: Record<SetName, readonly string[]> = { ...emptyElements() };
  const remove: Record<SetName, readonly string[]> = { ...emptyElements() };
  for (const name of SET_NAMES) {
    const have = new Set(current[name]);
    const want = new Set(desired[name]);
    add[name] = desired[name].filter((element) => !have.has(element));
    remove[name] = current[name].filter((element) => !want.has(element));
  }
  return { add, delete: remove };
}

export function isEmptyDiff(diff: ElementDiff): boolean {
  return SET_NAMES.every((name) => diff.add[name].length === 0 && diff.delete[name].length === 0);
}

/** nft commands for a diff: deletions first, one command per set and direction. */
export function elementCommands(diff: ElementDiff): string {
  const lines: string[] = [];
  for (const [verb, elements] of [
    ['delete', diff.delete],
    ['add', diff.add],
  ] as const) {
    for (const name of SET_NAMES) {
      const list = elements[name];
      if (list.length > 0) lines.push(`${verb} element ${TABLE} ${name} { ${list.join(', ')} }`);
    }
  }
  return lines.map((line) => `${line}\n`).join('');
}

/**
 * Replace whatever table exists (or none) with the full one, in one transaction: `add` makes the
 * `delete` valid when there is no table yet.
 */
export function replaceTableScript(desired: FirewallElements): string {
  return `add table ${TABLE}\ndelete table ${TABLE}\n${staticTableText()}${elementCommands({ add: desired, delete: emptyElements() })}`;
}

/** Delete the table if it exists, in one transaction. */
export function removeTableScript(): string {
  return `add table ${TABLE}\ndelete table ${TABLE}\n`;
}

export type FirewallPlan =
  | { readonly kind: 'unchanged' }
  | { readonly kind: 'update-elements'; readonly diff: ElementDiff; readonly script: string }
  | { readonly kind: 'replace-table'; readonly reason: 'missing' | 'structure'; readonly script: string };

/**
 * What to do given the current listing (`undefined`: no table) and the model: nothing when
 * everything matches, element changes when only elements differ, else the whole table anew.
 */
export function planFirewall(listing: string | undefined, model: ValidFirewallModel): FirewallPlan {
  const desired = desiredElements(model);
  if (listing === undefined) return { kind: 'replace-table', reason: 'missing', script: replaceTableScript(desired) };
  const current = parseTableListing(listing);
  if (current.structure !== staticTableText() || current.unknownSets.length > 0) {
    return { kind: 'replace-table', reason: 'structure', script: replaceTableScript(desired) };
  }
  const diff = diffElements(current.elements, desired);
  if (isEmptyDiff(diff)) return { kind: 'unchanged' };
  return { kind: 'update-elements', diff, script: elementCommands(diff) };
}
