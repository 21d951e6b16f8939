// Pure planning of the host devices for client/provider connections: given what should exist
// and what the kernel reports, the device steps that make it so. Reconcile, never append:
// running the plan on its own result yields no steps.
// The host is no party on a VM's link: the bridge, the one host device a VM's frames reach
// (its ports hand every frame they receive to it), has IPv6 turned off. With it on, it would
// get a link-local address as soon as a VM attaches, and every VM could reach the host's
// services over it. The ports keep IPv6 (no frame reaches their own stack) but send nothing:
// with an address, each would send duplicate address detection, router solicitations and
// multicast listener reports into its VM's link whenever the VM starts. A new port gets
// addrgenmode none in the message that enslaves it (free: disable_ipv6 there would be one write
// per port, 5% of linking). Where the host forwards IPv6, a port also joins the all-routers
// groups and reports them, address or not: then, and on a port found making addresses (an older
// spectrum-link's), IPv6 goes off, which also drops the address it may have.
import type { NamespaceIdentity } from '../shared/rtnl-socket.js';

export type { NamespaceIdentity };

/** How one side of a connection reaches its VM. */
export type SideDevice =
  /** A tap the VMM opens (cloud-hypervisor, QEMU, or arguments printed for the user). */
  | { readonly kind: 'tap' }
  /** A veth whose far end, named like the host end, sits in the VM's network namespace. */
  | { readonly kind: 'veth'; readonly netns: string };

export interface DesiredSide {
  readonly device: string;
  /** The link MAC the VM's interface carries (set on the far end of a veth; the VMM sets it for a tap). */
  readonly mac: string;
  readonly attach: SideDevice;
}

export interface DesiredConnection {
  readonly bridge: string;
  readonly mtu: number;
  readonly client: DesiredSide;
  readonly provider: DesiredSide;
}

/** The kind the kernel reports for each device the plan makes (a tap is a `tun` device in tap mode). */
export const DEVICE_KIND = { bridge: 'bridge', tap: 'tun', veth: 'veth' } as const;

/**
 * The kind a `tun` device in tun mode (`ip tuntap add mode tun`: IP packets, no frames) is
 * observed as: no tap, so none of a link's (link-message.ts tells it by IFLA_TUN_TYPE, which
 * kernels report from 4.20 on; before, every `tun` device is taken as a tap, as it was).
 */
export const TUN_MODE_KIND = 'tun (mode tun)';

/** A network device as the kernel reports it, reduced to what the plan compares. */
export interface ObservedDevice {
  /** Its ifindex in its namespace: a step on a device the plan saw addresses it by this (DeviceStep). */
  readonly index: number;
  readonly name: string;
  /** `bridge`, `tun` (a tap), `veth`, ... (TUN_MODE_KIND for a tun device in tun mode), or null for a device without link info (loopback, ethernet). */
  readonly kind: string | null;
  readonly master: string | null;
  readonly mtu: number;
  readonly up: boolean;
  /** Lower-case colon form. */
  readonly mac: string;
  /** Whether the host's IPv6 runs on it (false: disable_ipv6 is set, or the kernel has no IPv6). */
  readonly ipv6: boolean;
  /** Whether IPv6 runs on it and gives it a link-local address once it has a carrier (addrgenmode is not none). */
  readonly ipv6LinkLocal: boolean;
  /** Whether IPv6 runs on it with forwarding on (it then joins the all-routers groups). */
  readonly ipv6Forwarding: boolean;
  /**
   * For a device whose peer is in another namespace (a veth whose far end is elsewhere), the id
   * this namespace gives that one (IFLA_LINK_NETNSID); absent where it has no peer elsewhere.
   */
  readonly peerNetnsId?: number;
  /** With peerNetnsId: that peer's index in its namespace (IFLA_LINK): the plan takes the VM namespace's device of this index for the peer, list and show look its name up by it. */
  readonly peerIndex?: number;
  /**
   * Of a bridge, where the observation looked (observeDevices' `bridges`): every device that is a
   * port of it. Absent where it did not look (nothing is known of its ports then).
   */
  readonly ports?: readonly PortSeen[];
  /**
   * Of a bridge, where the observation looked at every device of the namespace with its bridges
   * (list, show): the devices stacked on it (whose lower device it is, IFLA_LINK: a macvlan, a
   * vlan, an ipvlan), each with its kind. Absent where it did not look.
   */
  readonly uppers?: readonly { readonly name: string; readonly kind: string | null }[];
  /** Where the observation looked (observeDevices' `bridges`): the IP addresses the device has. Absent where it did not look. */
  readonly addresses?: readonly DeviceAddress[];
  /**
   * Of a bridge, its BRIDGE_SETTINGS; of a bridge's port, its PORT_SETTINGS (for that bridge),
   * each by its `ip` name, as the kernel reports them (one it does not report is absent).
   */
  readonly settings?: Readonly<Record<string, number>>;
}

/** A setting of a bridge or of a bridge's port, by its `ip` name, with the value a new one has. */
export interface BridgeSetting {
  readonly name: string;
  readonly value: number;
  /** Whether `ip` says it as on/off (a port's flags), not as a number. */
  readonly flag?: true;
  /** The words `ip -d link` says its values as (a port's STP state: `disabled` for 0, ...), where it says words. */
  readonly words?: readonly string[];
  /** Whether `ip` says it in hexadecimal (a bridge's group_fwd_mask: 0x8). */
  readonly hex?: true;
  /** Whether its value is a device's ifindex (a port's backup_port, a port of the same bridge), 0 for none: said by the device's name where known, `none` for 0. */
  readonly device?: true;
}

