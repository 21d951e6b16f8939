// Pure codec between device steps and route netlink (rtnetlink(7)): the requests a program for
// shared/native/rtnl.c holds, and the RTM_NEWLINK answers read back into observed devices.
// Layouts from <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/veth.h>, <linux/ipv6.h>,
// <linux/if_tun.h>, <linux/net_namespace.h>.
import { type DeviceAddress, type DeviceStep, type ObservedDevice, type PortSeen, TUN_MODE_KIND, isStateAlone } from './device-plan.js';
import { ipv6Text } from '../shared/ipv6-text.js';
import type { Program } from '../shared/rtnl-socket.js';

/** IFLA_INFO_SLAVE_KIND and IFLA_INFO_SLAVE_DATA: a port's kind of master, and its settings there. */
const IFLA_INFO_SLAVE_KIND = 4;
const IFLA_INFO_SLAVE_DATA = 5;
/** BRIDGE_SETTINGS (device-plan.ts) in a bridge's IFLA_INFO_DATA: IFLA_BR_* and their sizes. */
const BRIDGE_ATTRIBUTES: Readonly<Record<string, { readonly type: number; readonly size: 1 | 2 | 4 }>> = {
  forward_delay: { type: 1, size: 4 },
  hello_time: { type: 2, size: 4 },
  max_age: { type: 3, size: 4 },
  ageing_time: { type: 4, size: 4 },
  stp_state: { type: 5, size: 4 },
  vlan_filtering: { type: 7, size: 1 },
  group_fwd_mask: { type: 9, size: 2 },
  mcast_snooping: { type: 23, size: 1 },
  /** Reported only by a kernel built with bridge netfilter (CONFIG_BRIDGE_NETFILTER), br_netfilter loaded or not. */
  nf_call_iptables: { type: 36, size: 1 },
  nf_call_ip6tables: { type: 37, size: 1 },
  nf_call_arptables: { type: 38, size: 1 },
};
/** PORT_SETTINGS in a bridge port's IFLA_INFO_SLAVE_DATA: IFLA_BRPORT_* (u8 each, but backup_port's ifindex). */
const PORT_ATTRIBUTES: Readonly<Record<string, { readonly type: number; readonly size: 1 | 2 | 4 }>> = {
  state: { type: 1, size: 1 },
  hairpin: { type: 4, size: 1 },
  guard: { type: 5, size: 1 },
  root_block: { type: 6, size: 1 },
  fastleave: { type: 7, size: 1 },
  learning: { type: 8, size: 1 },
  flood: { type: 9, size: 1 },
  proxy_arp: { type: 10, size: 1 },
  mcast_flood: { type: 27, size: 1 },
  bcast_flood: { type: 30, size: 1 },
  neigh_suppress: { type: 32, size: 1 },
  isolated: { type: 33, size: 1 },
  /** Linux 5.18 on: an older kernel reports none, and none is compared. */
  locked: { type: 39, size: 1 },
  /** Linux 6.2 on, as locked. */
  mab: { type: 40, size: 1 },
  /** Reported only where the port has one (bridgeSettingsOf: 0 where it has none); 0 put back takes it away. */
  backup_port: { type: 34, size: 4 },
};

const NLMSG_HDRLEN = 16;
const IFINFOMSG_LEN = 16;
const NLA_HDRLEN = 4;

const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_GETLINK = 18;
const RTM_NEWADDR = 20;
const RTM_DELADDR = 21;
const RTM_GETADDR = 22;
const RTM_NEWNSID = 88;
const RTM_GETNSID = 90;

const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;

const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_LINK = 5;
const IFLA_MASTER = 10;
const IFLA_LINKINFO = 18;
const IFLA_NET_NS_FD = 28;
const IFLA_EXT_MASK = 29;
const IFLA_AF_SPEC = 26;
const IFLA_GROUP = 27;
const IFLA_LINK_NETNSID = 37;
/** A request's: the namespace (by the id this one gives it) that a device it names is in. */
const IFLA_TARGET_NETNSID = 46;
const AF_INET = 2;
const AF_BRIDGE = 7;
const AF_INET6 = 10;
/** struct ifaddrmsg: family, prefix length, flags, scope (u8 each), index (u32). */
const IFADDRMSG_LEN = 8;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
/** ifa_flags: an IPv4 address after the first of its subnet on its device. */
const IFA_F_SECONDARY = 0x01;
const IFLA_INET6_CONF = 2;
/** DEVCONF_FORWARDING and DEVCONF_DISABLE_IPV6 in <linux/ipv6.h>: their places among IFLA_INET6_CONF's s32 values. */
const DEVCONF_FORWARDING = 0;
const DEVCONF_DISABLE_IPV6 = 26;
const IFLA_INET6_ADDR_GEN_MODE = 8;
const IN6_ADDR_GEN_MODE_NONE = 1;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
/** A tun device's mode, in its IFLA_INFO_DATA (u8: IFF_TUN or IFF_TAP). */
const IFLA_TUN_TYPE = 3;
const IFF_TUN = 1;
/** struct rtgenmsg, padded: the head of a namespace id message. */
const RTGENMSG_LEN = 4;
const NETNSA_NSID = 1;
const NETNSA_FD = 3;
const NLA_TYPE_MASK = 0x3fff;
/** Leave the 200-odd bytes of counters out of answers: nothing here reads them. */
const RTEXT_FILTER_SKIP_STATS = 1 << 3;

