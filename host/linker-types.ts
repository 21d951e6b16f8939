// The linker's vocabulary, shared by its modules and by the CLI: what a run is given (LinkerOptions,
// the VMM port the CLI plugs in, the commands its lines print, the option subsets of each command)
// and what the commands report (links, outcomes, the failures and links left down their lines
// say), with the few pure functions over them by which every part names a link and its parts
// (linkReport, vmmNics, keyOf, linkDevicesOf) and the record of what a run made (RunDevices).
// Nothing here runs a command: it sits below every other module of the linker (linker-error.ts
// and up), which is what keeps their imports free of cycles, as LinkerOptions and LinkerError
// both name the reports.
import { CliError, EXIT } from '../shared/cli/run-cli.js';
import { linkAddressesOf } from '../shared/link-address.js';
import { type AttachChoice, type AttachMode, attachModeOf } from './attach-mode.js';
import type { ConfigDirSource } from './config-reader.js';
import type { ConfigSnapshot } from './config.js';
import { type DevicePrefix, linkDeviceNames } from './device-names.js';
import type { DevicePlan, ForeignChanged, MtuBefore } from './device-plan.js';
import type { AmbiguousAttach, LinkSide, ModeChange } from './kept-attach.js';
import type { BridgeForeign, FarEndElsewhere, ForeignDevice, OffBridge, SettingOff } from './link-device-kinds.js';
import { type Link, type LinkAttachment, type LinkPair, isNetnsPrefix } from './link-state.js';
import type { OptionSource } from '../shared/cli/option-source.js';
import type { StateDirSource, StateStoreError } from './state-store.js';
import type { VmName } from './vm-name.js';
import { vmName } from './vm-name.js';
import type { VmmNic } from './vmm/nic.js';

export type VmmKind = 'qemu' | 'cloud-hypervisor';

/** A VMM as messages name it ("the QEMU of appvm-lynx"): the one way every line words it. */
export const VMM_NAMES: Readonly<Record<VmmKind, string>> = { qemu: 'QEMU', 'cloud-hypervisor': 'cloud-hypervisor' };

/** The option that gives each VMM's API socket (a template with {vm}). */
export const VMM_SOCKET_OPTIONS: Readonly<Record<VmmKind, string>> = { qemu: '--qmp-socket', 'cloud-hypervisor': '--ch-socket' };

/** The VMM side of attachment; the CLI plugs in the QMP and cloud-hypervisor clients. */
export interface VmmPort {
  /**
   * Hot-plug a NIC; true where this call added it, false where the VMM had it already. Bounded
   * as a whole (the CLI's: twice --vmm-timeout, and as much again to take back what a given-up
   * attach had asked for), as it runs under the state lock.
   */
  attach(kind: VmmKind, vm: VmName, nic: VmmNic): Promise<boolean>;
  /**
   * Unplug a NIC, at `socket` where given (the one the state records the side was attached
   * through), else at the VM's socket as this port has it (its template's). Bounded as a whole too
   * (the CLI's: twice --vmm-timeout), plain or forced, as it runs under the state lock: a VMM
   * answering each step just in time cannot stretch it.
   * 'not-running' where no VMM runs there (nothing at its socket, or a socket refusing
   * connections: the VM stopped), which holds no NIC: nothing was taken out; 'absent' where the
   * VMM runs but did not hold that NIC (taken out earlier, or the VM restarted without it: QEMU's
   * DeviceNotFound, cloud-hypervisor's unknown id): nothing was taken out either; else (nothing
   * said) this call took it out.
   */
  detach(kind: VmmKind, vm: VmName, nic: VmmNic, socket?: string): Promise<'not-running' | 'absent' | void>;
  /**
   * Refuse, as bad input, a VM whose VMM socket path cannot be one (too long for a Unix socket);
   * `socket`: a recorded one, checked instead of the template's. Asked before anything is made for
   * its links, as of an MTU a tap cannot take: found only at the attach, it would fail the run
   * after the devices of a link that was up another way had been replaced, leaving that link down
   * for a typo.
   */
  checkSocket?(kind: VmmKind, vm: VmName, socket?: string): void;
  /**
   * Refuse a NIC the VMM of a VM holds already (through the socket its attach would use) whose
   * guest was told another MTU than `nic.mtu` (QEMU's host_mtu: the guest learns it only as the NIC
   * comes), asked before the run changes the MTU of its link's devices; a VMM not running (or
   * without that NIC) is nothing to refuse. Bounded as a whole, as an attach. Only QEMU can say.
   */
  checkNicMtu?(kind: VmmKind, vm: VmName, nic: VmmNic): Promise<void>;
  /**
   * What this port (one run) was told where that VM's VMM (at `socket` where given, else at its
   * template's) did not answer a detach in time (a request, or the whole detach), else undefined.
   * `link` does not ask such a VMM again to take out a NIC for another mode (takeBackSwitched):
   * with --keep-going, each client of a stalled provider would cost the bound again, under the
   * state lock.
   */
  unansweredDetach?(kind: VmmKind, vm: VmName, socket?: string): string | undefined;
  /**
   * The socket this port attaches a VM's NIC through, as the state records it (absolute:
   * link-state.ts's isRecordedSocket), so that its detach finds it there whatever a later run's
   * template gives; undefined where it has none the state can record (checkSocket refuses one too
   * long; a path the state cannot hold is not recorded, and its detach goes to the template's, as
   * before sockets were recorded). Without it, nothing is recorded.
   */
  socketOf?(kind: VmmKind, vm: VmName): string | undefined;
  /**
   * The socket this port attaches a VM's NIC through, made absolute as socketOf makes it, also
   * where the state cannot hold it (socketOf: undefined): so that a side recorded at a socket this
   * path names too keeps that record (withSockets), and one recorded at another is refused, not
   * moved unrecorded (switchedSides). Undefined where there is none (checkSocket refuses it).
   */
  templateSocket?(kind: VmmKind, vm: VmName): string | undefined;
  /**
   * Whether a VMM takes connections at `socket` (one the state records, or would: socketOf), asked
   * of a VM's socket, nothing sent: `link` asks it before it takes out a NIC whose socket moved
   * (assertMovesReachable). Not running: `none` where nothing is there or the socket refuses
   * connections (no VMM runs there), else something no VMM can be reached through; `why` says it.
   */
  vmmAt?(kind: VmmKind, vm: VmName, socket: string): Promise<VmmPresence>;
  /**
   * One key of a socket path however spelled (`./`, `..`, `//`, a symlinked directory: its
   * directory resolved, where it can be, its last component as it is), and, where a file is
   * there, its device and inode (hard links of one socket are one): two VMs of a run whose paths
   * get one key are at one socket, and a side whose template now gives a path of its recorded
   * socket's key is not moved (sameSocketBy, the one notion of both). A key that is a path starts
   * with `/`. Without it, only the same text is the same socket.
   */
  socketKey?(path: string): string;
}

