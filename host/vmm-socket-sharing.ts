// Pure: a `link` run in which two VMs would be given one VMM socket path is refused, as bad input,
// before anything is made. A --qmp-socket or --ch-socket template without {vm} gives every VM the
// same path: both ends of a link attached through it would be hot-plugged into the one VMM there
// (the client's NIC in the provider's VM, say), exit 0. A fixed path serves one VM of a run alone
// (--attach VM=qemu), which stays fine. Two paths spelled otherwise that lead to one socket (`//`,
// `./`, {vm} directories symlinked to one, hard links of one socket) are one path too (the key
// the caller gives). So is the
// socket the state records for another VM's side of a link (a later run's fixed path, say, that
// names the socket a VM already linked was hot-plugged through): that VM's VMM is there.
import { CliError, EXIT } from '../shared/cli/run-cli.js';
import { shownSocket } from '../shared/shown-text.js';
import type { AttachMode } from './attach-mode.js';
import { type KeptAttach, isVmmMode, linkAttachModes } from './kept-attach.js';
import type { Link } from './link-state.js';
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

/** A VM's VMM side of a recorded link, with the socket the state records it was hot-plugged through. */
export interface RecordedSide {
  readonly side: VmmSide;
  readonly path: string;
  /** The link it is a side of. */
  readonly link: Link;
}

/**
 * The sockets the state records for its links' VMM sides (LinkAttachment's clientSocket and
 * providerSocket), each VM's socket once (a provider's is recorded with each of its links).
 */
export function recordedSides(links: readonly Link[]): RecordedSide[] {
  const seen = new Set<string>();
  const sides: RecordedSide[] = [];
  const add = (link: Link, mode: AttachMode, vm: VmName, path: string | undefined): void => {
    if (path === undefined || !isVmmMode(mode)) return;
    const id = `${mode} ${vm} ${path}`;
    if (seen.has(id)) return;
    seen.add(id);
    sides.push({ side: { kind: mode, vm }, path, link });
  };
  for (const link of links) {
    const { attached } = link;
    if (attached === undefined) continue;
    add(link, attached.client, link.client, attached.clientSocket);
    add(link, attached.provider, link.provider, attached.providerSocket);
  }
  return sides;
}

/** A VMM side with the socket path the run gives it (or the state records: `link`), and that path however spelled (`pathOf`'s key). */
interface Claim {
  readonly side: VmmSide;
  readonly path: string;
  readonly key: string;
  readonly link?: Link;
}

/** The Claim of a side the state records (recordedSides), with its link. */
interface RecordedClaim extends Claim {
  readonly link: Link;
}

/** Spelled otherwise (`//`, `./`, `..`, a symlinked directory, a hard link), each VM's path is said, then the one socket they name where the key is a path. */
function shownPaths(first: Claim, second: Claim): string {
  if (first.path === second.path) return shownSocket(first.path);
  const named = !first.key.startsWith('/') || first.key === first.path || first.key === second.path ? '' : `, ${shownSocket(first.key)}`;
  return `${shownSocket(first.path)} and ${shownSocket(second.path)}, which lead to one socket${named}`;
}

/** Where the refusals of a socket path two VMs would share send the operator for the rest (other fixes, a record gone stale). */
const VMM_SOCKETS_README = 'README: VMM socket paths';

/**
 * The refusal of a run's side (`claim`) at the socket the state records for another VM's side
 * (`recorded`). Where the state records the claiming VM's own side there too (`ownToo`: two VMs at
 * one socket, written before this check), that socket is its own as much as the other's: it is
 * not told to take its own path, but that one record is wrong and how to set it right.
 */
