// The attach mode a `link` run gives each side of a link. `--attach` is a request: where it names
// the side's VM (`VM=MODE`, or `MODE` for all) that mode, even `none` over a link up another way.
// Where it says nothing of the VM, a run converges rather than re-attaches: a link up keeps its
// own side's mode (as recorded; for a record written before the state kept modes, as its device
// shows it); one taken down by unlink (its modes kept) as one whose devices are gone (goneLink);
// a link not up (new, or taken down before unlink kept modes) gets the VM's, the one its up links
// agree on; `none` where nothing is known of the VM, or where its links disagree (ambiguous: no
// mode wins silently; the CLI warns). Pure: what the state records and what the devices show
// come in as data (StandingLink).
import { ATTACH_MODES, type AttachChoice, type AttachMode, chosenAttachMode } from './attach-mode.js';
import { DEVICE_KIND } from './device-plan.js';
import { type LinkAttachment, type LinkPair, recordedSocket } from './link-state.js';
import type { VmName } from './vm-name.js';

/**
 * A side's mode as far as a run can tell; undefined: unknown (none); 'not-up': the side is taken
 * as not up, and gets the VM's mode as a new link's side does (goneLink).
 */
export type KnownMode = AttachMode | 'not-up' | undefined;

/** Each side's mode as far as a run can tell. */
export interface KnownAttachment {
  readonly client: KnownMode;
  readonly provider: KnownMode;
}

/**
 * A link that is up: its attach modes recorded; or, its record written before the state kept
 * them while a device of the link's kind exists under one of its names (link-device-kinds.ts),
 * each side's mode as its device shows it (shownAttachMode); or a record whose devices are all
 * gone (goneLink).
 */
export interface StandingLink {
  readonly pair: LinkPair;
  readonly modes: KnownAttachment;
}

/**
 * A recorded link whose devices are all gone (after a reboot: the state outlives them): a netns or
 * none side needs no VMM and keeps its mode (a missing namespace is made); a qemu or
 * cloud-hypervisor side is not up: it gets the VM's mode, the one its up links agree on, so none
 * after a reboot (its VMM may not run yet, and a NIC hot-plugged into nothing would fail the run),
 * but the VM's mode where its VMM evidently runs (its other links up as qemu).
 */
export function goneLink(pair: LinkPair, attached: LinkAttachment): StandingLink {
  const withoutVmm = (mode: AttachMode): KnownMode => (mode === 'netns' || mode === 'none' ? mode : 'not-up');
  return { pair, modes: { client: withoutVmm(attached.client), provider: withoutVmm(attached.provider) } };
}

/** The mode a side's host device shows: netns for a veth (no other mode makes one); a tap is none, qemu or cloud-hypervisor alike. */
export function shownAttachMode(kind: string | null | undefined): AttachMode | undefined {
  return kind === DEVICE_KIND.veth ? 'netns' : undefined;
}

/** Where a side's mode came from. */
export type ModeSource =
  /** `--attach` names the VM. */
  | 'attach'
  /** The link is up: its own side's mode, recorded or shown by its device. */
  | 'link'
  /** The link is up, recorded without modes, and its device does not show the mode (a tap, or missing): none. */
  | 'unshown'
  /** The link is not up: the mode every up link of the VM has on its side. */
  | 'vm'
  /** The link is not up, and no up link of the VM tells its mode: none. */
  | 'unrecorded'
  /** The link is not up, and the VM's up links have different modes on its side: none. */
  | 'ambiguous';

export interface SideMode {
  readonly mode: AttachMode;
  readonly from: ModeSource;
}

/** What a run knows of attach modes: `--attach`, each up link's sides, each VM's sides over its up links. */
export interface KeptAttach {
  readonly choice: AttachChoice;
  /** By pair key (pairKey). */
  readonly links: ReadonlyMap<string, KnownAttachment>;
  /** The modes known of each VM's side over its up links, as client and as provider, in ATTACH_MODES order. */
  readonly vms: ReadonlyMap<VmName, readonly AttachMode[]>;
}

const pairKey = (pair: LinkPair): string => `${pair.client}\n${pair.provider}`;

