// Which devices under a link's names are the link's own: those of the kind the link makes there.
// The device prefix's names are the linker's (gc takes them so, and a link's plan replaces a
// device of another kind under one), but a device of another kind there (a vxlan or an ifb left
// under a bridge's name, a bridge under a port's) is not the link's device: it does not make the
// link present (list, show), linked or up (a record without attach modes: list, show, unlink,
// link), nor a recorded link's devices there (kept-attach's goneLink, switched VMM sides). Such a
// device is foreign: list and show say so, link replaces it, unlink deletes it with the link's
// devices. A veth of the link's whose far end is not in its VM's namespace under its name (moved,
// renamed, or that namespace no longer mounted) is the link's, but the link is not whole (list, show): its plan
// makes the pair anew. Pure: the devices come in as the kernel reported them.
import type { AttachMode } from './attach-mode.js';
import type { DeviceRole, LinkDeviceNames } from './device-names.js';
import { BRIDGE_SETTINGS, DEVICE_KIND, type ObservedDevice, PORT_SETTINGS, type SettingChanged, addressText, portSettingsChanged, settingsChanged } from './device-plan.js';
import type { LinkAttachment } from './link-state.js';

/**
 * The kinds a side's host device is made as in `mode`: a veth for netns, a tap for every other
 * mode; where no mode is recorded (a record written before the state kept them), either.
 */
export function sideDeviceKinds(mode: AttachMode | undefined): readonly string[] {
  if (mode === undefined) return [DEVICE_KIND.tap, DEVICE_KIND.veth];
  return mode === 'netns' ? [DEVICE_KIND.veth] : [DEVICE_KIND.tap];
}

/** A name of a link and the kinds its device may be there. */
export interface ExpectedDevice {
  readonly role: DeviceRole;
  readonly device: string;
  readonly kinds: readonly string[];
  /** A side's: the VM namespace a veth there has its far end in (netns mode), where the caller tells it. */
  readonly netns?: string;
}

/** The VM namespace of each side's VM (`<netnsPrefix><vm>`), where a veth there has its far end. */
export interface SideNamespaces {
  readonly client: string;
  readonly provider: string;
}

/**
 * A link's names, bridge first, each with the kinds the link makes there (`attached`: its recorded
 * modes, if any); with `namespaces`, each side's with the namespace its veth's far end is in.
 */
export function expectedLinkDevices(names: LinkDeviceNames, attached: LinkAttachment | undefined, namespaces?: SideNamespaces): ExpectedDevice[] {
  return [
    { role: 'bridge', device: names.bridge, kinds: [DEVICE_KIND.bridge] },
    { role: 'client', device: names.client, kinds: sideDeviceKinds(attached?.client), ...(namespaces !== undefined && { netns: namespaces.client }) },
    { role: 'provider', device: names.provider, kinds: sideDeviceKinds(attached?.provider), ...(namespaces !== undefined && { netns: namespaces.provider }) },
  ];
}

/** A device under one of a link's names that is of another kind than the link makes there. */
export interface ForeignDevice {
  readonly role: DeviceRole;
  readonly device: string;
  /** As the kernel reports it; null for a device without link info (an ethernet device, say). */
  readonly kind: string | null;
  /** The kinds the link's device there is made as. */
  readonly expected: readonly string[];
}

/** A veth of a link's side whose far end is not in the namespace of the side's VM under the veth's name. */
export interface FarEndElsewhere {
  readonly role: DeviceRole;
  readonly device: string;
  /** The namespace the far end is to be in. */
  readonly netns: string;
}

/** What is under a link's names. */
export interface LinkDevicesSeen {
  /** The names that hold a device of the kind the link makes there. */
  readonly own: readonly string[];
  /** Every name holds one: the link's devices are all there. */
  readonly devicesThere: boolean;
  /** They are all there, and no veth of them has its far end elsewhere. */
  readonly whole: boolean;
  /** The names that hold a device of another kind, in the order of `expected`. */
  readonly foreign: readonly ForeignDevice[];
  /** Of `own`, the veths whose far end is not in their VM's namespace under their name (only where the caller gave `farEnds`). */
  readonly farEndsElsewhere: readonly FarEndElsewhere[];
}

/**
 * Where veths' far ends are, as `list` and `show` find out (namespaceIds, farEndNames): the id
 * the current namespace gives each VM namespace it has one for (as IFLA_LINK_NETNSID gives a
 * veth's far end), and the name each veth's far end there has, by the veth's name (null: gone
 * meanwhile; none where the kernel did not show it: then the namespace alone counts).
 */
export interface FarEndsFound {
  readonly netnsIds: ReadonlyMap<string, number>;
  readonly names: ReadonlyMap<string, string | null>;
}

/**
 * Tell a link's own devices from foreign ones among the devices the kernel has (`host`, by name).
 * With `farEnds`, a veth under a side's name whose `expected` names a namespace is whole only
 * with its far end there under its own name: its peer in a namespace of that id, named like it
 * (where the kernel showed the name).
 * As the plan takes a pair (device-plan.ts), which takes the device under the veth's name there
 * for its far end only where it is the veth's peer, and makes the pair anew where the namespace
 * does not hold it so (moved elsewhere, renamed, another veth given its name), or is not mounted
 * (no id).
 */
