// What a VMM needs to know to give a VM a NIC backed by an existing host tap. The linker decides
// the three names (host/device-names.ts, shared/link-mac.ts); the VMM adapters only pass them on.
// They end up inside VMM option strings (`tap=..,mac=..,id=..`) and QMP/REST bodies, so they are
// checked here once: nothing in them may break out of a comma-separated option list.
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
}

export type VmmNicErrorKind = 'id-syntax' | 'tap-syntax' | 'mac-syntax';

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
  return nic;
}

/** The QEMU netdev id that backs a NIC: the same in command-line arguments and in hot-plug. */
export function qemuNetdevId(nic: Pick<VmmNic, 'id'>): string {
  return `net-${nic.id}`;
}
