// Pure: a `link` run in which two VMs would be given one VMM socket path is refused, as bad input,
// before anything is made. A --qmp-socket or --ch-socket template without {vm} gives every VM the
// same path: both ends of a link attached through it would be hot-plugged into the one VMM there
// (the client's NIC in the provider's VM, say), exit 0. A fixed path serves one VM of a run alone
// (--attach VM=qemu), which stays fine.
import { CliError, EXIT } from '../shared/cli/run-cli.js';
import { shownSocket } from '../shared/shown-text.js';
import { type KeptAttach, isVmmMode, linkAttachModes } from './kept-attach.js';
import { VMM_SOCKET_OPTIONS, type VmmKind } from './linker-types.js';
import type { VmName } from './vm-name.js';

/** A VM's side of a link of the run that a VMM holds, hot-plugged through its socket. */
export interface VmmSide {
  readonly kind: VmmKind;
  readonly vm: VmName;
}

/** The VMM sides of a client's links to these providers, in the modes the run gives them. */
export function vmmSidesOf(client: VmName, providers: readonly VmName[], kept: KeptAttach): VmmSide[] {
  return providers.flatMap((provider) => {
    const modes = linkAttachModes(kept, { client, provider });
    return [
      ...(isVmmMode(modes.client) ? [{ kind: modes.client, vm: client }] : []),
      ...(isVmmMode(modes.provider) ? [{ kind: modes.provider, vm: provider }] : []),
    ];
  });
}

function sharedSocket(first: VmmSide, second: VmmSide, path: string): CliError {
  const flags = first.kind === second.kind ? `${VMM_SOCKET_OPTIONS[first.kind]} gives` : `${VMM_SOCKET_OPTIONS[first.kind]} and ${VMM_SOCKET_OPTIONS[second.kind]} give`;
  return new CliError(
    `${flags} VMs ${first.vm} and ${second.vm} one socket path, ${shownSocket(path)}: both would have their NICs hot-plugged into the one VMM there; ` +
      `give each VM its own (put {vm}, the VM's name, in the template) or attach only one VM through that path (--attach VM=MODE)`,
    EXIT.usage,
  );
}

/**
 * Of a run's clients (in its order), each with the VMM sides of its links, those refused for a
 * socket path (`pathOf`: the run's, absolute; undefined where there is none, refused elsewhere)
 * that another VM has: one of its own sides', or an earlier client's that is not refused (the
 * first to claim a path keeps it, so that `link --keep-going` links it), each with its error.
 */
export function sharedSocketFailures(
  clients: readonly { readonly client: VmName; readonly sides: readonly VmmSide[] }[],
  pathOf: (kind: VmmKind, vm: VmName) => string | undefined,
): Map<VmName, CliError> {
  const claimed = new Map<string, VmmSide>();
  const failures = new Map<VmName, CliError>();
  for (const { client, sides } of clients) {
    const own = new Map<string, VmmSide>();
    let failure: CliError | undefined;
    for (const side of sides) {
      const path = pathOf(side.kind, side.vm);
      if (path === undefined) continue;
      const holder = own.get(path) ?? claimed.get(path);
      if (holder !== undefined && holder.vm !== side.vm) {
        failure = sharedSocket(holder, side, path);
        break;
      }
      own.set(path, side);
    }
    if (failure !== undefined) failures.set(client, failure);
    else for (const [path, side] of own) if (!claimed.has(path)) claimed.set(path, side);
  }
  return failures;
}