/**
 * The bridge settings a link's bridge keeps as the kernel makes a bridge (spectrum-link sets none
 * of them): STP off (on, a port joined anew forwards nothing for twice forward_delay), its
 * timers (in hundredths of a second, as `ip` gives them), no VLAN filtering; no link-local group
 * forwarded (group_fwd_mask: 802.1X, LLDP frames of one VM would reach the other), multicast
 * snooping on (off, every multicast frame floods); and no frame handed to the host's iptables,
 * ip6tables and arptables (nf_call_*: those matter only with br_netfilter loaded, whose sysctls
 * then send every bridge's frames there too; the kernel reports them wherever it is built with
 * bridge netfilter, loaded or not, and one it does not report is not compared).
 */
export const BRIDGE_SETTINGS: readonly BridgeSetting[] = [
  { name: 'stp_state', value: 0 },
  { name: 'forward_delay', value: 1500 },
  { name: 'hello_time', value: 200 },
  { name: 'max_age', value: 2000 },
  { name: 'ageing_time', value: 30000 },
  { name: 'vlan_filtering', value: 0 },
  { name: 'group_fwd_mask', value: 0, hex: true },
  { name: 'mcast_snooping', value: 1 },
  { name: 'nf_call_iptables', value: 0 },
  { name: 'nf_call_ip6tables', value: 0 },
  { name: 'nf_call_arptables', value: 0 },
];

/** A port's STP state (IFLA_BRPORT_STATE) as `ip -d link` says it, by its value (BR_STATE_*). */
const PORT_STATES = ['disabled', 'listening', 'learning', 'forwarding', 'blocking'] as const;

/**
 * The port settings a link's ports keep as the kernel makes a bridge port (`ip link set dev X type
 * bridge_slave ...`). With `state`: the kernel forwards on a port of a bridge that is up, with STP
 * off, as soon as the port's device runs (up, with a carrier), and holds one that does not run
 * `disabled`, whatever is set (it refuses any other state then, as it refuses any with STP on): a
 * port's state is observed only where its device runs (link-message.ts), compared only where its
 * bridge is up (portSettingsChanged), and put back after the bridge's STP went off (foreignOnBridge
 * before the ports' steps). `locked` on lets through only senders with an entry in the bridge's
 * table that no learning makes: the link carries nothing once the ones there age out; `mab` on
 * (Linux 6.2 on: an older kernel reports none) makes such entries for senders, locked, that
 * someone else is to unlock. `backup_port` (the ifindex of another port of the bridge, 0 none:
 * the kernel reports none where a port has none) sends a port's frames there once its carrier
 * goes: to the other VM's side, or to a foreign port.
 */
export const PORT_SETTINGS: readonly BridgeSetting[] = [
  { name: 'state', value: 3, words: PORT_STATES },
  { name: 'hairpin', value: 0, flag: true },
  { name: 'guard', value: 0, flag: true },
  { name: 'root_block', value: 0, flag: true },
  { name: 'fastleave', value: 0, flag: true },
  { name: 'learning', value: 1, flag: true },
  { name: 'flood', value: 1, flag: true },
  { name: 'proxy_arp', value: 0, flag: true },
  { name: 'mcast_flood', value: 1, flag: true },
  { name: 'bcast_flood', value: 1, flag: true },
  { name: 'neigh_suppress', value: 0, flag: true },
  { name: 'isolated', value: 0, flag: true },
  { name: 'locked', value: 0, flag: true },
  { name: 'mab', value: 0, flag: true },
  { name: 'backup_port', value: 0, device: true },
];

/** A setting found other than a new bridge (or port) has it: its name, the value found, the one it gets back. */
export interface SettingChanged {
  readonly name: string;
  readonly value: number;
  readonly expected: number;
}

/** The settings of `table` that `settings` (as observed) has otherwise than a new device; none where none were observed. */
export function settingsChanged(table: readonly BridgeSetting[], settings: Readonly<Record<string, number>> | undefined): SettingChanged[] {
  if (settings === undefined) return [];
  return table.flatMap(({ name, value }) => {
    const found = settings[name];
    return found === undefined || found === value ? [] : [{ name, value: found, expected: value }];
  });
}

/**
 * A port's PORT_SETTINGS (as observed) other than a new port's on its bridge: its STP state only
 * where its bridge is up (a bridge that is down holds every port `disabled`; link brings it up).
 */
export function portSettingsChanged(settings: Readonly<Record<string, number>> | undefined, bridgeUp: boolean): SettingChanged[] {
  return settingsChanged(PORT_SETTINGS, settings).filter(({ name }) => bridgeUp || name !== 'state');
}

/**
 * A setting's value as `ip -d link` says it: on/off for a flag, a port's STP state by its word, a
 * mask in hexadecimal, a device by its name (`deviceName`, where known; else by its ifindex) or
 * `none` for 0.
 */
export function settingText(table: readonly BridgeSetting[], name: string, value: number, deviceName?: string): string {
  const setting = table.find((entry) => entry.name === name);
  if (setting?.flag === true) return value === 0 ? 'off' : 'on';
  // As printf's %#x, which ip uses: 0 bare, any other with 0x.
  if (setting?.hex === true) return value === 0 ? '0' : `0x${value.toString(16)}`;
  if (setting?.device === true) return value === 0 ? 'none' : (deviceName ?? `ifindex ${value}`);
  return setting?.words?.[value] ?? String(value);
}