const IFF_UP = 0x1;
/** Up and operationally up (the kernel's netif_running and netif_oper_up: a carrier, say). */
const IFF_RUNNING = 0x40;
const IFNAMSIZ = 16;

const align4 = (length: number): number => (length + 3) & ~3;

/** Record kinds of a program (rtnl.c). */
const KIND_REQUEST = 1;
const KIND_TAP = 2;
const KIND_ENSLAVE = 3;
const KIND_DISABLE_IPV6 = 4;
/**
 * A record kind's flag (rtnl.c's GONE_GOES_ON): refused with ENODEV (its device gone already), or,
 * an address's delete, with EADDRNOTAVAIL (that address gone already), the record is said failed
 * so, and the program goes on as after one done.
 */
const FLAG_GONE_GOES_ON = 0x100;
/**
 * A record kind's flag (rtnl.c's DOWN_GOES_ON): an RTM_NEWLINK refused with ENETDOWN (a port's
 * STP state on a port whose device does not run) is said failed so, and the program goes on.
 */
const FLAG_DOWN_GOES_ON = 0x200;

const text = new TextEncoder();

/**
 * Writes a program for rtnl.c: records appended in place to one growing buffer (a program for
 * a thousand links holds several thousand records; small arrays per attribute were most of the
 * cost of building it).
 */
export class ProgramWriter {
  private bytes = new Uint8Array(4096);
  private view = new DataView(this.bytes.buffer);
  private length = 0;
  private recordStart = 0;
  private messageStart = 0;
  private readonly nests: number[] = [];
  /** Records written so far. */
  count = 0;

