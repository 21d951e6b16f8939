// Pure: a `link` run in which two VMs would be given one VMM socket path is refused, as bad input,
// before anything is made. A --qmp-socket or --ch-socket template without {vm} gives every VM the
// same path: both ends of a link attached through it would be hot-plugged into the one VMM there
// (the client's NIC in the provider's VM, say), exit 0. A fixed path serves one VM of a run alone
// (--attach VM=qemu), which stays fine. Two paths spelled otherwise that lead to one socket (`//`,
// `./`, {vm} directories symlinked to one) are one path too (the key the caller gives).
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

/** A VMM side with the socket path the run gives it, and that path however spelled (`pathOf`'s key). */
interface Claim {
  readonly side: VmmSide;
  readonly path: string;
  readonly key: string;
}

function sharedSocket(first: Claim, second: Claim): CliError {
  const [one, other] = [first.side, second.side];
  const flags = one.kind === other.kind ? `${VMM_SOCKET_OPTIONS[one.kind]} gives` : `${VMM_SOCKET_OPTIONS[one.kind]} and ${VMM_SOCKET_OPTIONS[other.kind]} give`;
  // Spelled otherwise (`//`, `./`, `..`, a symlinked directory), each VM's path is said, then the one socket they name.
  const paths =
    first.path === second.path
      ? shownSocket(first.path)
      : `${shownSocket(first.path)} and ${shownSocket(second.path)}, which lead to one socket${first.key === first.path || first.key === second.path ? '' : `, ${shownSocket(first.key)}`}`;
  return new CliError(
    `${flags} VMs ${one.vm} and ${other.vm} one socket path, ${paths}: both would have their NICs hot-plugged into the one VMM there; ` +
      `give each VM its own (put {vm}, the VM's name, in the template) or attach only one VM through that path (--attach VM=MODE)`,
    EXIT.usage,
  );
}

/**
 * Of a run's clients (in its order), each with the VMM sides of its links, those refused for a
 * socket path (`pathOf`: the run's, absolute; undefined where there is none, refused elsewhere)
 * that another VM has: one of its own sides', or an earlier client's that is not refused (the
 * first to claim a path keeps it, so that `link --keep-going` links it), each with its error.
 * Paths are one where `keyOf` gives them one key (VmmPort.socketKey: one socket however spelled);
 * without it, where they are the same text.
 */
export function sharedSocketFailures(
  clients: readonly { readonly client: VmName; readonly sides: readonly VmmSide[] }[],
  pathOf: (kind: VmmKind, vm: VmName) => string | undefined,
  keyOf: (path: string) => string = (path) => path,
): Map<VmName, CliError> {
  const claimed = new Map<string, Claim>();
  const failures = new Map<VmName, CliError>();
  for (const { client, sides } of clients) {
    const own = new Map<string, Claim>();
    let failure: CliError | undefined;
    for (const side of sides) {
      const path = pathOf(side.kind, side.vm);
      if (path === undefined) continue;
      const claim = { side, path, key: keyOf(path) };
      const holder = own.get(claim.key) ?? claimed.get(claim.key);
      if (holder !== undefined && holder.side.vm !== side.vm) {
        failure = sharedSocket(holder, claim);
        break;
      }
      own.set(claim.key, claim);
    }
    if (failure !== undefined) failures.set(client, failure);
    else for (const [key, claim] of own) if (!claimed.has(key)) claimed.set(key, claim);
  }
  return failures;
}
