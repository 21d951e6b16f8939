// Which devices under a link's names are the link's own: those of the kind the link makes there.
// The device prefix's names are the linker's (gc takes them so, and a link's plan replaces a
// device of another kind under one), but a device of another kind there (a vxlan or an ifb left
// under a bridge's name, a bridge under a port's) is not the link's device: it does not make the
// link present (list, show), linked or up (a record without attach modes: list, show, unlink,
// link), nor a recorded link's devices there (kept-attach's goneLink, switched VMM sides). Such a
// device is foreign: list and show say so, link replaces it, unlink deletes it with the link's
// devices. Pure: the devices come in as the kernel reported them.
import type { AttachMode } from './attach-mode.js';
import type { DeviceRole, LinkDeviceNames } from './device-names.js';
import { DEVICE_KIND, type ObservedDevice } from './device-plan.js';
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
}

/** A link's names, bridge first, each with the kinds the link makes there (`attached`: its recorded modes, if any). */
export function expectedLinkDevices(names: LinkDeviceNames, attached: LinkAttachment | undefined): ExpectedDevice[] {
  return [
    { role: 'bridge', device: names.bridge, kinds: [DEVICE_KIND.bridge] },
    { role: 'client', device: names.client, kinds: sideDeviceKinds(attached?.client) },
    { role: 'provider', device: names.provider, kinds: sideDeviceKinds(attached?.provider) },
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

/** What is under a link's names. */
export interface LinkDevicesSeen {
  /** The names that hold a device of the kind the link makes there. */
  readonly own: readonly string[];
  /** Every name holds one (the link's devices are all there). */
  readonly whole: boolean;
  /** The names that hold a device of another kind, in the order of `expected`. */
  readonly foreign: readonly ForeignDevice[];
}

/** Tell a link's own devices from foreign ones among the devices the kernel has (`host`, by name). */
export function linkDevicesSeen(expected: readonly ExpectedDevice[], host: ReadonlyMap<string, Pick<ObservedDevice, 'kind'>>): LinkDevicesSeen {
  const own: string[] = [];
  const foreign: ForeignDevice[] = [];
  for (const { role, device, kinds } of expected) {
    const found = host.get(device);
    if (found === undefined) continue;
    if (found.kind !== null && kinds.includes(found.kind)) own.push(device);
    else foreign.push({ role, device, kind: found.kind, expected: kinds });
  }
  return { own, whole: own.length === expected.length, foreign };
}