/** What is at a VMM socket (VmmPort.vmmAt). */
export type VmmPresence = { readonly running: true } | { readonly running: false; readonly none: boolean; readonly why: string };

/**
 * How far a long `link` has got: VMs whose devices are made, then NICs hot-plugged into VMMs;
 * with --keep-going after a failure, VMs linked (or failed) one by one.
 */
export interface LinkProgressEvent {
  readonly phase: 'devices' | 'vmm' | 'one-by-one';
  /** In the 'vmm' phase, NICs tried: hot-plugged, or of a VM that failed (`failed` of them). */
  readonly done: number;
  readonly total: number;
  /** With --keep-going, in the 'vmm' phase: NICs of the VMs that failed (their VMM refusing or not there), not hot-plugged. */
  readonly failed?: number;
  /** ...and the VM that failed whose undo (its devices deleted, its records written back) is under way. */
  readonly undoing?: VmName;
}

export interface LinkerOptions {
  readonly configDir: string;
  readonly stateDir: string;
  /** Where configDir and stateDir came from (the option, its variable, the default), for messages that say what to check. */
  readonly configDirSource?: ConfigDirSource;
  readonly stateDirSource?: StateDirSource;
  /** How long to wait for another run holding the state lock, in ms (0: not at all); the store's default where left out. */
  readonly lockWaitMs?: number;
  /** Told once if another run still holds the state lock a second after the first try (LockOptions.onWaiting). */
  readonly onLockWait?: (holderPid: string | undefined) => void;
  /** Told once the state lock is held, before the run's work (the CLI of `unlink` and `gc` stops taking over signals then). */
  readonly onLockHeld?: () => void;
  /** Told where a run told onLockHeld with no lock to wait for (gc of a state dir with no state file) goes on to wait for it after all: until onLockHeld again, a signal stops that wait. */
  readonly onLockWaitBegun?: () => void;
  /** Told once, under the lock, as `unlink` or `gc` begins to take anything down (a NIC asked out of its VMM, a device deleted): until then a signal leaves nothing changed. */
  readonly onTakeDownBegun?: () => void;
  /** Told where releasing the state lock failed, after the run failed or succeeded (LockOptions.onUnlockFailed): to be said after its failure, or after what it did. */
  readonly onUnlockFailed?: (error: StateStoreError) => void;
  readonly devicePrefix: DevicePrefix;
  /** Where devicePrefix came from, for the refusal of one the state does not record (state-prefix.ts); left out: given. */
  readonly devicePrefixSource?: DevicePrefixSource;
  /** VM `v` lives in namespace `<netnsPrefix>v` in netns mode. */
  readonly netnsPrefix: string;
  /** Where netnsPrefix came from, for the refusal of one the state does not record (state-prefix.ts's netns prefix); left out: given. */
  readonly netnsPrefixSource?: NetnsPrefixSource;
  /**
   * The link MTU given (--mtu): every link of the run gets it. Absent: a link keeps the MTU its
   * record has (link-state.ts's LinkAttachment.mtu), a new one (or one recorded without) gets 1500.
   */
  readonly mtu?: number;
  readonly attach: AttachChoice;
  readonly vmm: VmmPort;
  /** Told as `link` goes on (the CLI draws it on a terminal). */
  readonly progress?: (event: LinkProgressEvent) => void;
  /**
   * Aborting it (a SIGINT or SIGTERM, in the CLI) stops `link` at the next safe point: before a
   * chunk is planned or its devices made, before each NIC is hot-plugged. The run is then undone
   * as on a failure, and fails with kind 'interrupted'. Any run it stops while it waits for the
   * state lock (`unlink` and `gc` only then), with kind 'interrupted-waiting'.
   */
  readonly signal?: AbortSignal;
  /**
   * Told of the links an undo leaves down: up before the run (recorded so), their devices replaced
   * by it (to attach them another way: a veth that is to be a tap), and the new ones deleted by
   * the undo, which cannot bring the old ones back; or NICs of theirs taken out of their VMMs by
   * it, to attach those sides another way (takeBackSwitched). Their records stay as they were.
   */
  readonly onLeftDown?: (links: readonly LeftDownLink[]) => void;
  /**
   * Told of the NICs the undo of a failed `link` hot-plugged but could not detach (the VMM refused
   * or did not answer in time): the undo deletes the devices all the same, so the VMM may still
   * hold a NIC on a deleted tap.
   */
  readonly onUndoDetachFailed?: (failures: readonly VmmDetachFailure[]) => void;
  /**
   * Told where the undo of a failed `link` (or, with --keep-going, of a VM that failed) could not
   * write the state file back: the failure undone is still what is thrown (or the VM's failure),
   * and the file keeps what the run had recorded (UndoStateWriteFailure).
   */
  readonly onUndoStateWriteFailed?: (failure: UndoStateWriteFailure) => void;
  /**
   * Told of each step of the undo of a failed `link` (or, with --keep-going, of a VM that failed)
   * that did not happen: devices it could not delete (their links stay recorded), a VM namespace
   * it could not delete. The undo goes on with its other steps all the same, and the failure
   * undone is still what is thrown (or the VM's failure).
   */
  readonly onUndoStepFailed?: (failure: UndoStepFailure) => void;
  /**
   * Told, as each link's devices are made, of what was changed of its bridge that is not
   * spectrum-link's (a foreign port taken off, an address removed, settings put back): it stays
   * so whatever the run does after (an undo does not put it back).
   */
  readonly onForeignChanged?: (vm: string, changed: ForeignChanged) => void;
  /**
   * The commands a line tells the operator to run, with this run's options (the CLI's give them,
   * printed-command.ts); where left out, each with no option (DEFAULT_COMMANDS).
   */
  readonly commands?: PrintedCommands;
}

