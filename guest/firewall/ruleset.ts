/**
 * The provider firewall as nft text, pure: the fixed tables (chains never depend on the model),
 * `inet spectrum_netd` and the ARP guard `arp spectrum_netd`, the set elements a model needs,
 * reading table listings back, and the smallest nft script that turns what exists into what
 * should. See nft.ts for the adapter that runs it.
 *
 * Per-packet cost does not grow with the number of clients: every rule is fixed, and clients
 * only add elements to hash sets, looked up once per rule that names them.
 */
import { CLIENT_NETWORK, GATEWAY_IP, PROVIDER_LINK_GROUP } from '../../shared/scheme.js';
import type { ValidFirewallModel } from './model.js';
import { tcpTimeoutPolicyText } from './client-tcp-timeouts.js';
import { type TableSettings, clientNewFlowBurst, clientTcpTimeoutsOf } from './table-settings.js';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'spectrum_netd';
export const TABLE = `${TABLE_FAMILY} ${TABLE_NAME}`;
/**
 * The ARP guard's table (staticArpTableText): the inet family never sees ARP, so it is a table of
 * its own, of the same name, made, audited and changed together with TABLE, in the same transactions.
 */
export const ARP_TABLE_FAMILY = 'arp';
export const ARP_TABLE = `${ARP_TABLE_FAMILY} ${TABLE_NAME}`;
/** The firewall's tables: what a listing holds, what a replacement can make anew. */
export type FirewallTable = 'inet' | 'arp';

/** Named counters; firewallCounters() reads them. */
export const COUNTERS = {
  antispoofDrops: 'antispoof_drops',
  isolationDrops: 'isolation_drops',
  inputDrops: 'input_drops',
  flowLimitDrops: 'flow_limit_drops',
  flowRateDrops: 'flow_rate_drops',
  fragmentDrops: 'fragment_drops',
  leakDrops: 'leak_drops',
} as const;

/** The ARP guard's counter, in ARP_TABLE (counters belong to their table). */
export const ARP_COUNTER = 'arp_drops';

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
/**
 * The sets ARP_TABLE has too, same names, same elements: sets belong to their table, so a
 * provider link is an element of each of these in both tables, added and deleted in one transaction.
 */
export const ARP_SET_NAMES = ['client_links', 'client_sources'] as const satisfies readonly SetName[];

/**
 * The set that counts each client address's conntrack entries (connlimit): traffic adds and the
 * kernel removes its elements (one once its count is back to 0), never the model. Its size holds
 * every address in CLIENT_NETWORK and 0.0.0.0 (a DHCP client's first packets).
 */
export const FLOW_SET = 'client_flows';
/**
 * The set that rate-limits each client address's new flows (an nft `limit` per element): traffic's
 * like FLOW_SET, the same key and size.
 */
export const FLOW_RATE_SET = 'client_new_flows';
const FLOW_SET_SIZE = 65_535;
/**
 * A FLOW_RATE_SET element goes this long after its client's last new flow (each one's `update`
 * starts it again), so a client that went leaves nothing behind. Longer than the bucket takes to
 * fill again (CLIENT_NEW_FLOW_BURST_SECONDS): an element that expires had a full bucket anyway, so
 * expiring gives no client more than its rate.
 */
const FLOW_RATE_TIMEOUT = '5s';

/**
 * The set that rate-limits each client address's IPv4 fragments (an nft `limit` per element),
 * before the kernel queues them for reassembly: traffic's like FLOW_SET, the same key and size.
 * Fragments are counted whole or not: the kernel frees a complete datagram's at once, and holds an
 * incomplete one's until ipfrag_time (30 s by default) runs out, so a client holds at most
 * CLIENT_FRAGMENT_BURST + CLIENT_FRAGMENT_RATE x 30 s = 400 incomplete fragments: about 1 MB at
 * the 2.5 KB a full-size fragment takes there (measured on a veth), a quarter of the
 * namespace's pool (ipfrag_high_thresh, 4 MiB), which once full drops every fragment, everyone's.
 * What that leaves a client: 10 fragments a second, 100 at once (a `ping -s 3000` is 3 fragments,
 * a 4 KB UDP datagram 3): enough for the odd large datagram (a DNS query over UDP that does
 * not fit, a large ping), not for bulk traffic the client's own stack fragments, which only a
 * path without path MTU discovery makes, as DF-less UDP above the link's MTU.
 */
