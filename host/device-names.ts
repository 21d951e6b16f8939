// Host network device names for one link, derived from the link's client id only.
//
// Scheme: <prefix><role letter><id in decimal>, e.g. with prefix "sn" and id 42310:
//   bridge   snb42310
//   client   snc42310   (tap handed to the client VM)
//   provider snp42310   (tap handed to the provider VM)
// (Spectrum's host renames a removed tap _dead<pid> instead of deleting it, working around
// cloud-hypervisor not closing taps it no longer uses; here a link's devices are deleted, so there
// is no fourth name, and gc claims no other.)
// Linux limits interface names to 15 bytes (IFNAMSIZ 16 with the NUL). The id takes at most 5
// digits (65534) and the role one letter, so a prefix may have at most 9 bytes. VM names are never
// used: they are longer, and a name chosen by a VM's owner must not pick a host device.
// The mapping is injective for a fixed prefix: the role letter ends the prefix and ids are written
// without leading zeros, so parseDeviceName can take a name back to its role and id.
import { type ClientId, isClientId } from '../shared/client-id.js';
import { CLIENT_ID_MAX } from '../shared/scheme.js';
import { characterCount, quoteText } from '../shared/shown-text.js';

export type DeviceNameErrorKind = 'prefix-empty' | 'prefix-too-long' | 'prefix-syntax';

export class DeviceNameError extends Error {
  override readonly name = 'DeviceNameError';
  constructor(
    readonly kind: DeviceNameErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** Linux's limit on interface names, in bytes, without the terminating NUL. */
export const IFNAME_MAX = 15;
/** Digits of the largest id. */
export const ID_DIGITS_MAX = String(CLIENT_ID_MAX).length;
/** Longest prefix that still leaves room for the role letter and the longest id. */
export const DEVICE_PREFIX_MAX = IFNAME_MAX - 1 - ID_DIGITS_MAX;
export const DEFAULT_DEVICE_PREFIX = 'sn';

export const DEVICE_ROLE_LETTER = {
  bridge: 'b',
  client: 'c',
  provider: 'p',
} as const;

export type DeviceRole = keyof typeof DEVICE_ROLE_LETTER;

/** A checked device name prefix. */
export type DevicePrefix = string & { readonly __brand: 'DevicePrefix' };

const PREFIX_SYNTAX = /^[a-z][a-z0-9_-]*$/;
/** How much of a prefix refused a message shows (in characters). */
const PREFIX_SHOWN_MAX = 32;

/** Accept a prefix, or explain why prefix + role letter + id could be an invalid device name. */
export function devicePrefix(text: string): DevicePrefix {
  const rules = `a device prefix is 1 to ${DEVICE_PREFIX_MAX} characters: lower-case letters, digits, '_' and '-', starting with a letter`;
  if (text.length === 0) throw new DeviceNameError('prefix-empty', `empty device prefix: ${rules}`);
  // In characters (code points), as a VM name is (vm-name.ts) and quoteText cuts it: 5 emoji are
  // refused for what they are, not as 10 (UTF-16 units) too many. The bound in bytes holds all the
  // same: every character the syntax allows is ASCII.
  if (characterCount(text) > DEVICE_PREFIX_MAX) {
    throw new DeviceNameError(
      'prefix-too-long',
      `device prefix ${quoteText(text, PREFIX_SHOWN_MAX)} is too long: ${rules}, so that prefix, role letter and a ${ID_DIGITS_MAX}-digit id fit the ${IFNAME_MAX}-byte limit of Linux interface names`,
    );
  }
  if (!PREFIX_SYNTAX.test(text)) throw new DeviceNameError('prefix-syntax', `device prefix ${quoteText(text, PREFIX_SHOWN_MAX)} is not valid: ${rules}`);
  return text as DevicePrefix;
}

export function deviceName(prefix: DevicePrefix, role: DeviceRole, id: ClientId): string {
  return `${prefix}${DEVICE_ROLE_LETTER[role]}${id}`;
}

export interface LinkDeviceNames {
  readonly bridge: string;
  readonly client: string;
  readonly provider: string;
}

export function linkDeviceNames(prefix: DevicePrefix, id: ClientId): LinkDeviceNames {
  return {
    bridge: deviceName(prefix, 'bridge', id),
    client: deviceName(prefix, 'client', id),
    provider: deviceName(prefix, 'provider', id),
  };
}

/** The role and id of a device this prefix names, or undefined for any other device. */
export function parseDeviceName(prefix: DevicePrefix, name: string): { role: DeviceRole; id: ClientId } | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  const match = /^([a-z])(0|[1-9][0-9]{0,4})$/.exec(rest);
  if (match === null) return undefined;
  const role = (Object.keys(DEVICE_ROLE_LETTER) as DeviceRole[]).find((r) => DEVICE_ROLE_LETTER[r] === match[1]);
  const id = Number(match[2]);
  if (role === undefined || !isClientId(id)) return undefined;
  return { role, id };
}