/**
 * A setting as `ip link set` takes it: its name and a number but for a flag (on/off; `ip` takes no
 * state word before iproute2 6.2); a device setting put back to none as its no- word (nobackup_port).
 */
const settingWords = (table: readonly BridgeSetting[], name: string, value: number): string[] => {
  const setting = table.find((entry) => entry.name === name);
  if (setting?.device === true && value === 0) return [`no${name}`];
  return [name, setting?.flag === true ? (value === 0 ? 'off' : 'on') : String(value)];
};

/** A port of a bridge, as observed: its name and the ifindex it had. */
export interface PortSeen {
  readonly name: string;
  readonly index: number;
}

/** An IP address of a device, as observed (`ip addr`'s ADDRESS/PREFIX). */
export interface DeviceAddress {
  readonly family: 4 | 6;
  /** Dotted (IPv4) or RFC 5952 (IPv6) form. */
  readonly address: string;
  readonly prefixLength: number;
  /**
   * An IPv4 address the kernel holds as secondary (IFA_F_SECONDARY: another of its subnet came
   * first): deleting that one deletes it too (or makes it the primary).
   */
  readonly secondary?: true;
  /** A point-to-point address's peer (`ip addr add A peer B`: IFA_ADDRESS other than IFA_LOCAL), in the same form. */
  readonly peer?: string;
}

/** An address as `ip addr` shows it: 198.51.100.1/24, or with its peer 198.51.100.1 peer 198.51.100.2/32. */
export const addressText = (address: DeviceAddress): string =>
  address.peer === undefined ? `${address.address}/${address.prefixLength}` : `${address.address} peer ${address.peer}/${address.prefixLength}`;

/**
 * A VM namespace as observed: which namespace its file held (the descriptor the devices were
 * listed through), and those devices. The indexes seen are that namespace's: one made anew under
 * the name since numbers its own devices from 1 again.
 */
export interface ObservedNamespace {
  readonly identity: NamespaceIdentity;
  readonly devices: ReadonlyMap<string, ObservedDevice>;
}

/** What the kernel has: the current namespace's devices and those of each VM namespace. */
export interface ObservedDevices {
  /** Whether the kernel runs IPv6 in the current namespace (without it, no device has IPv6 settings). */
  readonly ipv6: boolean;
  /** Whether a device made in the current namespace forwards IPv6 (net.ipv6.conf.default.forwarding). */
  readonly ipv6Forwarding: boolean;
  readonly host: ReadonlyMap<string, ObservedDevice>;
  /** null: the namespace does not exist. */
  readonly netns: ReadonlyMap<string, ObservedNamespace | null>;
  /**
   * The id the current namespace gives each namespace of `netns` that has one, as a device's
   * peerNetnsId names the namespace of its peer. One without an id (or not there) holds no peer of
   * a device here: the kernel gives one to the namespace of every peer it reports.
   */
  readonly netnsIds: ReadonlyMap<string, number>;
}

/** What a `set` step changes on an existing device; absent fields stay as they are. */
export interface DeviceChange {
  readonly mac?: string;
  readonly mtu?: number;
  readonly master?: string;
  readonly up?: true;
  /** addrgenmode none: IPv6 makes no link-local address for it (applied after the rest of the change). */
  readonly addrGenModeNone?: true;
}

/**
 * The device a step acts on that the plan saw: the ifindex it saw it under. The step addresses it
 * by that, not by its name: the kernel resolves a name to a device that has it as an altname too,
 * which someone may have given another device since the plan looked (and a device of ours renamed
 * meanwhile is still the one the plan decided on). IPv6 off, which has only a form by name
 * (/proc/sys), goes to the name the device of that index has when the step runs. Absent for a
 * device this plan creates.
 */
interface SeenIndex {
  readonly index?: number;
}

/** One change to one device, in the current namespace (netns null) or in a VM namespace. */
export type DeviceStep = { readonly netns: string | null } & (
  /**
   * Delete a device the plan saw, only ever by the index it saw it under (SeenIndex): one gone
   * when the step runs is not looked for under its name, which another device may have by then.
   * Gone, it has reached the step's goal: the step counts as done (netlink-devices.ts).
   * withFarEnd: a host veth whose peer may be the far end of its name that clearFarEnds deletes
   * first (the plan could not tell: that VM namespace has no id here), so found gone it may have
   * gone with that one; found gone without it, something else took it.
   */
  | { readonly op: 'delete'; readonly name: string; readonly index: number; readonly withFarEnd?: true }
  | { readonly op: 'add-bridge'; readonly name: string }
  | { readonly op: 'add-tap'; readonly name: string }
  /** A veth pair: this end here, the peer (same name) in namespace peerNetns. */
  | { readonly op: 'add-veth'; readonly name: string; readonly peerNetns: string }
  /** Take a device the plan saw as a port of a link's bridge that is none of the link's off it (nomaster: it is not ours to delete). */
  | { readonly op: 'release'; readonly name: string; readonly index: number; readonly homeBridge?: string }
  /** Remove an IPv4 address the plan saw on a device (IPv6 ones go with IPv6 off). */
  | { readonly op: 'delete-address'; readonly name: string; readonly index: number; readonly address: string; readonly prefixLength: number; readonly peer?: string }
  /** Put settings of a bridge (BRIDGE_SETTINGS), or of a bridge's port (PORT_SETTINGS), back to these values. */
  | { readonly op: 'bridge-settings' | 'port-settings'; readonly name: string; readonly index: number; readonly settings: Readonly<Record<string, number>> }
  /** Turn IPv6 off on it (which also removes every IPv6 address it has). */
  | ({ readonly op: 'disable-ipv6'; readonly name: string } & SeenIndex)
  | ({ readonly op: 'set'; readonly name: string; readonly change: DeviceChange } & SeenIndex)
);