export function linkDevicesSeen(
  expected: readonly ExpectedDevice[],
  host: ReadonlyMap<string, Pick<ObservedDevice, 'kind' | 'peerNetnsId'>>,
  farEnds?: FarEndsFound,
): LinkDevicesSeen {
  const own: string[] = [];
  const foreign: ForeignDevice[] = [];
  const farEndsElsewhere: FarEndElsewhere[] = [];
  for (const { role, device, kinds, netns } of expected) {
    const found = host.get(device);
    if (found === undefined) continue;
    if (found.kind === null || !kinds.includes(found.kind)) {
      foreign.push({ role, device, kind: found.kind, expected: kinds });
      continue;
    }
    own.push(device);
    if (found.kind !== DEVICE_KIND.veth || netns === undefined || farEnds === undefined) continue;
    const id = farEnds.netnsIds.get(netns);
    const farName = farEnds.names.get(device);
    if (id === undefined || found.peerNetnsId !== id || (farName !== undefined && farName !== device)) farEndsElsewhere.push({ role, device, netns });
  }
  const devicesThere = own.length === expected.length;
  return { own, devicesThere, whole: devicesThere && farEndsElsewhere.length === 0, foreign, farEndsElsewhere };
}

/** A side's device of a link that is not a port of the link's bridge (`ip link set ... nomaster`, or put on another): the link carries nothing. */
export interface OffBridge {
  readonly role: Exclude<DeviceRole, 'bridge'>;
  readonly device: string;
  /** The device it is a port of instead; null: of none. */
  readonly master: string | null;
}

/**
 * Of a link whose devices are all there (`seen`), the side devices that are not ports of its
 * bridge: as `list` and `show` flag them (`link` puts them back, fixDevice in device-plan.ts).
 * None where a device is missing or foreign: the link is said so first.
 */
export function portsOffBridge(names: LinkDeviceNames, seen: Pick<LinkDevicesSeen, 'devicesThere'>, host: ReadonlyMap<string, Pick<ObservedDevice, 'master'>>): OffBridge[] {
  if (!seen.devicesThere) return [];
  const sides = [
    ['client', names.client],
    ['provider', names.provider],
  ] as const;
  return sides.flatMap(([role, device]) => {
    const master = host.get(device)?.master ?? null;
    return master === names.bridge ? [] : [{ role, device, master }];
  });
}

/** What is on a link's bridge that is none of the link's: as `list` and `show` flag it (`link` takes it off, foreignOnBridge in device-plan.ts). */
export interface BridgeForeign {
  /** Ports of its bridge other than its side devices. */
  readonly ports: readonly string[];
  /** The bridge's IP addresses, as `ip addr` shows them (198.51.100.1/24). */
  readonly addresses: readonly string[];  /** Devices stacked on the bridge (a macvlan: IFLA_LINK), each with its kind: the host (or whoever holds it) is a party on the link through it. link leaves them: not spectrum-link's. */
  readonly uppers: readonly { readonly device: string; readonly kind: string | null }[];
}

/**
 * Of a link whose devices are all there (`seen`), what is on its bridge that is none of the link's
 * (`host` observed with its bridges' ports and addresses). None where a device is missing or
 * foreign (the link is said so first), or where the observation did not look.
 */
export function foreignOnBridge(names: LinkDeviceNames, seen: Pick<LinkDevicesSeen, 'devicesThere'>, host: ReadonlyMap<string, Pick<ObservedDevice, 'ports' | 'addresses' | 'uppers'>>): BridgeForeign {
  const bridge = seen.devicesThere ? host.get(names.bridge) : undefined;
  return {
    ports: (bridge?.ports ?? []).map((port) => port.name).filter((port) => port !== names.client && port !== names.provider),
    addresses: (bridge?.addresses ?? []).map(addressText),
    uppers: (bridge?.uppers ?? []).map(({ name, kind }) => ({ device: name, kind })),
  };
}

/** A setting of a link's bridge or of its port there other than a new one has (`link` puts it back). */
export interface SettingOff {
  readonly device: string;
  /** Its `ip` name: stp_state, hairpin, ... */
  readonly setting: string;
  readonly value: number;
  readonly expected: number;
  /** Of a setting whose value is a device's ifindex (a port's backup_port), that device's name, where one here has it. */
  readonly valueDevice?: string;
}

/**
 * Of a link whose devices are all there (`seen`), the settings of its bridge (BRIDGE_SETTINGS) and
 * of its ports on it (PORT_SETTINGS) other than a new bridge and port have: as `list` and `show`
 * flag them (`link` puts them back). None where a device is missing or foreign.
 */
export function settingsOff(names: LinkDeviceNames, seen: Pick<LinkDevicesSeen, 'devicesThere'>, host: ReadonlyMap<string, Pick<ObservedDevice, 'index' | 'master' | 'settings' | 'up'>>): SettingOff[] {
  if (!seen.devicesThere) return [];
  const nameOf = (index: number): string | undefined => [...host].find(([, device]) => device.index === index)?.[0];
  const off = (device: string, changed: readonly SettingChanged[]): SettingOff[] =>
    changed.map(({ name, value, expected }) => {
      const valueDevice = PORT_SETTINGS.find((setting) => setting.name === name)?.device === true && value !== 0 ? nameOf(value) : undefined;
      return { device, setting: name, value, expected, ...(valueDevice !== undefined && { valueDevice }) };
    });
  const bridgeUp = host.get(names.bridge)?.up === true;
  const ports = [names.client, names.provider].filter((port) => host.get(port)?.master === names.bridge);
  return [
    ...off(names.bridge, settingsChanged(BRIDGE_SETTINGS, host.get(names.bridge)?.settings)),
    ...ports.flatMap((port) => off(port, portSettingsChanged(host.get(port)?.settings, bridgeUp))),
  ];
}
