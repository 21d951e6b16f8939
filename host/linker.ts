// The host linker's imperative shell: config and state in, devices and VMM attachments out.
// Decisions live in pure modules (config, link-state, device-plan); this file sequences them
// under the state lock and undoes a failed run's own work.
import { pathCheck, pathOrigin, shownOrigin } from '../shared/cli/option-source.js';
import { CliError, EXIT } from '../shared/cli/run-cli.js';
import { linkAddressesOf } from '../shared/link-address.js';
import { UNIX_SOCKET_PATH_MAX } from '../shared/unix-socket-path.js';
import { type AttachChoice, type AttachMode, assertSideMtu, attachModeOf, chosenAttachMode } from './attach-mode.js';
import { CONFIG_DIR_ENV, ConfigError, type ConfigSnapshot, type Listing, checkVm, leadsNowhere, partitionValidVms, requireValidVm, vmDirProblem } from './config.js';
import { type ConfigDirSource, readConfigDir, readConfigVms } from './config-reader.js';
import { DEVICE_KIND, type DesiredConnection, type DesiredSide, type DevicePlan, type ObservedDevice, planDevices, replacedDevices } from './device-plan.js';
import { type DevicePrefix, linkDeviceNames, parseDeviceName } from './device-names.js';
import { type FarEndElsewhere, type FarEndsFound, type ForeignDevice, type LinkDevicesSeen, expectedLinkDevices, linkDevicesSeen } from './link-device-kinds.js';
import {
  type AmbiguousAttach,
  type KeptAttach,
  type LinkSide,
  type StandingLink,
  ambiguousAttach,
  goneLink,
  keptAttach,
  linkAttachModes,
  isVmmMode,
  movedVmmSocket,
  newLinkMode,
  shownAttachMode,
  switchedVmmSides,
} from './kept-attach.js';
import {
  type DeviceError,
  type NamespaceLeft,
  type PlanMade,
  type PlanUndone,
  applyDevicePlan,
  deleteNamespaces,
  farEndNames,
  namespaceIds,
  newPlanMade,
  observeDevices,
  removeDevices,
  undoDevicePlan,
  undoDevices,
} from './netlink-devices.js';
import {
  type Link,
  type LinkAttachment,
  type LinkPair,
  type LinkState,
  StateError,
  allocateMany,
  emptyState,
  forgetLink,
  linksOfClient,
  linksOfProvider,
  linksToUnlisted,
  recordedSocket,
  restorePairs,
  sameAttachment,
  sameState,
  setAttachments,
  unrecordedSocketReason,
} from './link-state.js';
import {
  type LockOptions,
  type StateDirSource,
  STATE_DIR_ENV,
  StateStoreError,
  hasStateFile,
  loadState,
  probeStateWrite,
  saveState,
  stateDirAbsent,
  stateDirFix,
  stateFilePath,
  withStateLock,
} from './state-store.js';
import type { VmName } from './vm-name.js';
import type { VmmNic } from './vmm/nic.js';
import { vmName } from './vm-name.js';

export type VmmKind = 'qemu' | 'cloud-hypervisor';

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
   * Whether two socket paths the state records (or would) name the same socket however spelled
   * (`./`, `..`, `//`, a symlinked directory: their directories resolved, their last components as
   * they are), so that a side whose template now spells its socket otherwise is not moved.
   * Without it, only the same text is the same socket.
   */
  sameSocket?(recorded: string, wanted: string): boolean;
}

/** What is at a VMM socket (VmmPort.vmmAt). */
export type VmmPresence = { readonly running: true } | { readonly running: false; readonly none: boolean; readonly why: string };

export class LinkerError extends Error {
  override readonly name = 'LinkerError';
  constructor(
    readonly kind:
      | 'not-linked'
      /**
       * `link` took down no link to a provider dropped from the config: that failed, or the state
       * could not be written first; or the kernel stopped it part-way (`released` says what it had done).
       */
      | 'unlisted-not-taken-down'
      /** `unlink` took nothing down, or `link` took no NIC out for another mode: the state file could not be written (read-only, full, no permission). */
      | 'state-not-writable'
      /** Links were taken down (NICs detached, devices deleted), and then the state file could not record it. */
      | 'taken-down-not-recorded'
      /**
       * `unlink` stopped part-way through its take-down (the kernel refused a lookup or a deletion
       * of their devices), after NICs came out of their VMMs, VMMs did not detach or devices went
       * (`released`); the state file is as it was. (releaseLinks throws it too, to its callers.)
       */
      | 'take-down-stopped'
      | 'no-state'
      | 'unknown-vm'
      | 'vmm-detach-failed'
      /**
       * `link` took no NIC out and made nothing: a side kept in its VMM mode whose socket moved
       * has a VMM running at the socket recorded, and none to be reached at the new one.
       */
      | 'vmm-socket-moved'
      /**
       * `link` took no NIC out and made nothing: a side kept in its VMM mode would move from the
       * socket recorded to a path the state cannot record (longer than a Unix socket path once made
       * absolute, or with a control character, '"' or '\'): bad input, as a socket path too long is.
       */
      | 'vmm-socket-unrecordable'
      | 'interrupted'
      /** A signal came while the run waited for the state lock: nothing was done. */
      | 'interrupted-waiting'
      /** A signal came while a failed `link` was undone (the undo went on): `failure` is what failed first. */
      | 'interrupted-undoing'
      /**
       * `link --keep-going` stopped by a state file that could not be read or written (`failure`,
       * the StateStoreError, or the LinkerError of a state dir found not writable before a take-out
       * or take-down, or of a take-down not recorded: whose message this is) after VMs of it had
       * failed (`failed`).
       */
      | 'state-failed',
    message: string,
    /**
     * For 'interrupted-undoing': the failure the run was undone for, as thrown; for 'state-failed',
     * the state failure (see there); for 'state-not-writable', 'unlisted-not-taken-down' and
     * 'taken-down-not-recorded' where the state dir could not be written, the StateStoreError.
     */
    readonly failure?: unknown,
    /**
     * For 'interrupted', 'state-failed' and 'unlisted-not-taken-down' of `link --keep-going`: the
     * VMs that had failed before the signal, the state failure or the failed take-down of links to
     * providers dropped stopped the run (each alone, nothing made for it or undone), in the order
     * asked for, to be said too; for 'state-failed' and 'interrupted-waiting' where the state lock
     * was not taken, with no state dir yet: those that failed their checks before it.
     */
    readonly failed: readonly FailedVm[] = [],
    /**
     * For 'state-failed' of `link --keep-going`: the VMs it had linked again one by one (after its
     * one transaction failed) before the state failure stopped it; where the take-down of links to
     * providers dropped failed after the run's links were made (`outcome`), every VM it linked. In
     * the order asked for, each with its links: linked and recorded, to be printed as where the run
     * ends unstopped.
     */
    readonly linked: ReadonlyMap<VmName, readonly LinkReport[]> = new Map(),
    /**
     * Where `link` failed only after its links were made, taking down the links to providers
     * dropped ('unlisted-not-taken-down', 'taken-down-not-recorded', and with --keep-going a
     * 'state-failed' of either): what the run did, to be said as where it ends well (finishRun).
     */
    readonly outcome?: FinishedOutcome,
    /**
     * For 'take-down-stopped', and a 'vmm-detach-failed' of `unlink` whose VMM refused after other
     * NICs had come out, or an 'unlisted-not-taken-down' stopped part-way: what that take-down had
     * done (StoppedRelease).
     */
    readonly released?: StoppedRelease,
  ) {
    super(message);
  }
}

/**
 * How far a long `link` has got: VMs whose devices are made, then NICs hot-plugged into VMMs;
 * with --keep-going after a failure, VMs linked (or failed) one by one.
 */