/** A step as the command that does the same (for messages: every operator reads ip and sysctl). */
export function stepText(step: DeviceStep): string {
  switch (step.op) {
    case 'delete':
      return `ip link del dev ${step.name}`;
    case 'add-bridge':
      return `ip link add ${step.name} type bridge`;
    case 'add-tap':
      return `ip tuntap add dev ${step.name} mode tap vnet_hdr`;
    case 'add-veth':
      return `ip link add ${step.name} type veth peer name ${step.name} netns ${step.peerNetns}`;
    case 'release':
      return `ip link set dev ${step.name} nomaster`;
    case 'delete-address':
      return `ip addr del ${addressText({ family: 4, ...step })} dev ${step.name}`;
    case 'bridge-settings':
    case 'port-settings': {
      const [kind, table] = step.op === 'bridge-settings' ? ['bridge', BRIDGE_SETTINGS] : ['bridge_slave', PORT_SETTINGS];
      const words = Object.entries(step.settings).flatMap(([name, value]) => settingWords(table, name, value));
      return ['ip', 'link', 'set', 'dev', step.name, 'type', kind, ...words].join(' ');
    }
    case 'disable-ipv6':
      return `sysctl -w net.ipv6.conf.${step.name}.disable_ipv6=1`;
    case 'set': {
      const { mac, mtu, master, up, addrGenModeNone } = step.change;
      const words = ['ip', 'link', 'set', 'dev', step.name];
      if (mac !== undefined) words.push('address', mac);
      if (mtu !== undefined) words.push('mtu', String(mtu));
      if (master !== undefined) words.push('master', master);
      if (up === true) words.push('up');
      if (addrGenModeNone === true) words.push('addrgenmode', 'none');
      return words.join(' ');
    }
  }
}

/**
 * Steps come in three phases: clearing stale far ends in VM namespaces, everything in the
 * current namespace (which also creates veth far ends), then configuring those far ends.
 */
export interface DevicePlan {
  /** VM namespaces to create before any step runs. */
  readonly createNamespaces: readonly string[];
  /**
   * The VM namespaces the plan saw (there when it looked), each with the identity it had then:
   * its steps there (by the indexes it saw), and the veth peers it places there, go into that
   * namespace only; another under its name by then fails the run before any of them
   * (netlink-devices.ts). Not one it creates: absent when it looked, it saw nothing there, and its
   * steps there go by name alone.
   */
  readonly seenNamespaces: readonly { readonly netns: string; readonly identity: NamespaceIdentity }[];
  readonly clearFarEnds: readonly DeviceStep[];
  /** One list per connection, in plan order (empty where nothing changes). */
  readonly hostSteps: readonly (readonly DeviceStep[])[];
  readonly configureFarEnds: readonly DeviceStep[];
  /** Host devices this plan creates: deleting them undoes a failed run. */
  readonly creates: readonly string[];
  /**
   * The devices it found whose MTU it changes, each with the MTU it found (and the one it gives):
   * the undo of a failed run puts those back (mtuRestorePlan), as it deletes what it created.
   */
  readonly mtusBefore?: readonly MtuBefore[];
}

/** A device a plan found, and changes the MTU of: what it had (`mtu`), what the plan gives it (`to`). */
export interface MtuBefore {
  readonly netns: string | null;
  readonly name: string;
  readonly index: number;
  readonly mtu: number;
  readonly to: number;
}

/**
 * The plan that puts back the MTU `plan` changed on devices it found (the undo of a failed run,
 * after the devices it created are deleted): each as it was, by the index it was seen under, in
 * the namespace it was seen in (seenNamespaces: one made anew since is left alone). A host device
 * whose MTU goes back up past 1280 from below gets IPv6 off again after (the kernel starts it
 * afresh, on; `hostIpv6`: the kernel runs IPv6 here), as the plan gives it.
 */
export function mtuRestorePlan(plan: DevicePlan, hostIpv6: boolean): DevicePlan {
  const before = plan.mtusBefore ?? [];
  const back = (entry: MtuBefore): DeviceStep => ({ netns: entry.netns, op: 'set', name: entry.name, index: entry.index, change: { mtu: entry.mtu } });
  const host = before.filter((entry) => entry.netns === null);
  const hostSteps = host.flatMap((entry): DeviceStep[] => [
    back(entry),
    ...(hostIpv6 && entry.to < IPV6_MIN_MTU && entry.mtu >= IPV6_MIN_MTU ? [{ netns: null, op: 'disable-ipv6' as const, name: entry.name, index: entry.index }] : []),
  ]);
  const far = before.filter((entry) => entry.netns !== null);
  const namespaces = new Set(far.map((entry) => entry.netns));
  return {
    createNamespaces: [],
    seenNamespaces: plan.seenNamespaces.filter(({ netns }) => namespaces.has(netns)),
    clearFarEnds: [],
    hostSteps: hostSteps.length === 0 ? [] : [hostSteps],
    configureFarEnds: far.map(back),
    creates: [],
  };
}

