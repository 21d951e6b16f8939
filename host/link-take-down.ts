// Taking links down: NICs detached from their VMMs, then their devices deleted, the state updated
// only once a probe finds it can be written (`unlink`, `gc`, and `link` taking down the links to
// providers its config no longer names: takeDownUnlisted); and what their lines say where a VMM
// refused, the kernel stopped it part-way, or the state could not record what went. Below the
// core (linker.ts), whose every run ends with such a take-down (finishRun), and below the mode
// switches (link-switch.ts), which probe the state dir as it does.
import { pathCheck, pathOrigin, shownOrigin } from '../shared/cli/option-source.js';
import { CliError } from '../shared/cli/run-cli.js';
import { linkDeviceNames, parseDeviceName } from './device-names.js';
import type { ObservedDevice } from './device-plan.js';
import type { LinkSide } from './kept-attach.js';
import { type ForeignDevice, expectedLinkDevices, linkDevicesSeen } from './link-device-kinds.js';
import { linksOfVm, seenOf, statesByClient } from './link-listing.js';
import { relinked } from './link-relinks.js';
import { type Link, type LinkState, StateError, forgetLink, linksToUnlisted, sameState, setAttachments } from './link-state.js';
import { LinkerError, reasonOf, underStateLock } from './linker-error.js';
import {
  BOTH_SIDES,
  DEFAULT_COMMANDS,
  type DetachedNic,
  type GcOptions,
  type LinkReport,
  type LinkerOptions,
  type LockWaitOptions,
  type PrintedCommands,
  type RecordedLinkReport,
  type ReleasedLinkReport,
  type StoppedRelease,
  type UnlinkOptions,
  type VmmDetachFailure,
  type VmmPort,
  type VmmTarget,
  VMM_NAMES,
  linkReport,
  vmmNics,
} from './linker-types.js';
import { DeviceError, observeDevices, removeDevices } from './netlink-devices.js';
import { gcUnrecordedDevicesRefusal, linkNamedDevices, loadLinkState, loadRunState, stateDirCheck, UNRECORDED_README } from './state-prefix.js';
import { STATE_DIR_ENV, StateStoreError, hasStateFile, probeStateWrite, saveState, stateDirAbsent, stateFilePath } from './state-store.js';
import type { VmName } from './vm-name.js';
import { vmName } from './vm-name.js';

/** A VMM's failure to detach a target's NIC, as said (with the socket it was asked at, where recorded). */
export function detachFailure(link: LinkReport, target: VmmTarget, error: unknown): VmmDetachFailure {
  return { link, vmm: target.kind, vm: target.vm, nic: target.nic.id, error: reasonOf(error), ...(target.socket === undefined ? {} : { socket: target.socket }) };
}

/** What taking down the links to providers no longer listed did. */
export interface UnlistedTakedown {
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
      error,
    );
  });
  return links.filter((link) => link.attached !== undefined || seenOf(link, present.host, options).own.length > 0);
}

/**
 * Take down each listed client's links to providers it no longer names (`listed`: each client's
 * providers now), as `unlink --force` does; as unlink, only once the state file is found
 * writable. The caller saves the state returned (finishRun), saying what went where it cannot be
 * written after. Under the caller's lock. Its failures are LinkerErrors 'unlisted-not-taken-down'
 * carrying what stopped it (`failure`): where that is a bug (an error of no kind), `link` says it as
 * one (exit 70), the line still saying what the take-down had done.
 */
