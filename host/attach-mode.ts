import type { VmName } from './vm-name.js';
import { quoteName, vmName, vmNameProblem } from './vm-name.js';

/** How a VM's side of a link is attached (per VM, so a QEMU client can use a namespace provider). */
export const ATTACH_MODES = ['none', 'cloud-hypervisor', 'qemu', 'netns'] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];

export class AttachModeError extends Error {
  override readonly name = 'AttachModeError';
  constructor(
    readonly kind: 'unknown-mode' | 'syntax' | 'vm-name' | 'conflict' | 'mtu',
    message: string,
  ) {
    super(message);
  }
}

/** The most a tap takes: Linux's tun driver allows 65535 less its Ethernet header (tun.c, max_mtu). */
export const TAP_MTU_MAX = 65535 - 14;

/**
 * Refuse a link MTU a side's device cannot take: every mode but netns gives the side a tap. Said
 * before anything is made for the link, as bad input, rather than as the kernel's refusal.
 */
export function assertSideMtu(mtu: number, mode: AttachMode, vm: string, recorded?: { readonly client: string; readonly provider: string }): void {
  if (mode !== 'netns' && mtu > TAP_MTU_MAX) {
    // Without --mtu, the MTU is the one the link's record keeps (made with it as a netns link).
    const what = recorded === undefined ? `--mtu ${mtu}` : `MTU ${mtu}, which ${recorded.client} -> ${recorded.provider} records (no --mtu given),`;
    throw new AttachModeError('mtu', `${what} is more than a tap takes (${TAP_MTU_MAX}, Linux's tun driver), and ${vm} is attached with ${mode} (a tap): give --mtu ${TAP_MTU_MAX} or less; only netns links take more`);
  }
}

/** The attach mode of every VM: a default plus per-VM choices. */
export interface AttachChoice {
  /** `--attach MODE`'s, else the default (`none`): what `unlink`, `list` and `show` take for a link recorded without modes. */
  readonly fallback: AttachMode;
  /** `--attach MODE`'s, where given: a request for every VM (`link` keeps recorded modes only where it is not). */
  readonly forAll?: AttachMode;
  readonly perVm: ReadonlyMap<VmName, AttachMode>;
}

/** The mode `text` names, of `--attach value` (named in the message, as other options' are; bounded, as a name is). */
function attachMode(text: string, value: string): AttachMode {
  const mode = ATTACH_MODES.find((candidate) => candidate === text);
  if (mode === undefined) {
    throw new AttachModeError('unknown-mode', `--attach ${quoteName(value)}: unknown attach mode ${quoteName(text)}: use one of ${ATTACH_MODES.join(', ')}`);
  }
  return mode;
}

/**
 * Parse `--attach` values: `MODE` sets the default, `VM=MODE` one VM's mode. E.g. `--attach qemu
 * --attach netvm=netns`. Two different modes for one scope (the default, or one VM) are refused
 * rather than the later taking over silently; the same one repeated is no conflict.
 */
export function parseAttachChoice(values: readonly string[], fallback: AttachMode = 'none'): AttachChoice {
  let chosen: { mode: AttachMode; value: string } | undefined;
  const perVm = new Map<VmName, { mode: AttachMode; value: string }>();
  // Both values shown as every --attach message shows its value: quoted, escaped, bounded.
  const conflict = (scope: string, first: string, second: string): AttachModeError =>
    new AttachModeError('conflict', `--attach ${quoteName(first)} and --attach ${quoteName(second)} give ${scope} two attach modes: keep one`);
  for (const value of values) {
    const separator = value.indexOf('=');
    const modes = `MODE one of ${ATTACH_MODES.join(', ')}`;
    if (separator < 0) {
      if (value === '') throw new AttachModeError('syntax', `--attach "" gives no mode: write MODE or VM=MODE, ${modes}`);
      const mode = attachMode(value, value);
      if (chosen !== undefined && chosen.mode !== mode) throw conflict('every VM', chosen.value, value);
      chosen = { mode, value };
    } else {
      const name = value.slice(0, separator);
      const text = value.slice(separator + 1);
      if (name === '') throw new AttachModeError('syntax', `--attach ${quoteName(value)} names no VM: write VM=MODE or MODE`);
      // Said as what is wrong with VM=MODE, not as an unknown mode "" or "=netns".
      if (text === '') throw new AttachModeError('syntax', `--attach ${quoteName(value)} gives no mode after ${quoteName(`${name}=`)}: write VM=MODE, ${modes}`);
      if (text.includes('=')) throw new AttachModeError('syntax', `--attach ${quoteName(value)} has more than one '=': write VM=MODE, ${modes}`);
      const problem = vmNameProblem(name);
      if (problem !== undefined) throw new AttachModeError('vm-name', `--attach ${quoteName(value)}: ${problem.message}`);
      const vm = vmName(name);
      const mode = attachMode(text, value);
      const earlier = perVm.get(vm);
      if (earlier !== undefined && earlier.mode !== mode) throw conflict(vm, earlier.value, value);
      perVm.set(vm, { mode, value });
    }
  }
  const modes = new Map([...perVm].map(([vm, { mode }]) => [vm, mode]));
  return chosen === undefined ? { fallback, perVm: modes } : { fallback: chosen.mode, forAll: chosen.mode, perVm: modes };
}

export function attachModeOf(choice: AttachChoice, vm: VmName): AttachMode {
  return choice.perVm.get(vm) ?? choice.fallback;
}

/** The mode `--attach` asks for a VM (`VM=MODE`, else `MODE`), or undefined where it says nothing of it. */
export function chosenAttachMode(choice: AttachChoice, vm: VmName): AttachMode | undefined {
  return choice.perVm.get(vm) ?? choice.forAll;
}