/**
 * Where a run's device prefix came from: --device-prefix, $SPECTRUM_DEVICE_PREFIX, the default,
 * or (`state`) the state file, which recorded it when the run began (state-prefix.ts), with the
 * prefix the run would use were none recorded (`otherwise`: the default). With the option,
 * `overrides`: the variable where it is set too, and its value (left out, the option would give
 * the variable's prefix, not the recorded one).
 */
export type DevicePrefixSource = PrefixSource<DevicePrefix>;

/** Where a run's netns prefix came from: as a device prefix (DevicePrefixSource), `otherwise` the one given or the default. */
export type NetnsPrefixSource = PrefixSource<string>;

/** Where a run's prefix `P` came from (DevicePrefixSource, NetnsPrefixSource). */
export type PrefixSource<P extends string> =
  | OptionSource
  | { readonly from: 'state'; readonly otherwise: P }
  | { readonly from: 'option'; readonly flag: string; readonly overrides: { readonly variable: string; readonly value: string } };

/** Commands a refusal tells the operator to run, whole, so that each works as printed. */
export interface PrintedCommands {
  /**
   * `spectrum-link unlink VM WORDS` with the options of this run that an unlink needs to find what
   * it found (state dir, device prefix, socket templates, VMM timeout, lock wait; an unlink's own
   * --attach, not a link's, which means another thing).
   */
  unlink(vm: string, words: readonly string[]): string;
  /** This run's `spectrum-link link` again, with `attach` (VM=MODE values) added to its --attach. */
  link(attach: readonly string[]): string;
  /**
   * After an unlink of a VM, for a client of a link it provides (which that unlink takes down too):
   * `spectrum-link link CLIENT` with this run's options but not its --attach (which would switch
   * the client's other links, left up), `attach` its only --attach values; undefined where this
   * run's link again names that client already (--all, or by name: it links it as this run asks).
   */
  relink(client: string, attach: readonly string[]): string | undefined;
}

/** The commands of a run given no options (the library's callers): each as plain as it can be said. */
export const DEFAULT_COMMANDS: PrintedCommands = {
  unlink: (vm, words) => ['spectrum-link', 'unlink', vm, ...words].join(' '),
  link: (attach) => `this link again${attach.length === 0 ? '' : ` with ${attach.map((value) => `--attach ${value}`).join(' ')}`}`,
  relink: (client, attach) => ['spectrum-link', 'link', client, ...attach.flatMap((value) => ['--attach', value])].join(' '),
};