  private reserve(extra: number): number {
    if (this.length + extra > this.bytes.length) {
      let size = this.bytes.length * 2;
      while (size < this.length + extra) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    const at = this.length;
    this.length += extra;
    return at;
  }

  // Bytes past `length` are still zero (the buffer only grows; nothing is written beyond what
  // is reserved), so padding and zeroed headers need no writes.
  private pad(): void {
    this.reserve(align4(this.length) - this.length);
  }

  private beginRecord(kind: number): void {
    this.recordStart = this.reserve(8);
    this.view.setUint32(this.recordStart, kind, true);
  }

  private endRecord(): void {
    this.view.setUint32(this.recordStart + 4, this.length - this.recordStart - 8, true);
    this.pad();
    this.count++;
  }

  private beginMessage(type: number, flags: number): void {
    this.messageStart = this.reserve(NLMSG_HDRLEN);
    this.view.setUint16(this.messageStart + 4, type, true);
    this.view.setUint16(this.messageStart + 6, NLM_F_REQUEST | flags, true);
  }

  private endMessage(): void {
    this.view.setUint32(this.messageStart, this.length - this.messageStart, true);
  }

  private ifinfomsg(index: number, up: boolean, family = 0): void {
    const at = this.reserve(IFINFOMSG_LEN);
    this.bytes[at] = family;
    this.view.setInt32(at + 4, index, true);
    this.view.setUint32(at + 8, up ? IFF_UP : 0, true);
    this.view.setUint32(at + 12, up ? IFF_UP : 0, true);
  }

  private attributeHeader(type: number, payloadLength: number): number {
    const at = this.reserve(NLA_HDRLEN);
    this.view.setUint16(at, NLA_HDRLEN + payloadLength, true);
    this.view.setUint16(at + 2, type, true);
    return at;
  }

  private stringAttribute(type: number, value: string): void {
    const length = Buffer.byteLength(value) + 1;
    this.attributeHeader(type, length);
    const at = this.reserve(length);
    text.encodeInto(value, this.bytes.subarray(at, at + length - 1));
    this.pad();
  }

  private u32Attribute(type: number, value: number): void {
    this.attributeHeader(type, 4);
    const at = this.reserve(4); // before this.view is read: reserving may replace the buffer
    this.view.setUint32(at, value >>> 0, true);
  }

  private u16Attribute(type: number, value: number): void {
    this.attributeHeader(type, 2);
    const at = this.reserve(2); // before this.view is read: reserving may replace the buffer
    this.view.setUint16(at, value, true);
    this.pad();
  }

  private u8Attribute(type: number, value: number): void {
    this.attributeHeader(type, 1);
    const at = this.reserve(1);
    this.bytes[at] = value;
    this.pad();
  }

  private macAttribute(type: number, mac: string): void {
    const octets = mac.split(':');
    this.attributeHeader(type, octets.length);
    const at = this.reserve(octets.length);
    octets.forEach((octet, index) => (this.bytes[at + index] = Number.parseInt(octet, 16)));
    this.pad();
  }

  private beginNest(type: number): void {
    this.nests.push(this.attributeHeader(type, 0));
  }

  private endNest(): void {
    const at = this.nests.pop() ?? 0;
    this.view.setUint16(at, this.length - at, true);
  }

  /**
   * The ifinfomsg of a request about an existing device: by the index the plan saw it under where
   * it has one, else by name. Never both: with an index, IFLA_IFNAME asks for a rename.
   */
  private device(name: string, index: number | undefined, up: boolean): void {
    this.ifinfomsg(index ?? 0, up);
    if (index === undefined) this.stringAttribute(IFLA_IFNAME, name);
  }

  /** The record that carries out one step (in the namespace of the socket it runs on). */
  step(step: DeviceStep, namespaceFds: NamespaceFds): this {
    switch (step.op) {
      case 'delete':
        // By the index alone: the kernel then looks for no device by name (ENODEV where that one
        // is gone). Gone is what the step is for: its record says so, and the program goes on.
        this.linkRequest(RTM_DELLINK, 0, step.index, undefined, FLAG_GONE_GOES_ON);
        return this;
      case 'add-bridge':
        this.beginRecord(KIND_REQUEST);
        this.beginMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        this.ifinfomsg(0, false);
        this.stringAttribute(IFLA_IFNAME, step.name);
        this.beginNest(IFLA_LINKINFO);
        this.stringAttribute(IFLA_INFO_KIND, 'bridge');
        this.endNest();
        break;
      case 'add-tap':
      case 'disable-ipv6': {
        this.beginRecord(step.op === 'add-tap' ? KIND_TAP : KIND_DISABLE_IPV6);
        // IPv6 off goes by the index the plan saw (0: by name), as rtnl.c looks its name up then.
        if (step.op === 'disable-ipv6') this.view.setInt32(this.reserve(4), step.index ?? 0, true);
        const length = Buffer.byteLength(step.name) + 1;
        const at = this.reserve(length);
        text.encodeInto(step.name, this.bytes.subarray(at, at + length - 1));
        this.endRecord();
        return this;
      }
      case 'add-veth': {
        const fd = namespaceFds.get(step.peerNetns);
        if (fd === undefined) throw new Error(`ProgramWriter: no descriptor for namespace ${step.peerNetns}`);
        this.beginRecord(KIND_REQUEST);
        this.beginMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        this.ifinfomsg(0, false);
        this.stringAttribute(IFLA_IFNAME, step.name);
        this.beginNest(IFLA_LINKINFO);
        this.stringAttribute(IFLA_INFO_KIND, 'veth');
        this.beginNest(IFLA_INFO_DATA);
        this.beginNest(VETH_INFO_PEER);
        this.ifinfomsg(0, false);
        this.stringAttribute(IFLA_IFNAME, step.name);
        this.u32Attribute(IFLA_NET_NS_FD, fd);
        this.endNest();
        this.endNest();
        this.endNest();
        break;
      }
      case 'release':
        // IFLA_MASTER 0, by the index the plan saw. Gone meanwhile, it is off the bridge: the program goes on.
        this.linkRequest(RTM_NEWLINK, 0, step.index, () => this.u32Attribute(IFLA_MASTER, 0), FLAG_GONE_GOES_ON);
        return this;
      case 'delete-address': {
        // Found gone (flushed meanwhile: a DHCP client's, another tool's), it is off the device: the program goes on.
        this.beginRecord(KIND_REQUEST | FLAG_GONE_GOES_ON);
        this.beginMessage(RTM_DELADDR, 0);
        const at = this.reserve(IFADDRMSG_LEN);
        this.bytes[at] = AF_INET;
        this.bytes[at + 1] = step.prefixLength;
        this.view.setUint32(at + 4, step.index, true);
        this.attributeHeader(IFA_LOCAL, 4);
        const octets = this.reserve(4);
        step.address.split('.').forEach((octet, index) => (this.bytes[octets + index] = Number(octet)));
        break;
      }
      case 'bridge-settings':
      case 'port-settings': {
        // A bridge's own settings go in IFLA_INFO_DATA with its kind; a port's in IFLA_INFO_SLAVE_DATA (its master's).
        const bridge = step.op === 'bridge-settings';
        const table = bridge ? BRIDGE_ATTRIBUTES : PORT_ATTRIBUTES;
        // A port's STP state alone (the plan puts it back in a step of its own): refused as its
        // device stopped running meanwhile (ENETDOWN), the kernel holds it disabled until it runs
        // again, then forwards on it: the program goes on.
        const stateAlone = isStateAlone(step);
        this.beginRecord(KIND_REQUEST | (stateAlone ? FLAG_DOWN_GOES_ON : 0));
        this.beginMessage(RTM_NEWLINK, 0);
        this.ifinfomsg(step.index, false);
        this.beginNest(IFLA_LINKINFO);
        this.stringAttribute(bridge ? IFLA_INFO_KIND : IFLA_INFO_SLAVE_KIND, 'bridge');
        this.beginNest(bridge ? IFLA_INFO_DATA : IFLA_INFO_SLAVE_DATA);
        for (const [name, value] of Object.entries(step.settings)) {
          const attribute = table[name];
          if (attribute === undefined) throw new Error(`ProgramWriter: no bridge setting ${name}`);
          if (attribute.size === 1) this.u8Attribute(attribute.type, value);
          else if (attribute.size === 2) this.u16Attribute(attribute.type, value);
          else this.u32Attribute(attribute.type, value);
        }
        this.endNest();
        this.endNest();
        break;
      }
      case 'set': {
        const { mac, mtu, master, up, addrGenModeNone } = step.change;
        if (master === undefined) {
          this.beginRecord(KIND_REQUEST);
        } else {
          // The master's index is looked up when the step runs: a bridge made earlier in the
          // same program has none before.
          // IFNAMSIZ bytes, NUL included: a longer name would be cut short into another name.
          if (Buffer.byteLength(master) >= IFNAMSIZ) throw new Error(`ProgramWriter: master name ${JSON.stringify(master)} is longer than 15 bytes`);
          this.beginRecord(KIND_ENSLAVE);
          const at = this.reserve(IFNAMSIZ);
          text.encodeInto(master, this.bytes.subarray(at, at + IFNAMSIZ - 1));
        }
        this.beginMessage(RTM_NEWLINK, 0);
        this.device(step.name, step.index, up === true);
        if (mac !== undefined) this.macAttribute(IFLA_ADDRESS, mac);
        if (mtu !== undefined) this.u32Attribute(IFLA_MTU, mtu);
        if (addrGenModeNone === true) {
          this.beginNest(IFLA_AF_SPEC);
          this.beginNest(AF_INET6);
          this.u8Attribute(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
          this.endNest();
          this.endNest();
        }
        break;
      }
    }
    this.endMessage();
    this.endRecord();
    return this;
  }

  /** A query for one device by name (answered with its RTM_NEWLINK, or ENODEV). */
  getLink(name: string): this {
    return this.linkRequest(RTM_GETLINK, 0, 0, () => {
      this.stringAttribute(IFLA_IFNAME, name);
      this.u32Attribute(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    });
  }

  /**
   * A query for the device with this index in the namespace this one gives id `netnsId`
   * (IFLA_TARGET_NETNSID: no socket in that namespace needed), answered with its RTM_NEWLINK, or
   * ENODEV (none has that index there) or EINVAL (no namespace has that id now).
   */
  getLinkIn(netnsId: number, index: number): this {
    return this.linkRequest(RTM_GETLINK, 0, index, () => {
      this.u32Attribute(IFLA_TARGET_NETNSID, netnsId);
      this.u32Attribute(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    });
  }

  /** A query for every device of the namespace. */
  dumpLinks(): this {
    return this.linkRequest(RTM_GETLINK, NLM_F_DUMP, 0, () => this.u32Attribute(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS));
  }

  /**
   * A query for every bridge port of the namespace (RTM_GETLINK of family AF_BRIDGE: a short
   * answer per port, with its master, and nothing for a device that is none).
   */
  dumpBridgePorts(): this {
    this.beginRecord(KIND_REQUEST);
    this.beginMessage(RTM_GETLINK, NLM_F_DUMP);
    this.ifinfomsg(0, false, AF_BRIDGE);
    this.endMessage();
    this.endRecord();
    return this;
  }

  /**
   * A query for every device that is a port of the device with this index (a dump the kernel
   * filters by IFLA_MASTER: it answers with those alone).
   */
  dumpPortsOf(masterIndex: number): this {
    return this.linkRequest(RTM_GETLINK, NLM_F_DUMP, 0, () => {
      this.u32Attribute(IFLA_MASTER, masterIndex);
      this.u32Attribute(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    });
  }

  /** A query for every IP address of the namespace (RTM_GETADDR, both families). */
  dumpAddresses(): this {
    this.beginRecord(KIND_REQUEST);
    this.beginMessage(RTM_GETADDR, NLM_F_DUMP);
    this.reserve(IFADDRMSG_LEN);
    this.endMessage();
    this.endRecord();
    return this;
  }

  /** Delete the device with this index (what a removal observed: a name may be another device's altname). */
  deleteByIndex(index: number): this {
    return this.linkRequest(RTM_DELLINK, 0, index);
  }

  /** Put the device with this index in device group `group` (IFLA_GROUP; 0 is the default group). */
  setGroup(index: number, group: number): this {
    return this.linkRequest(RTM_NEWLINK, 0, index, () => this.u32Attribute(IFLA_GROUP, group));
  }

  /** Delete every device of the namespace in device group `group`, as one batch (ip link delete group). */
  deleteGroup(group: number): this {
    return this.linkRequest(RTM_DELLINK, 0, 0, () => this.u32Attribute(IFLA_GROUP, group));
  }

  /** A query for the id this namespace gives the namespace of descriptor `fd` (answered with an RTM_NEWNSID). */
  getNamespaceId(fd: number): this {
    this.beginRecord(KIND_REQUEST);
    this.beginMessage(RTM_GETNSID, 0);
    this.reserve(RTGENMSG_LEN); // rtgen_family AF_UNSPEC
    this.u32Attribute(NETNSA_FD, fd);
    this.endMessage();
    this.endRecord();
    return this;
  }

  /** One request record (its kind with `recordFlags`): a link message about device `index` (0: named by its attributes), with the attributes `body` writes. */
  private linkRequest(type: number, flags: number, index: number, body?: () => void, recordFlags = 0): this {
    this.beginRecord(KIND_REQUEST | recordFlags);
    this.beginMessage(type, flags);
    this.ifinfomsg(index, false);
    body?.();
    this.endMessage();
    this.endRecord();
    return this;
  }

  /** The program: its bytes (a copy) and how many records it holds. */
  finish(): Program {
    return { bytes: this.bytes.slice(0, this.length), records: this.count };
  }
}

export type { Program };

/**
 * Descriptors a program refers to: veth peers are placed by a namespace file descriptor, which
 * the caller opens before the run and closes after it.
 */
export type NamespaceFds = ReadonlyMap<string, number>;

/** A device as an RTM_NEWLINK answer describes it, before master indexes become names. */
export interface LinkInfo {
  readonly index: number;
  readonly name: string;
  /** As ObservedDevice's: the kernel's IFLA_INFO_KIND, TUN_MODE_KIND for a tun device in tun mode. */
  readonly kind: string | null;
  /** The index of its peer (a veth's far end; IFLA_LINK, else its own index where peerNetnsId is given), in the namespace peerNetnsId names, else in its own; null where it reports none. */
  readonly peerIndex: number | null;
  /** The id this namespace gives the namespace its peer is in (IFLA_LINK_NETNSID), null where that is its own (or it has no peer). */
  readonly peerNetnsId: number | null;
  readonly masterIndex: number | null;
  readonly mtu: number;
  readonly up: boolean;
  readonly mac: string;
  /** Whether IPv6 runs on it: the kernel reports IPv6 settings for it without disable_ipv6. */
  readonly ipv6: boolean;
  /** Whether IPv6 runs on it and its addrgenmode makes a link-local address (anything but none). */
  readonly ipv6LinkLocal: boolean;
  /** Whether IPv6 runs on it with forwarding on (DEVCONF_FORWARDING). */
  readonly ipv6Forwarding: boolean;
  /** Its device group (IFLA_GROUP; 0, the default, where the kernel says none). */
  readonly group: number;
  /** A bridge's BRIDGE_SETTINGS, or a bridge port's PORT_SETTINGS, as reported (by `ip` name); absent for any other device. */
  readonly settings?: Readonly<Record<string, number>>;
}

/** The settings of `table` found among these attributes (a bridge's IFLA_INFO_DATA, a port's IFLA_INFO_SLAVE_DATA). */
function settingsOf(data: Uint8Array | undefined, table: Readonly<Record<string, { readonly type: number; readonly size: 1 | 2 | 4 }>>): Record<string, number> | null {
  if (data === undefined) return null;
  const attributes = attributesOf(data, 0, data.length);
  const found: Record<string, number> = {};
  for (const [name, { type, size }] of Object.entries(table)) {
    const payload = attributes.get(type);
    const value = size === 1 ? payload?.[0] : size === 2 ? (u16Of(payload) ?? undefined) : (u32Of(payload) ?? undefined);
    if (value !== undefined) found[name] = value;
  }
  return found;
}

/** IFLA_BR_ROOT_PORT (u16): the port toward STP's root bridge; 0 where the bridge takes itself for root. */
const IFLA_BR_ROOT_PORT = 12;
/** The STP timers a bridge reports as its root gives them (the kernel's in-use values), not as they are set on it. */
const ROOT_TIMERS = ['forward_delay', 'hello_time', 'max_age'] as const;

/**
 * A bridge's settings from its IFLA_INFO_DATA. Its timers are the root's, which it learnt with
 * STP on: with STP off and a root port still (another bridge, a VM's, was root), they are not the
 * ones set on it, which no answer gives; they are left out (no setting put back changes them, and
 * the bridge takes itself for root again, its own timers with it, within max_age).
 */
function ownBridgeSettingsOf(data: Uint8Array | undefined): Record<string, number> | null {
  const settings = settingsOf(data, BRIDGE_ATTRIBUTES);
  if (settings === null || data === undefined || settings.stp_state !== 0) return settings;
  const rootPort = attributesOf(data, 0, data.length).get(IFLA_BR_ROOT_PORT);
  if (rootPort === undefined || rootPort.length < 2 || (rootPort[0] ?? 0) + (rootPort[1] ?? 0) === 0) return settings;
  return Object.fromEntries(Object.entries(settings).filter(([name]) => !(ROOT_TIMERS as readonly string[]).includes(name)));
}

/**
 * A bridge's settings (its IFLA_INFO_DATA), or a bridge port's (its IFLA_INFO_SLAVE_DATA), from its
 * IFLA_LINKINFO; null for another device. A port's STP state only where its device runs
 * (`running`: IFF_RUNNING, up and operationally up): one that does not is `disabled` whatever is
 * set (a tap no VMM holds open, a veth whose far end is down), which is no setting.
 */
function bridgeSettingsOf(info: Uint8Array | undefined, running: boolean): Record<string, number> | null {
  if (info === undefined) return null;
  const attributes = attributesOf(info, 0, info.length);
  if (stringOf(attributes.get(IFLA_INFO_KIND)) === 'bridge') return ownBridgeSettingsOf(attributes.get(IFLA_INFO_DATA));
  if (stringOf(attributes.get(IFLA_INFO_SLAVE_KIND)) !== 'bridge') return null;
  const settings = settingsOf(attributes.get(IFLA_INFO_SLAVE_DATA), PORT_ATTRIBUTES);
  if (settings !== null && !running) delete settings.state;
  // The kernel reports a backup port only where the port has one.
  if (settings !== null) settings.backup_port ??= 0;
  return settings;
}

function attributesOf(bytes: Uint8Array, start: number, end: number): Map<number, Uint8Array> {
  const found = new Map<number, Uint8Array>();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = start;
  while (offset + NLA_HDRLEN <= end) {
    const length = view.getUint16(offset, true);
    if (length < NLA_HDRLEN || offset + length > end) break;
    found.set(view.getUint16(offset + 2, true) & NLA_TYPE_MASK, bytes.subarray(offset + NLA_HDRLEN, offset + length));
    offset += align4(length);
  }
  return found;
}

function stringOf(payload: Uint8Array | undefined): string | null {
  if (payload === undefined) return null;
  const end = payload.indexOf(0);
  return Buffer.from(payload.buffer, payload.byteOffset, end < 0 ? payload.length : end).toString('utf8');
}

/** One of IFLA_INET6_CONF's s32 settings (DEVCONF_*), or null where the kernel reports too few. */
function devconf(conf: Uint8Array | undefined, index: number): number | null {
  if (conf === undefined || conf.length < 4 * (index + 1)) return null;
  return new DataView(conf.buffer, conf.byteOffset + 4 * index, 4).getInt32(0, true);
}

/**
 * What IFLA_AF_SPEC says of IPv6 on the device: whether it runs (reported, DEVCONF_DISABLE_IPV6
 * 0), and then whether it makes a link-local address (IFLA_INET6_ADDR_GEN_MODE not none; kernels
 * before 4.1 report no mode and always make one) and whether it forwards.
 */
function ipv6Of(afSpec: Uint8Array | undefined): { ipv6: boolean; ipv6LinkLocal: boolean; ipv6Forwarding: boolean } {
  const inet6 = afSpec === undefined ? undefined : attributesOf(afSpec, 0, afSpec.length).get(AF_INET6);
  const attributes = inet6 === undefined ? undefined : attributesOf(inet6, 0, inet6.length);
  const conf = attributes?.get(IFLA_INET6_CONF);
  if (attributes === undefined || (devconf(conf, DEVCONF_DISABLE_IPV6) ?? 0) !== 0) return { ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false };
  return {
    ipv6: true,
    ipv6LinkLocal: attributes.get(IFLA_INET6_ADDR_GEN_MODE)?.[0] !== IN6_ADDR_GEN_MODE_NONE,
    ipv6Forwarding: (devconf(conf, DEVCONF_FORWARDING) ?? 0) !== 0,
  };
}

function u16Of(payload: Uint8Array | undefined): number | null {
  if (payload === undefined || payload.length < 2) return null;
  return new DataView(payload.buffer, payload.byteOffset, 2).getUint16(0, true);
}

function u32Of(payload: Uint8Array | undefined): number | null {
  if (payload === undefined || payload.length < 4) return null;
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true);
}

function s32Of(payload: Uint8Array | undefined): number | null {
  if (payload === undefined || payload.length < 4) return null;
  return new DataView(payload.buffer, payload.byteOffset, 4).getInt32(0, true);
}

/**
 * The device's kind from its IFLA_LINKINFO: IFLA_INFO_KIND, but a tun device that says it is in
 * tun mode (IFLA_INFO_DATA's IFLA_TUN_TYPE, from Linux 4.20 on) is TUN_MODE_KIND: the kernel
 * calls taps and tun-mode devices both `tun`. One that does not say stays `tun` (a tap, as
 * before the kernel told them apart).
 */
function kindOf(info: Uint8Array | undefined): string | null {
  if (info === undefined) return null;
  const attributes = attributesOf(info, 0, info.length);
  const kind = stringOf(attributes.get(IFLA_INFO_KIND));
  if (kind !== 'tun') return kind;
  const data = attributes.get(IFLA_INFO_DATA);
  const type = data === undefined ? undefined : attributesOf(data, 0, data.length).get(IFLA_TUN_TYPE)?.[0];
  return type === IFF_TUN ? TUN_MODE_KIND : kind;
}

/**
 * Each message of `type` in `bytes` (answers to queries) whose body holds at least `headerLength`
 * bytes after the netlink header: where its body starts and where it ends; anything else is
 * skipped, and a message whose length runs past the bytes ends the walk.
 */
function* messagesOf(bytes: Uint8Array, type: number, headerLength: number): Generator<{ readonly body: number; readonly end: number }> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  while (offset + NLMSG_HDRLEN <= bytes.length) {
    const length = view.getUint32(offset, true);
    if (length < NLMSG_HDRLEN || offset + length > bytes.length) break;
    if (view.getUint16(offset + 4, true) === type && length >= NLMSG_HDRLEN + headerLength) yield { body: offset + NLMSG_HDRLEN, end: offset + length };
    offset += align4(length);
  }
}

/** Every RTM_NEWLINK message in `bytes` (answers to queries; anything else is skipped). */
export function decodeLinks(bytes: Uint8Array): LinkInfo[] {
  const links: LinkInfo[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const { body, end } of messagesOf(bytes, RTM_NEWLINK, IFINFOMSG_LEN)) {
    const attributes = attributesOf(bytes, body + IFINFOMSG_LEN, end);
    const address = attributes.get(IFLA_ADDRESS);
    const name = stringOf(attributes.get(IFLA_IFNAME));
    if (name !== null) {
      const index = view.getInt32(body + 4, true);
      const peerNetnsId = s32Of(attributes.get(IFLA_LINK_NETNSID));
      const flags = view.getUint32(body + 8, true);
      const settings = bridgeSettingsOf(attributes.get(IFLA_LINKINFO), (flags & IFF_RUNNING) !== 0);
      links.push({
        index,
        name,
        kind: kindOf(attributes.get(IFLA_LINKINFO)),
        // Kernels before 5.2 (and stable ones without its backport) leave IFLA_LINK out where it
        // is the device's own index, also for a peer in another namespace that has this index
        // there: then the peer's index is this one.
        peerIndex: u32Of(attributes.get(IFLA_LINK)) ?? (peerNetnsId === null ? null : index),
        peerNetnsId,
        masterIndex: u32Of(attributes.get(IFLA_MASTER)),
        mtu: u32Of(attributes.get(IFLA_MTU)) ?? 0,
        up: (flags & IFF_UP) !== 0,
        mac: address === undefined ? '' : [...address].map((octet) => octet.toString(16).padStart(2, '0')).join(':'),
        ...ipv6Of(attributes.get(IFLA_AF_SPEC)),
        group: u32Of(attributes.get(IFLA_GROUP)) ?? 0,
        ...(settings !== null && { settings }),
      });
    }
  }
  return links;
}

/**
 * Of every RTM_NEWLINK message in `bytes`, only the device's index, name and master: what a dump
 * of bridge ports is read for (a port's answer holds 30-odd settings besides, which decodeLinks
 * would read for nothing: two thirds of the time of a dump of 2000 ports).
 */
export function decodePorts(bytes: Uint8Array): Pick<LinkInfo, 'index' | 'name' | 'masterIndex'>[] {
  const ports: Pick<LinkInfo, 'index' | 'name' | 'masterIndex'>[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const { body, end } of messagesOf(bytes, RTM_NEWLINK, IFINFOMSG_LEN)) {
    let name: string | null = null;
    let masterIndex: number | null = null;
    let at = body + IFINFOMSG_LEN;
    while (at + NLA_HDRLEN <= end) {
      const size = view.getUint16(at, true);
      if (size < NLA_HDRLEN || at + size > end) break;
      const type = view.getUint16(at + 2, true) & NLA_TYPE_MASK;
      if (type === IFLA_IFNAME) name = stringOf(bytes.subarray(at + NLA_HDRLEN, at + size));
      else if (type === IFLA_MASTER) masterIndex = u32Of(bytes.subarray(at + NLA_HDRLEN, at + size));
      at += align4(size);
    }
    if (name !== null) ports.push({ index: view.getInt32(body + 4, true), name, masterIndex });
  }
  return ports;
}

/** An IP address an RTM_NEWADDR answer gives, with the index of its device. */
export interface AddressInfo extends DeviceAddress {
  readonly index: number;
}

/** Every RTM_NEWADDR message in `bytes` (IPv4 and IPv6; anything else is skipped). */
export function decodeAddresses(bytes: Uint8Array): AddressInfo[] {
  const found: AddressInfo[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const { body, end } of messagesOf(bytes, RTM_NEWADDR, IFADDRMSG_LEN)) {
    const family = bytes[body];
    const attributes = attributesOf(bytes, body + IFADDRMSG_LEN, end);
    // IFA_LOCAL is the address itself (IFA_ADDRESS the peer's, on a point-to-point device, or
    // one given a peer: `ip addr add A peer B`; the same as IFA_LOCAL otherwise).
    const local = attributes.get(IFA_LOCAL);
    const other = attributes.get(IFA_ADDRESS);
    const raw = local ?? other;
    const peerRaw = local !== undefined && other !== undefined && Buffer.compare(local, other) !== 0 ? other : undefined;
    const index = view.getUint32(body + 4, true);
    const prefixLength = bytes[body + 1] ?? 0;
    // IFA_F_SECONDARY is among ifa_flags' low 8 bits (IFA_FLAGS repeats them, and more).
    const secondary = ((bytes[body + 2] ?? 0) & IFA_F_SECONDARY) !== 0;
    if (family === AF_INET && raw?.length === 4) {
      const peer = peerRaw?.length === 4 ? { peer: [...peerRaw].join('.') } : {};
      found.push({ index, family: 4, address: [...raw].join('.'), prefixLength, ...(secondary && { secondary: true as const }), ...peer });
    } else if (family === AF_INET6 && raw?.length === 16) {
      found.push({ index, family: 6, address: ipv6Text(raw), prefixLength, ...(peerRaw?.length === 16 && { peer: ipv6Text(peerRaw) }) });
    }
  }
  return found;
}

/** What observedDevices adds where the observation looked at bridges (observeDevices' `bridges`). */
export interface BridgeDetails {
  /** Devices that are bridge ports, besides `links` (an AF_BRIDGE dump: a port not named among them). */
  readonly ports: readonly Pick<LinkInfo, 'index' | 'name' | 'masterIndex'>[];
  readonly addresses: readonly AddressInfo[];
}

/**
 * Observed devices by name. A master is named where it is among `links`; otherwise it is given
 * a name no device can have (it has a space), which differs from every wanted master. With
 * `bridges`, each bridge has its ports (those of `links` and of `bridges.ports`) and each device
 * its addresses.
 */
export function observedDevices(links: readonly LinkInfo[], bridges?: BridgeDetails): Map<string, ObservedDevice> {
  const names = new Map(links.map((link) => [link.index, link.name]));
  const portsOf = new Map<number, PortSeen[]>();
  // A device stacked on another of this namespace (a macvlan on a bridge) gives it as IFLA_LINK, no
  // IFLA_LINK_NETNSID (which a veth whose peer is elsewhere gives); one stacked on it from another
  // namespace is not among `links`.
  const uppersOf = new Map<number, { name: string; kind: string | null }[]>();
  if (bridges !== undefined) {
    for (const link of links) {
      if (link.peerNetnsId !== null || link.peerIndex === null || link.peerIndex === link.index || link.kind === 'veth') continue;
      uppersOf.set(link.peerIndex, [...(uppersOf.get(link.peerIndex) ?? []), { name: link.name, kind: link.kind }]);
    }
  }
  const addressesOf = new Map<number, DeviceAddress[]>();
  if (bridges !== undefined) {
    const seen = new Set<number>();
    for (const port of [...links, ...bridges.ports]) {
      if (port.masterIndex === null || seen.has(port.index)) continue;
      seen.add(port.index);
      const ports = portsOf.get(port.masterIndex) ?? [];
      ports.push({ name: port.name, index: port.index });
      portsOf.set(port.masterIndex, ports);
    }
    for (const { index, ...address } of bridges.addresses) addressesOf.set(index, [...(addressesOf.get(index) ?? []), address]);
  }
  return new Map(
    links.map((link) => [
      link.name,
      {
        ...(bridges !== undefined && link.kind === 'bridge' && { ports: portsOf.get(link.index) ?? [] }),
        ...(bridges !== undefined && link.kind === 'bridge' && { uppers: uppersOf.get(link.index) ?? [] }),
        ...(bridges !== undefined && { addresses: addressesOf.get(link.index) ?? [] }),
        ...(link.settings !== undefined && { settings: link.settings }),
        index: link.index,
        name: link.name,
        kind: link.kind,
        master: link.masterIndex === null ? null : (names.get(link.masterIndex) ?? `ifindex ${String(link.masterIndex)}`),
        mtu: link.mtu,
        up: link.up,
        mac: link.mac,
        ipv6: link.ipv6,
        ipv6LinkLocal: link.ipv6LinkLocal,
        ipv6Forwarding: link.ipv6Forwarding,
        ...(link.peerNetnsId !== null && { peerNetnsId: link.peerNetnsId, ...(link.peerIndex !== null && { peerIndex: link.peerIndex }) }),
      },
    ]),
  );
}

/**
 * The namespace id an RTM_NEWNSID answer gives (NETNSA_NSID), or null where it gives none or
 * says none is assigned (negative: NETNSA_NSID_NOT_ASSIGNED).
 */
export function decodeNamespaceId(bytes: Uint8Array): number | null {
  for (const { body, end } of messagesOf(bytes, RTM_NEWNSID, RTGENMSG_LEN)) {
    const id = s32Of(attributesOf(bytes, body + RTGENMSG_LEN, end).get(NETNSA_NSID));
    return id === null || id < 0 ? null : id;
  }
  return null;
}