/** Which device an MTU change is of: its namespace (the host's: none) and name. */
export const mtuDeviceKey = (device: { readonly netns: string | null; readonly name: string }): string => `${device.netns ?? ''}\n${device.name}`;

/** The MTU changes of these steps on devices seen (by their index), with the MTU each had (`seen`). */
function mtuChanges(steps: readonly DeviceStep[], seen: (step: DeviceStep & { op: 'set' }) => ObservedDevice | undefined): MtuBefore[] {
  const found = new Map<string, MtuBefore>();
  for (const step of steps) {
    if (step.op !== 'set' || step.change.mtu === undefined || step.index === undefined) continue;
    const device = seen(step);
    const key = mtuDeviceKey(step);
    // The first change of a device is from what it had (a bridge's MTU may be set twice: bridgeSteps).
    if (device === undefined || device.index !== step.index || device.mtu === step.change.mtu || found.has(key)) continue;
    found.set(key, { netns: step.netns, name: step.name, index: step.index, mtu: device.mtu, to: step.change.mtu });
  }
  return [...found.values()];
}

/** The kernel runs IPv6 on a device only from this MTU up (IPV6_MIN_MTU). */
const IPV6_MIN_MTU = 1280;

/**
 * The bridge's steps after its ports joined: IPv6 off (where it runs, or will run again), then
 * MTU and up. Below an MTU of 1280 the kernel takes IPv6 away itself, and gives it back, on, when
 * the MTU rises again: a bridge whose MTU rises past 1280 gets its MTU first, IPv6 off after.
 */
function bridgeSteps(connection: DesiredConnection, seen: ObservedDevice | undefined, hostIpv6: boolean): DeviceStep[] {
  const { bridge: name, mtu } = connection;
  const wanted = { name, master: null, mtu };
  if (!hostIpv6) return fixDevice(null, wanted, seen);
  const off: DeviceStep = { netns: null, op: 'disable-ipv6', name, ...(seen !== undefined && { index: seen.index }) };
  if (seen !== undefined && seen.mtu < IPV6_MIN_MTU && mtu >= IPV6_MIN_MTU) {
    return [{ netns: null, op: 'set', name, index: seen.index, change: { mtu } }, off, ...fixDevice(null, wanted, { ...seen, mtu })];
  }
  return [...(seen?.ipv6 === false ? [] : [off]), ...fixDevice(null, wanted, seen)];
}

/**
 * A port's steps: master, MTU and state, and IPv6 that sends nothing. A new port gets addrgenmode
 * none with the rest (it has no carrier yet, so no address either), or, where new devices
 * forward, IPv6 off before it comes up. An existing one making addresses or forwarding, or whose
 * MTU rises past 1280 (the kernel starts IPv6 on it afresh, with the namespace's defaults), gets
 * IPv6 off after. Below 1280 the kernel runs no IPv6 on it.
 */
function portSteps(connection: DesiredConnection, name: string, seen: ObservedDevice | undefined, observed: ObservedDevices): DeviceStep[] {
  const wanted = { name, master: connection.bridge, mtu: connection.mtu };
  if (!observed.ipv6 || connection.mtu < IPV6_MIN_MTU) return fixDevice(null, wanted, seen);
  const off: DeviceStep = { netns: null, op: 'disable-ipv6', name, ...(seen !== undefined && { index: seen.index }) };
  if (seen === undefined) return observed.ipv6Forwarding ? [off, ...fixDevice(null, wanted, seen)] : fixDevice(null, { ...wanted, addrGenModeNone: true }, seen);
  const noisy = seen.mtu < IPV6_MIN_MTU || (seen.ipv6 && (seen.ipv6LinkLocal || seen.ipv6Forwarding));
  return [...fixDevice(null, wanted, seen), ...(noisy ? [off] : [])];
}

/**
 * Steps that bring a device's master, MTU and state to what is wanted (seen undefined: a device
 * this plan creates, which gets addrgenmode none if wanted).
 */
function fixDevice(
  netns: string | null,
  wanted: { name: string; master: string | null; mtu: number; mac?: string; addrGenModeNone?: boolean },
  seen: ObservedDevice | undefined,
): DeviceStep[] {
  const mac = wanted.mac?.toLowerCase();
  const change: { -readonly [K in keyof DeviceChange]: DeviceChange[K] } = {};
  if (mac !== undefined && seen?.mac !== mac) change.mac = mac;
  if (seen?.mtu !== wanted.mtu) change.mtu = wanted.mtu;
  if (wanted.master !== null && seen?.master !== wanted.master) change.master = wanted.master;
  if (seen?.up !== true) change.up = true;
  if (seen === undefined && wanted.addrGenModeNone === true) change.addrGenModeNone = true;
  if (Object.keys(change).length === 0) return [];
  return [{ netns, op: 'set', name: wanted.name, ...(seen !== undefined && { index: seen.index }), change }];
}

/**
 * What the plan takes off an existing bridge of a link that is none of the link's (the host is
 * no party on a VM's link, nor is anything else): each port that is no side device of the plan's
 * (set nomaster, never deleted: it is not ours), and each IPv4 address (IPv6 ones go with IPv6
 * off, bridgeSteps). Nothing where the observation did not look at its ports and addresses. And
 * its settings found other than a new bridge has them (STP on, say) go back.
 */