export interface LinkProgressEvent {
  readonly phase: 'devices' | 'vmm' | 'one-by-one';
  readonly done: number;
  readonly total: number;
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
  readonly devicePrefix: DevicePrefix;
  /** VM `v` lives in namespace `<netnsPrefix>v` in netns mode. */
  readonly netnsPrefix: string;
  readonly mtu: number;
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
   * The commands a line tells the operator to run, with this run's options (the CLI's give them,
   * printed-command.ts); where left out, each with no option (DEFAULT_COMMANDS).
   */
  readonly commands?: PrintedCommands;
}

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
const DEFAULT_COMMANDS: PrintedCommands = {
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

/** For each of `clients`, of `state` (not the links `released`, by id): the link that brings its link to `vm` back as it was (ClientRelink). */
function clientRelinks(state: LinkState, vm: VmName, clients: readonly VmName[], released: ReadonlySet<number>): ClientRelink[] {
  return clients.map((client) => {
    const links = state.links.filter((link) => link.client === client && !released.has(link.id));
    const toVm = links.find((link) => link.provider === vm)?.attached;
    if (toVm === undefined) return { client, attach: [] };
    const own = toVm.client;
    const others = links.filter((link) => link.provider !== vm && link.attached !== undefined);
    const pinOwn = others.every((link) => link.attached?.client === own);
    return { client, attach: [...(pinOwn ? [`${client}=${own}`] : []), `${vm}=${toVm.provider}`] };
  });
}

/**
 * Of `pins` (VM=MODE), those a link of all of `links` can carry: each of them recorded attached
 * has that mode on every side of the VM (a pin applies to every link of the run; one with another
 * mode there, which that run keeps, would be switched). A VM left out gets its mode as a link
 * not up does (kept-attach.ts).
 */
function agreedPins(pins: readonly string[], links: readonly Link[]): string[] {
  return pins.filter((pin) => {
    const at = pin.indexOf('=');
    const vm = pin.slice(0, at);
    const mode = pin.slice(at + 1);
    return links.every(({ client, provider, attached }) => attached === undefined || ((client !== vm || attached.client === mode) && (provider !== vm || attached.provider === mode)));
  });
}

/** A client of a link a VM provides and the command (`run ...`) that brings that link back after an unlink of the VM; undefined: the link of the VM again names it (--all). */
export interface RelinkCommand {
  readonly client: string;
  readonly command: string | undefined;
}

/**
 * What a line that prints `unlink <vm>` then a link of `vm` (`link`) says: what that link brings
 * back, and for each client of the links `vm` provides (which that unlink takes down too) the
 * command that brings its link back as it was (`relinks`).
 */
export function relinkedText(vm: string, link: string, relinks: readonly RelinkCommand[]): string {
  if (relinks.length === 0) return link;
  // Those that link names (--all, or by name) it brings back itself, as that run asks.
  const named = relinks.filter(({ command }) => command === undefined).map(({ client }) => client);
  const own = relinks.filter(({ command }) => command !== undefined);
  if (own.length === 0) return `${link} (that unlink takes down the links ${vm} provides too, to ${named.join(', ')}: that link brings them back too, naming their clients)`;
  const alsoNamed = named.length === 0 ? '' : ` and those it provides to ${named.join(', ')}, naming those clients`;
  return `${link}, which brings back ${vm}'s own links${alsoNamed}; ${providedRelinksText(vm, own)}`;
}

/** What relinkedText says of the links `vm` provides: that the unlink takes them down, and each client's command (`relinks`) that brings its link back as it was. */
function providedRelinksText(vm: string, relinks: readonly RelinkCommand[]): string {
  const commands = relinks.map(({ client, command }) => `to bring back ${client} -> ${vm} as it was, ${command ?? 'run that link'}`);
  return `that unlink takes down the links ${vm} provides too, to ${relinks.map(({ client }) => client).join(', ')}: ${commands.join('; ')}`;
}

/** The command of each ClientRelink, as `commands` says it. */
function relinkCommands(relinks: readonly ClientRelink[], commands: PrintedCommands): RelinkCommand[] {
  return relinks.map(({ client, attach }) => {
    const command = commands.relink(client, attach);
    return { client, command: command === undefined ? undefined : `run ${command}` };
  });
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
  | { readonly step: 'namespace'; readonly netns: string; readonly error: string };

/** The failure of an undo's device step, its devices grouped by the links of `reports`; none where none of them is left. */
function devicesLeft(devices: readonly string[], reports: readonly LinkReport[], error: string): UndoStepFailure | undefined {
  const there = new Set(devices);
  const left = reports.flatMap((link) => {
    const of = linkDevicesOf(link).filter((device) => there.has(device));
    return of.length > 0 ? [{ link, devices: of }] : [];
  });
  return left.length > 0 ? { step: 'devices', error, left } : undefined;
}

const namespaceLeft = ({ netns, error }: NamespaceLeft): UndoStepFailure => ({ step: 'namespace', netns, error });

/**
 * The state an undo writes back over `state` (the run's): each of `reports`' records as `before`
 * had it (ids the run allocated given back), but for a link new in the run whose devices may still
 * exist (`left`): its record stays as the run made it. Ids are given back only once their devices
 * are gone, so that none is given to another link (whose plan would take those devices as its
 * own) while they may be there; gc leaves them, unlink and a link again converge them.
 */
function undoneState(state: LinkState, before: LinkState, reports: readonly LinkReport[], left: ReadonlySet<string>): LinkState {
  const earlier = left.size === 0 ? new Map<string, Link>() : linksByPair(before);
  const kept = (report: LinkReport): boolean => !earlier.has(keyOf(report)) && linkDevicesOf(report).some((device) => left.has(device));
  return restorePairs(state, before, reports.filter((report) => !kept(report)).map(pairOf));
}

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
 * Write `target` over the state file, which holds `held` (the undo of a failed run, or of VMs of
 * it). Where that fails, the failure being undone stays what is thrown: this one is told (`told`)
 * with what the file still records, and the state it holds is returned, so that a later write of
 * the run (--keep-going) keeps those records, as the line that says so tells.
 */
async function writeBack(options: Pick<LinkerOptions, 'stateDir' | 'devicePrefix' | 'attach'>, held: LinkState, target: LinkState, told?: (failure: UndoStateWriteFailure) => void): Promise<LinkState> {
  try {
    await saveState(options.stateDir, target);
    return target;
  } catch (error) {
    const written = error instanceof StateStoreError && error.kind === 'sync-failed';
    const targetLinks = linksByPair(target);
    const unchanged = (link: Link): boolean => {
      const was = targetLinks.get(keyOf({ vm: link.client, provider: link.provider }));
      return was !== undefined && was.id === link.id && sameAttachment(was.attached, link.attached);
    };
    const recorded = held.links.filter((link) => !unchanged(link)).map((link) => linkReport(link, options));
    const clients = [...new Set(recorded.map((report) => vmName(report.vm)))];
    told?.({ stateFile: stateFilePath(options.stateDir), error: reasonOf(error), written, recorded, clients });
    return written ? target : held;
  }
}

/** Throw where the run was asked to stop (options.signal aborted), for the failure path to undo it. */
function stopIfInterrupted(options: Pick<LinkerOptions, 'signal'>): void {
  const { signal } = options;
  if (signal?.aborted === true) throw new LinkerError('interrupted', `interrupted (${String(signal.reason)}): what this run had made is undone`);
}

/**
 * How a run waits for the state lock. For `unlink` and `gc`, the signal stops the wait only: once
 * the lock is held (onLockHeld) they do their work as they would without it.
 */
export type LockWaitOptions = Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'lockWaitMs' | 'onLockWait' | 'signal' | 'onLockHeld'>;
/** What taking links down needs: where they are recorded, their devices' names, their VMMs. */
export type UnlinkOptions = LockWaitOptions & Pick<LinkerOptions, 'devicePrefix' | 'attach' | 'vmm' | 'commands'>;
/** What reporting recorded links needs (the attach mode is for links without a recorded one). */
export type ListOptions = Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'devicePrefix' | 'attach' | 'netnsPrefix'>;
/** `show` also looks in the config dir for a VM without links. */
export type ShowOptions = ListOptions & Pick<LinkerOptions, 'configDir' | 'configDirSource'>;
/** What `gc` needs: the recorded links and the prefix of the devices they own. */
export type GcOptions = LockWaitOptions & Pick<LinkerOptions, 'devicePrefix'>;

/** The state lock's options of a run: its wait, and where its state dir came from. */
function lockOptions(options: Pick<LinkerOptions, 'stateDirSource' | 'lockWaitMs' | 'onLockWait' | 'signal'>): LockOptions {
  const { stateDirSource: source, lockWaitMs: timeoutMs, onLockWait: onWaiting, signal } = options;
  return {
    ...(source === undefined ? {} : { source }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(onWaiting === undefined ? {} : { onWaiting }),
    ...(signal === undefined ? {} : { signal }),
  };
}

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

const NETNS_PREFIX = /^[A-Za-z0-9._-]{0,32}$/;

/** `source`: where the value came from, as the message names it (the option, or the environment variable). */
export function checkNetnsPrefix(prefix: string, source = '--netns-prefix'): string {
  if (!NETNS_PREFIX.test(prefix)) {
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
  };
}

/** What a report says of how its link is attached: its modes, and its sockets where known (to record). */
function attachmentOf(report: LinkReport): LinkAttachment {
  return {
    client: report.clientAttach,
    provider: report.providerAttach,
    ...(report.clientSocket === undefined ? {} : { clientSocket: report.clientSocket }),
    ...(report.providerSocket === undefined ? {} : { providerSocket: report.providerSocket }),
  };
}

/**
 * The attachment a run gives a link (`modes`), with the socket the run attaches each VMM side
 * through (VmmPort.socketOf), recorded with it: where a later run takes that NIC out. Where the
 * state cannot hold that path (too long once made absolute, say), a side kept in its mode keeps the
 * socket `recorded` for it if the path names that socket too (VmmPort.sameSocket), as a side
 * whose socket is spelled otherwise keeps its NIC; else it gets none (a side up that would so
 * move is refused before: switchedSides).
 */
function withSockets(modes: LinkAttachment, pair: LinkPair, vmm: VmmPort, recorded?: LinkAttachment): LinkAttachment {
  const socketOf = (side: LinkSide, mode: AttachMode, vm: VmName): string | undefined => {
    if (!isVmmMode(mode)) return undefined;
    const socket = vmm.socketOf?.(mode, vm);
    if (socket !== undefined) return socket;
    const kept = recorded?.[side] === mode ? recordedSocket(recorded, side) : undefined;
    const path = kept === undefined ? undefined : vmm.templateSocket?.(mode, vm);
    return kept !== undefined && path !== undefined && vmm.sameSocket?.(kept, path) === true ? kept : undefined;
  };
  const clientSocket = socketOf('client', modes.client, pair.client);
  const providerSocket = socketOf('provider', modes.provider, pair.provider);
  return {
    client: modes.client,
    provider: modes.provider,
    ...(clientSocket === undefined ? {} : { clientSocket }),
    ...(providerSocket === undefined ? {} : { providerSocket }),
  };
}

function sideOf(mode: AttachMode, vm: VmName, device: string, mac: string, options: LinkerOptions): DesiredSide {
  return { device, mac, attach: mode === 'netns' ? { kind: 'veth', netns: `${options.netnsPrefix}${vm}` } : { kind: 'tap' } };
}

/** Refuse a side its device or VMM cannot be given: bad input, said before anything is made. */
function assertSideUsable(mode: AttachMode, vm: string, options: LinkerOptions): void {
  assertSideMtu(options.mtu, mode, vm);
  if (mode === 'qemu' || mode === 'cloud-hypervisor') options.vmm.checkSocket?.(mode, vmName(vm));
}

function desiredConnection(report: LinkReport, options: LinkerOptions): DesiredConnection {
  assertSideUsable(report.clientAttach, report.vm, options);
  assertSideUsable(report.providerAttach, report.provider, options);
  return {
    bridge: report.bridge,
    mtu: options.mtu,
    client: sideOf(report.clientAttach, vmName(report.vm), report.clientDevice, report.clientMac, options),
    provider: sideOf(report.providerAttach, vmName(report.provider), report.providerDevice, report.providerMac, options),
  };
}

const BOTH_SIDES: readonly LinkSide[] = ['client', 'provider'];

const VMM_NAMES: Readonly<Record<VmmKind, string>> = { qemu: 'QEMU', 'cloud-hypervisor': 'cloud-hypervisor' };

/** A NIC of a link's side in a VMM: `socket`, the one its report names (recorded), where it names one. */
interface VmmTarget {
  readonly kind: VmmKind;
  readonly vm: VmName;
  readonly nic: VmmNic;
  readonly socket?: string;
}

/**
 * The VMM hot-plugs a link needs: each side (of `of`) whose VM runs under a VMM we talk to. `mtu`:
 * the link MTU the guests are to learn (attach); a detach needs none, and goes to `socket`.
 */
function vmmNics(report: LinkReport, mtu?: number, of: readonly LinkSide[] = BOTH_SIDES): VmmTarget[] {
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

/** A VMM's failure to detach a target's NIC, as said (with the socket it was asked at, where recorded). */
function detachFailure(link: LinkReport, target: VmmTarget, error: unknown): VmmDetachFailure {
  return { link, vmm: target.kind, vm: target.vm, nic: target.nic.id, error: reasonOf(error), ...(target.socket === undefined ? {} : { socket: target.socket }) };
}

function netnsNames(connections: readonly DesiredConnection[]): string[] {
  return connections.flatMap((c) => [c.client, c.provider]).flatMap((side) => (side.attach.kind === 'veth' ? [side.attach.netns] : []));
}

/** NICs hot-plugged so far of how many, for the progress line (`link --keep-going` attaches VM by VM). */
interface NicCount {
  done: number;
  readonly total: number;
}

/** Hot-plug each link's VMM sides; on failure detach what this did and rethrow. */
async function attachToVmms(reports: readonly LinkReport[], options: LinkerOptions, count?: NicCount): Promise<void> {
  const attached: (VmmTarget & { link: LinkReport })[] = [];
  const targets = reports.flatMap((report) => vmmNics(report, options.mtu).map((target) => ({ ...target, link: report })));
  const counted = count ?? { done: 0, total: targets.length };
  try {
    for (const target of targets) {
      stopIfInterrupted(options);
      // Only NICs this run added are taken back: one attached by an earlier run stays.
      if (await options.vmm.attach(target.kind, target.vm, target.nic)) attached.push(target);
      counted.done += 1;
      options.progress?.({ phase: 'vmm', done: counted.done, total: counted.total });
    }
  } catch (error) {
    // The devices go after this whatever the VMMs say (each detach is bounded as a whole, so that
    // a VMM answering each step just in time cannot hold the state lock for long); a NIC a VMM did
    // not give back is told, as that VMM may still hold it on a deleted tap.
    const failures: VmmDetachFailure[] = [];
    for (const target of attached.reverse()) {
      await options.vmm.detach(target.kind, target.vm, target.nic, target.socket).catch((detachError: unknown) => {
        failures.push(detachFailure(target.link, target, detachError));
      });
    }
    if (failures.length > 0) options.onUndoDetachFailed?.(failures);
    throw error;
  }
}

// VMs are linked in chunks that grow (4, 8, 16, ...): while the kernel makes one chunk's devices
// on the addon's worker thread, the next chunk's ids are allocated and recorded, and its devices
// planned. The first chunk is small so that the kernel starts early. (The VMs' directories are
// read before the first chunk, every side of every link checked up front: runAttachModes.)
const FIRST_CHUNK = 4;

function* chunksOf<T>(items: readonly T[]): Generator<T[]> {
  let size = FIRST_CHUNK;
  for (let start = 0; start < items.length; start += size, size *= 2) yield items.slice(start, start + size);
}

/** A client VM with recorded links that the config dir has no directory for (`link --all`). */
export interface OrphanedVm {
  readonly vm: VmName;
  /** Its recorded links as client, as `list` shows them (devices may or may not exist). */
  readonly links: readonly LeftLink[];
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
}

/** `link --all`: the whole config dir as read, and the VMs read there that name no provider now. */
export interface WholeConfigDir {
  readonly snapshot: ConfigSnapshot;
  readonly withoutProviders: readonly VmName[];
}

/** The VMs a `link` run links, and the whole config dir they come from where it has one (`link --all`). */
interface RunVms {
  readonly vms: readonly VmName[];
  readonly wholeDir?: WholeConfigDir | undefined;
}

/** `link --all`'s VMs, and the config dir as the run read and linked it. */
export interface AllVms {
  /** Sorted by name. */
  readonly vms: readonly VmName[];
  readonly wholeDir: WholeConfigDir;
}

/**
 * The VMs `link --all` links in a config dir read whole: those that name providers, and those
 * whose providers/net cannot be listed (no directory, unreadable), which may well name some, so
 * that their check fails the run saying what to fix. The VMs read there that name no provider
 * (`withoutProviders`) lose whatever they were linked to as clients; a VM whose directory could
 * not be read, or has gone, is left as it is. Pure.
 */
export function allVmsOf(snapshot: ConfigSnapshot): AllVms {
  const listings = [...snapshot.vms.values()].flatMap((dir) => (dir.location === 'directory' ? [{ name: dir.name, providers: dir.providers }] : []));
  const count = (providers: Listing): number => (providers.state === 'directory' ? providers.entries.length : 0);
  const unlisted = (providers: Listing): boolean => providers.state === 'not-a-directory' || providers.state === 'unreadable';
  const vms = listings.filter((vm) => count(vm.providers) > 0 || unlisted(vm.providers)).map((vm) => vm.name).sort();
  const withoutProviders = listings.filter((vm) => vm.providers.state === 'missing' || (vm.providers.state === 'directory' && count(vm.providers) === 0)).map((vm) => vm.name);
  return { vms, wholeDir: { snapshot, withoutProviders } };
}

/** `link --all`'s VMs, the config dir read whole (once: it holds every VM the run checks too). */
async function readAllVms(options: Pick<LinkerOptions, 'configDir' | 'configDirSource'>): Promise<AllVms> {
  return allVmsOf(await readConfigDir(options.configDir, options.configDirSource));
}

/**
 * Client VMs with recorded links that a whole config dir has no directory for: gone, or a symlink
 * to nothing or round a loop. Their links are left alone (the VM may still run: its directory
 * going says nothing of that); the operator is told, and `unlink VM --forget` releases them.
 */
function orphanedClients(state: LinkState, snapshot: ConfigSnapshot): { vm: VmName; links: Link[] }[] {
  const byClient = new Map<VmName, Link[]>();
  for (const link of state.links) {
    const dir = snapshot.vms.get(link.client);
    if (dir !== undefined && !leadsNowhere(dir)) continue;
    const links = byClient.get(link.client) ?? [];
    if (links.length === 0) byClient.set(link.client, links);
    links.push(link);
  }
  return [...byClient].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([vm, links]) => ({ vm, links }));
}

/** An entry of the config dir with a VM name that is no usable VM directory, which `link --all` passes over. */
export interface UnusableVmDir {
  readonly vm: VmName;
  /** What it is instead, in words (vmDirProblem): a symlink leading outside, to nothing, not a directory, unreadable. */
  readonly problem: string;
  /** Its recorded links as client, as `list` shows them: left as they are (devices too). */
  readonly links: readonly LeftLink[];
}

/**
 * The entries of a whole config dir with a VM name that are no usable VM directory: `link --all`
 * links none of them and leaves their links as they are (`link <vm>` of one fails, saying why), so
 * each is said. A symlink to nothing (or round a loop) whose VM has links recorded is said as an
 * orphaned client; a file that is no directory, only where links are recorded for its name.
 */
function unusableVmDirs(state: LinkState, snapshot: ConfigSnapshot): { vm: VmName; problem: string; links: Link[] }[] {
  const stateOf = statesByClient(state);
  return [...snapshot.vms.values()].flatMap((dir) => {
    if (dir.location === 'directory') return [];
    const links = linksOfClient(stateOf(dir.name), dir.name);
    if (leadsNowhere(dir) && links.length > 0) return [];
    // A stray file (notes, a README) is no VM anyone meant: passed over quietly, as a directory
    // without providers/net is, unless links are recorded for its name.
    if (dir.location === 'not-a-directory' && links.length === 0) return [];
    return [{ vm: dir.name, problem: vmDirProblem(snapshot, dir.name) ?? dir.location, links }];
  });
}

/**
 * A recorded link that `link --all` leaves as it is, as `list` shows it less whether its devices
 * exist now, and which devices under its names are foreign (which nothing prints there).
 */
export type LeftLink = Omit<ListedLink, 'present' | 'devicesThere' | 'foreign' | 'farEndsElsewhere' | 'mtu'>;

/** A recorded link as the state has it: its modes where recorded, else null (attached no way as far as the record tells). */
function asRecorded(link: Link, options: Pick<LinkerOptions, 'devicePrefix' | 'attach'>): LeftLink {
  const report = linkReport(link, options);
  if (link.attached !== undefined) return { ...report, linked: true, attachRecorded: true };
  return { ...report, linked: false, attachRecorded: false, clientAttach: null, providerAttach: null };
}

/**
 * What `link --all` reports of the VMs it could not link whose links it leaves as they are: the
 * orphaned clients and the unusable entries, their links as `list` shows them (`listed`: a link
 * recorded before the state kept attach modes is linked, with modes its devices show, while they
 * exist). The devices are looked at only where such a link is among them. Where they cannot be
 * (the listing fails), the links are given as recorded: the run is done and recorded by then, and
 * what it linked and took down must still be said, not lost to a report of what it left alone.
 */
async function leftAsTheyAre(state: LinkState, snapshot: ConfigSnapshot, options: Pick<LinkerOptions, 'devicePrefix' | 'attach'>): Promise<{ orphaned: OrphanedVm[]; unusable: UnusableVmDir[] }> {
  const orphans = orphanedClients(state, snapshot);
  const unusables = unusableVmDirs(state, snapshot);
  const links = [...orphans, ...unusables].flatMap((entry) => entry.links);
  const recorded = (): LeftLink[] => links.map((link) => asRecorded(link, options));
  // Without the VM namespaces (netnsPrefix): where veths' far ends are counts only for `present`, which is not said here.
  const asListed = (): Promise<ListedLink[]> => listed(links, { devicePrefix: options.devicePrefix, attach: options.attach });
  const reports: readonly LeftLink[] = links.some((link) => link.attached === undefined) ? await asListed().catch(recorded) : recorded();
  const shown = new Map<Link, LeftLink>();
  reports.forEach((entry, index) => {
    const link = links[index];
    if (link !== undefined) shown.set(link, entry);
  });
  const shownOf = (entries: readonly Link[]): LeftLink[] => entries.flatMap((link) => shown.get(link) ?? []);
  return {
    orphaned: orphans.map(({ vm, links: own }) => ({ vm, links: shownOf(own) })),
    unusable: unusables.map(({ vm, problem, links: own }) => ({ vm, problem, links: shownOf(own) })),
  };
}

/** What one link transaction made: the state after it, each VM's links, each VM's providers now. */
interface LinkTransaction {
  readonly state: LinkState;
  readonly linked: Map<VmName, LinkReport[]>;
  readonly providers: Map<VmName, readonly VmName[]>;
}

/**
 * What a run's device plans do to the host, gathered over its transactions: what undoing one VM
 * alone deletes, and which earlier links an undo leaves down.
 */
interface RunDevices {
  /** Host devices the plans create (deleting them undoes the plans). */
  readonly created: Set<string>;
  /** Of those, the ones made anew in place of a device that was there (and that the run deleted: not one it found gone): an undo loses both. */
  readonly replaced: Set<string>;
  /** VM namespaces the plans made (their `ip netns add` did; not one someone else made meanwhile). */
  readonly namespaces: Set<string>;
  /** The links whose NICs the run took out of their VMMs to attach those sides another way (takeBackSwitched), by pair (keyOf), as recorded. */
  readonly takenBack: Map<string, { readonly link: LinkReport; readonly nics: TakenBackNic[] }>;
}

const newRunDevices = (): RunDevices => ({ created: new Set(), replaced: new Set(), namespaces: new Set(), takenBack: new Map() });

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
const keyOf = (pair: { readonly vm: string; readonly provider: string }): string => `${pair.vm}\n${pair.provider}`;

/**
 * A state's links by pair (keyOf), in one pass: for a lookup per link or per VM of a run, where
 * link-state.ts's lookupLink would scan the whole state each time (quadratic in a bulk run).
 */
function linksByPair(state: LinkState): Map<string, Link> {
  return new Map(state.links.map((link) => [keyOf({ vm: link.client, provider: link.provider }), link]));
}

/**
 * A state's links by client, each client's as a state of its own (in the state's order), in one
 * pass: link-state.ts's queries of one client (linksOfClient, linksToUnlisted) then scan that
 * client's links alone, not the whole state once per VM of a run.
 */
function statesByClient(state: LinkState): (client: VmName) => LinkState {
  const byClient = new Map<VmName, Link[]>();
  for (const link of state.links) {
    const links = byClient.get(link.client);
    if (links === undefined) byClient.set(link.client, [link]);
    else links.push(link);
  }
  return (client) => ({ version: state.version, links: byClient.get(client) ?? [] });
}

const linkDevicesOf = (report: LinkReport): string[] => [report.bridge, report.clientDevice, report.providerDevice];
const pairOf = (report: LinkReport): { client: VmName; provider: VmName } => ({ client: vmName(report.vm), provider: vmName(report.provider) });

/** The VM namespaces a link's netns sides live in (`<netnsPrefix><vm>`). */
const linkNamespacesOf = (report: LinkReport, netnsPrefix: string): string[] => [
  ...(report.clientAttach === 'netns' ? [`${netnsPrefix}${report.vm}`] : []),
  ...(report.providerAttach === 'netns' ? [`${netnsPrefix}${report.provider}`] : []),
];

/**
 * Whether a NIC of these is out of a running VMM: taken out by the run, or found no longer held
 * there (the link down before the run, though recorded up). Not one whose VMM was not running.
 */
const anyOut = (nics: readonly TakenBackNic[]): boolean => nics.some((nic) => nic.outcome !== 'not-running');

/**
 * Of the links an undo took back to their records in `before`, those it leaves down: up then
 * (recorded so), with a device the run had replaced, or a NIC out of its running VMM: one the run
 * took out, or one that VMM no longer held (said so, not as taken out). One whose VMM was not
 * running was not taken out: the run left that side as it was. As recorded, for the operator's line.
 */
function linksLeftDown(reports: readonly LinkReport[], before: LinkState, made: RunDevices, options: LinkerOptions): LeftDownLink[] {
  const recorded = linksByPair(before);
  return reports.flatMap((report) => {
    const earlier = recorded.get(keyOf(report));
    const replaced = linkDevicesOf(report).some((device) => made.replaced.has(device));
    const takenBack = made.takenBack.get(keyOf(report))?.nics ?? [];
    return earlier?.attached !== undefined && (replaced || anyOut(takenBack)) ? [{ ...linkReport(earlier, options), replaced, takenBack }] : [];
  });
}

/** What a link transaction does beyond ids and devices. */
interface TransactionMode {
  /** The attach modes it gives each side: --attach's, else kept (kept-attach.ts). */
  readonly attachModes: KeptAttach;
  /** Hot-plug the NICs too (false: `link --keep-going`, which attaches VM by VM after it). */
  readonly attach: boolean;
  /** Told of the links the transaction's undo leaves down (linksLeftDown). */
  readonly leftDown?: (links: readonly LeftDownLink[]) => void;
  /** Told where the undo could not write the state file back (writeBack). */
  readonly undoWriteFailed?: (failure: UndoStateWriteFailure) => void;
  /**
   * Told, once a failure is undone, of the state the file holds: `before`, but for the records of
   * links whose devices the undo could not delete (kept), or the run's where the write failed.
   */
  readonly undone?: (holds: LinkState) => void;
}

/**
 * One link transaction, under the state lock its caller holds, from the state `before` (as the
 * state file has it): ids allocated (or found) and recorded, devices converged, VMMs attached
 * (mode.attach), chunk by chunk; what its plans do is added to `made`. `snapshot`: the config as
 * read (every VM of `vms` and the providers they reach). A failure (a bad VM, a kernel
 * refusal, a VMM, an interruption) undoes it: the devices it made, the NICs it hot-plugged, the
 * state file back to `before` (ids it allocated go back, but for those of links whose devices it
 * could not delete; ids the pairs already had stay theirs); then it is rethrown, also where a
 * step of the undo fails (options.onUndoStepFailed is told, and the undo goes on) or its state
 * write does (mode.undoWriteFailed is told).
 */
async function linkTransaction(
  vms: readonly VmName[],
  options: LinkerOptions,
  snapshot: ConfigSnapshot,
  before: LinkState,
  made: RunDevices,
  mode: TransactionMode,
): Promise<LinkTransaction> {
  let state = before;
  const byVm = new Map<VmName, LinkReport[]>();
  const providers = new Map<VmName, readonly VmName[]>();
  /** The plans whose carrying out began, in order, each with the devices and namespaces it made so far (its undo deletes those alone). */
  const started: { plan: DevicePlan; made: PlanMade }[] = [];
  // Chunks are applied one after another; after a failure the rest are not.
  let applying: Promise<void> = Promise.resolve();
  let failed = false;
  let applied = 0;
  try {
    for (const chunk of chunksOf(vms)) {
      if (failed) break;
      stopIfInterrupted(options);
      const wanted = chunk.map((vm) => requireValidVm(snapshot, vm));
      for (const vm of wanted) providers.set(vm.name, vm.providers);
      const allocation = allocateMany(state, wanted.flatMap((vm) => vm.providers.map((provider) => ({ client: vm.name, provider }))));
      const reports: LinkReport[] = [];
      for (const vm of wanted) byVm.set(vm.name, []);
      for (const link of allocation.links) {
        // Each VMM side with the socket it is attached through, recorded: where its NIC is taken out.
        const report = linkReport(link, options, withSockets(linkAttachModes(mode.attachModes, link), link, options.vmm, link.attached));
        byVm.get(link.client)?.push(report);
        reports.push(report);
      }
      const next = setAttachments(
        allocation.state,
        reports.map((report) => ({ pair: pairOf(report), attached: attachmentOf(report) })),
      );
      const connections = reports.map((report) => desiredConnection(report, options));
      // The query only reads, so it runs while the state is written (and while the kernel
      // makes the previous chunk's devices, which are others).
      const observed = observeDevices(netnsNames(connections), connections.flatMap((c) => [c.bridge, c.client.device, c.provider.device]));
      observed.catch(() => undefined); // awaited below; not unhandled if saving fails first
      // Ids (and how their devices will be attached) are recorded durably before the chunk's
      // devices exist, so a crash leaves devices that gc and unlink can attribute.
      if (!sameState(next, state)) {
        await saveState(options.stateDir, next).catch((error: unknown) => {
          // Only the dir's sync failed: the file holds `next`, which the undo is to take back.
          if (error instanceof StateStoreError && error.kind === 'sync-failed') state = next;
          throw error;
        });
        state = next;
      }
      const plan = planDevices(connections, await observed);
      applying = applying
        .then(async () => {
          if (failed) return;
          stopIfInterrupted(options);
          // Only a plan begun is undone: one never carried out made nothing, and its `creates`
          // name the devices it was to replace, which are still there, up and in use.
          const planMade = newPlanMade();
          started.push({ plan, made: planMade });
          for (const device of plan.creates) made.created.add(device);
          for (const device of replacedDevices(plan)) made.replaced.add(device);
          try {
            await applyDevicePlan(plan, planMade);
          } finally {
            // Only those its `ip netns add` made: one someone else made meanwhile is never the run's to delete (undoVms).
            for (const netns of planMade.namespaces) made.namespaces.add(netns);
            // One it found gone when it came to delete it, something else took: the run replaced nothing there.
            for (const device of planMade.vanished) made.replaced.delete(device);
          }
          applied += chunk.length;
          options.progress?.({ phase: 'devices', done: applied, total: vms.length });
        })
        .catch((error: unknown) => {
          failed = true;
          throw error;
        });
      applying.catch(() => undefined); // awaited after the loop
    }
    await applying;
    stopIfInterrupted(options);
    if (mode.attach) await attachToVmms([...byVm.values()].flat(), options);
  } catch (error) {
    // A plan not yet begun (a chunk planned while the one before it was made) is never begun now:
    // it would make devices, maybe replacing those of links up another way, only for the undo.
    failed = true;
    await applying.catch(() => undefined);
    const reports = [...byVm.values()].flat();
    // Each step of the undo is done whatever the one before did; one that fails is told (the
    // failure undone stays what is thrown), and the devices it left keep their links' ids.
    const left = new Set<string>();
    for (const { plan, made: planMade } of started.reverse()) {
      const undone = await undoDevicePlan(plan, planMade).catch(
        (undoError: unknown): PlanUndone => ({
          kept: [],
          left: { devices: plan.creates, error: reasonOf(undoError) },
          namespaces: [...planMade.namespaces].map((netns) => ({ netns, error: reasonOf(undoError) })),
        }),
      );
      // A device it had yet to replace when a step before failed is there still, and up; one of
      // its names it did not make (someone else's, made since it looked) was none of its.
      for (const device of undone.kept) {
        made.created.delete(device);
        made.replaced.delete(device);
      }
      for (const device of undone.left?.devices ?? []) left.add(device);
      const devices = undone.left === undefined ? undefined : devicesLeft(undone.left.devices, reports, undone.left.error);
      if (devices !== undefined) options.onUndoStepFailed?.(devices);
      for (const netns of undone.namespaces) options.onUndoStepFailed?.(namespaceLeft(netns));
    }
    let holds = before;
    if (state !== before) {
      const target = left.size === 0 ? before : undoneState(state, before, reports, left);
      holds = await writeBack(options, state, target, mode.undoWriteFailed);
    }
    mode.undone?.(holds);
    // Links of its VMs whose NICs were taken out of their VMMs before it (takeBackSwitched) are
    // left down too, also where the failure came before their chunk was planned.
    const clients = new Set(vms);
    const planned = new Set(reports.map(keyOf));
    const unplanned = [...made.takenBack.values()].filter(({ link }) => clients.has(vmName(link.vm)) && !planned.has(keyOf(link))).map(({ link }) => link);
    const leftDown = linksLeftDown([...reports, ...unplanned], before, made, options);
    if (leftDown.length > 0) mode.leftDown?.(leftDown);
    throw error;
  }
  return { state, linked: byVm, providers };
}

/** What taking down the links to providers no longer listed did. */
interface UnlistedTakedown {
  /** The state with them taken down, not saved yet (finishRun saves it, where it `changed`). */
  readonly state: LinkState;
  readonly changed: boolean;
  /** The links taken down, in the order they went. */
  readonly reports: readonly ReleasedLinkReport[];
  readonly unlinked: Map<VmName, ReleasedLinkReport[]>;
  readonly vmmFailures: VmmDetachFailure[];
}

/**
 * Of these links, those up: attach modes recorded, or none (a record written before the state
 * kept them) while a device of the link's kind exists under one of its names, as unlink and list
 * take it (releaseLinks). Such a link left up would keep its client connected to a provider its
 * config no longer names. One whose names hold only devices of other kinds is not up (list says
 * it is not linked): left as it is, those devices with it (its unlink deletes them).
 */
async function linksUp(links: readonly Link[], options: LinkerOptions): Promise<Link[]> {
  const devicesOf = (link: Link): string[] => Object.values(linkDeviceNames(options.devicePrefix, link.id));
  const unrecorded = links.filter((link) => link.attached === undefined);
  if (unrecorded.length === 0) return [...links];
  const present = await observeDevices([], unrecorded.flatMap(devicesOf)).catch((error: unknown) => {
    const pairs = unrecorded.map((link) => `${link.client} -> ${link.provider}`).join(', ');
    throw new LinkerError(
      'unlisted-not-taken-down',
      `linked, but taking down ${pairs} (no longer among the providers) was not begun: whether their devices exist (recorded without attach modes) is unknown: ${reasonOf(error)}; so none of them was taken down: run the same link again`,
    );
  });
  return links.filter((link) => link.attached !== undefined || seenOf(link, present.host, options).own.length > 0);
}

/**
 * Take down each listed client's links to providers it no longer names (`listed`: each client's
 * providers now), as `unlink --force` does; as unlink, only once the state file is found
 * writable. The caller saves the state returned (finishRun), saying what went where it cannot be
 * written after. Under the caller's lock.
 */
/**
 * `failures` of a take-down of the links `ids` with what a line needs to say the link after an
 * unlink of their client, of `state`: the modes of its own links to pin (relinkModes) and the
 * link of each client of the links it provides (relinkClients, clientRelinks).
 */
async function relinked(failures: readonly VmmDetachFailure[], state: LinkState, ids: ReadonlySet<number>, options: LinkerOptions): Promise<VmmDetachFailure[]> {
  const byClient = new Map<VmName, Promise<VmName[]>>();
  const clientsOf = (vm: VmName): Promise<VmName[]> => {
    let clients = byClient.get(vm);
    if (clients === undefined) byClient.set(vm, (clients = relinkClients(state, vm, options)));
    return clients;
  };
  return Promise.all(
    failures.map(async (failure) => {
      const client = vmName(failure.link.vm);
      const clients = await clientsOf(client);
      return { ...failure, throughTemplate: reachedThroughTemplate(state, failure, ids), relinkAttach: relinkModes(state, client, ids, options.attach), relinkClients: clientRelinks(state, client, clients, ids) };
    }),
  );
}

async function takeDownUnlisted(state: LinkState, listed: ReadonlyMap<VmName, readonly VmName[]>, options: LinkerOptions): Promise<UnlistedTakedown> {
  const stateOf = statesByClient(state);
  const unlisted = await linksUp([...listed].flatMap(([vm, providers]) => linksToUnlisted(stateOf(vm), vm, providers)), options);
  const unlinked = new Map<VmName, ReleasedLinkReport[]>();
  if (unlisted.length === 0) return { state, changed: false, reports: [], unlinked, vmmFailures: [] };
  const pairs = unlisted.map((link) => `${link.client} -> ${link.provider}`).join(', ');
  try {
    assertDetachSocketsUsable(unlisted, options);
  } catch (error) {
    throw new LinkerError(
      'unlisted-not-taken-down',
      `linked, but taking down ${pairs} (no longer among the providers) was not begun: ${reasonOf(error)}; so none of them was taken down (no NIC detached, no device deleted): run the same link again with a --qmp-socket and --ch-socket that give each a path a socket can have`,
      error,
    );
  }
  const next = releasedState(state, unlisted);
  const changes = !sameState(next, state);
  // What is taken down must be recorded: a state dir that cannot be written stops it first.
  const problem = changes ? await stateWriteProblem(options.stateDir) : undefined;
  if (problem !== undefined) {
    throw new LinkerError(
      'unlisted-not-taken-down',
      `linked, but taking down ${pairs} (no longer among the providers) was not begun: ${problem.message}; so none of them was taken down (no NIC detached, no device deleted): run the same link again once the state dir can be written`,
      problem,
    );
  }
  // With force a VMM's failure is returned, not thrown: what is left to throw is the host's
  // own (a device the kernel did not delete). Where it had done anything by then, that is said
  // (stoppedText), and carried for link to say (LinkerError.released): nothing of it is recorded,
  // so the links stay recorded as linked, and the same link again takes them down.
  const released = await releaseLinks(unlisted, options, { force: true }).catch(async (error: unknown) => {
    if (!(error instanceof LinkerError && error.kind === 'take-down-stopped' && error.released !== undefined)) {
      throw new LinkerError('unlisted-not-taken-down', `linked, but taking down ${pairs} (no longer among the providers) failed: ${reasonOf(error)}`);
    }
    const ids = new Set<number>(unlisted.map((link) => link.id));
    // As where it is done (below), of the client's other links: the same in the state as it is.
    const failures = await relinked(error.released.failures, state, ids, options);
    const stopped: StoppedRelease = { ...error.released, failures };
    throw new LinkerError(
      'unlisted-not-taken-down',
      `linked, but taking down ${stoppedLinksText(stopped)}, no longer among the providers, stopped part-way: ${error.message}; by then ${stoppedText(stopped)}; ` +
        'so the state file still records them as linked: run the same link again, which takes down what is left of them (a NIC already out of its VMM, and a device already gone, count as done)',
      undefined,
      [],
      new Map(),
      undefined,
      stopped,
    );
  });
  for (const report of released.reports) unlinked.set(vmName(report.vm), [...(unlinked.get(vmName(report.vm)) ?? []), report]);
  const ids = new Set<number>(unlisted.map((link) => link.id));
  // Of the state as it is to be: where it is not written after, the client's other links (the only ones that count) are as there.
  const vmmFailures = await relinked(released.failures, next, ids, options);
  return { state: next, changed: changes, reports: released.reports, unlinked, vmmFailures };
}

/**
 * The links up before a `link` run, whose modes it keeps where --attach says nothing of a VM
 * (kept-attach.ts): those recorded while a device of the link's kind exists under one of their
 * names, as unlink and list take them, each side in its recorded mode, or (a record written before
 * the state kept modes) as its device shows it. Of a record whose devices are all gone (after a
 * reboot: the state outlives the devices; devices of other kinds under its names are none of its,
 * link-device-kinds.ts) only the sides that need no VMM keep their mode (`netns`: the plan makes a
 * missing namespace; `none`); a `qemu` or `cloud-hypervisor` side is not up and gets the VM's mode
 * (goneLink). Devices are looked at (one listing) only for links --attach does not settle whole.
 */
async function standingLinks(state: LinkState, options: Pick<LinkerOptions, 'devicePrefix' | 'attach'>): Promise<StandingLink[]> {
  const namesOf = (link: Link): ReturnType<typeof linkDeviceNames> => linkDeviceNames(options.devicePrefix, link.id);
  // Not where --attach names both its VMs (`--attach MODE` names all): nothing of it is kept, and
  // each of its VMs has the mode --attach gives it on every link.
  const chosen = (vm: VmName): boolean => chosenAttachMode(options.attach, vm) !== undefined;
  const unsettled = state.links.filter((link) => !(chosen(link.client) && chosen(link.provider)));
  const host = unsettled.length === 0 ? new Map<string, ObservedDevice>() : (await observeDevices([], unsettled.flatMap((link) => Object.values(namesOf(link))))).host;
  return unsettled.flatMap((link): StandingLink[] => {
    const names = namesOf(link);
    if (seenOf(link, host, options).own.length === 0) return link.attached === undefined ? [] : [goneLink(link, link.attached)];
    if (link.attached !== undefined) return [{ pair: link, modes: link.attached }];
    return [{ pair: link, modes: { client: shownAttachMode(host.get(names.client)?.kind), provider: shownAttachMode(host.get(names.provider)?.kind) } }];
  });
}

/**
 * What a `link` run knows of attach modes (from the state `before` it, and the devices of links
 * recorded without modes), each VM's side of its new links checked as linkVms checks a chosen one;
 * and the config of its VMs: `wholeDir` as read (link --all), else the named VMs and the
 * providers they reach, read here (once: its chunks take them from it).
 */
async function runAttachModes(vms: readonly VmName[], before: LinkState, options: LinkerOptions, wholeDir?: ConfigSnapshot): Promise<{ kept: KeptAttach; snapshot: ConfigSnapshot }> {
  const kept = keptAttach(options.attach, await standingLinks(before, options));
  for (const vm of vms) if (chosenAttachMode(options.attach, vm) === undefined) assertSideUsable(newLinkMode(kept, vm).mode, vm, options);
  const snapshot = wholeDir ?? (await readConfigVms(options.configDir, vms, options.configDirSource));
  // Every VM valid, and every side of every link of the run, providers' too, in the order the
  // chunks would meet them: found as a later chunk is planned, the failure would come once earlier
  // chunks' devices are made, some replacing those of links up another way, which the undo
  // leaves down.
  // (assertLinksUsable throws an invalid VM's error first, as requireValidVm says it.)
  for (const vm of vms) assertLinksUsable(vm, snapshot, kept, options);
  return { kept, snapshot };
}

/** Refuse, as bad input, a side of a (valid) client's links that its device or VMM cannot be given, in the modes the run gives them. */
function assertLinksUsable(vm: VmName, snapshot: ConfigSnapshot, kept: KeptAttach, options: LinkerOptions): void {
  for (const provider of requireValidVm(snapshot, vm).providers) {
    const modes = linkAttachModes(kept, { client: vm, provider });
    assertSideUsable(modes.client, vm, options);
    assertSideUsable(modes.provider, provider, options);
  }
}

/** A side of a link up as a VMM attached it, which a run attaches another way (switchedVmmSides). */
interface SwitchedSide {
  /** The link as recorded before the run. */
  readonly link: LinkReport;
  readonly side: LinkSide;
  /** The mode the run gives that side. */
  readonly to: AttachMode;
  /** Where it keeps its mode through another socket (movedVmmSocket): the socket the run attaches it through. */
  readonly toSocket?: string;
  /**
   * Where it keeps its mode through another socket whose path the state cannot record (too long
   * once made absolute, say: VmmPort.templateSocket): that path. Moved, its NIC would be where no
   * record says, and the socket recorded lost: refused before any NIC comes out (assertMovesRecordable).
   */
  readonly unrecordable?: string;
  /**
   * The --attach values (VM=MODE) that give the sides of the client's own links the modes they
   * have where this run's --attach does not choose them (relinkModes): what this link again after
   * an unlink of the client needs to attach them as this run would (the unlink takes the modes away);
   * with --all, of the links it provides too (clientRelinks); each only where every link of the run
   * agrees (agreedPins).
   */
  readonly relinkAttach: readonly string[];
  /** The link, after that unlink, of each client of the links the client provides, which that unlink takes down too (ClientRelink). */
  readonly relinkClients: readonly ClientRelink[];
}

/**
 * The clients of the links `vm` provides that an `unlink <vm>` takes down and a link of the
 * client brings back: of those links, each up (attach modes recorded, or a record without them
 * whose devices exist, as unlink takes it), of a client whose VM dir is valid and names `vm` among
 * its providers. A link already down (its client unlinked on purpose) is left out, as the unlink
 * leaves it down: a link naming its client would bring it up. So is a client whose dir is gone or
 * no longer names `vm`: a link naming it would fail, or not bring that link back. Where the
 * devices or the config dir cannot be read, a client is named as the state records it.
 */
async function relinkClients(state: LinkState, vm: VmName, options: LinkerOptions): Promise<VmName[]> {
  const provided = linksOfProvider(state, vm);
  const unrecorded = provided.filter((link) => link.attached === undefined);
  const devicesOf = (link: Link): string[] => Object.values(linkDeviceNames(options.devicePrefix, link.id));
  const host = unrecorded.length === 0 ? undefined : (await observeDevices([], unrecorded.flatMap(devicesOf)).catch(() => undefined))?.host;
  const up = provided.filter((link) => link.attached !== undefined || host === undefined || seenOf(link, host, options).own.length > 0);
  const clients = [...new Set(up.map((link) => link.client))];
  if (clients.length === 0) return [];
  const snapshot = await readConfigVms(options.configDir, clients, options.configDirSource).catch(() => undefined);
  if (snapshot === undefined) return clients;
  return clients.filter((client) => checkVm(snapshot, client).length === 0 && requireValidVm(snapshot, client).providers.includes(vm));
}

/**
 * The sides of a link attached as `recorded`, kept in their VMM mode in `wanted`, whose socket is
 * recorded and would go unrecorded: the run's path for them (VmmPort.templateSocket) is not one
 * the state can hold, nor the socket recorded (withSockets keeps that one).
 */
function unrecordableMoves(recorded: LinkAttachment, wanted: LinkAttachment, pair: LinkPair, vmm: VmmPort): Map<LinkSide, string> {
  const moves = new Map<LinkSide, string>();
  for (const side of BOTH_SIDES) {
    const mode = recorded[side];
    if (!isVmmMode(mode) || wanted[side] !== mode || recordedSocket(recorded, side) === undefined || recordedSocket(wanted, side) !== undefined) continue;
    const path = vmm.templateSocket?.(mode, side === 'client' ? pair.client : pair.provider);
    if (path !== undefined) moves.set(side, path);
  }
  return moves;
}

/**
 * The sides of a run's links (each client's of `vms`, every one valid, to the providers its config
 * names) that are up as a VMM attached them, recorded so, and that the run attaches another way:
 * their NICs come out of those VMMs before anything is made (takeBackSwitched). (The callers
 * check the VMs first: a run failing at an invalid one would fail with those NICs out.) A link
 * whose devices are all gone (after a reboot; devices of other kinds under its names are none of
 * its, as standingLinks takes them) is not up, and passed: a VMM started since holds no
 * NIC of it (one that kept running holds it on a deleted tap, which reaches nothing, and the next
 * attach there says so). Costs one pass over the state; the devices are listed only where a
 * record would switch.
 */
async function switchedSides(vms: readonly VmName[], snapshot: ConfigSnapshot, before: LinkState, kept: KeptAttach, options: LinkerOptions): Promise<SwitchedSide[]> {
  const order = new Map(vms.map((vm, index) => [vm, index]));
  const same = (recorded: string, wanted: string): boolean => options.vmm.sameSocket?.(recorded, wanted) === true;
  const candidates = before.links.flatMap((link) => {
    if (link.attached === undefined || !order.has(link.client)) return [];
    // With the sockets the run attaches through: a side kept in its VMM mode through another one
    // moves (the same socket spelled otherwise does not: VmmPort.sameSocket); one that would move
    // to a path the state cannot record is taken too, to be refused.
    const wanted = withSockets(linkAttachModes(kept, link), link, options.vmm, link.attached);
    const unrecordable = unrecordableMoves(link.attached, wanted, link, options.vmm);
    const sides = [...switchedVmmSides(link.attached, wanted, same), ...unrecordable.keys()];
    return sides.length > 0 ? [{ link, wanted, sides, unrecordable }] : [];
  });
  if (candidates.length === 0) return [];
  // A link to a provider the config no longer names is taken down after the run, as unlink --force does.
  const named = candidates.filter(({ link }) => requireValidVm(snapshot, link.client).providers.includes(link.provider));
  const recorded = named.map((candidate) => ({ ...candidate, report: linkReport(candidate.link, options) }));
  const host = recorded.length === 0 ? new Map<string, ObservedDevice>() : (await observeDevices([], recorded.flatMap(({ report }) => linkDevicesOf(report)))).host;
  const up = recorded.filter(({ link }) => seenOf(link, host, options).own.length > 0);
  const relink = new Map<VmName, { relinkAttach: string[]; relinkClients: ClientRelink[] }>();
  const none = new Set<number>();
  // The link printed after that unlink names the run's VMs (or --all): a pin applies to each of their links.
  const runLinks = before.links.filter((link) => order.has(link.client) && requireValidVm(snapshot, link.client).providers.includes(link.provider));
  for (const client of new Set(up.map(({ link }) => link.client))) {
    const clients = await relinkClients(before, client, options);
    const { providers } = requireValidVm(snapshot, client);
    const relinks = clientRelinks(before, client, clients, none);
    // Those clients the printed link names too (--all): their links' pins with it, as recorded.
    const named = relinks.filter((other) => order.has(other.client)).flatMap(({ attach }) => attach);
    const unchosen = named.filter((pin) => chosenAttachMode(kept.choice, vmName(pin.slice(0, pin.indexOf('=')))) === undefined);
    relink.set(client, { relinkAttach: agreedPins([...new Set([...relinkModes(before, client, none, kept.choice, providers), ...unchosen])], runLinks), relinkClients: relinks });
  }
  const relinkOf = (client: VmName): { relinkAttach: string[]; relinkClients: ClientRelink[] } => relink.get(client) ?? { relinkAttach: [], relinkClients: [] };
  return up
    .sort((a, b) => (order.get(a.link.client) ?? 0) - (order.get(b.link.client) ?? 0))
    .flatMap(({ link, report, wanted, sides, unrecordable }) =>
      sides.map((side): SwitchedSide => {
        const toSocket = link.attached !== undefined && movedVmmSocket(link.attached, wanted, side, same) ? recordedSocket(wanted, side) : undefined;
        const path = unrecordable.get(side);
        const moved = { ...(toSocket === undefined ? {} : { toSocket }), ...(path === undefined ? {} : { unrecordable: path }) };
        return { link: report, side, to: wanted[side], ...moved, ...relinkOf(link.client) };
      }),
    );
}

/**
 * The error of a VMM that did not give back the NIC of a switched side (it refused, or did not
 * answer in time), which stops the run before anything is made for that link, as a plain unlink
 * stops: its devices and record stay as they are, and so does the NIC, as far as the VMM did not
 * carry out its removal. Usage errors (a socket path that cannot be) stay as they are. The way
 * past it, an unlink --force of the client then this link again, is said as commands to run
 * (`commands`), the link with the modes the unlink takes away (relinkAttach).
 */
function switchRefused({ link, side, to, toSocket, relinkAttach: pinned, relinkClients: clients }: SwitchedSide, error: unknown, commands: PrintedCommands = DEFAULT_COMMANDS): unknown {
  if (error instanceof CliError) return error;
  const vm = side === 'client' ? link.vm : link.provider;
  const from = side === 'client' ? link.clientAttach : link.providerAttach;
  const nic = side === 'client' ? link.clientDevice : link.providerDevice;
  const vmm = from === 'qemu' ? 'QEMU' : from;
  // A socket moved (movedVmmSocket): the mode is the same, the sockets say what changes.
  const toWhat = toSocket === undefined ? to : `${to} through socket ${toSocket}`;
  const at = toSocket === undefined ? '' : ` at ${(side === 'client' ? link.clientSocket : link.providerSocket) ?? ''}, the socket recorded,`;
  return new LinkerError(
    'vmm-detach-failed',
    `${vm}'s side of ${link.vm} -> ${link.provider} (id ${link.id}) was not attached as ${toWhat}: its NIC ${nic} was to come out of the ${vmm} of ${vm}${at} first: ${reasonOf(error)}; ` +
      `so nothing was made for it, and it stays as it was, recorded as ${from} on that side with its devices (a NIC the VMM had already been asked to remove may be gone from ${vm}: link again once it answers): ` +
      `to attach it as ${toWhat} whatever that VMM says, run ${commands.unlink(link.vm, ['--force'])}, then ${relinkedText(link.vm, commands.link(pinned), relinkCommands(clients, commands))}`,
  );
}

/**
 * Take the NICs of switched sides out of their VMMs (switchedSides), one after another, as unlink
 * does (detachFromVmms): a VMM that no longer runs (nothing at its socket, or a socket that
 * refuses connections: the VM stopped) holds none, and is passed (its NIC recorded as not taken
 * out: an undo does not say its link down for it); one that runs without that NIC is passed too
 * (recorded as absent: not taken out by this run); one that refuses or does not
 * answer in time throws (switchRefused), and so does one that did not answer a detach in time
 * earlier in the run (not asked again). Every socket path, and every VMM's earlier stall, is
 * checked before the first NIC (within one call, a stall throws at once: no NIC is asked after
 * it). Each NIC taken out is added to `made`, so that an undo of the run says its link is left
 * down (linksLeftDown). A signal stops it before a NIC.
 */
async function takeBackSwitched(switched: readonly SwitchedSide[], options: LinkerOptions, made: RunDevices): Promise<void> {
  // (The callers check this first; again here, as nothing may come out before it.)
  assertSwitchedInputUsable(switched, options);
  // Each NIC at the socket recorded for it, where there is one (vmmNics).
  const nicsOf = (target: SwitchedSide): ReturnType<typeof vmmNics> => vmmNics(target.link, undefined, [target.side]);
  // And every VMM that stalled a detach earlier in the run (--keep-going: a provider's, for a
  // client before): found only at its own NIC, it would come after the client's NICs before it
  // (its own side of the link) had been taken out, leaving that link down for nothing.
  for (const target of switched) {
    for (const { kind, vm, nic, socket } of nicsOf(target)) {
      const earlier = options.vmm.unansweredDetach?.(kind, vm, socket);
      if (earlier !== undefined) {
        throw switchRefused(target, new Error(`the ${VMM_NAMES[kind]} of ${vm} did not answer a detach in time earlier in this run (${earlier}), so it was not asked to remove NIC ${nic.id}: check that VMM`), options.commands);
      }
    }
  }
  await assertMovesReachable(switched, options);
  for (const target of switched) {
    stopIfInterrupted(options);
    const key = keyOf(target.link);
    for (const { kind, vm, nic, socket } of nicsOf(target)) {
      const found = await options.vmm.detach(kind, vm, nic, socket).catch((error: unknown) => {
        throw switchRefused(target, error, options.commands);
      });
      const taken = made.takenBack.get(key) ?? { link: target.link, nics: [] };
      made.takenBack.set(key, taken);
      const sockets = { ...(target.toSocket === undefined ? {} : { toSocket: target.toSocket }), ...(socket === undefined ? {} : { socket }) };
      taken.nics.push({ vmm: kind, vm, nic: nic.id, to: target.to, ...sockets, outcome: found ?? 'taken' });
    }
  }
}

/**
 * Refuse the bad input of switched sides before any NIC comes out (takeBackSwitched), and before
 * what fails a run for other reasons (ids, a device listing, a state dir that cannot be written),
 * as plain link and --keep-going (for that VM alone) alike find bad input first: a side that would
 * move to a socket the state cannot record (assertMovesRecordable), and a socket path that cannot
 * be (VmmPort.checkSocket: too long under this run's --qmp-socket or --ch-socket), which found only
 * at its detach would come after NICs before it were taken out.
 */
function assertSwitchedInputUsable(switched: readonly SwitchedSide[], options: LinkerOptions): void {
  assertMovesRecordable(switched, options.commands);
  for (const target of switched) for (const { kind, vm, socket } of vmmNics(target.link, undefined, [target.side])) options.vmm.checkSocket?.(kind, vm, socket);
}

/**
 * Refuse, as bad input and before any NIC comes out (takeBackSwitched), a side kept in its VMM
 * mode that would move to a socket whose path the state cannot record (`unrecordable`): its NIC
 * would then be attached where no record says (a later unlink under another template would not
 * find it), and the socket recorded, where it is now, lost. Where that path names the socket
 * recorded, nothing moves and that socket stays recorded (withSockets): no refusal. For a VM that
 * does run at the new path, the line says the way there: an unlink of the client (at the socket
 * recorded no VMM runs then, so nothing holds it back), then the link again, the side's mode and
 * those the unlink takes away given (relinkAttach), its socket then not recorded.
 */
function assertMovesRecordable(switched: readonly SwitchedSide[], commands: PrintedCommands = DEFAULT_COMMANDS): void {
  for (const { link, side, unrecordable, relinkAttach: pinned, relinkClients: clients } of switched) {
    if (unrecordable === undefined) continue;
    const [vm, mode, nic, recorded] =
      side === 'client' ? [link.vm, link.clientAttach, link.clientDevice, link.clientSocket] : [link.provider, link.providerAttach, link.providerDevice, link.providerSocket];
    const option = mode === 'qemu' ? '--qmp-socket' : '--ch-socket';
    const name = mode === 'qemu' ? 'QEMU' : mode;
    const reason = unrecordedSocketReason(unrecordable) ?? 'the state does not record it';
    throw new LinkerError(
      'vmm-socket-unrecordable',
      `${vm}'s side of ${link.vm} -> ${link.provider} (id ${link.id}) was not moved to socket ${unrecordable}, the path ${option} gives now: the state cannot record that path (${reason}), ` +
        `so its NIC would be where no record says, and the socket recorded for it, ${recorded ?? ''}, lost; so no NIC was taken out and nothing was made for it (NIC ${nic} stays in the ${name} of ${vm} at that socket): ` +
        `give a ${option} whose path the state can record (absolute, at most ${UNIX_SOCKET_PATH_MAX} bytes, without control characters, '"' or '\\'), or the one that gives ${recorded ?? ''}; ` +
        `or, if ${vm} now runs with its socket at ${unrecordable}, run ${commands.unlink(link.vm, [])}, then ${commands.link([...new Set([`${vm}=${mode}`, ...pinned])])}, ` +
        `which attaches that side there without recording its socket (an unlink finds it only through that ${option})${clients.length === 0 ? '' : `; ${providedRelinksText(link.vm, relinkCommands(clients, commands))}`}`,
    );
  }
}

/**
 * Refuse, before any NIC comes out (takeBackSwitched), a side kept in its VMM mode whose socket
 * moved (toSocket) where a VMM runs at the socket recorded and none can be reached at the new one
 * (VmmPort.vmmAt): most likely the run's --qmp-socket or --ch-socket is not the one the VM runs
 * with (a plain `link` after one with its own), and taking the working NIC out for an attach that
 * then fails would leave the link down. Where none runs at the socket recorded (the VM restarted
 * with its socket elsewhere), the NIC went with that VMM: the side moves. Each socket is asked once.
 */
async function assertMovesReachable(switched: readonly SwitchedSide[], options: LinkerOptions): Promise<void> {
  const { vmm } = options;
  const probe = vmm.vmmAt;
  if (probe === undefined) return;
  const asked = new Map<string, Promise<VmmPresence>>();
  const at = (kind: VmmKind, vm: VmName, socket: string): Promise<VmmPresence> => {
    const key = `${kind}\n${vm}\n${socket}`;
    const known = asked.get(key);
    if (known !== undefined) return known;
    const presence = probe.call(vmm, kind, vm, socket);
    asked.set(key, presence);
    return presence;
  };
  for (const target of switched) {
    const { toSocket } = target;
    if (toSocket === undefined) continue;
    for (const { kind, vm, nic, socket } of vmmNics(target.link, undefined, [target.side])) {
      if (socket === undefined || !(await at(kind, vm, socket)).running) continue;
      const there = await at(kind, vm, toSocket);
      if (there.running) continue;
      const { link } = target;
      const option = kind === 'qemu' ? '--qmp-socket' : '--ch-socket';
      const name = VMM_NAMES[kind];
      throw new LinkerError(
        'vmm-socket-moved',
        `${vm}'s side of ${link.vm} -> ${link.provider} (id ${link.id}) was not moved to socket ${toSocket}: the ${name} of ${vm} runs at ${socket}, the socket recorded for its NIC ${nic.id}, ` +
          `and no ${name} can be reached at ${toSocket}, the path ${option} gives now (${there.why}); so no NIC was taken out and nothing was made for it: ` +
          `run link again with the ${option} that ${name} runs with (giving ${socket}), or, to move the NIC, once a ${name} of ${vm} runs at ${toSocket}`,
      );
    }
  }
}

/**
 * Refuse a run with NICs to take out of their VMMs for other modes (switchedSides) where the state
 * file cannot be written (stateWriteProblem, as unlink refuses), before the first comes out: found
 * at the run's first save, the failure would come with those NICs out, their links left down.
 */
async function assertStateWritableForTakeOut(switched: readonly SwitchedSide[], options: LinkerOptions): Promise<void> {
  if (switched.length === 0) return;
  const problem = await stateWriteProblem(options.stateDir);
  if (problem !== undefined) {
    throw new LinkerError(
      'state-not-writable',
      `link: ${problem.message}; so no NIC was taken out of its VMM and nothing was made (sides up as a VMM attached them were to be attached another way, which the state could not record): link again once the state dir can be written`,
      problem,
    );
  }
}

/** The pairs a client of a run links (the VM valid): to each provider its config names, in order. */
function pairsOf(snapshot: ConfigSnapshot, vm: VmName): LinkPair[] {
  return requireValidVm(snapshot, vm).providers.map((provider) => ({ client: vm, provider }));
}

/**
 * List the host devices and VM namespaces of these links (their ids allocated), each side in the
 * mode the run gives it, as the run's transaction lists them (observeDevices, a chunk at a time):
 * done before the NICs of switched sides come out (takeBackSwitched), so that a listing that
 * fails fails the run (or, with --keep-going, the VM) with none out, not after, their links down.
 */
async function listRunDevices(links: readonly Link[], kept: KeptAttach, options: LinkerOptions): Promise<void> {
  const connections = links.map((link) => desiredConnection(linkReport(link, options, linkAttachModes(kept, link)), options));
  await observeDevices(netnsNames(connections), connections.flatMap((c) => [c.bridge, c.client.device, c.provider.device]));
}

/**
 * Before the NICs of switched sides come out (takeBackSwitched): what the run's transaction could
 * fail at while the kernel is as it was, found now, so that the run fails with no NIC out rather
 * than after, those links left down: the ids of every link of the run (allocateMany from `before`,
 * the chunks' ids: a StateError where they run out), and the listing of their devices. (The VMs
 * and every side were checked before (runAttachModes), the state dir is probed next
 * (assertStateWritableForTakeOut), and planning cannot fail.) What can still fail after them (a
 * listing that fails only then, a save that the probe let through, the kernel, a VMM) is said
 * with the links it leaves down (linksLeftDown).
 */
async function assertRunStartable(vms: readonly VmName[], snapshot: ConfigSnapshot, before: LinkState, kept: KeptAttach, options: LinkerOptions): Promise<void> {
  const { links } = allocateMany(before, vms.flatMap((vm) => pairsOf(snapshot, vm)));
  await listRunDevices(links, kept, options);
}

/** The ids a VM's links get in a `link --keep-going` run, or why it gets none (a StateError: the ids ran out). */
type KeepGoingIds = { readonly links: readonly Link[] } | { readonly error: StateError };

/**
 * The ids a `link --keep-going` run gives each of these VMs' links (every VM valid, in the run's
 * order), or why a VM gets none, found before a NIC of its comes out: all at once where every VM
 * gets its ids (nothing then fails at them); else VM by VM, as the pass one by one allocates them
 * after the one transaction failed at them, a VM that gets none holding none. (Were a VM before
 * to fail for another reason, a run would give its ids back; here it keeps them, so a later VM may
 * be refused ids that the run would have found: only where every id is held. VM by VM costs a
 * pass over the state per VM, as that pass one by one does, and its save of the whole state more.)
 */
function keepGoingIds(vms: readonly VmName[], snapshot: ConfigSnapshot, before: LinkState): Map<VmName, KeepGoingIds> {
  const pairs = vms.map((vm) => pairsOf(snapshot, vm));
  const ids = new Map<VmName, KeepGoingIds>();
  const refused = (error: unknown): StateError => {
    if (error instanceof StateError) return error;
    throw error;
  };
  try {
    const { links } = allocateMany(before, pairs.flat());
    let at = 0;
    vms.forEach((vm, index) => {
      const count = pairs[index]?.length ?? 0;
      ids.set(vm, { links: links.slice(at, at + count) });
      at += count;
    });
    return ids;
  } catch (error) {
    refused(error);
  }
  let state = before;
  vms.forEach((vm, index) => {
    try {
      const allocation = allocateMany(state, pairs[index] ?? []);
      state = allocation.state;
      ids.set(vm, { links: allocation.links });
    } catch (error) {
      ids.set(vm, { error: refused(error) });
    }
  });
  return ids;
}

/**
 * The links whose NICs `made` says were taken out of their VMMs (or found no longer held there:
 * anyOut), of these clients, as left down (a run that failed before it made anything for them).
 */
function takenBackLeftDown(made: RunDevices, clients: ReadonlySet<string>): LeftDownLink[] {
  return [...made.takenBack.values()].filter(({ link, nics }) => clients.has(link.vm) && anyOut(nics)).map(({ link, nics }) => ({ ...link, replaced: false, takenBack: nics }));
}

/**
 * Under the lock of a `link` run that found no state dir and so read its config before the lock
 * (which makes the dir): whether another run made the dir and recorded meanwhile (a state file is
 * there), while this one waited for it (at a first boot, VMs that start together each `link`).
 * Its config is then read again: it may have changed while this run waited (up to --lock-wait),
 * and a refusal now makes nothing (the dir is the other run's).
 */
function recordedMeanwhile(options: Pick<LinkerOptions, 'stateDir' | 'stateDirSource'>): boolean {
  return hasStateFile(options.stateDir, options.stateDirSource);
}

/** Run `link`'s fn under the state lock; an interruption while waiting for it is said as such. */
function underLinkLock<T>(options: LinkerOptions, fn: () => Promise<T>): Promise<T> {
  return underStateLock(options, 'nothing was made', fn);
}

/**
 * Run fn under the state lock, telling onLockHeld first; an interruption (options.signal) while
 * waiting for it fails with kind 'interrupted-waiting', its message ending with `nothing`.
 */
function underStateLock<T>(options: LockWaitOptions, nothing: string, fn: () => Promise<T>): Promise<T> {
  const held = (): Promise<T> => {
    options.onLockHeld?.();
    return fn();
  };
  return withStateLock(options.stateDir, held, lockOptions(options)).catch((error: unknown) => {
    // Interrupted while another run holds the lock: stop waiting (nothing done yet).
    if (error instanceof StateStoreError && error.kind === 'lock-aborted') {
      throw new LinkerError('interrupted-waiting', `interrupted (${String(options.signal?.reason)}) while waiting for the state lock: ${nothing}`);
    }
    throw error;
  });
}

/** Each listed client's providers: first the whole dir's VMs without any, then those linked. */
function listedProviders(withoutProviders: readonly VmName[], linked: ReadonlyMap<VmName, readonly VmName[]>): Map<VmName, readonly VmName[]> {
  return new Map<VmName, readonly VmName[]>([...withoutProviders.map((vm): [VmName, readonly VmName[]] => [vm, []]), ...linked]);
}

/**
 * `link <vm...>`: every connection of each client VM to each of its providers, ids allocated
 * (or found) in the state, devices converged, VMMs attached, each side as --attach asks where it
 * names the side's VM, else as kept (kept-attach.ts); then its connections to providers
 * its config no longer names taken down (ids kept). Idempotent. `wholeDir` (as `link --all` has
 * it, linkAll): the config dir as already read, whose VMs without providers lose their client
 * links too, and whose gone clients (orphaned) and entries that are no usable VM directory
 * (unusable) are reported.
 * A side up as qemu or cloud-hypervisor (recorded so) that the run attaches another way has its
 * NIC taken out of that VMM first, as unlink does, before anything is made; a VMM that refuses or
 * stalls it stops the run there, as it stops a plain unlink (the link as it was, and nothing
 * made): left in, the NIC would stay in the guest while the state no longer records it.
 * An invalid VM, or a side that cannot be given its mode (bad input), fails the run before
 * anything is made (runAttachModes). A failure while linking (a kernel refusal, a VMM, a signal)
 * undoes the whole run, and takes nothing down (links whose devices it had replaced, or whose
 * NICs it had taken out of their VMMs, are left down: onLeftDown).
 * Links taken down go whatever their VMMs say (as `unlink --force`): the config is the operator's
 * word, and a VMM (it hosts an untrusted guest) that refuses or stalls the detach must not keep
 * its VM connected to a provider the config no longer names; such VMMs are returned
 * (`vmmFailures`), what was linked stays linked. A take-down that fails (or whose state cannot be
 * recorded) fails the run with what it did (LinkerError.outcome): what was linked stays linked.
 */
export async function linkVms(names: readonly string[], options: LinkerOptions, wholeDir?: WholeConfigDir): Promise<LinkOutcome> {
  const { run: _, ...outcome } = await linkRun({ vms: [...new Set(names.map(vmName))], wholeDir }, options);
  return outcome;
}

/**
 * `link --all`: linkVms of every VM of the config dir with providers (allVmsOf), the dir read by
 * the run: once it holds the state lock, so that a run that waited for it (up to --lock-wait)
 * links the config as it is then (a VM or provider dropped meanwhile not linked, one added
 * linked); where the state dir is not made yet, before the lock, which makes it (as linkVms reads
 * its config), so that a config dir that cannot be used, or bad input there, leaves nothing made
 * (and again under the lock where another run made the dir and recorded meanwhile:
 * recordedMeanwhile). Else read once. `all`: the VMs and the config dir as linked.
 */
export async function linkAll(options: LinkerOptions): Promise<LinkOutcome & { readonly all: AllVms }> {
  const { run, ...outcome } = await linkRun(() => readAllVms(options), options);
  return { ...outcome, all: run };
}

/** The side of each VM that --attach names, checked before any chunk's devices are made (the other sides of its links are checked once the state says what it keeps and the config which providers it has). */
function assertChosenSidesUsable(vms: readonly VmName[], options: LinkerOptions): void {
  for (const vm of vms) {
    const chosen = chosenAttachMode(options.attach, vm);
    if (chosen !== undefined) assertSideUsable(chosen, vm, options);
  }
}

/** linkVms of VMs known up front, or of those that `target` reads (linkAll), read by the run; returns them as linked (`run`). */
async function linkRun<T extends RunVms>(target: T | (() => Promise<T>), options: LinkerOptions): Promise<LinkOutcome & { readonly run: T }> {
  const absent = stateDirAbsent(options.stateDir);
  const read = async (): Promise<T> => (typeof target === 'function' ? target() : target);
  // A state dir not made yet records nothing: the run's checks (the config dir, its VMs, each side
  // of their links) are made before the lock, which makes the dir, so that a run refused leaves
  // nothing made (a config dir named that does not exist, say: bad input). The config as read is
  // the run's (unless another run recorded meanwhile: recordedMeanwhile); the checks are made
  // again under the lock, on the state as it is then. Else
  // `link --all` reads the config dir under the lock (linkAll); VMs named are checked here (their
  // config is read under the lock too: runAttachModes).
  const known = typeof target !== 'function' || absent ? await read() : undefined;
  if (known !== undefined) assertChosenSidesUsable(known.vms, options);
  const fresh = known !== undefined && absent ? await runAttachModes(known.vms, emptyState(), options, known.wholeDir?.snapshot) : undefined;
  // A signal while it read and checked (a whole config dir takes a while): stopped before the lock
  // makes the dir. (Where the dir is there, nothing before the lock waits for a signal to come.)
  if (absent) stopIfInterrupted(options);
  // Nor is it made where the run has no link to make (no VM of it has a provider): a run that
  // records nothing leaves no trace.
  if (known !== undefined && fresh !== undefined && known.vms.every((vm) => pairsOf(fresh.snapshot, vm).length === 0)) {
    const { orphaned, unusable } = known.wholeDir === undefined ? { orphaned: [], unusable: [] } : await leftAsTheyAre(emptyState(), fresh.snapshot, options);
    return { linked: new Map(known.vms.map((vm) => [vm, []])), unlinked: new Map(), orphaned, unusable, vmmFailures: [], ambiguousAttach: [], run: known };
  }
  return underLinkLock(options, async () => {
    // The config read before the lock may have changed while another run made the dir and
    // recorded (recordedMeanwhile): read again then, as where the dir was there.
    const again = absent && recordedMeanwhile(options);
    const run = known === undefined || (again && typeof target === 'function') ? await read() : known;
    if (run !== known) assertChosenSidesUsable(run.vms, options);
    const { vms, wholeDir } = run;
    const leftDown = options.onLeftDown;
    const undoWrite = options.onUndoStateWriteFailed;
    const before = await loadState(options.stateDir, options.stateDirSource);
    // Still nothing recorded: the checks made before the lock, on an empty state and this config,
    // hold as they are (a thousand VMs' take milliseconds).
    const unchanged = fresh !== undefined && !again && before.links.length === 0;
    const { kept, snapshot } = unchanged ? fresh : await runAttachModes(vms, before, options, wholeDir?.snapshot ?? (again ? undefined : fresh?.snapshot));
    const made = newRunDevices();
    // Failed (and undone); a signal that came meanwhile (while a VMM answered, or while the undo
    // ran, which only a second one cuts short) is said with the failure, not instead of it, and
    // not lost either: the exit code tells of it.
    const failedThenSignalled = (error: unknown): unknown =>
      options.signal?.aborted === true && !isInterruption(error) ? new LinkerError('interrupted-undoing', `${reasonOf(error)} (then interrupted while undoing the run)`, error) : error;
    // A side up as a VMM attached it that is to be attached another way: its NIC comes out of that
    // VMM first, as unlink takes it out; a VMM refusing stops the run with nothing made, and so
    // do ids that run out, a device listing that fails (assertRunStartable) and a state dir that
    // cannot be written, each checked before the first NIC.
    const switched = await switchedSides(vms, snapshot, before, kept, options);
    const takeOut = async (): Promise<void> => {
      // Bad input first, as a socket path too long is found before anything else.
      assertSwitchedInputUsable(switched, options);
      if (switched.length > 0) await assertRunStartable(vms, snapshot, before, kept, options);
      await assertStateWritableForTakeOut(switched, options);
      await takeBackSwitched(switched, options, made);
    };
    await takeOut().catch((error: unknown) => {
      const down = takenBackLeftDown(made, new Set(vms));
      if (down.length > 0) leftDown?.(down);
      throw failedThenSignalled(error);
    });
    const mode: TransactionMode = { attachModes: kept, attach: true, ...(leftDown === undefined ? {} : { leftDown }), ...(undoWrite === undefined ? {} : { undoWriteFailed: undoWrite }) };
    const linkedRun = await linkTransaction(vms, options, snapshot, before, made, mode).catch((error: unknown) => {
      throw failedThenSignalled(error);
    });
    const ambiguous = ambiguousAttach(kept, [...linkedRun.linked.values()].flat().map(pairOf));
    const linked = new Map(vms.map((vm): [VmName, LinkReport[]] => [vm, linkedRun.linked.get(vm) ?? []]));
    const { failed: _, ...outcome } = await finishRun({ state: linkedRun.state, linked, providers: linkedRun.providers, failed: [], ambiguousAttach: ambiguous }, run, options, false);
    return { ...outcome, run };
  });
}

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

const isInterruption = (error: unknown): error is LinkerError => error instanceof LinkerError && error.kind === 'interrupted';

/** What a pass over the VMs of `link --keep-going` linked, and where a signal stopped it. */
interface KeepGoingPass extends LinkTransaction {
  readonly interrupted?: KeepGoingOutcome['interrupted'];
}

/**
 * `link --keep-going <vm...>` (as `make -k`): as linkVms, but a VM that fails (an invalid config,
 * a kernel refusal, a VMM that refuses or stalls) is undone alone (its devices, the NICs
 * hot-plugged for it, the ids allocated for it) while every other VM is linked. The healthy case
 * costs what linkVms does: VMs whose config is invalid are set aside up front, and so are VMs
 * with a side to be attached another way whose NIC a VMM does not give back (takeBackSwitched:
 * nothing made for them); the rest get their ids and devices in one transaction (no VMM is asked
 * in it, so that its undo has no NIC to take back: a guest that does not release one in time
 * would keep it), then NICs are hot-plugged VM by VM (attachVmByVm), a VM whose VMM fails undone
 * alone. Only where the one transaction fails (a kernel refusal; it has then undone itself) are
 * the VMs linked again one by one, from the state file as it is then. The state lock is held
 * throughout.
 * A state that cannot be read or written fails the whole run, as does an interruption before or
 * during the one transaction (undone as in linkVms; the VMs failed before either come with it,
 * LinkerError.failed, to be said: a state failure then as a LinkerError 'state-failed', which
 * also carries the VMs linked again one by one before it, LinkerError.linked, to be printed; and
 * where no state dir was there yet and its lock cannot be taken, or a signal stops the wait for
 * it, the VMs that failed their checks before it); one later stops at the next safe point,
 * undoes the VM in progress (and, while hot-plugging, the VMs after it), and returns what was
 * linked (`interrupted`). A take-down of links to providers dropped that fails after the passes
 * (a state failure, or the kernel's) fails the run with what it did (LinkerError.outcome; the VMs
 * failed and linked also as a state failure's carries them: finishRun).
 */
export async function linkVmsKeepGoing(names: readonly string[], options: LinkerOptions, wholeDir?: WholeConfigDir): Promise<KeepGoingOutcome> {
  const { run: _, ...outcome } = await keepGoingRun({ vms: [...new Set(names.map(vmName))], wholeDir }, options);
  return outcome;
}

/** `link --all --keep-going`: linkVmsKeepGoing of the VMs linkAll links, the config dir read as linkAll reads it. */
export async function linkAllKeepGoing(options: LinkerOptions): Promise<KeepGoingOutcome & { readonly all: AllVms }> {
  const { run, ...outcome } = await keepGoingRun(() => readAllVms(options), options);
  return { ...outcome, all: run };
}

/** linkVmsKeepGoing of VMs known up front, or of those that `target` reads (linkAllKeepGoing); returns them as linked (`run`). */
async function keepGoingRun<T extends RunVms>(target: T | (() => Promise<T>), options: LinkerOptions): Promise<KeepGoingOutcome & { readonly run: T }> {
  // NICs an undo could not take back, said once the run ends: a later VM's attach in this run
  // that adds a NIC of the same id to the same VMM shows that VMM no longer held the one left
  // (neither cloud-hypervisor nor QEMU takes a second device of an id it has; QEMU's netdev left
  // on a deleted tap is replaced), so that NIC is not said. One it took as attached already (it
  // holds a live tap) is still said. Only the pass one by one can get there: a VM's undo gives
  // back an id it allocated, and a later pair whose preferred id (a hash of the pair) is that one,
  // or probes on to it, gets it, and with it the NIC id of the provider side.
  const undetached: VmmDetachFailure[] = [];
  const { vmmAt } = options.vmm;
  const vmm: VmmPort = {
    attach: async (kind, vm, nic) => {
      const added = await options.vmm.attach(kind, vm, nic);
      if (added) {
        const gone = undetached.filter((failure) => failure.vmm === kind && failure.vm === vm && failure.nic === nic.id);
        for (const failure of gone) undetached.splice(undetached.indexOf(failure), 1);
      }
      return added;
    },
    detach: (kind, vm, nic, socket) => options.vmm.detach(kind, vm, nic, socket),
    checkSocket: (kind, vm, socket) => options.vmm.checkSocket?.(kind, vm, socket),
    unansweredDetach: (kind, vm, socket) => options.vmm.unansweredDetach?.(kind, vm, socket),
    socketOf: (kind, vm) => options.vmm.socketOf?.(kind, vm),
    templateSocket: (kind, vm) => options.vmm.templateSocket?.(kind, vm),
    ...(vmmAt === undefined ? {} : { vmmAt: (kind: VmmKind, vm: VmName, socket: string) => vmmAt.call(options.vmm, kind, vm, socket) }),
    sameSocket: (recorded, wanted) => options.vmm.sameSocket?.(recorded, wanted) === true,
  };
  // Undo steps that failed, said once the run ends too: only what is still left then (stepsStillLeft).
  const steps: UndoStepFailure[] = [];
  const run: LinkerOptions = { ...options, vmm, onUndoDetachFailed: (failures) => void undetached.push(...failures), onUndoStepFailed: (failure) => void steps.push(failure) };
  // The VMs (`link --all`'s read from the config dir) and the config they are linked from: the
  // whole dir as read, else the VMs and the providers they reach.
  const read = async (): Promise<{ vms: T; snapshot: ConfigSnapshot }> => {
    const vms = typeof target === 'function' ? await target() : target;
    return { vms, snapshot: vms.wholeDir?.snapshot ?? (await readConfigVms(options.configDir, vms.vms, options.configDirSource)) };
  };
  // A state dir not made yet: the config is read before the lock, which makes the dir, so that a
  // config dir that cannot be read (one named that does not exist: bad input) fails the run with
  // nothing made (as linkVms); read again under the lock where another run recorded meanwhile
  // (recordedMeanwhile). Else under the lock: a run that waits for it (up to --lock-wait) links
  // the config as it is then, not a VM or provider dropped while it waited.
  const early = stateDirAbsent(options.stateDir) ? await read() : undefined;
  // A signal while it read: stopped before the lock makes the dir.
  if (early !== undefined) stopIfInterrupted(options);
  // Nor is it made where the run has no link to make (every VM failed, or has no provider): a run
  // that records nothing leaves no trace, as a plain link refused before the lock leaves none.
  const idle = early === undefined ? undefined : keepGoingIdle(early.vms.vms, early.snapshot, options);
  if (idle !== undefined && early !== undefined) {
    const { orphaned, unusable } = early.vms.wholeDir === undefined ? { orphaned: [], unusable: [] } : await leftAsTheyAre(emptyState(), early.snapshot, options);
    return { linked: new Map(idle.linked.map((vm) => [vm, []])), unlinked: new Map(), orphaned, unusable, vmmFailures: [], ambiguousAttach: [], failed: idle.failed, run: early.vms };
  }
  let locked = false;
  return underLinkLock(options, async () => {
    locked = true;
    let linked: ReadonlyMap<VmName, readonly LinkReport[]> = new Map();
    try {
      // Read again where another run made the dir and recorded while this one waited (recordedMeanwhile).
      const { vms, snapshot } = early === undefined || recordedMeanwhile(options) ? await read() : early;
      const outcome = await keepGoing(vms.vms, run, snapshot, vms.wholeDir);
      linked = outcome.linked;
      return { ...outcome, run: vms };
    } catch (error) {
      // Stopped by a state failure after VMs were linked again one by one: those stay linked.
      if (error instanceof LinkerError) linked = error.linked;
      throw error;
    } finally {
      if (undetached.length > 0) options.onUndoDetachFailed?.(undetached);
      for (const failure of stepsStillLeft(steps, linked, options.netnsPrefix)) options.onUndoStepFailed?.(failure);
    }
  }).catch((error: unknown) => {
    // The lock not taken (its dir could not be made, say; or a signal came while another run held
    // it): the VMs whose config was read before it and that fail their checks are said with that
    // failure, as with one under the lock, or with the signal, as with one in the transaction.
    if (locked || early === undefined) throw error;
    if (isStateFailure(error)) throw stateFailedAfter(error, early.vms.vms, failingChecks(early.vms.vms, early.snapshot, options));
    if (error instanceof LinkerError && error.kind === 'interrupted-waiting') throw interruptedAfter(error, early.vms.vms, failingChecks(early.vms.vms, early.snapshot, options));
    throw error;
  });
}

/**
 * What a `link --keep-going` run with nothing recorded yet (no state dir) does where it has no
 * link to make: every VM of `vms` invalid, or with a side that cannot be given its mode (bad
 * input), or without providers, each checked as the run checks it (on an empty state: no mode
 * kept); the VMs failed (with why) and those left (nothing to link), in the order of `vms`. Else
 * undefined: it has links to make, under the lock.
 */
function keepGoingIdle(vms: readonly VmName[], snapshot: ConfigSnapshot, options: LinkerOptions): { linked: VmName[]; failed: FailedVm[] } | undefined {
  const kept = keptAttach(options.attach, []);
  const failures = new Map<VmName, unknown>();
  // VM by VM, up to the first with a link to make (usually the first).
  for (const vm of vms) {
    const failure = checksFailure(vm, snapshot, kept, options);
    if (failure !== undefined) failures.set(vm, failure.error);
    else if (pairsOf(snapshot, vm).length > 0) return undefined;
  }
  return { linked: vms.filter((vm) => !failures.has(vm)), failed: failedInOrder(vms, failures) };
}

/**
 * Why VM `vm` fails the checks a `link --keep-going` run with nothing recorded yet makes before the
 * lock (on an empty state: `kept`, no mode kept), or undefined where it passes them: an invalid
 * VM's error is as partitionValidVms gives it (assertLinksUsable).
 */
function checksFailure(vm: VmName, snapshot: ConfigSnapshot, kept: KeptAttach, options: LinkerOptions): { readonly error: unknown } | undefined {
  try {
    assertLinksUsable(vm, snapshot, kept, options);
    return undefined;
  } catch (error) {
    return { error };
  }
}

/** The VMs of `vms` that fail those checks (checksFailure), each with why. */
function failingChecks(vms: readonly VmName[], snapshot: ConfigSnapshot, options: LinkerOptions): Map<VmName, unknown> {
  const kept = keptAttach(options.attach, []);
  const failures = new Map<VmName, unknown>();
  for (const vm of vms) {
    const failure = checksFailure(vm, snapshot, kept, options);
    if (failure !== undefined) failures.set(vm, failure.error);
  }
  return failures;
}

/**
 * Of the undo steps that failed in a `link --keep-going` run (in order), what is still left at
 * its end, as far as the run can tell: a device or namespace that a later undo failed on again is
 * said with that one only; a link whose client the run linked after (one by one, from the state
 * that kept its id) has its devices made or taken as they are, so they are not left; and a
 * namespace that a link the run linked uses is in use.
 */
function stepsStillLeft(failures: readonly UndoStepFailure[], linked: ReadonlyMap<VmName, readonly LinkReport[]>, netnsPrefix: string): UndoStepFailure[] {
  const inUse = new Set([...linked.values()].flat().flatMap((report) => linkNamespacesOf(report, netnsPrefix)));
  const saidDevices = new Set<string>();
  const saidNamespaces = new Set<string>();
  const left: UndoStepFailure[] = [];
  for (const failure of [...failures].reverse()) {
    if (failure.step === 'namespace') {
      if (!inUse.has(failure.netns) && !saidNamespaces.has(failure.netns)) left.push(failure);
      saidNamespaces.add(failure.netns);
      continue;
    }
    const still = failure.left.flatMap(({ link, devices }) => {
      const unsaid = devices.filter((device) => !saidDevices.has(device));
      return linked.has(vmName(link.vm)) || unsaid.length === 0 ? [] : [{ link, devices: unsaid }];
    });
    for (const { devices } of failure.left) for (const device of devices) saidDevices.add(device);
    if (still.length > 0) left.push({ ...failure, left: still });
  }
  return left.reverse();
}

/** The VMs of `vms` that failed, each with why, in that order. */
function failedInOrder(vms: readonly VmName[], failures: ReadonlyMap<VmName, unknown>): FailedVm[] {
  return vms.flatMap((vm) => (failures.has(vm) ? [{ vm, error: failures.get(vm) }] : []));
}

/**
 * The interruption that stops a `link --keep-going` run before its passes VM by VM (while it takes
 * NICs out for other modes, or in its one transaction; or while it waits for the state lock, with
 * no state dir yet), with the VMs that had failed before it (invalid, or a VMM that did not give a
 * NIC back; or those that failed their checks before the lock), so that their failures are said
 * with it.
 */
function interruptedAfter(error: LinkerError, vms: readonly VmName[], failures: ReadonlyMap<VmName, unknown>): LinkerError {
  if (failures.size === 0) return error;
  return new LinkerError(error.kind, error.message, error.failure, failedInOrder(vms, failures));
}

/**
 * The state failure that stops a `link --keep-going` run (the state is every VM's), with the VMs
 * that had failed before it, so that their failures are said with it (as interruptedAfter), and
 * those it had linked again one by one (`linked`), so that they are printed; as thrown where
 * none had failed or been linked.
 */
function stateFailedAfter(error: StateStoreError | LinkerError, vms: readonly VmName[], failures: ReadonlyMap<VmName, unknown>, linked: ReadonlyMap<VmName, readonly LinkReport[]> = new Map()): Error {
  if (failures.size === 0 && linked.size === 0) return error;
  const linkedInOrder = new Map(vms.flatMap((vm): [VmName, readonly LinkReport[]][] => (linked.has(vm) ? [[vm, linked.get(vm) ?? []]] : [])));
  return new LinkerError('state-failed', error.message, error, failedInOrder(vms, failures), linkedInOrder);
}

/** What a `link` run did before it takes down the links to providers dropped (finishRun). */
interface RunSoFar {
  /** The state once its links were made (recorded). */
  readonly state: LinkState;
  /** Each VM it linked, in the order asked for, with its links. */
  readonly linked: Map<VmName, LinkReport[]>;
  /** Each VM linked's providers now. */
  readonly providers: ReadonlyMap<VmName, readonly VmName[]>;
  /** With --keep-going, the VMs it did not link, in the order asked for. */
  readonly failed: readonly FailedVm[];
  readonly ambiguousAttach: readonly AmbiguousAttach[];
}

/**
 * The end of a `link` run once its links are made (`soFar`): the links to providers dropped taken
 * down (also those of the VMs of `run`'s whole config dir that name no provider now) and recorded,
 * then what `link --all` leaves as it is. A take-down that fails (not begun: the state dir not
 * writable, a socket path, the kernel; or done and not recorded) fails the run, carrying what the
 * run did (takeDownFailed), so that it is said as where the run ends well: its links stay made,
 * and where the take-down was done, its links are down whatever the state file says.
 */
async function finishRun(soFar: RunSoFar, run: RunVms, options: LinkerOptions, keepGoing: boolean): Promise<KeepGoingOutcome> {
  const { wholeDir } = run;
  const outcomeOf = async (state: LinkState, down: Pick<KeepGoingOutcome, 'unlinked' | 'vmmFailures'>): Promise<KeepGoingOutcome> => {
    const { orphaned, unusable } = wholeDir === undefined ? { orphaned: [], unusable: [] } : await leftAsTheyAre(state, wholeDir.snapshot, options);
    return { linked: soFar.linked, unlinked: down.unlinked, orphaned, unusable, vmmFailures: down.vmmFailures, ambiguousAttach: soFar.ambiguousAttach, failed: soFar.failed };
  };
  // What the run leaves as it is is of clients the take-down does not touch: the state before it tells it.
  const failedWith = async (error: unknown, down: Pick<FinishedOutcome, 'unlinked' | 'vmmFailures' | 'notTakenDown' | 'takeDownStopped'>): Promise<unknown> => {
    const outcome = await outcomeOf(soFar.state, down);
    const { notTakenDown, takeDownStopped } = down;
    return takeDownFailed(error, { ...outcome, ...(notTakenDown && { notTakenDown }), ...(takeDownStopped && { takeDownStopped }), ...(wholeDir && { all: { vms: run.vms, wholeDir } }) }, keepGoing);
  };
  const listed = listedProviders(wholeDir?.withoutProviders ?? [], soFar.providers);
  let down: UnlistedTakedown;
  try {
    down = await takeDownUnlisted(soFar.state, listed, options);
  } catch (error) {
    // Not begun, or stopped by the kernel (after their NICs were asked out of their VMMs): none
    // recorded as taken down; the links it was to look at are as the state had them. What a
    // take-down stopped part-way had done is said (takeDownStopped).
    const stateOf = statesByClient(soFar.state);
    const notTakenDown = [...listed].flatMap(([vm, providers]) => linksToUnlisted(stateOf(vm), vm, providers)).map(({ client, provider }) => ({ client, provider }));
    const stopped = error instanceof LinkerError ? error.released : undefined;
    const vmmFailures = stopped === undefined ? [] : stopped.failures.filter((failure) => hostSideDeleted(failure, stopped.deleted));
    throw await failedWith(error, { unlinked: new Map(), vmmFailures, notTakenDown, ...(stopped && { takeDownStopped: stopped }) });
  }
  if (down.changed) {
    try {
      await saveState(options.stateDir, down.state);
    } catch (error) {
      throw await failedWith(notRecorded('linked; then, as no longer among the providers, ', down.reports, down.vmmFailures, error, 'run the same link again'), down);
    }
  }
  return outcomeOf(down.state, down);
}

/**
 * The failure of the take-down of links to providers dropped that ends a `link` run after its
 * links were made, carrying what the run did (`outcome`; its VMs failed and linked also as a state
 * failure of `link --keep-going` in its passes carries them): with --keep-going (`keepGoing`) a
 * state failure as a 'state-failed' LinkerError, as such a failure in its passes is; any other
 * LinkerError of its kind; anything else (a bug) as thrown.
 */
function takeDownFailed(error: unknown, outcome: FinishedOutcome, keepGoing: boolean): unknown {
  if (keepGoing && isStateFailure(error)) return new LinkerError('state-failed', error.message, error, outcome.failed, outcome.linked, outcome);
  if (!(error instanceof LinkerError)) return error;
  return new LinkerError(error.kind, error.message, error.failure, outcome.failed, outcome.linked, outcome);
}

/** The LinkerErrors of a state dir that could not be written (their `failure`, the StateStoreError). */
const STATE_WRITE_KINDS: ReadonlySet<LinkerError['kind']> = new Set(['state-not-writable', 'unlisted-not-taken-down', 'taken-down-not-recorded']);

/**
 * Whether `error` is a failure of the state file, which stops a whole `link --keep-going` run: the
 * store's own, or a state dir found not writable before NICs came out for other modes, or before
 * or after a take-down of links to providers dropped (a LinkerError carrying the store's).
 */
function isStateFailure(error: unknown): error is StateStoreError | LinkerError {
  if (error instanceof StateStoreError) return true;
  return error instanceof LinkerError && STATE_WRITE_KINDS.has(error.kind) && error.failure instanceof StateStoreError;
}

/** linkVmsKeepGoing under the state lock; `snapshot`: the config of its VMs as read. */
async function keepGoing(vms: readonly VmName[], options: LinkerOptions, snapshot: ConfigSnapshot, wholeDir?: WholeConfigDir): Promise<KeepGoingOutcome> {
  const failures = new Map<VmName, unknown>();
  try {
    return await keepGoingPasses(vms, options, snapshot, failures, wholeDir);
  } catch (error) {
    throw isStateFailure(error) ? stateFailedAfter(error, vms, failures) : error;
  }
}

/** keepGoing's passes; `failures`: the VMs failed so far, each with why (for a state failure to carry). */
async function keepGoingPasses(vms: readonly VmName[], options: LinkerOptions, snapshot: ConfigSnapshot, failures: Map<VmName, unknown>, wholeDir?: WholeConfigDir): Promise<KeepGoingOutcome> {
  const partition = partitionValidVms(snapshot, vms);
  for (const { name, error } of partition.invalid) failures.set(name, error);
  const before = await loadState(options.stateDir, options.stateDirSource);
  // The modes it keeps, checked as it links each VM (no check up front: a VM whose mode cannot be,
  // kept or chosen, fails alone).
  const kept = keptAttach(options.attach, await standingLinks(before, options));
  const made = newRunDevices();
  // NICs of sides to be attached another way come out of their VMMs first, VM by VM
  // (takeBackSwitched): a VM whose VMM (or a provider's, for its links) does not give one back
  // fails alone, nothing made for it; the NICs taken out for it before are said as its links
  // left down.
  const switched = await switchedSides(partition.valid, snapshot, before, kept, options);
  // Each VM's switched sides, grouped once (not a pass over them all per VM).
  const switchedOf = new Map<string, SwitchedSide[]>();
  for (const target of switched) {
    const of = switchedOf.get(target.link.vm);
    if (of === undefined) switchedOf.set(target.link.vm, [target]);
    else of.push(target);
  }
  // Bad input first, as plain link finds it: a side that cannot be given its new mode, one that
  // would move to a socket the state cannot record, a socket path that cannot be; that VM fails
  // alone, before the probe of the state dir below (which fails the whole run), nothing taken out.
  for (const vm of partition.valid) {
    const own = switchedOf.get(vm) ?? [];
    if (own.length === 0) continue;
    try {
      assertLinksUsable(vm, snapshot, kept, options);
      assertSwitchedInputUsable(own, options);
    } catch (error) {
      failures.set(vm, error);
    }
  }
  // The state is every VM's: one that cannot be written fails the run, before any NIC comes out.
  await assertStateWritableForTakeOut(
    switched.filter((target) => !failures.has(vmName(target.link.vm))),
    options,
  );
  // The ids of each VM's links, found before its NICs come out, as its devices' listing is.
  const ids = switched.length === 0 ? new Map<VmName, KeepGoingIds>() : keepGoingIds(partition.valid, snapshot, before);
  for (const vm of partition.valid) {
    const own = switchedOf.get(vm) ?? [];
    if (own.length === 0 || failures.has(vm)) continue;
    try {
      // Ids that run out and a listing of its devices that fails fail the VM before its NICs come
      // out, as the run would fail it at them after (assertRunStartable).
      const vmIds = ids.get(vm);
      if (vmIds !== undefined && 'error' in vmIds) throw vmIds.error;
      await listRunDevices(vmIds?.links ?? [], kept, options);
      await takeBackSwitched(own, options, made);
    } catch (error) {
      // Nothing made yet: an interruption stops the whole run (as in the one transaction), and
      // the links of each VM not failed already (those said with its failure) are said down,
      // as are the VMs failed already (interruptedAfter).
      const down = takenBackLeftDown(made, isInterruption(error) ? new Set(partition.valid.filter((other) => !failures.has(other))) : new Set([vm]));
      if (down.length > 0) options.onLeftDown?.(down);
      if (isInterruption(error)) throw interruptedAfter(error, vms, failures);
      failures.set(vm, error);
    }
  }
  const valid = partition.valid.filter((vm) => !failures.has(vm));
  let devicesMade: LinkTransaction | undefined;
  let transactionFailure: unknown;
  // The links the transaction's undo leaves down: said where the run ends there (or its one VM
  // failed); where the VMs are linked again one by one, only those of VMs not linked again that
  // their own undo did not say (below).
  const leftDown: LeftDownLink[] = [];
  // Where the transaction's undo could not write the state back: said as leftDown is, of the
  // links of VMs not linked again (a VM linked one by one records its links anew).
  let undoWrite: UndoStateWriteFailure | undefined;
  const sayUndoWrite = (linkedAgain: ReadonlyMap<VmName, unknown>): void => {
    const recorded = undoWrite?.recorded.filter((link) => !linkedAgain.has(vmName(link.vm))) ?? [];
    if (undoWrite === undefined || recorded.length === 0) return;
    options.onUndoStateWriteFailed?.({ ...undoWrite, recorded, clients: undoWrite.clients.filter((vm) => !linkedAgain.has(vm)) });
  };
  try {
    devicesMade = await linkTransaction(valid, options, snapshot, before, made, {
      attachModes: kept,
      attach: false,
      leftDown: (links) => void leftDown.push(...links),
      undoWriteFailed: (failure) => void (undoWrite = failure),
    });
  } catch (error) {
    // Undone already (no NIC was hot-plugged). Nothing one VM could be spared: the state is every VM's.
    const whole = isInterruption(error) || error instanceof StateStoreError;
    if ((whole || valid.length === 1) && leftDown.length > 0) options.onLeftDown?.(leftDown);
    if (whole || valid.length === 1) sayUndoWrite(new Map());
    if (whole) throw isInterruption(error) ? interruptedAfter(error, vms, failures) : error;
    if (valid.length === 1) failures.set(valid[0] as VmName, error);
    transactionFailure = error;
  }
  let pass: KeepGoingPass;
  if (devicesMade !== undefined) pass = await attachVmByVm(valid, devicesMade, before, made, options, failures);
  // The undo writes the state file back, but for the ids of links whose devices it could not
  // delete (and, where that write failed, every id of the run): the ids the file still records
  // (their devices may exist) are kept, so it is read again, not `before` reused.
  else if (valid.length > 1) {
    // A VM linked one by one says the links its own undo leaves down; the one transaction's
    // left down of a VM that is not linked again and did not say them (a signal stopped the
    // pass before it, or it failed before its links were planned) are said after the pass.
    const said = new Set<string>();
    const tell = (links: readonly LeftDownLink[]): void => {
      for (const link of links) said.add(keyOf(link));
      options.onLeftDown?.(links);
    };
    // The VMs the pass links again, as it goes: also where a state that cannot be read or written
    // stops it (thrown), the links of the VMs it had not linked again by then are said down, and
    // those it had come with that failure, to be printed.
    const linkedNow = new Map<VmName, LinkReport[]>();
    const sayUnsaid = (): void => {
      const unsaid = leftDown.filter((link) => !linkedNow.has(vmName(link.vm)) && !said.has(keyOf(link)));
      if (unsaid.length > 0) options.onLeftDown?.(unsaid);
    };
    try {
      pass = await linkOneByOne(valid, { ...options, onLeftDown: tell }, snapshot, await loadState(options.stateDir, options.stateDirSource), made, failures, kept, linkedNow);
    } catch (error) {
      sayUnsaid();
      sayUndoWrite(linkedNow);
      throw isStateFailure(error) ? stateFailedAfter(error, vms, failures, linkedNow) : error;
    }
    sayUnsaid();
    sayUndoWrite(linkedNow);
  } else pass = { state: before, linked: new Map(), providers: new Map() };
  const { state, linked, providers, interrupted } = pass;
  const failed = failedInOrder(vms, failures);
  const linkedInOrder = new Map(vms.flatMap((vm): [VmName, LinkReport[]][] => (linked.has(vm) ? [[vm, linked.get(vm) ?? []]] : [])));
  const ambiguous = ambiguousAttach(kept, [...linkedInOrder.values()].flat().map(pairOf));
  if (interrupted !== undefined) {
    const said = interrupted.during === 'one-by-one' && transactionFailure !== undefined ? { ...interrupted, failure: transactionFailure } : interrupted;
    return { linked: linkedInOrder, unlinked: new Map(), orphaned: [], unusable: [], vmmFailures: [], ambiguousAttach: ambiguous, failed, interrupted: said };
  }
  // Where the take-down fails, the VMs linked stay linked and those failed stay failed: they come
  // with its failure, to be said as where the run ends well (finishRun).
  return finishRun({ state, linked: linkedInOrder, providers, failed, ambiguousAttach: ambiguous }, { vms, wholeDir }, options, true);
}

/**
 * The hot-plug pass of `link --keep-going`, once every VM has its ids and devices (`run`, from
 * the state `before`): each VM's NICs, VM by VM; a VM whose NIC is refused (or not answered in
 * time) is undone alone (undoVms) and added to `failures`.
 * A link's NICs are its client's: the provider side of `a -> b` goes to b's VMM, and if that VMM
 * fails, a (the client) fails, not b. The link is a's (a's config names b, its id and devices are
 * allocated and recorded as a's, a's line reports it), b may serve many clients whose NICs went
 * in, and b need not be among the VMs of the run at all; so a VM that is a client and a provider
 * in the same run fails only for its own links, and its VMM failing fails each of its clients too.
 * A signal stops it at the next safe point (before a NIC is hot-plugged): the VM in progress and
 * those after it are undone, those before stay linked.
 */
async function attachVmByVm(
  vms: readonly VmName[],
  run: LinkTransaction,
  before: LinkState,
  made: RunDevices,
  options: LinkerOptions,
  failures: Map<VmName, unknown>,
): Promise<KeepGoingPass> {
  let { state } = run;
  const linked = new Map<VmName, LinkReport[]>();
  const providers = new Map<VmName, readonly VmName[]>();
  const count: NicCount = { done: 0, total: vms.reduce((total, vm) => total + (run.linked.get(vm) ?? []).flatMap((report) => vmmNics(report)).length, 0) };
  for (const [index, vm] of vms.entries()) {
    const reports = run.linked.get(vm) ?? [];
    try {
      // On failure it takes back the NICs it added for this VM.
      await attachToVmms(reports, options, count);
      linked.set(vm, reports);
      providers.set(vm, run.providers.get(vm) ?? []);
    } catch (error) {
      if (isInterruption(error)) {
        state = await undoVms(vms.slice(index), run, state, before, made, options);
        return { state, linked, providers, interrupted: { during: 'attach', undone: vm, notLinked: vms.slice(index + 1) } };
      }
      state = await undoVms([vm], run, state, before, made, options);
      failures.set(vm, error);
    }
  }
  return { state, linked, providers };
}

/**
 * Undo, alone, VMs whose ids and devices the run made (`run`, from the state `before`) and whose
 * NICs are not (or no longer) hot-plugged: the devices this run created for their links; the VM
 * namespaces it created for them that no link still recorded as up uses; their records as
 * `before` had them (ids allocated for them released, earlier ones kept, and those of links whose
 * devices the kernel did not delete kept too), saved. A step that fails is told
 * (onUndoStepFailed), the others done all the same. Returns the state the file holds (where it
 * could not be written, what it held: onUndoStateWriteFailed is told).
 */
async function undoVms(vms: readonly VmName[], run: LinkTransaction, state: LinkState, before: LinkState, made: RunDevices, options: LinkerOptions): Promise<LinkState> {
  const reports = vms.flatMap((vm) => run.linked.get(vm) ?? []);
  const devices = new Set(reports.flatMap(linkDevicesOf));
  // As a transaction's undo: each step is done whatever the one before did, one that fails is
  // told, and a link whose devices the kernel did not delete keeps its record (undoneState).
  const doomed = [...made.created].filter((device) => devices.has(device));
  const removal = await undoDevices(doomed).catch((error: unknown) => ({ kept: [], left: { devices: doomed, error: reasonOf(error) } }));
  const stuck = removal.left === undefined ? undefined : devicesLeft(removal.left.devices, reports, removal.left.error);
  if (stuck !== undefined) options.onUndoStepFailed?.(stuck);
  const next = undoneState(state, before, reports, new Set(removal.left?.devices ?? []));
  const namespaceOf = (vm: string): string => `${options.netnsPrefix}${vm}`;
  const inUse = new Set(
    next.links.flatMap((link) => [
      ...(link.attached?.client === 'netns' ? [namespaceOf(link.client)] : []),
      ...(link.attached?.provider === 'netns' ? [namespaceOf(link.provider)] : []),
    ]),
  );
  const sides = reports.flatMap((report) => linkNamespacesOf(report, options.netnsPrefix));
  const namespaces = [...new Set(sides)].filter((netns) => made.namespaces.has(netns) && !inUse.has(netns));
  const namespacesLeft = await deleteNamespaces(namespaces).catch((error: unknown) => namespaces.map((netns) => ({ netns, error: reasonOf(error) })));
  for (const netns of namespacesLeft) options.onUndoStepFailed?.(namespaceLeft(netns));
  // Where the write back fails, the VM's failure is still what is said, and the state as the file holds it is returned.
  const held = sameState(next, state) ? next : await writeBack(options, state, next, options.onUndoStateWriteFailed);
  const leftDown = linksLeftDown(reports, before, made, options);
  if (leftDown.length > 0) options.onLeftDown?.(leftDown);
  return held;
}

/**
 * The VM-by-VM pass of `link --keep-going`, where the one transaction failed: a transaction per
 * VM from the state the last one left; a VM that fails is undone alone and added to `failures`.
 * A signal stops it before the next VM, or undoes the VM in progress at its next safe point.
 */
async function linkOneByOne(
  vms: readonly VmName[],
  options: LinkerOptions,
  snapshot: ConfigSnapshot,
  before: LinkState,
  made: RunDevices,
  failures: Map<VmName, unknown>,
  attachModes: KeptAttach,
  /** The VMs linked, filled as it goes (the caller's: a failure that stops the pass leaves it as far as it got). */
  linked = new Map<VmName, LinkReport[]>(),
): Promise<KeepGoingPass> {
  const { progress, onLeftDown, ...quiet } = options;
  let state = before;
  const providers = new Map<VmName, readonly VmName[]>();
  const undoWrite = options.onUndoStateWriteFailed;
  for (const [index, vm] of vms.entries()) {
    if (options.signal?.aborted === true) return { state, linked, providers, interrupted: { during: 'one-by-one', notLinked: vms.slice(index) } };
    try {
      // `made` still holds what the one transaction replaced: a VM failing here leaves those links down too.
      // Where it fails, the next VM goes on from the state the file holds after its undo: records
      // kept there (devices it could not delete, or a write back that failed) are kept.
      const mode: TransactionMode = {
        attachModes,
        attach: true,
        ...(onLeftDown === undefined ? {} : { leftDown: onLeftDown }),
        ...(undoWrite === undefined ? {} : { undoWriteFailed: undoWrite }),
        undone: (holds) => void (state = holds),
      };
      const run = await linkTransaction([vm], quiet, snapshot, state, made, mode);
      state = run.state;
      linked.set(vm, run.linked.get(vm) ?? []);
      providers.set(vm, run.providers.get(vm) ?? []);
    } catch (error) {
      if (isInterruption(error)) return { state, linked, providers, interrupted: { during: 'one-by-one', undone: vm, notLinked: vms.slice(index + 1) } };
      // The state is every VM's: one that cannot be written fails the run (as in the one transaction), not each VM after.
      if (error instanceof StateStoreError) throw error;
      failures.set(vm, error);
    }
    progress?.({ phase: 'one-by-one', done: index + 1, total: vms.length });
  }
  return { state, linked, providers };
}

/** An `--attach VM=MODE` that a `link` run used for nothing, naming no VM of the config dir either. */
export interface StrayAttach {
  readonly vm: VmName;
  readonly mode: AttachMode;
  /** Why the config dir has no such VM (e.g. `no directory <dir>/<vm>`). */
  readonly reason: string;
}

/**
 * The per-VM attach modes (`--attach VM=MODE`) that name none of `vms` and no VM of `reports`
 * (as client or as provider): those a run used for nothing.
 */
export function unusedAttachModes(attach: AttachChoice, vms: Iterable<VmName>, reports: Iterable<LinkReport>): { vm: VmName; mode: AttachMode }[] {
  const touched = new Set<VmName>(vms);
  for (const report of reports) {
    touched.add(vmName(report.vm));
    touched.add(vmName(report.provider));
  }
  return [...attach.perVm].filter(([vm]) => !touched.has(vm)).map(([vm, mode]) => ({ vm, mode }));
}

/**
 * The per-VM attach modes of a finished `link` run that named a VM the run did not touch (no
 * client linked or taken down, nor a provider of one) and that the config dir has no directory
 * for: most likely a typo, with which the VM meant kept its mode (kept-attach.ts). A VM of the
 * config dir that this run did not touch is no stray: `link --all`, and scripts that pass one
 * --attach set to every call, name VMs that a given run need not touch.
 */
export async function strayAttachModes(
  outcome: LinkOutcome & Pick<FinishedOutcome, 'notTakenDown'>,
  attach: AttachChoice,
  config: Pick<LinkerOptions, 'configDir' | 'configDirSource'>,
  snapshot?: ConfigSnapshot,
): Promise<StrayAttach[]> {
  const groups = [...outcome.linked, ...outcome.unlinked];
  // A take-down not begun touched the VMs of the links it was to take down all the same: an --attach of one was for it.
  const pending = (outcome.notTakenDown ?? []).flatMap(({ client, provider }) => [client, provider]);
  const strays: StrayAttach[] = [];
  for (const { vm, mode } of unusedAttachModes(attach, [...groups.map(([vm]) => vm), ...pending], groups.flatMap(([, reports]) => reports))) {
    const reason = snapshot === undefined ? (await noVmReason(config, vm))?.reason : vmDirProblem(snapshot, vm);
    if (reason !== undefined) strays.push({ vm, mode, reason });
  }
  return strays;
}

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

/**
 * For `link <client>` run after an unlink of the client (which takes every link of the client
 * down, and with them the modes they keep): VM=MODE for each VM of the client's own links attached
 * in `state` (not those `released`, by id; only those to `providers` where given, the ones that
 * link makes: as recorded) whose sides there have one mode, `none` too (a link not up gets the
 * VM's mode, that of its links up, which may be another), and that `attach` (this run's --attach,
 * which that link carries) does not choose. Each provider is in one such link; the client, where its sides disagree, is left out: no
 * one mode says them (the links it provides are brought back by links of their own: clientRelinks).
 */
function relinkModes(state: LinkState, client: VmName, released: ReadonlySet<number>, attach: AttachChoice, providers?: readonly VmName[]): string[] {
  const modes = new Map<VmName, Set<AttachMode>>();
  for (const link of state.links.filter((recorded) => recorded.client === client)) {
    const { attached } = link;
    if (released.has(link.id) || attached === undefined || (providers !== undefined && !providers.includes(link.provider))) continue;
    for (const side of BOTH_SIDES) {
      const vm = side === 'client' ? link.client : link.provider;
      modes.set(vm, (modes.get(vm) ?? new Set<AttachMode>()).add(attached[side]));
    }
  }
  return [...modes].flatMap(([vm, found]) => {
    const [only] = found;
    return chosenAttachMode(attach, vm) === undefined && found.size === 1 && only !== undefined ? [`${vm}=${only}`] : [];
  });
}

/**
 * The VMs whose NICs of `failure`'s kind `unlink <client> --attach <VM>=<kind>` (the client of the
 * failure's link, its VM) would detach through the socket template, run on `state`: each side
 * recorded in that mode without a socket, and each side of that VM in a link recorded without
 * modes (to which that --attach gives the mode); not those of the links `released` (by id), taken
 * down by the run that failed, whose NICs it detached (or said, each, where a VMM did not).
 */
function reachedThroughTemplate(state: LinkState, failure: VmmDetachFailure, released: ReadonlySet<number>): VmName[] {
  const reached = new Set<VmName>();
  for (const link of linksOfVm(state, vmName(failure.link.vm))) {
    if (released.has(link.id)) continue;
    for (const side of BOTH_SIDES) {
      const vm = side === 'client' ? link.client : link.provider;
      const { attached } = link;
      if (attached === undefined ? vm === failure.vm : attached[side] === failure.vmm && recordedSocket(attached, side) === undefined) reached.add(vm);
    }
  }
  return [...reached];
}

const reasonOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * Detach each link's VMM NICs (of `sides`), one after another, each that came out added to
 * `done.detached` as it goes (a VMM not running, or one without that NIC, took none out).
 * Without force the first failure is thrown (as `refused` makes it); with force every NIC is
 * tried and the failures are added to `done.failures`.
 */
async function detachFromVmms(
  reports: readonly LinkReport[],
  vmm: VmmPort,
  force: boolean,
  refused: (error: unknown) => unknown,
  done: { readonly detached: DetachedNic[]; readonly failures: VmmDetachFailure[] },
  sides: readonly LinkSide[] = BOTH_SIDES,
): Promise<void> {
  for (const report of reports) {
    // At the socket recorded for each NIC, where there is one (vmmNics): where it was attached.
    for (const target of vmmNics(report, undefined, sides)) {
      try {
        // Only a NIC this call took out: a VMM not running, or one that no longer held it (an
        // earlier take-down's, or a VM restarted without it), took none out.
        const outcome = await vmm.detach(target.kind, target.vm, target.nic, target.socket);
        if (outcome === undefined) done.detached.push({ link: report, vmm: target.kind, vm: target.vm, nic: target.nic.id });
      } catch (error) {
        if (!force) throw refused(error);
        done.failures.push(detachFailure(report, target, error));
      }
    }
  }
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
  /** The links it was taking down, as reported. */
  readonly reports: readonly RecordedLinkReport[];
  /** The NICs that came out of their VMMs, in order. */
  readonly detached: readonly DetachedNic[];
  /** The VMMs that did not detach a NIC (with force), in order. */
  readonly failures: readonly VmmDetachFailure[];
  /** The devices the kernel deleted (of the links' names); undefined where that is unknown. */
  readonly deleted: readonly string[] | undefined;
}

/** Of a removal of devices that failed (removeDevices), the devices it had deleted, where its error says them (DeviceError.removed). */
function removedBefore(error: unknown): string[] | undefined {
  const { removed } = (error instanceof Error ? error : {}) as Partial<Pick<DeviceError, 'removed'>>;
  return removed?.map((device) => device.name);
}

/**
 * Whether a take-down deleted (`deleted`) the tap of a NIC its VMM did not detach and its link's
 * bridge: then that NIC reaches nothing, as the line of such a VMM says (where a take-down stopped
 * part-way, only such VMMs get it).
 */
export function hostSideDeleted(failure: VmmDetachFailure, deleted: readonly string[] | undefined): boolean {
  return deleted !== undefined && deleted.includes(failure.nic) && deleted.includes(failure.link.bridge);
}

/** The links of a stopped take-down, for a line: `vm -> provider (id N), ...`. */
function stoppedLinksText(stopped: StoppedRelease): string {
  return stopped.reports.map((report) => `${report.vm} -> ${report.provider} (id ${report.id})`).join(', ');
}

/** Words joined as a list is said: `a`, `a and b`, `a, b and c`. */
const inWords = (words: readonly string[]): string => (words.length > 1 ? `${words.slice(0, -1).join(', ')} and ${words.at(-1) ?? ''}` : words.join(''));

/**
 * What a take-down that stopped part-way had done, for its line (`it had taken ...; ...`): the
 * NICs that came out of their VMMs (their VMs lost them), the VMMs that did not detach theirs, and
 * (`devices`: where it got to their removal) the devices deleted and those that may still exist.
 */
function stoppedText(stopped: StoppedRelease, devices = true): string {
  const { detached, failures } = stopped;
  const parts: string[] = [];
  if (detached.length > 0) {
    const nics = detached.map(({ nic, vmm, vm }) => `NIC ${nic} out of the ${vmm} of ${vm}`);
    const vms = [...new Set(detached.map(({ vm }) => vm))];
    parts.push(`it had taken ${inWords(nics)} (${inWords(vms)} no longer ${vms.length === 1 ? 'has' : 'have'} ${detached.length === 1 ? 'it' : 'them'})`);
  }
  if (failures.length > 0) {
    const kept = failures.map(({ nic, vmm, vm, error }) => `NIC ${nic}, which the ${vmm} of ${vm} did not detach (${error})`);
    parts.push(`${detached.length > 0 ? 'but not' : 'it had not taken out'} ${inWords(kept)}`);
  }
  if (devices) parts.push(devicesText(stopped));
  return parts.join('; ');
}

/** What a take-down that stopped part-way had deleted of its links' devices, and what may still exist. */
function devicesText({ reports, deleted }: StoppedRelease): string {
  const names = reports.flatMap((report) => [report.clientDevice, report.providerDevice, report.bridge]);
  if (deleted === undefined) return `whether it had deleted any of their devices (${names.join(' ')}) is unknown`;
  if (deleted.length === 0) return 'it had deleted no device of theirs';
  const left = names.filter((name) => !deleted.includes(name));
  return `it had deleted ${deleted.join(' ')}${left.length === 0 ? '' : ` (${left.join(' ')} may still exist)`}`;
}

/**
 * The failure of a take-down that stopped part-way (`error`), carrying what it had done (a
 * LinkerError 'take-down-stopped', its `failure` the error as thrown); the error as it is where
 * it had done nothing (no NIC out, no VMM that did not detach, no device deleted).
 */
function stoppedPartWay(error: unknown, stopped: StoppedRelease): unknown {
  const { detached, failures, deleted } = stopped;
  if (detached.length === 0 && failures.length === 0 && deleted !== undefined && deleted.length === 0) return error;
  return new LinkerError('take-down-stopped', reasonOf(error), error, [], new Map(), undefined, stopped);
}

/**
 * Refuse, before anything of these links is taken down, a VMM side whose socket path cannot be
 * (VmmPort.checkSocket: too long under this run's --qmp-socket or --ch-socket, for a side whose
 * socket the state does not record), in the modes releaseLinks detaches them with. Found only at
 * its detach, it would stop a plain unlink after NICs before it had come out, and with force
 * (`unlink --force`, `link` taking down a dropped provider) the devices of a NIC no VMM was asked
 * to remove would go, said as a VMM that did not detach, with a retry refused the same way.
 */
function assertDetachSocketsUsable(links: readonly Link[], options: Pick<UnlinkOptions, 'devicePrefix' | 'attach' | 'vmm'>): void {
  for (const link of links) for (const { kind, vm, socket } of vmmNics(linkReport(link, options))) options.vmm.checkSocket?.(kind, vm, socket);
}

interface ReleaseOptions {
  /** Take the links' devices down even where their VMMs do not detach (`unlink --force`). */
  readonly force?: boolean;
  /** What a VMM's refusal is thrown as (without force). */
  readonly refused?: (error: unknown) => unknown;
}

/**
 * Take links down: detached from their VMMs, devices removed; the state is not touched (the state
 * they leave is releasedState's). With force, the devices go whatever the VMMs said: deleting the
 * taps and bridges is what cuts the VMs off, so a VMM that refuses or stalls (it hosts an
 * untrusted guest) cannot keep its VM connected; its failures are returned.
 * Every device under the links' names goes, of whatever kind: the device prefix's names are the
 * linker's, and a device of another kind there is one the link's next plan would replace; but
 * only one of the link's kind makes a link recorded without attach modes linked (list says so too).
 * Stopped part-way (a VMM's refusal without force, the kernel's), it throws a LinkerError
 * 'take-down-stopped' carrying what it had done (stoppedPartWay), where it had done anything.
 */
async function releaseLinks(links: readonly Link[], options: UnlinkOptions, release: ReleaseOptions = {}): Promise<{ reports: ReleasedLinkReport[]; failures: VmmDetachFailure[] }> {
  const devicesOf = (report: LinkReport): string[] => [report.clientDevice, report.providerDevice, report.bridge];
  // A link with no attach modes recorded is taken down already, unless a device of its kind exists
  // under one of its names: then it is up, recorded before the state kept attach modes, and goes
  // with --attach's modes.
  const unrecorded = links.filter((link) => link.attached === undefined);
  const namesOf = (link: Link): string[] => Object.values(linkDeviceNames(options.devicePrefix, link.id));
  const host = unrecorded.length === 0 ? new Map<string, ObservedDevice>() : (await observeDevices([], unrecorded.flatMap(namesOf))).host;
  const taken = links.map((link) => ({ link, report: { ...linkReport(link, options), linked: link.attached !== undefined || seenOf(link, host, options).own.length > 0 } }));
  const reports: RecordedLinkReport[] = taken.map(({ report }) => report);
  // What it has done so far, said where it stops part-way (stoppedPartWay).
  const done = { detached: [] as DetachedNic[], failures: [] as VmmDetachFailure[] };
  await detachFromVmms(reports, options.vmm, release.force === true, release.refused ?? ((error) => error), done).catch((error: unknown) => {
    throw stoppedPartWay(error, { reports, ...done, deleted: [] });
  });
  const removal = await removeDevices(reports.flatMap(devicesOf)).catch((error: unknown) => {
    throw stoppedPartWay(error, { reports, ...done, deleted: removedBefore(error) });
  });
  const { failures } = done;
  const gone = new Map(removal.removed.map((device) => [device.name, device]));
  // Of what went, the devices of other kinds than each link makes under its names: said (unlink).
  const foreignOf = (link: Link): readonly ForeignDevice[] => linkDevicesSeen(expectedLinkDevices(linkDeviceNames(options.devicePrefix, link.id), link.attached), gone).foreign;
  return { reports: taken.map(({ link, report }) => ({ ...report, foreignDeleted: foreignOf(link) })), failures };
}

/** The state with these links taken down: their attachments cleared, their ids kept. */
function releasedState(state: LinkState, links: readonly Link[]): LinkState {
  return setAttachments(state, links.map((link) => ({ pair: link, attached: undefined })));
}

/**
 * Why the state file cannot be written, found before links are taken down (else undefined), by
 * the store's probe of a write in the state dir (probeStateWrite; the file itself is left as it
 * is): a state dir that is read-only, full or not writable then fails here with nothing changed,
 * not after the VMs lost their links, the file still recording them as linked. The probe cannot
 * promise that the save after succeeds (a large state on a nearly full disk, a disk filling
 * meanwhile): its failure is said with what went (notRecorded).
 */
async function stateWriteProblem(stateDir: string): Promise<StateStoreError | undefined> {
  try {
    await probeStateWrite(stateDir);
    return undefined;
  } catch (error) {
    if (error instanceof StateStoreError) return error;
    throw error;
  }
}

/** The links taken down, and what went of them, for a line: `name -> provider (id N), ...: ...`. */
function takenDownText(reports: readonly LinkReport[], failures: readonly VmmDetachFailure[]): string {
  const links = reports.map((report) => `${report.vm} -> ${report.provider} (id ${report.id})`).join(', ');
  const nics = reports.flatMap((report) => vmmNics(report)).length;
  const kept = failures.map((failure) => `NIC ${failure.nic}, which the ${failure.vmm} of ${failure.vm} did not detach (${failure.error})`).join(', ');
  const detached = nics === 0 ? '' : kept === '' ? ', their NICs detached from their VMMs (where these run)' : `, their NICs detached from their VMMs (where these run) but for ${kept}`;
  return `${links}: their devices deleted${detached}`;
}

/**
 * The error of links taken down whose new state could not be saved (`error`, the store's): it says
 * what went, that the file still records them as linked (or, where only the sync of the state dir
 * failed, may do so again after a crash), and to run `again`, which finds them gone and records it.
 */
function notRecorded(said: string, reports: readonly LinkReport[], failures: readonly VmmDetachFailure[], error: unknown, again: string, idsKept = false, wereLinked = true): unknown {
  if (!(error instanceof StateStoreError)) return error;
  if (!wereLinked) {
    // Only --forget changed the state: nothing was up to take down.
    return new LinkerError('taken-down-not-recorded', `${said}its links were unlinked already; but then ${error.message}; so the state file still records their ids: once the state dir can be written, ${again}`, error);
  }
  const what = `${said}took down ${takenDownText(reports, failures)}`;
  if (error.kind === 'sync-failed') {
    return new LinkerError('taken-down-not-recorded', `${what}; then ${error.message}: should a crash bring back their records as linked, ${again} (it finds them gone and records it)`, error);
  }
  const ids = idsKept ? ' (their ids not released)' : '';
  return new LinkerError(
    'taken-down-not-recorded',
    `${what}; but then ${error.message}; so the state file still records them as linked${ids}: once the state dir can be written, ${again} (it finds them gone and records it)`,
    error,
  );
}

/** The links a VM takes part in, as client or as provider. */
function linksOfVm(state: LinkState, vm: VmName): Link[] {
  return [...linksOfClient(state, vm), ...linksOfProvider(state, vm)];
}

export interface UnlinkFlags {
  /** Release the ids too. */
  readonly forget: boolean;
  /** Delete the devices (and update the state) even where a VMM does not detach its NIC. */
  readonly force: boolean;
}

/** What `unlink` did: the links taken down, and (with force) the VMM detaches that failed. */
export interface UnlinkOutcome {
  /**
   * The links taken down; those `unlink` had taken down already are not `linked`. One recorded
   * before the state kept attach modes, a device of its kind under one of its names, is, with the
   * modes of --attach (releaseLinks).
   */
  readonly reports: ReleasedLinkReport[];
  readonly failures: VmmDetachFailure[];
  /**
   * Every VM that a link recorded before this unlink involves, as client or provider: an
   * `--attach VM=MODE` naming none of them could serve no unlink (a typo, most likely).
   */
  readonly recordedVms: ReadonlySet<VmName>;
}

/**
 * A VMM's refusal that stopped an unlink, saying that nothing was deleted and how to cut the VM
 * off all the same (the same unlink with --force, as `commands` says it). Usage errors (a socket
 * path that cannot be) stay as they are.
 */
function detachStopped(vm: VmName, forget: boolean, error: unknown, commands: PrintedCommands = DEFAULT_COMMANDS): unknown {
  if (error instanceof CliError) return error;
  const command = commands.unlink(vm, ['--force', ...(forget ? ['--forget'] : [])]);
  return new LinkerError(
    'vmm-detach-failed',
    // "Recorded", not "up": a NIC whose removal the VMM had accepted (an earlier one of the VM, or
    // this one before its bound ran out) may be gone from the VM already.
    `unlink ${vm}: ${reasonOf(error)}; so no host device was deleted and ${vm}'s links stay recorded (a NIC the VMM had already been asked to remove may be gone from the VM: unlink again once it answers): to delete them whatever the VMM says, run ${command}`,
  );
}

/**
 * The failure of an unlink whose take-down stopped part-way (releaseLinks' 'take-down-stopped'),
 * saying what it had done and that the state file is as it was (it writes nothing: the same
 * unlink again, as `commands` says it, finds every link as recorded and takes down what is left).
 * A VMM's refusal without force (detachStopped) after other NICs had come out stays that refusal,
 * what came out said after it. Anything else is thrown as it is.
 */
function unlinkStopped(vm: VmName, flags: UnlinkFlags, error: unknown, commands: PrintedCommands = DEFAULT_COMMANDS): unknown {
  if (!(error instanceof LinkerError && error.kind === 'take-down-stopped' && error.released !== undefined)) return error;
  const { failure, released } = error;
  if (failure instanceof LinkerError && failure.kind === 'vmm-detach-failed') {
    return new LinkerError('vmm-detach-failed', `${failure.message}; before that refusal, ${stoppedText(released, false)}`, failure.failure, [], new Map(), undefined, released);
  }
  // A usage error (a socket path that cannot be) keeps its exit code.
  if (failure instanceof CliError) return new CliError(`${failure.message}; before it, ${stoppedText(released, false)}`, failure.exitCode);
  const again = commands.unlink(vm, [...(flags.forget ? ['--forget'] : []), ...(flags.force ? ['--force'] : [])]);
  const ids = flags.forget ? ', their ids not released' : '';
  return new LinkerError(
    'take-down-stopped',
    `unlink ${vm}: taking down ${stoppedLinksText(released)} stopped part-way: ${error.message}; by then ${stoppedText(released)}; ` +
      `so the state file is as it was, recording those links as it did${ids}: run ${again} again, which takes down what is left (a NIC already out of its VMM, and a device already gone, count as done)`,
    failure,
    [],
    new Map(),
    undefined,
    released,
  );
}

/**
 * `unlink <vm>`: detach and delete its links' devices; with forget, release their ids too. A
 * VMM that fails to detach stops it before any device goes, unless force: then the devices go
 * and the state is updated all the same, and the failures are returned. A state file that cannot
 * be written stops it before anything goes (stateWriteProblem); one that cannot be written after
 * (a race) is said with what went (notRecorded). A take-down stopped part-way (the kernel refusing
 * a lookup or a deletion of their devices) is said with what it had done, nothing recorded
 * (unlinkStopped).
 */
export async function unlinkVm(name: string, flags: UnlinkFlags, options: UnlinkOptions): Promise<UnlinkOutcome> {
  const vm = vmName(name);
  return underStateLock(options, 'nothing was taken down', async () => {
    const state = await loadState(options.stateDir, options.stateDirSource);
    const links = linksOfVm(state, vm);
    if (links.length === 0) {
      const check = pathCheck('the state dir', '--state-dir', STATE_DIR_ENV, options.stateDirSource);
      throw new LinkerError('not-linked', `${vm} has no recorded links in ${shownOrigin('state dir', options.stateDir, options.stateDirSource)}; check the name and ${check}`);
    }
    // Bad input first (a socket path too long): nothing is taken down, --force or not.
    assertDetachSocketsUsable(links, options);
    let next = releasedState(state, links);
    if (flags.forget) for (const link of links) next = forgetLink(next, link).state;
    const changes = !sameState(next, state);
    // What is taken down must be recorded: a state dir that cannot be written stops it first.
    const problem = changes ? await stateWriteProblem(options.stateDir) : undefined;
    if (problem !== undefined) {
      throw new LinkerError(
        'state-not-writable',
        `unlink ${vm}: ${problem.message}; so nothing was taken down (no NIC detached, no device deleted), as the state could not record it: unlink again once the state dir can be written`,
        problem,
      );
    }
    const released = await releaseLinks(links, options, { force: flags.force, refused: (error) => detachStopped(vm, flags.forget, error, options.commands) }).catch((error: unknown) => {
      throw unlinkStopped(vm, flags, error, options.commands);
    });
    if (changes) {
      const again = `run ${(options.commands ?? DEFAULT_COMMANDS).unlink(vm, [...(flags.forget ? ['--forget'] : []), ...(flags.force ? ['--force'] : [])])} again`;
      await saveState(options.stateDir, next).catch((error: unknown) => {
        // Linked: recorded so, or recorded before the state kept attach modes, its devices up (releaseLinks).
        throw notRecorded(`unlink ${vm}: `, released.reports, released.failures, error, again, flags.forget, released.reports.some((report) => report.linked));
      });
    }
    const recordedVms = new Set(state.links.flatMap((link) => [link.client, link.provider]));
    return { reports: released.reports, failures: released.failures, recordedVms };
  });
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
  /** The MTU its bridge has right now (the link MTU it was made with), where the bridge exists (a bridge, not a foreign device). */
  readonly mtu?: number;
}

/** The attach mode a side's host device shows where none is recorded: netns for a veth (no other mode makes one), else unknown. */
function attachShown(device: ObservedDevice | undefined): AttachMode | null {
  return shownAttachMode(device?.kind) ?? null;
}

/**
 * What is under a link's names among `host`'s devices: its own (of the kinds it makes there) and
 * foreign ones (link-device-kinds.ts); with `farEnds`, its veths whose far end is not in their
 * VM's namespace (`<prefix><vm>`) under their name (as farEndsFound found them) too.
 */
function seenOf(
  link: Link,
  host: ReadonlyMap<string, ObservedDevice>,
  options: Pick<LinkerOptions, 'devicePrefix'>,
  farEnds?: { readonly prefix: string; readonly found: FarEndsFound },
): LinkDevicesSeen {
  const namespaces = farEnds === undefined ? undefined : { client: `${farEnds.prefix}${link.client}`, provider: `${farEnds.prefix}${link.provider}` };
  return linkDevicesSeen(expectedLinkDevices(linkDeviceNames(options.devicePrefix, link.id), link.attached, namespaces), host, farEnds?.found);
}

/**
 * Where the veths under these links' side names have their far ends, of each side that is a veth
 * now and may be one (recorded as netns, or with no mode recorded): the ids of their VM
 * namespaces (one query per namespace, namespaceIds), then, of each veth whose peer is in its
 * VM's, the name the peer has there (one query per such veth, farEndNames): the plan takes the
 * device under the veth's name there for the peer only where it is.
 */
async function farEndsFound(links: readonly Link[], host: ReadonlyMap<string, ObservedDevice>, options: Pick<LinkerOptions, 'devicePrefix' | 'netnsPrefix'>): Promise<FarEndsFound> {
  const sides = links.flatMap((link) => {
    const names = linkDeviceNames(options.devicePrefix, link.id);
    const sides = [
      [names.client, link.client, link.attached?.client],
      [names.provider, link.provider, link.attached?.provider],
    ] as const;
    return sides.flatMap(([device, vm, mode]) => (host.get(device)?.kind === DEVICE_KIND.veth && (mode === undefined || mode === 'netns') ? [{ device, netns: `${options.netnsPrefix}${vm}` }] : []));
  });
  const netnsIds = await namespaceIds(sides.map(({ netns }) => netns));
  const peers = sides.flatMap(({ device, netns }) => {
    const veth = host.get(device);
    const netnsId = netnsIds.get(netns);
    return netnsId !== undefined && veth?.peerNetnsId === netnsId && veth.peerIndex !== undefined ? [{ device, netnsId, index: veth.peerIndex }] : [];
  });
  return { netnsIds, names: await farEndNames(peers) };
}

/**
 * Recorded links, with whether their devices exist: as every command that shows recorded links
 * shows them (`list`, `show`, and `link --all`'s orphaned and unusable entries). One listing of
 * the host's devices serves them all (their kinds come with it).
 */
async function listed(links: readonly Link[], options: Pick<LinkerOptions, 'devicePrefix' | 'attach'> & Partial<Pick<LinkerOptions, 'netnsPrefix'>>): Promise<ListedLink[]> {
  if (links.length === 0) return [];
  const devices = (await observeDevices([])).host;
  // Where the VM namespaces are known (list, show): whether each veth's far end is in its VM's
  // under its name, by the namespace ids the dump gave and queries after it (farEndsFound).
  const { netnsPrefix } = options;
  const farEnds = netnsPrefix === undefined ? undefined : { prefix: netnsPrefix, found: await farEndsFound(links, devices, { ...options, netnsPrefix }) };
  return links.map((link): ListedLink => {
    const report = linkReport(link, options);
    const seen = seenOf(link, devices, options, farEnds);
    const bridge = devices.get(report.bridge);
    const mtu = bridge?.kind === DEVICE_KIND.bridge ? bridge.mtu : undefined;
    const base = { ...report, present: seen.whole, devicesThere: seen.devicesThere, foreign: seen.foreign, farEndsElsewhere: seen.farEndsElsewhere, ...(mtu === undefined ? {} : { mtu }) };
    if (link.attached !== undefined) return { ...base, linked: true, attachRecorded: true };
    // No attach modes recorded: taken down by unlink, or up, recorded before the state kept them
    // (a device of the link's kind under one of its names, as releaseLinks tells them apart).
    if (seen.own.length === 0) return { ...base, linked: false, attachRecorded: false, clientAttach: null, providerAttach: null };
    const clientAttach = attachShown(devices.get(report.clientDevice));
    const providerAttach = attachShown(devices.get(report.providerDevice));
    return { ...base, linked: true, attachRecorded: false, clientAttach, providerAttach };
  });
}

/** `list`: every recorded link, with whether its devices exist. */
export async function listLinks(options: ListOptions): Promise<ListedLink[]> {
  return listed((await loadState(options.stateDir, options.stateDirSource)).links, options);
}

/** Why `vm` is no VM of the config dir (`dir`: the config dir itself is unusable, its error), or undefined. */
async function noVmReason(options: Pick<ShowOptions, 'configDir' | 'configDirSource'>, vm: VmName): Promise<{ reason: string; dir?: ConfigError } | undefined> {
  try {
    const reason = vmDirProblem(await readConfigVms(options.configDir, [vm], options.configDirSource), vm);
    return reason === undefined ? undefined : { reason };
  } catch (error) {
    if (error instanceof ConfigError) return { reason: error.message, dir: error };
    throw error;
  }
}

/**
 * `show <vm>`: the links of a VM, as client or as provider (also of one whose directory has gone).
 * A name that has no links and no VM directory is an error, most likely a typo.
 */
export async function showLinks(name: string, options: ShowOptions): Promise<ListedLink[]> {
  const vm = vmName(name);
  const links = linksOfVm(await loadState(options.stateDir, options.stateDirSource), vm);
  if (links.length === 0) {
    const none = await noVmReason(options, vm);
    const stateDir = shownOrigin('state dir', options.stateDir, options.stateDirSource);
    // The config dir unusable: its own message says what to check, and its kind sets the exit
    // code, as for every command that reads it (one named that does not exist: bad input).
    if (none?.dir !== undefined) throw new ConfigError(none.dir.kind, `show: no links recorded for ${vm} in ${stateDir} and ${none.reason}`);
    if (none !== undefined) {
      const configDir = shownOrigin('config dir', options.configDir, options.configDirSource);
      const check = `${pathCheck('the config dir', '--config-dir', CONFIG_DIR_ENV, options.configDirSource)} and ${pathCheck('the state dir', '--state-dir', STATE_DIR_ENV, options.stateDirSource)}`;
      throw new LinkerError('unknown-vm', `show: no VM ${vm} in ${configDir}: ${none.reason}; and no links recorded for it in ${stateDir}; check the name, ${check}`);
    }
  }
  return listed(links, options);
}

/**
 * `gc`: delete devices named with our prefix that no recorded link owns (e.g. after a crash). A
 * device of another kind under a recorded link's name stays: its id is owned, and that link's
 * `link` replaces it, its `unlink` deletes it (list and show say it is foreign).
 */
export async function collectGarbage(options: GcOptions): Promise<string[]> {
  // With no state file every device with the prefix looks unowned, those of working links too:
  // far more likely a wrong --state-dir (or a lost state) than a host with nothing linked.
  if (!hasStateFile(options.stateDir, options.stateDirSource)) {
    const { devicePrefix: prefix, stateDirSource: source } = options;
    const origin = source === undefined ? '' : ` (the state dir ${source.from === 'default' ? 'is the default' : pathOrigin(source)})`;
    throw new LinkerError(
      'no-state',
      `gc: no state file ${stateFilePath(options.stateDir)}${origin}, so no link is recorded and every ${prefix}b/${prefix}c/${prefix}p device would go, also those of working links; ` +
        `${stateDirFix(source, 'the state dir the links are recorded in')}. If the state is really lost and those devices are to go, write an empty state there first: {"version":1,"links":[]}`,
    );
  }
  return underStateLock(options, 'nothing was deleted', async () => {
    const state = await loadState(options.stateDir, options.stateDirSource);
    const owned = new Set<number>(state.links.map((link) => link.id));
    const devices = (await observeDevices([])).host;
    const orphans = [...devices.keys()].filter((device) => {
      const parsed = parseDeviceName(options.devicePrefix, device);
      return parsed !== undefined && !owned.has(parsed.id);
    });
    // Only what the kernel deleted: an orphan something else deleted meanwhile is not said to be (as unlink says only what it deleted).
    return (await removeDevices(orphans)).removed.map((device) => device.name);
  });
}