/** A run's KeptAttach: `--attach` as parsed, and the links up before it (one pass: a thousand links stay cheap). */
export function keptAttach(choice: AttachChoice, standing: readonly StandingLink[]): KeptAttach {
  const links = new Map<string, KnownAttachment>();
  const known = new Map<VmName, Set<AttachMode>>();
  const add = (vm: VmName, mode: KnownMode): void => {
    if (mode === undefined || mode === 'not-up') return;
    const modes = known.get(vm) ?? new Set<AttachMode>();
    if (modes.size === 0) known.set(vm, modes);
    modes.add(mode);
  };
  for (const { pair, modes } of standing) {
    links.set(pairKey(pair), modes);
    add(pair.client, modes.client);
    add(pair.provider, modes.provider);
  }
  const vms = new Map([...known].map(([vm, modes]): [VmName, AttachMode[]] => [vm, ATTACH_MODES.filter((mode) => modes.has(mode))]));
  return { choice, links, vms };
}

/** The mode a VM's side of a link that is not up gets where `--attach` says nothing of the VM. */
function vmSideMode(kept: KeptAttach, vm: VmName): SideMode {
  const modes = kept.vms.get(vm) ?? [];
  const [only] = modes;
  if (only === undefined) return { mode: 'none', from: 'unrecorded' };
  return modes.length === 1 ? { mode: only, from: 'vm' } : { mode: 'none', from: 'ambiguous' };
}

/** The mode of one side of a link: `--attach`'s for its VM, else the link's own where it is up, else the VM's. */
export function sideMode(kept: KeptAttach, pair: LinkPair, side: 'client' | 'provider'): SideMode {
  const vm = pair[side];
  const chosen = chosenAttachMode(kept.choice, vm);
  if (chosen !== undefined) return { mode: chosen, from: 'attach' };
  const standing = kept.links.get(pairKey(pair));
  if (standing === undefined) return vmSideMode(kept, vm);
  const own = standing[side];
  if (own === 'not-up') return vmSideMode(kept, vm);
  return own === undefined ? { mode: 'none', from: 'unshown' } : { mode: own, from: 'link' };
}

/** The attach modes a run gives a link. */
export function linkAttachModes(kept: KeptAttach, pair: LinkPair): LinkAttachment {
  return { client: sideMode(kept, pair, 'client').mode, provider: sideMode(kept, pair, 'provider').mode };
}

/**
 * The mode a run gives a VM's side of a new link (as client, or as provider): `--attach`'s, else
 * the VM's. What `link` checks before anything is made (an MTU a tap cannot take, a VMM socket).
 */
export function newLinkMode(kept: KeptAttach, vm: VmName): SideMode {
  const chosen = chosenAttachMode(kept.choice, vm);
  return chosen === undefined ? vmSideMode(kept, vm) : { mode: chosen, from: 'attach' };
}

/** One side of a link. */
export type LinkSide = 'client' | 'provider';

/** Whether a side in this mode is a NIC that a VMM holds, hot-plugged by the run that attached it. */
export function isVmmMode(mode: AttachMode): mode is 'qemu' | 'cloud-hypervisor' {
  return mode === 'qemu' || mode === 'cloud-hypervisor';
}

/** Whether two recorded socket paths name the same socket (sameSocketBy); by default, the same text. */
export type SameSocket = (recorded: string, wanted: string) => boolean;

const sameText: SameSocket = (recorded, wanted) => recorded === wanted;

/**
 * Two socket paths are one socket where they are the same text or `keyOf` (VmmPort.socketKey:
 * device and inode where a file is there, else the path with its directory resolved) gives them
 * one key; without it, only the same text is. The one notion of one socket: a side kept in its
 * VMM mode whose path is one with the recorded is not moved (movedVmmSocket), and two VMs at one
 * key are refused (vmm-socket-sharing), so the two checks cannot disagree (hard links of one
 * socket, say, are one for both).
 */
export function sameSocketBy(keyOf?: (path: string) => string): SameSocket {
  if (keyOf === undefined) return sameText;
  return (recorded, wanted) => recorded === wanted || keyOf(recorded) === keyOf(wanted);
}

/**
 * Whether a side attached as `recorded` keeps its VMM mode in `wanted` but not its socket: both
 * sockets known (`wanted`'s, the run's template's), and not the same (`same`). A record without
 * one is taken as attached through the run's template's, as before sockets were recorded: not
 * moved.
 */