function foreignOnBridge(bridge: ObservedDevice, sideDevices: ReadonlySet<string>, observed: ObservedDevices, homeBridges: ReadonlyMap<string, string>): DeviceStep[] {
  const ports = (bridge.ports ?? []).filter((port) => !sideDevices.has(port.name));
  // A side device of another recorded link goes back on its own link's bridge, where that is
  // there (seen: PlanOptions.homeBridges); else it is released as any other, its bridge named.
  const offStep = (port: PortSeen): DeviceStep => {
    const home = homeBridges.get(port.name);
    if (home === undefined) return { netns: null, op: 'release', name: port.name, index: port.index };
    if (observed.host.get(home)?.kind === DEVICE_KIND.bridge) return { netns: null, op: 'set', name: port.name, index: port.index, change: { master: home } };
    return { netns: null, op: 'release', name: port.name, index: port.index, homeBridge: home };
  };
  // Secondaries first: a primary's delete takes its subnet's secondaries with it, whose own
  // delete after it would fail (EADDRNOTAVAIL), the run with it.
  const ipv4 = (bridge.addresses ?? []).filter((address) => address.family === 4);
  const addresses = [...ipv4.filter((address) => address.secondary === true), ...ipv4.filter((address) => address.secondary !== true)];
  const changed = settingsChanged(BRIDGE_SETTINGS, bridge.settings);
  return [
    ...ports.map(offStep),
    ...(changed.length === 0 ? [] : [settingsStep('bridge-settings', bridge, changed)]),
    ...addresses.map((address): DeviceStep => ({
      netns: null,
      op: 'delete-address',
      name: bridge.name,
      index: bridge.index,
      address: address.address,
      prefixLength: address.prefixLength,
      ...(address.peer !== undefined && { peer: address.peer }),
    })),
  ];
}

/** The step that puts these settings of a device seen back. */
function settingsStep(op: 'bridge-settings' | 'port-settings', device: ObservedDevice, changed: readonly SettingChanged[]): DeviceStep {
  return { netns: null, op, name: device.name, index: device.index, settings: Object.fromEntries(changed.map(({ name, expected }) => [name, expected])) };
}

/**
 * A port that stays on its link's bridge (seen there: one joining anew gets a new port's
 * settings) with settings other than a new port's: the steps that put them back. Its STP state
 * goes back in a step of its own, after the others: a port whose device stops running (its
 * carrier lost) after the plan looked is refused any state but disabled (ENETDOWN), which the
 * kernel holds it in until it runs again, and then, STP off, forwards on it by itself. That
 * refusal counts as done (netlink-devices.ts), and in a step with the other settings it would
 * stop those the kernel sets after the state (br_setport).
 */
function portSettingsSteps(connection: DesiredConnection, seen: ObservedDevice | undefined, bridge: ObservedDevice | undefined): DeviceStep[] {
  if (seen?.master !== connection.bridge) return [];
  const changed = portSettingsChanged(seen.settings, bridge?.kind === DEVICE_KIND.bridge && bridge.up);
  const others = changed.filter(({ name }) => name !== 'state');
  const state = changed.filter(({ name }) => name === 'state');
  return [...(others.length === 0 ? [] : [settingsStep('port-settings', seen, others)]), ...(state.length === 0 ? [] : [settingsStep('port-settings', seen, state)])];
}

/**
 * Whether `step` is a port's STP state put back alone (portSettingsSteps), whose refusal for a
 * carrier lost meanwhile (ENETDOWN) counts as done: the program's flag (link-message.ts), the
 * outcome's reading (netlink-devices.ts) and what link says (foreignChanged) go by it alike.
 */
export function isStateAlone(step: DeviceStep): boolean {
  return step.op === 'port-settings' && Object.keys(step.settings).join() === 'state';
}

interface PlanBuilder {
  readonly missingNamespaces: Set<string>;
  readonly seenNamespaces: Map<string, NamespaceIdentity>;
  readonly clearFarEnds: DeviceStep[];
  /** The current connection's host steps. */
  hostSteps: DeviceStep[];
  readonly configureFarEnds: DeviceStep[];
  readonly creates: string[];
}

/**
 * Whether `far`, a device of the VM namespace whose id here is `netnsId` (undefined: it has
 * none), is the peer of `host`: there (the host end's peer namespace id) and of the index the host
 * end gives its peer.
 */
function isPeer(host: ObservedDevice, far: ObservedDevice, netnsId: number | undefined): boolean {
  return netnsId !== undefined && host.peerNetnsId === netnsId && host.peerIndex === far.index;
}

/**
 * Whether `far` may be the peer of `host` though isPeer cannot say so: a veth whose peer has the
 * far end's index in a namespace the plan has no id for here (where it has one, isPeer tells).
 * Deleting `far` then may take `host` along.
 */
function maybePeers(host: ObservedDevice, far: ObservedDevice | undefined, netnsId: number | undefined): boolean {
  return netnsId === undefined && far?.kind === DEVICE_KIND.veth && host.kind === DEVICE_KIND.veth && host.peerNetnsId !== undefined && host.peerIndex === far.index;
}

