// What a VMM needs to know to give a VM a NIC backed by an existing host tap. The linker decides
// the three names (host/device-names.ts, shared/link-mac.ts); the VMM adapters only pass them on.
// They end up inside VMM option strings (`tap=..,mac=..,id=..`) and QMP/REST bodies, so they are
// checked here once: nothing in them may break out of a comma-separated option list. The link MTU
// goes along so that the guest's virtio-net NIC is told it (VIRTIO_NET_F_MTU); a guest not told
// stays at 1500, and its larger frames are then dropped by a bridge of a smaller MTU.
import { AddressError } from '../../shared/address-error.js';
import { formatLinkMac, parseLinkMac } from '../../shared/link-mac.js';
import { IFNAME_MAX } from '../device-names.js';

export interface VmmNic {
  /** VMM device id, e.g. the tap name. */
  readonly id: string;
  /** Host tap device name. */
  readonly tap: string;
  /** Canonical link MAC (upper-case hex pairs separated by ':'). */
  readonly mac: string;
  /** The link MTU, which the guest's NIC is to learn; absent: virtio-net's default, 1500. */
  readonly mtu?: number;
}

export type VmmNicErrorKind = 'id-syntax' | 'tap-syntax' | 'mac-syntax' | 'mtu-range';

export class VmmNicError extends Error {
  override readonly name = 'VmmNicError';
  constructor(
    readonly kind: VmmNicErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** Longest device id accepted; QEMU and cloud-hypervisor allow more, the linker needs less. */
export const VMM_ID_MAX = 64;

// QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'. cloud-hypervisor accepts
// any string but refuses ids starting with its own prefix "_" (e.g. "_net0"), which this excludes.
const ID_SYNTAX = /^[A-Za-z][A-Za-z0-9._-]*$/;
// A Linux interface name (dev_valid_name) restricted to characters that are safe in option lists.
const TAP_SYNTAX = /^[A-Za-z0-9_.-]+$/;

/** The MTU a virtio-net guest takes when the device tells it none: Ethernet's. */
export const DEFAULT_NIC_MTU = 1500;
/**
 * The MTUs a NIC can be told: from IPv4's minimum (Linux's ETH_MIN_MTU; its virtio-net driver
 * ignores an MTU offered below it) to 65535. QEMU takes all of them: host_mtu is a uint16 where 0
 * means "not offered" (QEMU 7.2 checks nothing more); cloud-hypervisor reads it off the tap.
 */
export const NIC_MTU_MIN = 68;
export const NIC_MTU_MAX = 65535;

const show = (text: string): string => JSON.stringify(text.length > 32 ? `${text.slice(0, 32)}…` : text);

/** Check a NIC description; returns it unchanged, or throws a VmmNicError saying what is wrong. */
export function vmmNic(nic: VmmNic): VmmNic {
  if (nic.id.length > VMM_ID_MAX || !ID_SYNTAX.test(nic.id)) {
    throw new VmmNicError(
      'id-syntax',
      `VMM device id ${show(nic.id)} is not valid: it must be 1 to ${VMM_ID_MAX} characters, a letter first, then letters, digits, '.', '-' or '_'`,
    );
  }
  if (nic.tap.length > IFNAME_MAX || !TAP_SYNTAX.test(nic.tap) || nic.tap === '.' || nic.tap === '..') {
    throw new VmmNicError(
      'tap-syntax',
      `tap name ${show(nic.tap)} is not valid: it must be a Linux interface name of 1 to ${IFNAME_MAX} characters: letters, digits, '.', '-' or '_'`,
    );
  }
  let canonical: string;
  try {
    canonical = formatLinkMac(parseLinkMac(nic.mac));
  } catch (error) {
    if (error instanceof AddressError) throw new VmmNicError('mac-syntax', `NIC ${nic.id}: ${error.message}`);
    throw error;
  }
  if (canonical !== nic.mac) {
    throw new VmmNicError('mac-syntax', `NIC ${nic.id}: MAC ${show(nic.mac)} is not in canonical form: write it as ${canonical}`);
  }
  if (nic.mtu !== undefined && !(Number.isInteger(nic.mtu) && nic.mtu >= NIC_MTU_MIN && nic.mtu <= NIC_MTU_MAX)) {
    throw new VmmNicError('mtu-range', `NIC ${nic.id}: MTU ${String(nic.mtu)} cannot be given to a VMM: give a whole number from ${NIC_MTU_MIN} to ${NIC_MTU_MAX}`);
  }
  return nic;
}

/** The QEMU netdev id that backs a NIC: the same in command-line arguments and in hot-plug. */
export function qemuNetdevId(nic: Pick<VmmNic, 'id'>): string {
  return `net-${nic.id}`;
}

/**
 * QEMU's `host_mtu` for a NIC (VIRTIO_NET_F_MTU), or undefined where the link has the MTU the
 * guest takes anyway: then the device is made as before, without the property.
 */
export function qemuHostMtu(nic: Pick<VmmNic, 'mtu'>): number | undefined {
  return nic.mtu === undefined || nic.mtu === DEFAULT_NIC_MTU ? undefined : nic.mtu;
}