/**
 * After `unlink <vm>`, for a client of a link `vm` provides (which that unlink takes down too): the
 * --attach values (VM=MODE) of `link <client>` that bring that link back as it was: `vm`'s side
 * as recorded (in that run `vm` is in that link alone), and the client's as recorded where its
 * other links up (which that unlink leaves up, and that run keeps) have that mode on its side too
 * (else pinning it would switch them; left out, it gets the mode they agree on, or `none`).
 */
export interface ClientRelink {
  readonly client: VmName;
  readonly attach: readonly string[];
}

/**
 * A step of the undo of a failed `link` (or of one VM of it) that did not happen, and what it left:
 * devices the kernel did not delete, each link's with it (their ids stay recorded, so that no
 * other link is given them while the devices may be there); or a VM namespace it had made.
 */
export type UndoStepFailure =
  | {
      readonly step: 'devices';
      /** Why, in one line (the kernel's refusal). */
      readonly error: string;
      /** The links (as this run recorded them) whose devices may still exist, with those devices. */
      readonly left: readonly { readonly link: LinkReport; readonly devices: readonly string[] }[];
    }
  | { readonly step: 'namespace'; readonly netns: string; readonly error: string }
  | {
      readonly step: 'mtu';
      /** Why, in one line (the kernel's refusal). */
      readonly error: string;
      /** The links (as this run recorded them) whose devices, found by the run, may keep the MTU it gave them, with those devices. */
      readonly left: readonly { readonly link: LinkReport; readonly devices: readonly string[] }[];
    };

/** A state file that the undo of a failed `link` (or of one VM of it) could not write back. */
export interface UndoStateWriteFailure {
  readonly stateFile: string;
  /** Why, in one line (the state store's message). */
  readonly error: string;
  /**
   * False: the file still holds what the run had recorded. True: it holds what it held before the
   * run, but its directory could not be synced, so a crash may bring back what the run recorded.
   */
  readonly written: boolean;
  /**
   * The links whose records the undo was to take back, as the run had recorded them (ids it
   * allocated, attach modes it set); what the run did for them (devices made, NICs) is undone.
   */
  readonly recorded: readonly LinkReport[];
  /** The client VMs of those links: what to link again. */
  readonly clients: readonly VmName[];
}

/**
 * How a run waits for the state lock. For `unlink` and `gc`, the signal stops the wait only: once
 * the lock is held (onLockHeld) they do their work as they would without it.
 */
export type LockWaitOptions = Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'lockWaitMs' | 'onLockWait' | 'signal' | 'onLockHeld' | 'onLockWaitBegun' | 'onTakeDownBegun' | 'onUnlockFailed'>;
/**
 * How far an `unlink` has got, for its progress line: NICs asked out of their VMMs (`links`: how
 * many links it takes down), then the links' devices being deleted (one kernel request: seconds
 * for hundreds of links).
 */
export type TakeDownProgressEvent =
  | { readonly phase: 'detach'; readonly done: number; readonly total: number; readonly links: number }
  | { readonly phase: 'delete'; readonly devices: number; readonly links: number };

/** What taking links down needs: where they are recorded, their devices' names, their VMMs; and who is told how far it has got. */
export type UnlinkOptions = LockWaitOptions &
  Pick<LinkerOptions, 'devicePrefix' | 'devicePrefixSource' | 'attach' | 'vmm' | 'commands'> & { readonly onTakeDownProgress?: (event: TakeDownProgressEvent) => void };
/** What reporting recorded links needs (the attach mode is for links without a recorded one). */
export type ListOptions = Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'devicePrefix' | 'devicePrefixSource' | 'attach' | 'netnsPrefix'>;
/** `show` also looks in the config dir for a VM without links. */
export type ShowOptions = ListOptions & Pick<LinkerOptions, 'configDir' | 'configDirSource'>;
/** What `gc` needs: the recorded links and the prefix of the devices they own. */
export type GcOptions = LockWaitOptions & Pick<LinkerOptions, 'devicePrefix' | 'devicePrefixSource'>;

/** One connection as every command reports it (`link --json` links, `list --json` entries). */
export interface LinkReport {
  readonly vm: string;
  readonly provider: string;
  readonly id: number;
  readonly clientIp: string;
  readonly clientMac: string;
  readonly providerMac: string;
  readonly bridge: string;
  readonly clientDevice: string;
  readonly providerDevice: string;
  readonly clientAttach: AttachMode;
  readonly providerAttach: AttachMode;
  /** The socket a qemu or cloud-hypervisor client side is attached through, where recorded (or, for what link makes, to be). */
  readonly clientSocket?: string;
  /** The same of the provider side. */
  readonly providerSocket?: string;
  /** The link MTU, recorded (or, for what link makes, to be), where not the default 1500. */
  readonly mtu?: number;
}

/**
 * A recorded link as reported, and whether it is linked (attach modes recorded): not, for one that
 * `unlink` took down, its id kept; its attach modes are then only those asked for (--attach, or
 * the default), not how it is attached (which it is not), and are shown as null.
 */