function planSide(side: DesiredSide, connection: DesiredConnection, observed: ObservedDevices, plan: PlanBuilder, bridgeReplaced: boolean): void {
  const { hostSteps: steps, creates } = plan;
  const found = observed.host.get(side.device);
  // A port of a device that is deleted to make way for our bridge (a bond by that name, say) is
  // released with it: whatever master it reports now, it has none by the time it is set.
  const seen = bridgeReplaced && found?.master === connection.bridge ? { ...found, master: null } : found;
  const attach = side.attach;

  if (attach.kind === 'tap') {
    const isTap = seen?.kind === DEVICE_KIND.tap;
    if (seen !== undefined && !isTap) steps.push({ netns: null, op: 'delete', name: side.device, index: seen.index });
    if (!isTap) {
      steps.push({ netns: null, op: 'add-tap', name: side.device });
      creates.push(side.device);
    }
    steps.push(...portSteps(connection, side.device, isTap ? seen : undefined, observed), ...portSettingsSteps(connection, isTap ? seen : undefined, observed.host.get(connection.bridge)));
    return;
  }

  const farNamespace = observed.netns.get(attach.netns) ?? null;
  if (farNamespace === null) plan.missingNamespaces.add(attach.netns);
  else plan.seenNamespaces.set(attach.netns, farNamespace.identity);
  const far = farNamespace?.devices.get(side.device);
  // A veth pair lives and dies together: both ends present, each the other's peer, means the pair
  // is ours and whole. A veth under the name there that is not the host end's peer (another pair's
  // end moved in under it) is none of the pair's: the pair is made anew, as list and show take it
  // (link-device-kinds.ts).
  const pairWhole = seen?.kind === DEVICE_KIND.veth && far?.kind === DEVICE_KIND.veth && isPeer(seen, far, observed.netnsIds.get(attach.netns));
  if (!pairWhole) {
    if (seen !== undefined) steps.push({ netns: null, op: 'delete', name: side.device, index: seen.index, ...(maybePeers(seen, far, observed.netnsIds.get(attach.netns)) && { withFarEnd: true as const }) });
    if (far !== undefined) plan.clearFarEnds.push({ netns: attach.netns, op: 'delete', name: side.device, index: far.index });
    steps.push({ netns: null, op: 'add-veth', name: side.device, peerNetns: attach.netns });
    creates.push(side.device);
  }
  steps.push(...portSteps(connection, side.device, pairWhole ? seen : undefined, observed), ...portSettingsSteps(connection, pairWhole ? seen : undefined, observed.host.get(connection.bridge)));
  // The far end is the VM's own interface: its IPv6 is the guest's business.
  plan.configureFarEnds.push(
    ...fixDevice(attach.netns, { name: side.device, master: null, mtu: connection.mtu, mac: side.mac }, pairWhole ? far : undefined),
  );
}

/**
 * What a plan changes of a link's bridge that is not spectrum-link's (foreignOnBridge and the
 * ports' settings put back): said by `link`, as it touches another tool's configuration.
 */
export interface ForeignChanged {
  readonly bridge: string;
  /** Ports taken off it (nomaster). */
  readonly released: readonly string[];
  /** Of those, side devices of another recorded link whose bridge is not there, each with that bridge: on no bridge now. */
  readonly releasedFromLink?: readonly { readonly device: string; readonly bridge: string }[];
  /** Side devices of another recorded link moved off it back onto their own link's bridge. */
  readonly movedHome?: readonly { readonly device: string; readonly bridge: string }[];
  /** Its IPv4 addresses removed, as `ip addr` shows them (198.51.100.1/24). */
  readonly addressesRemoved: readonly string[];
  /**
   * Each device (the bridge, a side device on it) whose settings went back, with them as `ip -d
   * link` says them (`stp_state 0`, `hairpin off`); `untilCarrier` where its STP state was refused
   * as it had lost its carrier meanwhile: the kernel holds it disabled until the carrier is back,
   * then forwards on it.
   */
  readonly settingsPutBack: readonly { readonly device: string; readonly settings: readonly string[]; readonly untilCarrier?: true }[];
}

/**
 * Of each connection (in plan order), what its plan changes of its bridge that is not
 * spectrum-link's: null where nothing. `heldDisabled`: the ports whose STP state the kernel
 * refused as their carrier was lost (PlanMade.heldDisabled).
 */
export function foreignChanged(connections: readonly DesiredConnection[], plan: DevicePlan, heldDisabled: ReadonlySet<string> = new Set()): (ForeignChanged | null)[] {
  return connections.map((connection, index) => {
    const steps = plan.hostSteps[index] ?? [];
    const released = steps.flatMap((step) => (step.op === 'release' ? [step.name] : []));
    const releasedFromLink = steps.flatMap((step) => (step.op === 'release' && step.homeBridge !== undefined ? [{ device: step.name, bridge: step.homeBridge }] : []));
    // A set step with a master other than the connection's is a foreign port moved to its own bridge (foreignOnBridge).
    const movedHome = steps.flatMap((step) => (step.op === 'set' && step.change.master !== undefined && step.change.master !== connection.bridge ? [{ device: step.name, bridge: step.change.master }] : []));
    const addressesRemoved = steps.flatMap((step) => (step.op === 'delete-address' ? [addressText({ family: 4, ...step })] : []));
    // A port's STP state goes back in a step of its own (portSettingsSteps): said with its other settings.
    const settingsPutBack: { device: string; settings: string[]; untilCarrier?: true }[] = [];
    for (const step of steps) {
      if (step.op !== 'bridge-settings' && step.op !== 'port-settings') continue;
      const table = step.op === 'bridge-settings' ? BRIDGE_SETTINGS : PORT_SETTINGS;
      const settings = Object.entries(step.settings).map(([name, value]) => `${name} ${settingText(table, name, value)}`);
      const untilCarrier = isStateAlone(step) && heldDisabled.has(step.name);
      const said = settingsPutBack.find(({ device }) => device === step.name);
      if (said === undefined) settingsPutBack.push({ device: step.name, settings, ...(untilCarrier && { untilCarrier }) });
      else {
        said.settings.push(...settings);
        if (untilCarrier) said.untilCarrier = true;
      }
    }
    if (released.length + addressesRemoved.length + settingsPutBack.length + movedHome.length === 0) return null;
    return { bridge: connection.bridge, released, ...(releasedFromLink.length > 0 && { releasedFromLink }), ...(movedHome.length > 0 && { movedHome }), addressesRemoved, settingsPutBack };
  });
}