export const FRAGMENT_RATE_SET = 'client_fragments';
/** IPv4 fragments one client address may send a second, on average (FRAGMENT_RATE_SET). */
export const CLIENT_FRAGMENT_RATE = 10;
/** IPv4 fragments one client address may send at once (FRAGMENT_RATE_SET). */
export const CLIENT_FRAGMENT_BURST = 100;
/**
 * A FRAGMENT_RATE_SET element goes this long after its client's last fragment: longer than its
 * bucket takes to fill again (CLIENT_FRAGMENT_BURST / CLIENT_FRAGMENT_RATE, 10 s), so expiring
 * gives no client more than its rate (as FLOW_RATE_TIMEOUT).
 */
const FRAGMENT_RATE_TIMEOUT = '15s';
/** IPv4's fragment offset and more-fragments bits (frag-off & 0x3fff, which nft -n prints in decimal): non-zero on every fragment. */
const IP_FRAGMENT_BITS = 0x3fff;
const fragmentRateExpression = `limit rate over ${CLIENT_FRAGMENT_RATE}/second burst ${CLIENT_FRAGMENT_BURST} packets`;

/** The ct timeout policy clients' TCP flows get (TableSettings.clientTcpTimeouts). */
export const CLIENT_TCP_TIMEOUT = 'client_tcp';

/** Elements of every set, each in the text nft prints (`"snp1" . 100.64.0.1`), sorted, unique. */
export type FirewallElements = Readonly<Record<SetName, readonly string[]>>;

const COMMENT = 'spectrum-netd provider firewall v1: owned by spectrum-netd, edits are replaced';
const ARP_COMMENT = 'spectrum-netd ARP guard v1: owned by spectrum-netd, edits are replaced';

/*
 * Values as `nft -n` prints them (nft 1.0.6), named as nft prints them otherwise. Why numbers:
 * some of those names come from files in /etc (a device group's from /etc/iproute2/group, a
 * protocol's from /etc/protocols), so a listing with names would differ from one system to the
 * next, and an audit would find every table changed and replace it forever.
 */
/**
 * beforeDefrag: NF_IP_PRI_RAW_BEFORE_DEFRAG, ahead of conntrack's defragmentation
 * (NF_IP_PRI_CONNTRACK_DEFRAG, -400) and of conntrack itself (-200).
 */
const PRIORITY = { beforeDefrag: -450, filter: 0, srcnat: 100 } as const;
/** Conntrack state bits: invalid, then 1 << (IP_CT_* + 1), as the kernel matches them. */
const CT_STATE = { invalid: '0x1', established: '0x2', related: '0x4' } as const;
/** Conntrack status bits (IPS_*): an entry is confirmed, in the table, once its first packet got through. */
const CT_STATUS = { confirmed: '0x8' } as const;
/** TCP header flag bits. */
const TCP_FLAG = { syn: '0x2', rst: '0x4' } as const;
const IP_PROTOCOL = { tcp: 6, udp: 17 } as const;
const ICMP_ECHO_REQUEST = 8;
/**
 * Toward the client range by an uplink: an address no link serves (a client gone, its flows'
 * replies de-NATed to it), whose packets follow the default route. Not when the next hop is the
 * gateway address, which only a chained provider's upstream Spectrum provider is: it polices them
 * (a client's allowed pair there is reached through it).
 */