export interface RecordedLinkReport extends LinkReport {
  readonly linked: boolean;
}

/** A link taken down (unlink, link taking down a provider dropped). */
export interface ReleasedLinkReport extends RecordedLinkReport {
  /**
   * The devices of other kinds than the link makes there (a vxlan left under its bridge's name,
   * say: link-device-kinds.ts) that were under its names: deleted with its own, as every device
   * under a link's names goes.
   */
  readonly foreignDeleted: readonly ForeignDevice[];
}

/** `source`: where the value came from, as the message names it (the option, or the environment variable). */
export function checkNetnsPrefix(prefix: string, source = '--netns-prefix'): string {
  if (!isNetnsPrefix(prefix)) {
    throw new CliError(`${source} ${JSON.stringify(prefix)} is not valid: up to 32 of A-Z a-z 0-9 . _ -`, EXIT.usage);
  }
  return prefix;
}

/**
 * A link as reported. Attach modes: `desired` where given (what link will make), else those
 * recorded when its devices were made (what exists), else those of --attach or its default.
 */
export function linkReport(link: Link, options: Pick<LinkerOptions, 'devicePrefix' | 'attach'>, desired?: LinkAttachment): LinkReport {
  const attached: LinkAttachment = desired ?? link.attached ?? { client: attachModeOf(options.attach, link.client), provider: attachModeOf(options.attach, link.provider) };
  const addresses = linkAddressesOf(link.id);
  const names = linkDeviceNames(options.devicePrefix, link.id);
  return {
    vm: link.client,
    provider: link.provider,
    id: link.id,
    clientIp: addresses.clientIp,
    clientMac: addresses.clientMac,
    providerMac: addresses.providerMac,
    bridge: names.bridge,
    clientDevice: names.client,
    providerDevice: names.provider,
    clientAttach: attached.client,
    providerAttach: attached.provider,
    ...(attached.clientSocket === undefined ? {} : { clientSocket: attached.clientSocket }),
    ...(attached.providerSocket === undefined ? {} : { providerSocket: attached.providerSocket }),
    ...(attached.mtu === undefined ? {} : { mtu: attached.mtu }),
  };
}

export const BOTH_SIDES: readonly LinkSide[] = ['client', 'provider'];

/** A NIC of a link's side in a VMM: `socket`, the one its report names (recorded), where it names one. */
export interface VmmTarget {
  readonly kind: VmmKind;
  readonly vm: VmName;
  readonly nic: VmmNic;
  readonly socket?: string;
}

/**
 * The VMM hot-plugs a link needs: each side (of `of`) whose VM runs under a VMM we talk to. `mtu`:
 * the link MTU the guests are to learn (attach); a detach needs none, and goes to `socket`.
 */
export function vmmNics(report: LinkReport, mtu?: number, of: readonly LinkSide[] = BOTH_SIDES): VmmTarget[] {
  const nics: VmmTarget[] = [];
  const sides = [
    ['client', report.clientAttach, report.vm, report.clientDevice, report.clientMac, report.clientSocket],
    ['provider', report.providerAttach, report.provider, report.providerDevice, report.providerMac, report.providerSocket],
  ] as const;
  for (const [side, mode, vm, device, mac, socket] of sides) {
    if (!of.includes(side)) continue;
    if (mode === 'qemu' || mode === 'cloud-hypervisor') {
      nics.push({ kind: mode, vm: vmName(vm), nic: { id: device, tap: device, mac, ...(mtu === undefined ? {} : { mtu }) }, ...(socket === undefined ? {} : { socket }) });
    }
  }
  return nics;
}

/** A client VM with recorded links that the config dir has no directory for (`link --all`). */
export interface OrphanedVm {
  readonly vm: VmName;
  /** Its recorded links as client, as `list` shows them (devices may or may not exist). */
  readonly links: readonly LeftLink[];
  /** Its recorded links as provider that are linked, as UnusableVmDir's: the `unlink VM --forget` that releases its links takes those down too. */
  readonly linkedAsProvider: readonly LeftLink[];
}

/** What `link` did: each VM's links, and the links it took down (providers no longer listed). */
export interface LinkOutcome {
  /** In the order asked for; a VM named twice is linked once. */
  readonly linked: Map<VmName, LinkReport[]>;
  /** Per client, only where there were any; each with the devices of other kinds under its names that went with it, as unlink says them. */
  readonly unlinked: Map<VmName, ReleasedLinkReport[]>;
  /** With the whole config dir (`link --all`): clients whose directory has gone, by name; else none. */
  readonly orphaned: readonly OrphanedVm[];
  /** With the whole config dir (`link --all`): its entries with a VM name that are no usable VM directory, by name; else none. */
  readonly unusable: readonly UnusableVmDir[];
  /** VMMs that did not detach a NIC of a link taken down, which went all the same (as `unlink --force`). */
  readonly vmmFailures: readonly VmmDetachFailure[];
  /**
   * VMs that --attach did not name whose up links have different modes on their side, each with
   * the links of the run (not up before it) whose side of it so got `none` (kept-attach.ts).
   */
  readonly ambiguousAttach: readonly AmbiguousAttach[];
  /** Sides of links of the run given another mode than the one last recorded for them, --attach not naming their VM (kept-attach.ts's modeChanges). */
  readonly modeChanges?: readonly ModeChange[];
}