/** Whether a plan changes nothing: the kernel already has what is desired. */
export function isEmptyPlan(plan: DevicePlan): boolean {
  return plan.createNamespaces.length + plan.clearFarEnds.length + plan.hostSteps.flat().length + plan.configureFarEnds.length === 0;
}

/**
 * The host devices a plan deletes to make anew under the same name (one of another kind: a veth
 * that is to be a tap, a bridge's name on something else; half a veth pair): undoing the plan
 * (deleting `creates`) takes the new ones away and cannot bring the old ones back. One found gone
 * when its delete runs was not deleted by the plan (netlink-devices.ts's PlanMade.vanished).
 */
export function replacedDevices(plan: DevicePlan): string[] {
  return plan.hostSteps.flat().flatMap((step) => (step.op === 'delete' && step.netns === null ? [step.name] : []));
}

/**
 * The kind each host device a plan creates is made as, as the kernel reports it (a tap is `tun`):
 * a device found under such a name but of another kind is one the plan had yet to replace.
 */
export function createdKinds(plan: DevicePlan): Map<string, string> {
  const kinds = new Map<string, string>();
  for (const step of plan.hostSteps.flat()) {
    if (step.op === 'add-bridge') kinds.set(step.name, DEVICE_KIND.bridge);
    else if (step.op === 'add-tap') kinds.set(step.name, DEVICE_KIND.tap);
    else if (step.op === 'add-veth') kinds.set(step.name, DEVICE_KIND.veth);
  }
  return kinds;
}

/** What a plan knows besides the devices: the links recorded besides its own. */
export interface PlanOptions {
  /**
   * The side devices of links recorded that are none of the plan's, each with its link's bridge:
   * one found on a bridge of the plan's goes back on that bridge where it is observed (a bridge),
   * else off (said with it: a release step's homeBridge).
   */
  readonly homeBridges?: ReadonlyMap<string, string>;
  /**
   * The side devices of links the run makes in other plans (link --all's other chunks): one found
   * on a bridge of this plan's is left to its own plan's steps, as a side device of this plan's
   * other connections is (never released nor moved home by this plan: said by none).
   */
  readonly runSideDevices?: ReadonlySet<string>;
}

/** The steps that make every connection's devices exist exactly as desired. */
export function planDevices(connections: readonly DesiredConnection[], observed: ObservedDevices, options: PlanOptions = {}): DevicePlan {
  const plan: PlanBuilder = { missingNamespaces: new Set(), seenNamespaces: new Map(), clearFarEnds: [], hostSteps: [], configureFarEnds: [], creates: [] };
  const { creates } = plan;
  const hostSteps: DeviceStep[][] = [];
  // A side device of another connection of the plan found on this one's bridge is none to take
  // off: its own steps put it on its bridge (a release after them would take it off that one).
  const sideDevices = new Set([...connections.flatMap((c) => [c.client.device, c.provider.device]), ...(options.runSideDevices ?? [])]);
  for (const connection of connections) {
    const steps: DeviceStep[] = [];
    plan.hostSteps = steps;
    hostSteps.push(steps);
    const bridge = observed.host.get(connection.bridge);
    const isBridge = bridge?.kind === DEVICE_KIND.bridge;
    if (bridge !== undefined && !isBridge) steps.push({ netns: null, op: 'delete', name: connection.bridge, index: bridge.index });
    if (!isBridge) {
      steps.push({ netns: null, op: 'add-bridge', name: connection.bridge });
      creates.push(connection.bridge);
    }
    const bridgeReplaced = bridge !== undefined && !isBridge;
    if (isBridge) steps.push(...foreignOnBridge(bridge, sideDevices, observed, options.homeBridges ?? new Map()));
    planSide(connection.client, connection, observed, plan, bridgeReplaced);
    planSide(connection.provider, connection, observed, plan, bridgeReplaced);
    // The bridge comes up after its ports joined, as in a hand-written batch.
    steps.push(...bridgeSteps(connection, isBridge ? bridge : undefined, observed.ipv6));
  }
  const { missingNamespaces, seenNamespaces, clearFarEnds, configureFarEnds } = plan;
  const mtusBefore = mtuChanges([...hostSteps.flat(), ...configureFarEnds], (step) =>
    step.netns === null ? observed.host.get(step.name) : (observed.netns.get(step.netns)?.devices.get(step.name) ?? undefined),
  );
  return {
    createNamespaces: [...missingNamespaces],
    seenNamespaces: [...seenNamespaces].map(([netns, identity]) => ({ netns, identity })),
    clearFarEnds,
    hostSteps,
    configureFarEnds,
    creates,
    ...(mtusBefore.length === 0 ? {} : { mtusBefore }),
  };
}