export async function takeDownUnlisted(state: LinkState, listed: ReadonlyMap<VmName, readonly VmName[]>, options: LinkerOptions): Promise<UnlistedTakedown> {
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
      `linked, but taking down ${pairs} (no longer among the providers) was not begun: ${reasonOf(error)}; none was taken down (README: A provider dropped): run the same link again with that option fixed`,
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
      throw new LinkerError('unlisted-not-taken-down', `linked, but taking down ${pairs} (no longer among the providers) failed: ${reasonOf(error)}`, error);
    }
    const ids = new Set<number>(unlisted.map((link) => link.id));
    // As where it is done (below), of the client's other links: the same in the state as it is.
    const failures = await relinked(error.released.failures, state, ids, options);
    const stopped: StoppedRelease = { ...error.released, failures };
    throw new LinkerError(
      'unlisted-not-taken-down',
      `linked, but taking down ${stoppedLinksText(stopped)}, no longer among the providers, stopped part-way: ${error.message}; by then ${stoppedText(stopped)}; ` +
        'the state file still records them as linked (README: A provider dropped): run the same link again',
      error.failure,
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
  /** Told of each NIC asked out (`asked` so far, of `total`). */
  progress?: (asked: number, total: number) => void,
): Promise<void> {
  const total = progress === undefined ? 0 : reports.reduce((sum, report) => sum + vmmNics(report, undefined, sides).length, 0);
  let asked = 0;
  for (const report of reports) {
    // At the socket recorded for each NIC, where there is one (vmmNics): where it was attached.
    for (const target of vmmNics(report, undefined, sides)) {
      progress?.((asked += 1), total);
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

/** A device a removal deleted, with its kind as the kernel reported it (DeviceError.removed). */
type RemovedDevice = NonNullable<DeviceError['removed']>[number];

/** Of a removal of devices that failed (removeDevices), the devices it had deleted, where its error says them (DeviceError.removed). */
function removedBefore(error: unknown): readonly RemovedDevice[] | undefined {
  const { removed } = (error instanceof Error ? error : {}) as Partial<Pick<DeviceError, 'removed'>>;
  return removed;
}

/** Of a removal of devices that failed (removeDevices), the devices it found to delete, where its error says them (DeviceError.found). */
function foundBefore(error: unknown): readonly string[] | undefined {
  const { found } = (error instanceof Error ? error : {}) as Partial<Pick<DeviceError, 'found'>>;
  return found;
}

/**
 * Whether a take-down deleted (`deleted`) the tap of a NIC its VMM did not detach and its link's
 * bridge: then that NIC reaches nothing, and the line of such a VMM says its host side was removed
 * (README "A VMM that does not detach"; where a take-down stopped part-way, only such VMMs get it).
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
    const nics = detached.map(({ nic, vmm, vm }) => `NIC ${nic} out of the ${VMM_NAMES[vmm]} of ${vm}`);
    const vms = [...new Set(detached.map(({ vm }) => vm))];
    parts.push(`it had taken ${inWords(nics)} (${inWords(vms)} no longer ${vms.length === 1 ? 'has' : 'have'} ${detached.length === 1 ? 'it' : 'them'})`);
  }
  if (failures.length > 0) {
    const kept = failures.map(({ nic, vmm, vm, error }) => `NIC ${nic}, which the ${VMM_NAMES[vmm]} of ${vm} did not detach (${error})`);
    parts.push(`${detached.length > 0 ? 'but not' : 'it had not taken out'} ${inWords(kept)}`);
  }
  if (devices) parts.push(devicesText(stopped));
  return parts.join('; ');
}

/**
 * Of a link of a take-down that stopped part-way, the devices that may still exist: those of its
 * names not deleted that existed when their removal began (StoppedRelease.existed; each, where
 * that is unknown), not one gone before (a link already down); undefined where what it deleted is unknown.
 */
export function devicesLeft(report: LinkReport, { deleted, existed }: StoppedRelease): string[] | undefined {
  if (deleted === undefined) return undefined;
  return [report.clientDevice, report.providerDevice, report.bridge].filter((name) => !deleted.includes(name) && (existed === undefined || existed.includes(name)));
}

/** What a take-down that stopped part-way had deleted of its links' devices, and what may still exist. */
function devicesText(stopped: StoppedRelease): string {
  const { reports, deleted } = stopped;
  const names = reports.flatMap((report) => [report.clientDevice, report.providerDevice, report.bridge]);
  if (deleted === undefined) return `whether it had deleted any of their devices (${names.join(' ')}) is unknown`;
  if (deleted.length === 0) return 'it had deleted no device of theirs';
  const left = reports.flatMap((report) => devicesLeft(report, stopped) ?? []);
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
  // Of what went (`removed`), the devices of other kinds than each link makes under its names:
  // said (unlink, also of a link wholly taken down before it stopped part-way).
  const released = (removed: readonly RemovedDevice[]): ReleasedLinkReport[] => {
    const gone = new Map(removed.map((device) => [device.name, device]));
    const foreignOf = (link: Link): readonly ForeignDevice[] => linkDevicesSeen(expectedLinkDevices(linkDeviceNames(options.devicePrefix, link.id), link.attached), gone).foreign;
    return taken.map(({ link, report }) => ({ ...report, foreignDeleted: foreignOf(link) }));
  };
  // What it has done so far, said where it stops part-way (stoppedPartWay).
  const done = { detached: [] as DetachedNic[], failures: [] as VmmDetachFailure[] };
  // Stopped before the removal's lookup found them (a VMM's refusal, the lookup refused): of a link
  // recorded without attach modes, only the devices seen under its names (`host`) may exist (none,
  // for one taken down before); of another, each.
  const mayExist = taken.flatMap(({ link }) => namesOf(link).filter((name) => link.attached !== undefined || host.has(name)));
  const told = options.onTakeDownProgress;
  const nicAsked = told === undefined ? undefined : (asked: number, total: number): void => told({ phase: 'detach', done: asked, total, links: reports.length });
  await detachFromVmms(reports, options.vmm, release.force === true, release.refused ?? ((error) => error), done, BOTH_SIDES, nicAsked).catch((error: unknown) => {
    throw stoppedPartWay(error, { reports: released([]), ...done, deleted: [], existed: mayExist });
  });
  told?.({ phase: 'delete', devices: reports.flatMap(devicesOf).length, links: reports.length });
  const removal = await removeDevices(reports.flatMap(devicesOf)).catch((error: unknown) => {
    const removed = removedBefore(error);
    throw stoppedPartWay(error, { reports: released(removed ?? []), ...done, deleted: removed?.map((device) => device.name), existed: foundBefore(error) ?? mayExist });
  });
  return { reports: released(removal.removed), failures: done.failures };
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
export async function stateWriteProblem(stateDir: string): Promise<StateStoreError | undefined> {
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
  const kept = failures.map((failure) => `NIC ${failure.nic}, which the ${VMM_NAMES[failure.vmm]} of ${failure.vm} did not detach (${failure.error})`).join(', ');
  const detached = nics === 0 ? '' : kept === '' ? ', their NICs detached from their VMMs (where these run)' : `, their NICs detached from their VMMs (where these run) but for ${kept}`;
  return `${links}: their devices deleted${detached}`;
}

/**
 * The error of links taken down whose new state could not be saved (`error`, the store's): it says
 * what went, that the file still records them as linked (or, where only the sync of the state dir
 * failed, may do so again after a crash), and to run `again`, which finds them gone and records it.
 */
export function notRecorded(said: string, reports: readonly LinkReport[], failures: readonly VmmDetachFailure[], error: unknown, again: string, idsKept = false, wereLinked = true): unknown {
  if (!(error instanceof StateStoreError)) return error;
  if (!wereLinked) {
    // Only --forget changed the state: nothing was up to take down. Once the file is renamed the
    // ids are released (recorded so), only the dir's sync failed: another run finds no record.
    if (error.kind === 'sync-failed') {
      return new LinkerError('taken-down-not-recorded', `${said}its links were unlinked already, and their ids are released: ${error.message}: should a crash bring back their records, ${again}`, error);
    }
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
    `unlink ${vm}: ${reasonOf(error)}; so no host device was deleted and ${vm}'s links stay recorded (README: A VMM that does not detach): to delete them anyway, run ${command}`,
  );
}

/**
 * The failure of an unlink whose take-down stopped part-way (releaseLinks' 'take-down-stopped'),
 * saying what it had done and that the state file is as it was (it writes nothing: the same
 * unlink again, as `commands` says it, finds every link as recorded and takes down what is left).
 * A VMM's refusal without force (detachStopped) after other NICs had come out stays that refusal,
 * what came out said after it. The kernel's refusal before anything went (a listing or lookup of
 * their devices) is said as such, `unlink <vm>:` first as every line of an unlink's failure, and
 * so is a VMM side's usage error before any NIC came out (its exit code kept); a bug (an error of
 * no kind) is thrown as it is.
 */
function unlinkStopped(vm: VmName, flags: UnlinkFlags, error: unknown, commands: PrintedCommands = DEFAULT_COMMANDS): unknown {
  if (!(error instanceof LinkerError && error.kind === 'take-down-stopped' && error.released !== undefined)) {
    const nothing = 'so nothing was taken down (no NIC detached, no device deleted), the state file as it was';
    // Its own kinds say `unlink <vm>:` already (detachStopped); a usage error of a VMM side
    // (detachStopped leaves it as it is), before any NIC came out, keeps its exit code.
    if (error instanceof CliError) return new CliError(`unlink ${vm}: ${error.message}; ${nothing}`, error.exitCode, error.details, error.detailsAs, error.bugSaid);
    if (error instanceof LinkerError || !(error instanceof Error) || typeof (error as { kind?: unknown }).kind !== 'string') return error;
    return new LinkerError('take-down-refused', `unlink ${vm}: ${error.message}; ${nothing}`, error);
  }
  const { failure, released } = error;
  if (failure instanceof LinkerError && failure.kind === 'vmm-detach-failed') {
    return new LinkerError('vmm-detach-failed', `${failure.message}; before that refusal, ${stoppedText(released, false)}`, failure.failure, [], new Map(), undefined, released);
  }
  // A usage error (a socket path that cannot be) keeps its exit code.
  if (failure instanceof CliError) return new CliError(`unlink ${vm}: ${failure.message}; before it, ${stoppedText(released, false)}`, failure.exitCode);
  const again = commands.unlink(vm, [...(flags.forget ? ['--forget'] : []), ...(flags.force ? ['--force'] : [])]);
  const ids = flags.forget ? ', their ids not released' : '';
  return new LinkerError(
    'take-down-stopped',
    `unlink ${vm}: taking down ${stoppedLinksText(released)} stopped part-way: ${error.message}; by then ${stoppedText(released)}; ` +
      `the state file is as it was${ids} (README: An unlink stopped part-way): run ${again} again`,
    failure,
    [],
    new Map(),
    undefined,
    released,
  );
}

/** The failures of the state file and of the state lock, which a command's line says as they are, its own start (`unlink <vm>:`, `gc:`) first. */
const STATE_FILE_OR_LOCK: ReadonlySet<string> = new Set(['read-failed', 'too-large', 'lock-failed', 'lock-timeout']);

/**
 * underStateLock for `unlink` and `gc`, whose failures of the state file (unreadable, too large,
 * corrupt: a StateStoreError or StateError) and of the lock (refused, its wait ended) start with
 * `said` (`unlink <vm>`, `gc`), as every other line of a failure of theirs does (their kinds, so
 * their exit codes, kept); `link`, which says them in its own lines, reads the state as it does.
 * A state dir that cannot be used (not a directory, a symlink to nothing) is said as every command
 * says it.
 */
function underCommandLock<T>(said: string, options: LockWaitOptions, nothing: string, fn: () => Promise<T>): Promise<T> {
  return underStateLock(options, nothing, fn).catch((error: unknown) => {
    if (error instanceof StateStoreError && STATE_FILE_OR_LOCK.has(error.kind)) throw new StateStoreError(error.kind, `${said}: ${error.message}`, error.code);
    if (error instanceof StateError) throw new StateError(error.kind, `${said}: ${error.message}`);
    throw error;
  });
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
  return underCommandLock(`unlink ${vm}`, options, 'nothing was taken down', async () => {
    const state = await loadLinkState(options);
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
    // From here on NICs are asked out and devices deleted (a signal may leave it partly done).
    options.onTakeDownBegun?.();
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
 * `gc`: delete devices named with our prefix that no recorded link owns (e.g. after a crash). A
 * device of another kind under a recorded link's name stays: its id is owned, and that link's
 * `link` replaces it, its `unlink` deletes it (list and show say it is foreign). A state that
 * claims no prefix (claimsDevicePrefix: a file recording no link and no prefix, written by hand
 * or by an older spectrum-link) owns none of them: where any exists, gc deletes nothing and
 * refuses it as `link` into it is refused (gcUnrecordedDevicesRefusal), as it refuses no state file
 * where any exists ('no-state': noStateFile), that is, where there is none under the lock either.
 */
export async function collectGarbage(options: GcOptions): Promise<string[]> {
  // With no state file every device with the prefix looks unowned, those of working links too:
  // where any exists, far more likely a wrong --state-dir (or a lost state) than a host with
  // nothing linked. Where none does (a fresh host: the default state dir not made yet), there is
  // nothing any state dir's gc would delete here: nothing to collect, as of a state file that
  // claims no prefix, without the lock (which would make the dir).
  if (!hasStateFile(options.stateDir, options.stateDirSource)) {
    // No lock to wait for: signals are as where it is held (the CLI stops taking them over).
    options.onLockHeld?.();
    const listed = await observeDevices([]).catch((error: unknown) => {
      throw gcStopped(error);
    });
    if (linkNamedDevices(listed.host.keys(), options.devicePrefix).length === 0) return [];
    // Those devices may be a first `link`'s into this state dir: it made the dir and took its lock
    // before it made them, and writes the state file after (or wrote it since the look above).
    // Where the dir is there, the state file is looked for again under its lock (no dir made), the
    // link done by then; where it is not, no link into it made them.
    if (stateDirAbsent(options.stateDir)) throw noStateFile(options);
    // A wait for the lock after all: a signal stops it as any other run's wait (not said as under the lock).
    options.onLockWaitBegun?.();
    return underCommandLock('gc', options, 'nothing was deleted', async () => {
      if (hasStateFile(options.stateDir, options.stateDirSource)) return collectUnderLock(options);
      // Still none: that link may have failed and undone its devices meanwhile (a first link's
      // undo writes no state file); refused only where such devices are still there.
      const now = await observeDevices([]).catch((error: unknown) => {
        throw gcStopped(error);
      });
      if (linkNamedDevices(now.host.keys(), options.devicePrefix).length === 0) return [];
      throw noStateFile(options);
    });
  }
  return underCommandLock('gc', options, 'nothing was deleted', async () => collectUnderLock(options));
}

/** gc's refusal of a state dir with no state file where devices are named as links with its prefix. */
function noStateFile(options: GcOptions): LinkerError {
  const { devicePrefix: prefix, stateDirSource: source } = options;
  const origin = source === undefined ? '' : ` (the state dir ${source.from === 'default' ? 'is the default' : pathOrigin(source)})`;
  return new LinkerError(
    'no-state',
    `gc: no state file ${stateFilePath(options.stateDir)}${origin}, so every ${prefix}b/${prefix}c/${prefix}p device would go: nothing deleted; ${stateDirCheck(source)} (${UNRECORDED_README})`,
  );
}

/** gc with the state lock held and a state file there: delete the devices no recorded link owns. */
async function collectUnderLock(options: GcOptions): Promise<string[]> {
  const { state, claimsPrefix } = await loadRunState(options);
  const owned = new Set<number>(state.links.map((link) => link.id));
  const devices = (
    await observeDevices([]).catch((error: unknown) => {
      throw gcStopped(error);
    })
  ).host;
  const orphans = [...devices.keys()].filter((device) => {
    const parsed = parseDeviceName(options.devicePrefix, device);
    return parsed !== undefined && !owned.has(parsed.id);
  });
  // Every one of them would go, another state dir's live links as likely as leftovers.
  if (!claimsPrefix && orphans.length > 0) throw gcUnrecordedDevicesRefusal(options, linkNamedDevices(orphans, options.devicePrefix));
  // Only what the kernel deleted: an orphan something else deleted meanwhile is not said to be (as unlink says only what it deleted).
  if (orphans.length > 0) options.onTakeDownBegun?.();
  const removal = await removeDevices(orphans).catch((error: unknown) => {
    throw gcStopped(error, orphans);
  });
  return removal.removed.map((device) => device.name);
}

/** Of a gc that failed (`error`), the devices it had deleted by then (none too) and those it found to delete but did not (undefined where that is unknown): where the kernel stopped its removal (gcStopped). */
export function gcStoppedDevices(error: unknown): { readonly removed: readonly string[]; readonly left: readonly string[] | undefined } | undefined {
  const failure = error instanceof LinkerError && error.kind === 'gc-stopped' ? error.failure : undefined;
  const removed = removedBefore(failure)?.map((device) => device.name);
  if (removed === undefined) return undefined;
  return { removed, left: foundBefore(failure)?.filter((name) => !removed.includes(name)) };
}

/**
 * The failure of a gc that the kernel stopped (`error`, a DeviceError: of its listing, or of its
 * removal of `orphans`, removeDevices'), its line starting `gc:` as its others do (a LinkerError
 * 'gc-stopped'). Of a deletion refused, it says the devices it had deleted by then (none too) and
 * those that may still exist; a lookup refused says already that none went (all of `orphans` may
 * still exist). Anything else (a bug) is thrown as it is.
 */
function gcStopped(error: unknown, orphans?: readonly string[]): unknown {
  if (!(error instanceof DeviceError)) return error;
  const { removed, found } = error;
  if (orphans === undefined || removed === undefined) return new LinkerError('gc-stopped', `gc: ${error.message}`, error);
  const failure = new DeviceError(error.kind, error.message, removed, found ?? (removed.length === 0 ? orphans : undefined));
  if (found === undefined) return new LinkerError('gc-stopped', `gc: ${error.message}`, failure);
  const deleted = removed.map((device) => device.name);
  const left = found.filter((name) => !deleted.includes(name));
  const mayExist = left.length === 0 ? '' : ` (${left.join(' ')} may still exist)`;
  return new LinkerError('gc-stopped', `gc: ${error.message}; by then it had deleted ${deleted.length === 0 ? 'nothing' : deleted.join(' ')}${mayExist}: gc again deletes what is left`, failure);
}