/** `link --all`: the whole config dir as read, and the VMs read there that name no provider now. */
export interface WholeConfigDir {
  readonly snapshot: ConfigSnapshot;
  readonly withoutProviders: readonly VmName[];
}

/** `link --all`'s VMs, and the config dir as the run read and linked it. */
export interface AllVms {
  /** Sorted by name. */
  readonly vms: readonly VmName[];
  readonly wholeDir: WholeConfigDir;
}

/** An entry of the config dir with a VM name that is no usable VM directory, which `link --all` passes over. */
export interface UnusableVmDir {
  readonly vm: VmName;
  /** What it is instead, in words (vmDirProblem): a symlink leading outside, to nothing, not a directory, unreadable. */
  readonly problem: string;
  /** A symlink to nothing or round a loop: its VM's directory is gone, as an orphaned client's (the VM may still run; `unlink VM --forget` releases its links). */
  readonly leadsNowhere: boolean;
  /** Its recorded links as client, as `list` shows them: left as they are (devices too). */
  readonly links: readonly LeftLink[];
  /** Its recorded links as provider that are linked (not one taken down, its id kept), as `list` shows them, by client (one link each): those links are their clients' to link or take down. */
  readonly linkedAsProvider: readonly LeftLink[];
}

/**
 * A recorded link that `link --all` leaves as it is, as `list` shows it less whether its devices
 * exist now, and which devices under its names are foreign (which nothing prints there).
 */
export type LeftLink = Omit<ListedLink, 'present' | 'devicesThere' | 'foreign' | 'farEndsElsewhere' | 'offBridge' | 'onBridge' | 'settingsOff' | 'bridgeMtu'>;

/**
 * What a run's device plans do to the host, gathered over its transactions: what undoing one VM
 * alone deletes, and which earlier links an undo leaves down.
 */
export interface RunDevices {
  /** Host devices the plans create (deleting them undoes the plans). */
  readonly created: Set<string>;
  /** Of those, the ones made anew in place of a device that was there (and that the run deleted: not one it found gone): an undo loses both. */
  readonly replaced: Set<string>;
  /** VM namespaces the plans made (their `ip netns add` did; not one someone else made meanwhile). */
  readonly namespaces: Set<string>;
  /** The links whose NICs the run took out of their VMMs to attach those sides another way (takeBackSwitched), by pair (keyOf), as recorded. */
  readonly takenBack: Map<string, { readonly link: LinkReport; readonly nics: TakenBackNic[] }>;
  /**
   * Devices the run found and changed the MTU of (a link of another --mtu), by namespace and name,
   * each with the plan that did (its seen namespaces) and whether the host runs IPv6: an undo
   * puts their MTU back (linker.ts's restoreMtus).
   */
  readonly mtusBefore: Map<string, { readonly entry: MtuBefore; readonly plan: DevicePlan; readonly ipv6: boolean }>;
}

export const newRunDevices = (): RunDevices => ({ created: new Set(), replaced: new Set(), namespaces: new Set(), takenBack: new Map(), mtusBefore: new Map() });

/** A NIC a run took out of its VMM to attach its side of a link another way (takeBackSwitched). */
export interface TakenBackNic {
  readonly vmm: VmmKind;
  /** The VM whose VMM held it. */
  readonly vm: VmName;
  /** The NIC (and tap) id. */
  readonly nic: string;
  /** The mode the run was to give that side. */
  readonly to: AttachMode;
  /** Where the side keeps its mode through another socket (movedVmmSocket): the one the run was to attach it through. */
  readonly toSocket?: string;
  /** The socket it was taken out at, where the state recorded one (else the run's template's). */
  readonly socket?: string;
  /**
   * What its VMM's detach said (VmmPort.detach): 'taken' where this run took it out; 'absent' where
   * the VMM ran but no longer held it (taken out before, or the VM restarted without it);
   * 'not-running' where no VMM ran there. Only 'taken' took anything out.
   */
  readonly outcome: TakeBackOutcome;
}

/** What taking a NIC back from its VMM found (TakenBackNic.outcome). */
export type TakeBackOutcome = 'taken' | 'absent' | 'not-running';

/**
 * A link an undo leaves down, as recorded (its record stays as it was before the run): the run
 * replaced its devices (`replaced`), or took NICs of it out of their VMMs (`takenBack`), or both.
 */
export interface LeftDownLink extends LinkReport {
  readonly replaced: boolean;
  readonly takenBack: readonly TakenBackNic[];
}

/** A link's pair as a key. */
export const keyOf = (pair: { readonly vm: string; readonly provider: string }): string => `${pair.vm}\n${pair.provider}`;

export const linkDevicesOf = (report: LinkReport): string[] => [report.bridge, report.clientDevice, report.providerDevice];