const TOWARD_CLIENTS_BY_UPLINK = `ip daddr ${CLIENT_NETWORK} oifname @uplinks rt ip nexthop != ${GATEWAY_IP}`;
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
 * - prerouting before defragmentation (priority -450, below conntrack's defrag at -400 and
 *   conntrack at -200), so spoofed packets never create state, and spoofed fragments never take
 *   reassembly memory: the kernel queues every fragment it is handed for reassembly, in one pool
 *   per namespace (ipfrag_high_thresh, 4 MiB), and once the pool is full it drops every fragment,
 *   everyone's, until incomplete queues time out (ipfrag_time, 30 s). So the rules see each
 *   fragment as it came, not the datagram; they look at addresses only, which every fragment
 *   carries (a DHCP packet is never fragmented). From a provider link only
 *   `link . own client IP` passes, plus a DHCP client's first packets
 *   (0.0.0.0:68 -> 255.255.255.255:67), whole datagrams only: a first fragment carries the ports
 *   too, and no fragment rate counts 0.0.0.0, so such fragments filled the pool uncounted (a
 *   non-first one has no UDP header, which nft then never matches); everything else from it, IPv6 included (no `ip saddr`
 *   matches it), is counted and dropped. A client address arriving on any other interface is
 *   spoofed too (Qubes' `downstream` rule).
 * - a client's own fragments, there too, before it is accepted: at most its fragment rate
 *   (FRAGMENT_RATE_SET), so one client can take at most a quarter of the reassembly pool from the
 *   others; past it they are counted (`fragmentDrops`) and dropped. A whole datagram costs the
 *   one compare that tells it is no fragment.
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
 * - the flow cap (TableSettings.clientFlowLimit N, by default an eighth of nf_conntrack_max but at
 *   most 4096; 0: neither rules nor set): clients share the provider's conntrack table, and once
 *   it is full the kernel drops every new flow of everyone; UDP to random ports (30 s per unreplied entry) or a
 *   SYN flood fills it in seconds. So a client address may hold N entries, counted in a dynamic
 *   set (`ct count`, connlimit); a flow past them is counted and dropped. One budget for forward
 *   (uplinks and allowed pairs alike) and input: each DNS query from a fresh port, each ping id
 *   is an entry too. Keeping service traffic out of conntrack instead (notrack) would take a raw
 *   output chain for the replies, which every packet the provider sends would enter. Both rules
 *   come after the established and related accepts and count only a packet whose entry is not
 *   confirmed yet (`ct status ! confirmed`), the one about to add it to the table; not `ct state
 *   new`, which a UDP flow stays until its first reply: each of its packets would walk the
 *   count list again (and before conncount's late-2025 fix be counted again within a jiffy). An
 *   invalid packet has no entry to count, nor has any packet in prerouting (before conntrack). A dropped flow's
 *   entry is never confirmed and leaves the count. Connlimit leaves out TCP connections already
 *   closed (TIME_WAIT, CLOSE), though they stay in the table: see the TCP timeouts below.
 * - the new-flow rate, just before the cap, on the same packets (TableSettings.clientNewFlowRate
 *   R a second, burst 2R, per client address in a dynamic set whose elements go 5 s after their
 *   client's last new flow; 0: neither rules nor set): `ct
 *   count` walks every entry the client holds, on each packet that would open a flow, dropped or
 *   not, so a client at a large cap could keep a core busy with a few thousand such packets a
 *   second. A packet past the rate costs a hash lookup and a token bucket and never reaches the
 *   walk; counted apart (`flowRateDrops`), so that an operator can tell which limit to raise. It
 *   also bounds what the cap leaves out, with the TCP timeouts below.
 * - clients' TCP timeouts, after both limits in forward and input, on a client's new TCP flow the
 *   limits let through (`ct timeout set`, which acts only on an entry not yet confirmed, so not
 *   on a SYN retransmitted): the ct timeout object CLIENT_TCP_TIMEOUT, the provider's timeouts
 *   with TIME_WAIT and CLOSE at most 10 s (client-tcp-timeouts.ts says why that is safe). The cap
 *   leaves those states out, so a client holds at most its cap plus the flows it opened in the
 *   last 20 s (table-settings.ts; unless it keeps sending on its closed flows, each packet
 *   restarting their timeout: README, Known limitations), where TIME_WAIT's 120 s would let one client at 100 new flows
 *   a second fill the table of a VM with 1 GB. The provider's own flows keep its timeouts, and
 *   established packets never reach the rule. nft lists a policy's states that differ from the
 *   kernel's defaults only, and so does this text (tcpTimeoutPolicyText). The kernel needs
 *   CONFIG_NF_CONNTRACK_TIMEOUT. Replacing the table takes the policy off the entries it was on:
 *   they keep the provider's timeouts from then on.
 * - DHCP from the client's port 68 to the server's (gateway or broadcast), in input before both
 *   limits: a client at its cap (a busy P2P node, a small VM) renews its lease with a new flow
 *   (the entry of its last renewal expired long ago), which the cap would drop until the lease
 *   ran out. With both ports fixed a client has at most two such entries (one per address), and
 *   0.0.0.0 one for all, so they cannot fill the table; the DHCP server rate-limits each link.
 *   Other traffic to port 67 is a flow like any other.
 * - toward the client range by an uplink (leakDrops), in forward right after the guard, before
 *   the established accept: the provider routes only each served client's /32 to its link, so a
 *   client address whose link has gone follows the default route out of an uplink. Replies on a
 *   departed client's flows (de-NATed to its address; while the agent is stopped, or a purge
 *   fails, for as long as they come) and a client's packets to an address no link serves would
 *   leave so, unmasqueraded or not: on an uplink whose network is itself CGNAT (100.64.0.0/10)
 *   they reach strangers. Dropped, unless the next hop is the gateway address (TOWARD_CLIENTS_BY_UPLINK).
 * - output: the gateway address is the provider links', so nothing from it leaves by an uplink:
 *   the agent's DNS forwarder's late answer to a client gone (its question in it), a DHCP or ICMP
 *   answer, a TCP reset. A base chain that only the provider's own packets enter; its own
 *   traffic from any other address (a chained provider's, to its upstream, is from its client
 *   address there) is left alone.
 * - postrouting: client addresses leaving by an uplink are masqueraded.
 */
export function staticTableText(settings: TableSettings): string {
  const limit = settings.clientFlowLimit;
  const counter = (name: string): string[] => [`\tcounter ${name} {`, '\t}', ''];
  const set = (name: SetName): string[] => [`\tset ${name} {`, `\t\ttype ${SETS[name]}`, '\t}', ''];
  const chain = (name: string, rules: readonly string[], last = false): string[] => [
    `\tchain ${name} {`,
    ...rules.map((rule) => `\t\t${rule}`),
    '\t}',
    ...(last ? [] : ['']),
  ];
  const drop = (counterName: string): string => `counter name "${counterName}" drop`;
  /** With no cap (0) the table has neither the set nor its rules. */
  const capped = <T>(items: readonly T[]): T[] => (limit > 0 ? [...items] : []);
  const flowCap = `ct status ! ${CT_STATUS.confirmed} add @${FLOW_SET} { ip saddr ct count over ${limit} } ${drop(COUNTERS.flowLimitDrops)}`;
  /** With no rate limit (0), neither its set nor its rules. */
  const rated = <T>(items: readonly T[]): T[] => (settings.clientNewFlowRate > 0 ? [...items] : []);
  const flowRate = `ct status ! ${CT_STATUS.confirmed} update @${FLOW_RATE_SET} { ip saddr ${flowRateExpression(settings)} } ${drop(COUNTERS.flowRateDrops)}`;
  const clientTcpTimeout = `meta l4proto ${IP_PROTOCOL.tcp} ct timeout set "${CLIENT_TCP_TIMEOUT}"`;
  const dynamicSet = (name: string, flags: readonly string[] = []): string[] => [`\tset ${name} {`, '\t\ttype ipv4_addr', `\t\tsize ${FLOW_SET_SIZE}`, ...flags, '\t}', ''];
  const lines = [
    `table ${TABLE} {`,
    `\tcomment "${COMMENT}"`,
    ...counter(COUNTERS.antispoofDrops),
    ...counter(COUNTERS.isolationDrops),
    ...counter(COUNTERS.inputDrops),
    ...counter(COUNTERS.flowLimitDrops),
    ...counter(COUNTERS.flowRateDrops),
    ...counter(COUNTERS.fragmentDrops),
    ...counter(COUNTERS.leakDrops),
    `\tct timeout ${CLIENT_TCP_TIMEOUT} {`,
    '\t\tprotocol tcp',
    '\t\tl3proto ip',
    `\t\tpolicy = { ${tcpTimeoutPolicyText(clientTcpTimeoutsOf(settings))} }`,
    '\t}',
    '',
    ...SET_NAMES.flatMap(set),
    ...capped(dynamicSet(FLOW_SET, ['\t\tflags dynamic'])),
    ...rated(dynamicSet(FLOW_RATE_SET, ['\t\tflags dynamic,timeout', `\t\ttimeout ${FLOW_RATE_TIMEOUT}`])),
    ...dynamicSet(FRAGMENT_RATE_SET, ['\t\tflags dynamic,timeout', `\t\ttimeout ${FRAGMENT_RATE_TIMEOUT}`]),
    ...chain('prerouting', [
      `type filter hook prerouting priority ${PRIORITY.beforeDefrag}; policy accept;`,
      `iifgroup ${PROVIDER_LINK_GROUP} iifname != @client_links ${drop(COUNTERS.antispoofDrops)}`,
      'iifname @client_links jump from_client_link',
      `ip saddr @client_ips ${drop(COUNTERS.antispoofDrops)}`,
    ]),
    ...chain('from_client_link', [
      `ip frag-off & ${IP_FRAGMENT_BITS} != 0 iifname . ip saddr @client_sources update @${FRAGMENT_RATE_SET} { ip saddr ${fragmentRateExpression} } ${drop(COUNTERS.fragmentDrops)}`,
      'iifname . ip saddr @client_sources accept',
      `ip saddr 0.0.0.0 ip daddr 255.255.255.255 ip frag-off & ${IP_FRAGMENT_BITS} == 0 udp sport 68 udp dport 67 accept`,
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
      // DHCP renewals, above the limits: see the comment above.
      `ip daddr { ${GATEWAY_IP}, 255.255.255.255 } udp sport 68 udp dport 67 accept`,
      ...rated([flowRate]),
      ...capped([flowCap]),
      clientTcpTimeout,
      `ip daddr { ${GATEWAY_IP}, 255.255.255.255 } udp dport 67 accept`,
      `ip daddr ${GATEWAY_IP} meta l4proto { ${IP_PROTOCOL.tcp}, ${IP_PROTOCOL.udp} } th dport 53 accept`,
      `ip daddr ${GATEWAY_IP} icmp type ${ICMP_ECHO_REQUEST} accept`,
      drop(COUNTERS.inputDrops),
    ]),
    ...chain('forward', [
      `type filter hook forward priority ${PRIORITY.filter}; policy accept;`,
      `oifgroup ${PROVIDER_LINK_GROUP} oifname != @client_links ${drop(COUNTERS.isolationDrops)}`,
      `${TOWARD_CLIENTS_BY_UPLINK} ${drop(COUNTERS.leakDrops)}`,
      `tcp flags ${TCP_FLAG.syn} / ${TCP_FLAG.syn},${TCP_FLAG.rst} tcp option maxseg size set rt mtu`,
      `ct state ${CT_STATE.established} accept`,
      `ct state ${CT_STATE.related} jump forward_related`,
      ...rated([`iifname @client_links ${flowRate}`]),
      ...capped([`iifname @client_links ${flowCap}`]),
      `iifname @client_links ${clientTcpTimeout}`,
      'oifname @client_links jump forward_to_client_link',
      'iifname @client_links jump forward_from_client_link',
    ]),
    ...chain('forward_related', ['iifname != @client_links accept', ...OWN_FLOW.map((endpoint) => `${endpoint} accept`), drop(COUNTERS.isolationDrops)]),
    ...chain('forward_to_client_link', ['ip saddr . ip daddr @allowed_pairs accept', drop(COUNTERS.isolationDrops)]),
    // Invalid packets would leave unmasqueraded (NAT needs a conntrack entry): never let them out.
    ...chain('forward_from_client_link', [`ct state ${CT_STATE.invalid} drop`, 'oifname @uplinks accept', drop(COUNTERS.isolationDrops)]),
    ...chain('output', [
      `type filter hook output priority ${PRIORITY.filter}; policy accept;`,
      `ip saddr ${GATEWAY_IP} oifname @uplinks ${drop(COUNTERS.leakDrops)}`,
    ]),
    ...chain(
      'postrouting',
      [`type nat hook postrouting priority ${PRIORITY.srcnat}; policy accept;`, `oifname @uplinks ip saddr ${CLIENT_NETWORK} masquerade`],
      true,
    ),
    '}',
  ];
  return `${lines.join('\n')}\n`;
}

/**
 * The ARP guard, written as `nft -n -s list table arp spectrum_netd` prints it (nft 1.0.6), like
 * staticTableText. It never depends on the model or the settings.
 *
 * Linux handles ARP below IP, where the inet table never looks: arp_rcv passes a packet to this
 * family's input hook, then arp_process answers a request for one of our addresses (the gateway
 * 169.254.0.1 is on every provider link) and makes or refreshes a neighbour entry for its sender,
 * and with arp_accept (on the link or in `all`, the kernel takes the higher) does so for
 * gratuitous ARP and unsolicited replies too. A client naming a new sender address in each packet
 * fills the neighbour table (gc_thresh3, 1024 by default): the provider resolves no new neighbour,
 * its uplink's gateway included, and every client loses its traffic. The planner's arp_filter
 * narrows only the answers, only on links it configured, and only while nobody sets arp_accept:
 * this guard holds whatever the sysctls say.
 * - from a provider link (named in client_links) ARP passes only with the link's own client as
 *   sender address, or 0.0.0.0 (an RFC 5227 probe, which the kernel answers and makes no entry
 *   for); the rest is counted (ARP_COUNTER) and dropped before arp_process sees it. No sender
 *   hardware address is checked, as the inet table checks no MAC: the one entry a client's ARP can
 *   touch is its own address's, which the agent makes permanent with the client's MAC, and ARP
 *   never changes a permanent entry. An isolated link has no source element: nothing of its ARP
 *   passes but probes, which make no entry (as its DHCP discovery from 0.0.0.0 passes the inet table).
 * - the guard, as in the inet table: ARP from a link of PROVIDER_LINK_GROUP that client_links does
 *   not name (renamed while up, a name the sets cannot hold) is dropped, counted alike.
 * - from anywhere else (uplinks, a chained provider's upstream link): not ours to police.
 * Why this family's input hook, not a netdev ingress chain: an ingress chain hooks named devices,
 * one hook per device, so each hot-plugged link would change the chain (and register a hook);
 * this hook is one for every device, and a link is a set element here as in the inet table. It
 * runs after arp_rcv has checked that the packet's address lengths are the device's (6 and 4 on
 * Ethernet), so `arp saddr ip` reads the sender address where it is.
 */
export function staticArpTableText(): string {
  const set = (name: SetName): string[] => [`\tset ${name} {`, `\t\ttype ${SETS[name]}`, '\t}', ''];
  const drop = `counter name "${ARP_COUNTER}" drop`;
  const lines = [
    `table ${ARP_TABLE} {`,
    `\tcomment "${ARP_COMMENT}"`,
    `\tcounter ${ARP_COUNTER} {`,
    '\t}',
    '',
    ...ARP_SET_NAMES.flatMap(set),
    '\tchain input {',
    `\t\ttype filter hook input priority ${PRIORITY.filter}; policy accept;`,
    `\t\tiifgroup ${PROVIDER_LINK_GROUP} iifname != @client_links ${drop}`,
    '\t\tiifname @client_links jump from_client_link',
    '\t}',
    '',
    '\tchain from_client_link {',
    '\t\tiifname . arp saddr ip @client_sources accept',
    '\t\tarp saddr ip 0.0.0.0 accept',
    `\t\t${drop}`,
    '\t}',
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
  /** The listing without elements, a ct timeout policy's protocol as the table text names it (canonicalProtocolLine). */
  readonly structure: string;
  readonly elements: FirewallElements;
  /**
   * FLOW_SET's elements as listed (`100.64.0.7 ct count over 4096`): traffic's, so never drift;
   * sorted, unique.
   */
  readonly flowElements: readonly string[];
  /** FLOW_RATE_SET's elements as listed (`100.64.0.7 limit rate over 500/second burst 1000 packets`), likewise. */
  readonly rateElements: readonly string[];
  /** FRAGMENT_RATE_SET's elements as listed, likewise. */
  readonly fragmentElements: readonly string[];
  /** Elements listed in sets this module does not know: the structure differs then anyway. */
  readonly unknownSets: readonly string[];
}

const SET_HEADER = /^\tset (\S+) \{$/;
const ELEMENTS_START = /^\t\telements = \{(.*)$/;
const CT_TIMEOUT_HEADER = /^\tct timeout \S+ \{$/;
const CT_TIMEOUT_PROTOCOL = /^\t\tprotocol (\S+)$/;

/**
 * A ct timeout policy's protocol line as the table text writes it. nft (1.0.6) prints the
 * protocol by the name /etc/protocols gives it even with -n: `tcp` on most systems, another name
 * where that file says so, the number (`6`) where it has no entry (a minimal VM image). nft takes
 * only tcp and udp for a policy, so anything but UDP's usual spellings is TCP.
 */
function canonicalProtocolLine(line: string): string {
  const protocol = CT_TIMEOUT_PROTOCOL.exec(line)?.[1];
  return protocol === undefined || protocol === 'udp' || protocol === '17' ? line : '\t\tprotocol tcp';
}

/**
 * Read `nft -s list table` output. Element lists (which nft wraps over several lines) are
 * removed from the text and collected per set; what remains is the structure.
 */
export function parseTableListing(text: string): TableListing {
  const kept: string[] = [];
  const found = new Map<string, string[]>();
  let currentSet: string | undefined;
  let inCtTimeout = false;
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] ?? '';
    const header = SET_HEADER.exec(line);
    if (header !== null) currentSet = header[1];
    else if (line === '\t}') currentSet = undefined;
    if (CT_TIMEOUT_HEADER.test(line)) inCtTimeout = true;
    else if (line === '\t}') inCtTimeout = false;
    const start = ELEMENTS_START.exec(line);
    if (start === null) {
      kept.push(inCtTimeout ? canonicalProtocolLine(line) : line);
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
  let flowElements: readonly string[] = [];
  let rateElements: readonly string[] = [];
  let fragmentElements: readonly string[] = [];
  const unknownSets: string[] = [];
  for (const [name, list] of found) {
    if (isSetName(name)) elements[name] = uniqueSorted(list);
    else if (name === FLOW_SET) flowElements = uniqueSorted(list);
    else if (name === FLOW_RATE_SET) rateElements = uniqueSorted(list);
    else if (name === FRAGMENT_RATE_SET) fragmentElements = uniqueSorted(list);
    else unknownSets.push(name);
  }
  return { structure: kept.join('\n'), elements, flowElements, rateElements, fragmentElements, unknownSets };
}

const FLOW_ELEMENT = /^(\S+)(.*)$/;

/**
 * The keys of FLOW_SET elements whose expression is not the rule's `ct count over N`. Only a
 * hand edit makes one, and it would cap its client differently or, with no expression at all,
 * drop every new flow of its client: the audit deletes them (the next new flow of the client
 * starts a count again). Elements the rule made are left alone: deleting one would forget the
 * flows its client holds.
 */
export function strayFlowKeys(flowElements: readonly string[], settings: TableSettings): string[] {
  return strayKeys(flowElements, ` ct count over ${settings.clientFlowLimit}`);
}

function strayKeys(listed: readonly string[], expected: string): string[] {
  return listed.flatMap((element) => {
    const [, key = element, rest = ''] = FLOW_ELEMENT.exec(element) ?? [];
    return rest === expected ? [] : [key];
  });
}

/** The expression FLOW_RATE_SET's elements carry (nft prints a `limit` so, rule and element alike). */
function flowRateExpression(settings: TableSettings): string {
  return `limit rate over ${settings.clientNewFlowRate}/second burst ${clientNewFlowBurst(settings)} packets`;
}

/**
 * The keys of FLOW_RATE_SET elements whose expression is not the rule's limit (a hand edit, or
 * none): deleted like strayFlowKeys'. Deleting one only gives its client a full bucket again.
 */
export function strayRateKeys(rateElements: readonly string[], settings: TableSettings): string[] {
  return strayKeys(rateElements, ` ${flowRateExpression(settings)}`);
}

/** The keys of FRAGMENT_RATE_SET elements whose expression is not the rule's limit: deleted like strayRateKeys'. */
export function strayFragmentKeys(fragmentElements: readonly string[]): string[] {
  return strayKeys(fragmentElements, ` ${fragmentRateExpression}`);
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

/** nft commands for `table`'s sets among `names`: deletions first, one command per set and direction. */
function tableElementCommands(table: string, names: readonly SetName[], diff: ElementDiff): string {
  const lines: string[] = [];
  for (const [verb, elements] of [
    ['delete', diff.delete],
    ['add', diff.add],
  ] as const) {
    for (const name of names) {
      const list = elements[name];
      if (list.length > 0) lines.push(`${verb} element ${table} ${name} { ${list.join(', ')} }`);
    }
  }
  return lines.map((line) => `${line}\n`).join('');
}

/** Which tables the firewall makes: without `arpGuard` (the kernel has no arp family), the inet table alone. */
export interface FirewallTables {
  readonly arpGuard: boolean;
}

const BOTH_TABLES: FirewallTables = { arpGuard: true };

/**
 * nft commands for a diff, in both tables: the inet table's sets, then the ARP guard's
 * (ARP_SET_NAMES, the same elements). Deletions first in each, one command per set and direction.
 */
export function elementCommands(diff: ElementDiff, { arpGuard }: FirewallTables = BOTH_TABLES): string {
  return `${tableElementCommands(TABLE, SET_NAMES, diff)}${arpGuard ? tableElementCommands(ARP_TABLE, ARP_SET_NAMES, diff) : ''}`;
}

/** The elements ARP_TABLE holds of a model's: its sets' only, the others empty. */
export function arpElementsOf(elements: FirewallElements): FirewallElements {
  return { ...emptyElements(), client_links: elements.client_links, client_sources: elements.client_sources };
}

/**
 * Replace whatever table exists (or none) with the full one, in one transaction: `add` makes the
 * `delete` valid when there is no table yet.
 */
function replaceOneTableScript(table: FirewallTable, desired: FirewallElements, settings: TableSettings): string {
  const [name, text, names] = table === 'inet' ? [TABLE, staticTableText(settings), SET_NAMES] : [ARP_TABLE, staticArpTableText(), ARP_SET_NAMES];
  return `add table ${name}\ndelete table ${name}\n${text}${tableElementCommands(name, names, { add: desired, delete: emptyElements() })}`;
}

/** Replace both tables (whatever exists of them) with full ones, in one transaction. */
export function replaceTableScript(desired: FirewallElements, settings: TableSettings): string {
  return `${replaceOneTableScript('inet', desired, settings)}${replaceOneTableScript('arp', desired, settings)}`;
}

/** The table each of the firewall's tables is: family and name. */
export const TABLE_OF: Readonly<Record<FirewallTable, string>> = { inet: TABLE, arp: ARP_TABLE };

/**
 * Delete `tables` (by default both) in one transaction, by name and nothing else: `add` first, so
 * one that is gone already is no failure.
 */
export function removeTableScript(tables: readonly FirewallTable[] = ['inet', 'arp']): string {
  return tables.map((table) => `add table ${TABLE_OF[table]}\ndelete table ${TABLE_OF[table]}\n`).join('');
}

/** The tables as `nft -n -s list table` prints each; undefined for one that does not exist. */
export interface FirewallListings {
  readonly inet: string | undefined;
  readonly arp: string | undefined;
}

export type FirewallPlan =
  | { readonly kind: 'unchanged' }
  | {
      readonly kind: 'update-elements';
      /** The inet table's. */
      readonly diff: ElementDiff;
      /** ARP_TABLE's, in its sets (ARP_SET_NAMES) only. */
      readonly arpDiff: ElementDiff;
      /** FLOW_SET elements to delete: see strayFlowKeys. */
      readonly strayFlowKeys: readonly string[];
      /** FLOW_RATE_SET elements to delete: see strayRateKeys. */
      readonly strayRateKeys: readonly string[];
      readonly script: string;
    }
  | {
      readonly kind: 'replace-table';
      /** The inet table's, when it is replaced; else the ARP table's. */
      readonly reason: 'missing' | 'structure';
      /** The tables made anew; the other one, if any, gets its element changes in the same script. */
      readonly tables: readonly FirewallTable[];
      readonly script: string;
    };

/** What one table needs: made anew (and why), or its element changes (commands, possibly none). */
type TableStep =
  | { readonly replace: 'missing' | 'structure' }
  | { readonly replace: null; readonly diff: ElementDiff; readonly strayFlowKeys: string[]; readonly strayRateKeys: string[]; readonly script: string };

/**
 * What to do given the current listings, the model and the settings: nothing when everything
 * matches, element changes when only elements differ, else each table whose structure differs (or
 * that is missing) anew, the other one's elements changed in the same transaction (so the inet
 * table's flow counts survive a repair of the ARP guard). FLOW_SET's and FLOW_RATE_SET's elements
 * are traffic's: kept (see strayFlowKeys, strayRateKeys), whatever they count. Without `arpGuard`
 * (the kernel has no arp family), the inet table alone: the ARP guard's listing is not looked at.
 */
export function planFirewall(listings: FirewallListings, model: ValidFirewallModel, settings: TableSettings, { arpGuard }: FirewallTables = BOTH_TABLES): FirewallPlan {
  const desired = desiredElements(model);
  const inet = ((): TableStep => {
    if (listings.inet === undefined) return { replace: 'missing' };
    const current = parseTableListing(listings.inet);
    if (current.structure !== staticTableText(settings) || current.unknownSets.length > 0) return { replace: 'structure' };
    const stray = strayFlowKeys(current.flowElements, settings);
    const strayRate = strayRateKeys(current.rateElements, settings);
    const strayFragment = strayFragmentKeys(current.fragmentElements);
    const diff = diffElements(current.elements, desired);
    const deleteStray = (set: string, keys: readonly string[]): string => (keys.length > 0 ? `delete element ${TABLE} ${set} { ${keys.join(', ')} }\n` : '');
    const script = `${deleteStray(FLOW_SET, stray)}${deleteStray(FLOW_RATE_SET, strayRate)}${deleteStray(FRAGMENT_RATE_SET, strayFragment)}${tableElementCommands(TABLE, SET_NAMES, diff)}`;
    return { replace: null, diff, strayFlowKeys: stray, strayRateKeys: strayRate, script };
  })();
  const arp = ((): TableStep => {
    // No ARP guard to make (the kernel has no arp family): whatever is listed is left alone.
    if (!arpGuard) return { replace: null, diff: { add: emptyElements(), delete: emptyElements() }, strayFlowKeys: [], strayRateKeys: [], script: '' };
    if (listings.arp === undefined) return { replace: 'missing' };
    const current = parseTableListing(listings.arp);
    // A flow or rate set's elements listed here mean a set the ARP guard does not have: its structure differs anyway.
    if (current.structure !== staticArpTableText() || current.unknownSets.length > 0) return { replace: 'structure' };
    const diff = diffElements(current.elements, arpElementsOf(desired));
    return { replace: null, diff, strayFlowKeys: [], strayRateKeys: [], script: tableElementCommands(ARP_TABLE, ARP_SET_NAMES, diff) };
  })();
  if (inet.replace === null && arp.replace === null) {
    const script = `${inet.script}${arp.script}`;
    if (script === '') return { kind: 'unchanged' };
    return { kind: 'update-elements', diff: inet.diff, arpDiff: arp.diff, strayFlowKeys: inet.strayFlowKeys, strayRateKeys: inet.strayRateKeys, script };
  }
  const steps = [
    ['inet', inet],
    ['arp', arp],
  ] as const;
  const tables = steps.flatMap(([table, step]) => (step.replace === null ? [] : [table]));
  const script = steps.map(([table, step]) => (step.replace === null ? step.script : replaceOneTableScript(table, desired, settings))).join('');
  return { kind: 'replace-table', reason: inet.replace ?? arp.replace ?? 'structure', tables, script };
}