function recordedSocketShared(recorded: RecordedClaim, claim: Claim, ownToo: boolean): CliError {
  const { side } = claim;
  const other = recorded.side.vm;
  const paths = recorded.path === claim.path ? `${shownSocket(claim.path)}, which` : `${shownSocket(claim.path)}, which leads to ${shownSocket(recorded.path)}, which`;
  if (ownToo) {
    // The link to run again is the recorded one's client's (a provider's side moves with its clients' links).
    const { client } = recorded.link;
    const fix = client === other ? `link ${other} first at its own socket path` : `link ${client} first with ${other} at its own socket path`;
    return new CliError(
      `${VMM_SOCKET_OPTIONS[side.kind]} gives VM ${side.vm} the socket path ${paths} the state records for VMs ${side.vm} and ${other} (link ${recorded.link.client} -> ${recorded.link.provider}): ` +
        `one record is wrong; ${fix}, then this one (${VMM_SOCKETS_README})`,
      EXIT.usage,
    );
  }
  // A record may be stale (the VM stopped, or restarted with its socket elsewhere): it stays until
  // the VM is unlinked or its side moves (a link of its record's client at the path it runs at now).
  return new CliError(
    `${VMM_SOCKET_OPTIONS[side.kind]} gives VM ${side.vm} the socket path ${paths} the state records for ${other} (link ${recorded.link.client} -> ${recorded.link.provider}): ` +
      `give ${side.vm} its own ({vm} in the template) (${VMM_SOCKETS_README})`,
    EXIT.usage,
  );
}

function sharedSocket(first: Claim, second: Claim): CliError {
  const [one, other] = [first.side, second.side];
  const flags = one.kind === other.kind ? `${VMM_SOCKET_OPTIONS[one.kind]} gives` : `${VMM_SOCKET_OPTIONS[one.kind]} and ${VMM_SOCKET_OPTIONS[other.kind]} give`;
  return new CliError(
    `${flags} VMs ${one.vm} and ${other.vm} one socket path, ${shownPaths(first, second)}: give each its own ({vm} in the template) (${VMM_SOCKETS_README})`,
    EXIT.usage,
  );
}

/**
 * Of a run's clients (in its order), each with the VMM sides of its links, those refused for a
 * socket path (`pathOf`: the run's, absolute; undefined where there is none, refused elsewhere)
 * that another VM has: one of its own sides', or an earlier client's that is not refused (the
 * first to claim a path keeps it, so that `link --keep-going` links it), each with its error;
 * or the socket the state records for another VM's side (`recorded`: recordedSides), whose VMM
 * may be there (the line says how to take a stale record off it: unlink that VM, or move its
 * side). Paths are one where `keyOf` gives them one key (VmmPort.socketKey: one socket however
 * spelled); without it, where they are the same text. The recorded sockets' keys are asked only
 * where the run gives a VMM side a path.
 */
export function sharedSocketFailures(
  clients: readonly { readonly client: VmName; readonly sides: readonly VmmSide[] }[],
  pathOf: (kind: VmmKind, vm: VmName) => string | undefined,
  keyOf: (path: string) => string = (path) => path,
  recorded: readonly RecordedSide[] = [],
): Map<VmName, CliError> {
  const claimed = new Map<string, Claim>();
  const failures = new Map<VmName, CliError>();
  // The recorded sides by key, each key's (a state written before this check may hold two VMs at one).
  let recordedByKey: Map<string, RecordedClaim[]> | undefined;
  const recordedAt = (key: string): RecordedClaim[] => {
    if (recordedByKey === undefined) {
      recordedByKey = new Map();
      for (const { side, path, link } of recorded) {
        const claim = { side, path, key: keyOf(path), link };
        const at = recordedByKey.get(claim.key);
        if (at === undefined) recordedByKey.set(claim.key, [claim]);
        else at.push(claim);
      }
    }
    return recordedByKey.get(key) ?? [];
  };
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
      const at = recordedAt(claim.key);
      const other = at.find((recorded) => recorded.side.vm !== side.vm);
      if (other !== undefined) {
        failure = recordedSocketShared(other, claim, at.some((recorded) => recorded.side.vm === side.vm));
        break;
      }
      own.set(claim.key, claim);
    }
    if (failure !== undefined) failures.set(client, failure);
    else for (const [key, claim] of own) if (!claimed.has(key)) claimed.set(key, claim);
  }
  return failures;
}