/** A VM that `link --keep-going` did not link: undone alone, the others linked. */
export interface FailedVm {
  readonly vm: VmName;
  readonly error: unknown;
}

/** What `link --keep-going` did. */
export interface KeepGoingOutcome extends LinkOutcome {
  /** The VMs it did not link, each with why, in the order asked for. */
  readonly failed: readonly FailedVm[];
  /**
   * Where a SIGINT or SIGTERM stopped it VM by VM: while it hot-plugged NICs VM by VM after making
   * every VM's devices ('attach'), or while it linked VM by VM after that failed ('one-by-one').
   * `undone`: the VM it was at, undone like a failed one; `notLinked`: the VMs after it, not linked
   * (in 'attach' their devices and ids, made already, undone too). The VMs of `linked` stay
   * linked; nothing was taken down (`unlinked`, `orphaned` and `unusable` are empty).
   */
  readonly interrupted?: {
    readonly during: 'attach' | 'one-by-one';
    readonly undone?: VmName;
    readonly notLinked: readonly VmName[];
    /** ('one-by-one') Why the one transaction failed, which had the VMs linked one by one: said, as the pass may not have got to the VM it was. */
    readonly failure?: unknown;
  };
  /**
   * The bug (an error of no kind) its one transaction of several VMs failed by, which had the VMs
   * linked again one by one, where no VM failed by it there (a VM that did says it as its own
   * failure): none of one VM's, said all the same, the run's exit 70 (KeepGoingStop too). Not
   * where a signal stopped it VM by VM: `interrupted.failure` says it then.
   */
  readonly transactionBug?: unknown;
  /**
   * The bug that cut short the undo of its one transaction of several VMs (which had failed by a
   * kernel refusal or a bug, the VMs then linked again one by one from the state file as that undo
   * left it): none of one VM's, said all the same (what the transaction made for VMs not linked
   * may be left over), the run's exit 70 (KeepGoingStop too). Also where a signal stopped it VM by
   * VM; not where the run then stopped by a bug of its message (said as that one).
   */
  readonly transactionUndoBug?: unknown;
}

/** The bugs of the one transaction of a `link --keep-going` run that no VM failed by, to be said all the same (KeepGoingOutcome). */
export type TransactionBugs = Pick<KeepGoingOutcome, 'transactionBug' | 'transactionUndoBug'>;

/** What a `link --keep-going` run that a state failure or a bug stopped in its passes has to say with it (LinkerError 'state-failed'). */
export interface KeepGoingStop extends TransactionBugs {
  /** Where the bug that stopped it cut short an undo: what that leaves. */
  readonly cutShort?: UndoCutShort;
}

/**
 * What a bug that cut short an undo of `link --keep-going` (stopping the run there: the state those
 * VMs leave is unknown) leaves: what the run had made for the VMs it was undoing (`undoing`:
 * devices, ids) may be left over; the VMs after them in that pass (`notLinked`) were neither linked
 * nor undone: their devices and ids, made by the one transaction before the hot-plug pass, are left
 * as made (`madeForNotLinked`), or, in the pass one by one, nothing was made for them.
 */
export interface UndoCutShort {
  readonly undoing: readonly VmName[];
  readonly notLinked: readonly VmName[];
  readonly madeForNotLinked: boolean;
}

/**
 * What a `link` run did where it failed only after its links were made, taking down the links to
 * providers dropped (LinkerError.outcome): its VMs linked (they stay linked) and failed; the links
 * it took down (`unlinked`, with the VMMs that did not detach a NIC of them: `vmmFailures`) where
 * it took them down and then could not record it, else none; what `link --all` leaves as it is
 * (`orphaned`, `unusable`), and `all`, its VMs and config dir as linked.
 */
export type FinishedOutcome = KeepGoingOutcome & {
  readonly all?: AllVms;
  /** Where the take-down failed before it could say any taken down (not begun, or stopped by the kernel): the recorded links to providers dropped it was to look at, whether up or not (strayAttachModes). */
  readonly notTakenDown?: readonly LinkPair[];
  /**
   * Where the kernel stopped the take-down part-way: what it had done (NICs out of their VMMs,
   * VMMs that did not detach, devices deleted), its links still recorded as linked. Of its VMMs
   * that did not detach, `vmmFailures` holds those whose NIC's tap and link's bridge it deleted,
   * whose line (a VMM that did not detach a link taken down) holds.
   */
  readonly takeDownStopped?: StoppedRelease;
};

