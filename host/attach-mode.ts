import type { VmName } from './vm-name.js';
import { vmName } from './vm-name.js';

/** How a VM's side of a link is attached (per VM, so a QEMU client can use a namespace provider). */
export const ATTACH_MODES = ['none', 'cloud-hypervisor', 'qemu', 'netns'] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];

export class AttachModeError extends Error {
  override readonly name = 'AttachModeError';
  constructor(
    readonly kind: 'unknown-mode' | 'syntax',
    message: string,
  ) {
    super(message);
  }
}

/** The attach mode of every VM: a default plus per-VM choices. */
export interface AttachChoice {
  readonly fallback: AttachMode;
  readonly perVm: ReadonlyMap<VmName, AttachMode>;
}

function attachMode(text: string): AttachMode {
  const mode = ATTACH_MODES.find((candidate) => candidate === text);
  if (mode === undefined) {
    throw new AttachModeError('unknown-mode', `unknown attach mode ${JSON.stringify(text)}: use one of ${ATTACH_MODES.join(', ')}`);
  }
  return mode;
}

/**
 * Parse `--attach` values: `MODE` sets the default, `VM=MODE` one VM's mode; later ones win.
 * E.g. `--attach qemu --attach netvm=netns`.
 */
export function parseAttachChoice(values: readonly string[], fallback: AttachMode = 'none'): AttachChoice {
  let chosen = fallback;
  const perVm = new Map<VmName, AttachMode>();
  for (const value of values) {
    const separator = value.indexOf('=');
    if (separator < 0) chosen = attachMode(value);
    else {
      const name = value.slice(0, separator);
      if (name === '') throw new AttachModeError('syntax', `--attach ${JSON.stringify(value)} names no VM: write VM=MODE or MODE`);
      perVm.set(vmName(name), attachMode(value.slice(separator + 1)));
    }
  }
  return { fallback: chosen, perVm };
}

export function attachModeOf(choice: AttachChoice, vm: VmName): AttachMode {
  return choice.perVm.get(vm) ?? choice.fallback;
}