export function movedVmmSocket(recorded: LinkAttachment, wanted: LinkAttachment, side: LinkSide, same: SameSocket = sameText): boolean {
  const from = recordedSocket(recorded, side);
  const to = recordedSocket(wanted, side);
  return isVmmMode(recorded[side]) && wanted[side] === recorded[side] && from !== undefined && to !== undefined && from !== to && !same(from, to);
}

/**
 * The sides of a link attached as `recorded` whose NIC a run that gives it `wanted` takes out of
 * their VMM first, as unlink would: each attached as qemu or cloud-hypervisor that gets another
 * mode (the other VMM's too), or keeps its mode through another socket (movedVmmSocket: the
 * template gives the VM's VMM another path now). Left there, the NIC would stay in the guest (on
 * the same tap, for a side that becomes `none` or the other VMM's; for a socket moved, in a VMM
 * the run does not attach it to) while the state no longer records it, so that no unlink would
 * take it out. A side that keeps its VMM mode and socket keeps its NIC.
 */
export function switchedVmmSides(recorded: LinkAttachment, wanted: LinkAttachment, same: SameSocket = sameText): LinkSide[] {
  return (['client', 'provider'] as const).filter((side) => isVmmMode(recorded[side]) && (wanted[side] !== recorded[side] || movedVmmSocket(recorded, wanted, side, same)));
}

/** A VM whose up links have different modes on its side, and the links of a run that so got `none` for it. */
export interface AmbiguousAttach {
  readonly vm: VmName;
  /** The modes its up links have on its side, in ATTACH_MODES order (two or more). */
  readonly modes: readonly AttachMode[];
  /** The links of the run (not up before it) whose side of the VM got `none` for that. */
  readonly links: readonly LinkPair[];
}

/** Of the links of a run, those whose side of a VM got `none` as its up links disagree, by VM (in the order first met). */
export function ambiguousAttach(kept: KeptAttach, pairs: readonly LinkPair[]): AmbiguousAttach[] {
  const byVm = new Map<VmName, LinkPair[]>();
  for (const pair of pairs) {
    for (const side of ['client', 'provider'] as const) {
      if (sideMode(kept, pair, side).from !== 'ambiguous') continue;
      const links = byVm.get(pair[side]) ?? [];
      if (links.length === 0) byVm.set(pair[side], links);
      links.push(pair);
    }
  }
  return [...byVm].map(([vm, links]) => ({ vm, modes: kept.vms.get(vm) ?? [], links }));
}

/**
 * A VM's side of links of a run given another mode than the one last recorded for it (up, taken
 * down by unlink, or its devices gone), --attach not naming the VM: a `qemu` or `cloud-hypervisor`
 * side not up that gets the VM's mode (`none` where no link of it is up), say. (A side whose VM's
 * links disagree is said as such: ambiguousAttach.)
 */
export interface ModeChange {
  readonly vm: VmName;
  readonly was: AttachMode;
  readonly now: AttachMode;
  /** The links of the run so changed, in the order met. */
  readonly links: readonly LinkPair[];
}

/** Of the links of a run (each with its last recorded modes: `attached`, else `unlinked`), the sides so changed, by VM and modes (in the order first met). */
export function modeChanges(kept: KeptAttach, links: readonly { readonly pair: LinkPair; readonly recorded: LinkAttachment | undefined }[]): ModeChange[] {
  const byKey = new Map<string, { vm: VmName; was: AttachMode; now: AttachMode; links: LinkPair[] }>();
  for (const { pair, recorded } of links) {
    if (recorded === undefined) continue;
    for (const side of ['client', 'provider'] as const) {
      const { mode, from } = sideMode(kept, pair, side);
      if (from === 'attach' || from === 'ambiguous' || mode === recorded[side]) continue;
      const key = `${pair[side]}\n${recorded[side]}\n${mode}`;
      const entry = byKey.get(key) ?? { vm: pair[side], was: recorded[side], now: mode, links: [] };
      if (entry.links.length === 0) byKey.set(key, entry);
      entry.links.push(pair);
    }
  }
  return [...byKey.values()];
}