/** A VMM that did not detach a link's NIC, while `unlink --force` (or `link`) took the link down all the same. */
export interface VmmDetachFailure {
  /** The link, as reported. */
  readonly link: LinkReport;
  readonly vmm: VmmKind;
  /** The VM whose VMM it is. */
  readonly vm: VmName;
  /** The NIC (and tap) id. */
  readonly nic: string;
  /** What went wrong, in one line. */
  readonly error: string;
  /** The socket it was asked at, where the state recorded one (else the run's template's). */
  readonly socket?: string;
  /**
   * Of a link `link` took down (a provider dropped): the VMs of which an `unlink` of the link's
   * client, run after it, would detach NICs of this kind through the socket template
   * (reachedThroughTemplate), so that the line offers such an unlink with a socket option naming
   * `socket` only where that reaches no other NIC. Absent (`unlink`'s own): none, as unlink
   * takes down every link of its VM, and `--attach VM=MODE` then brings back only that VM's sides.
   */
  readonly throughTemplate?: readonly VmName[];
  /**
   * Of a link `link` took down: the --attach values (VM=MODE) a `link <client>` run after that
   * unlink of the client needs to attach the client's other links, which it takes down too, as
   * they are (relinkModes). Absent (`unlink`'s own): none.
   */
  readonly relinkAttach?: readonly string[];
  /**
   * Of a link `link` took down: the link, after that unlink, of each client of the links the
   * client provides, which that unlink takes down too (ClientRelink). Absent (`unlink`'s own): none.
   */
  readonly relinkClients?: readonly ClientRelink[];
}

/** A NIC a take-down (releaseLinks) took out of its VMM: that VM no longer has it. */
export interface DetachedNic {
  /** The link, as reported. */
  readonly link: LinkReport;
  readonly vmm: VmmKind;
  /** The VM whose VMM held it. */
  readonly vm: VmName;
  /** The NIC (and tap) id. */
  readonly nic: string;
}

/**
 * What a take-down (releaseLinks) that stopped part-way had done: the kernel refused a lookup or a
 * deletion of the links' devices (or, without force, a VMM refused a detach) after NICs had come
 * out of their VMMs, VMMs had not detached theirs (with force) or devices had gone. Nothing of it
 * is recorded: each of its links stays recorded as it was, so that the same command again finds
 * them (and the sockets their NICs were attached through) and takes down what is left, a NIC
 * already out of its VMM and a device already gone counting as done.
 */
export interface StoppedRelease {
  /** The links it was taking down, as reported (with the devices of other kinds it had deleted under their names). */
  readonly reports: readonly ReleasedLinkReport[];
  /** The NICs that came out of their VMMs, in order. */
  readonly detached: readonly DetachedNic[];
  /** The VMMs that did not detach a NIC (with force), in order. */
  readonly failures: readonly VmmDetachFailure[];
  /** The devices the kernel deleted (of the links' names); undefined where that is unknown. */
  readonly deleted: readonly string[] | undefined;
  /**
   * The devices of the links' names that existed when their removal began (its lookup found them);
   * where it stopped before that found them (a VMM's refusal, the lookup refused), those that may:
   * each of a link recorded as linked, those seen of one recorded without attach modes; undefined:
   * each not deleted may still exist.
   */
  readonly existed: readonly string[] | undefined;
}

/**
 * A recorded link as `list` and `show` report it. Linked: attach modes recorded, or (a record
 * written before the state kept them, as `unlink` takes it) a device of the link's kind exists
 * under one of its names. A side's attach mode is null where the link is attached no way (not
 * linked), or where its record has none and its device does not tell it: a veth is netns, a tap
 * any of none, qemu and cloud-hypervisor.
 */
export interface ListedLink extends Omit<RecordedLinkReport, 'clientAttach' | 'providerAttach'> {
  readonly clientAttach: AttachMode | null;
  readonly providerAttach: AttachMode | null;
  /** False for a link whose record has no attach modes (unlink took it down, or it was written before the state kept them). */
  readonly attachRecorded: boolean;
  /**
   * Whether the link's host devices exist right now: under each of its names a device of the kind
   * the link makes there (link-device-kinds.ts), each veth of them with its far end in its VM's
   * namespace (where `list` and `show` know the namespaces: --netns-prefix).
   */
  readonly present: boolean;
  /** Whether each of its names holds a device of the kind the link makes there: not present then only for its far ends elsewhere. */
  readonly devicesThere: boolean;
  /** The devices under its names of another kind than the link makes there (a vxlan under its bridge's name, say): none of the link's. */
  readonly foreign: readonly ForeignDevice[];
  /** Its veths whose far end is not in their VM's namespace under their name (moved elsewhere, renamed, or that namespace no longer mounted): the link's, but not present; its `link` makes them anew. */
  readonly farEndsElsewhere: readonly FarEndElsewhere[];
  /** Where its devices are all there, its side devices that are not ports of its bridge (taken off it, or put on another): present, but it carries nothing; its `link` puts them back. */
  readonly offBridge: readonly OffBridge[];
  /** Where its devices are all there, what is on its bridge that is none of the link's (another port, an address): its `link` takes it off. */
  readonly onBridge: BridgeForeign;
  /** Where its devices are all there, settings of its bridge and of its ports there other than new ones have (STP on, hairpin on, ...): its `link` puts them back. */
  readonly settingsOff: readonly SettingOff[];
  /**
   * The MTU its bridge has right now (the link MTU it was made with), where the bridge exists (a
   * bridge, not a foreign device); `mtu` is the one the state records (where not 1500).
   */
  readonly bridgeMtu?: number;
}
