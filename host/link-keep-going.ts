// `link --keep-going` (as `make -k`): a VM that fails is undone alone while the others are linked.
// One transaction makes every VM's ids and devices with no VMM asked, then NICs are hot-plugged
// VM by VM; where that transaction fails, the VMs are linked again one by one from the state as it
// is then. Also how a failed VM, a signal or a state failure is carried to the run's end and said.
// On top of the core (linker.ts), whose transaction, checks and end (finishRun) it reuses.
import { readConfigVms } from './config-reader.js';
import { type ConfigSnapshot, partitionValidVms } from './config.js';
import { isLinkBug } from './exit-codes.js';
import { type KeptAttach, ambiguousAttach, keptAttach } from './kept-attach.js';
import { leftAsTheyAre } from './link-listing.js';
import { type Link, type LinkState, StateError, allocateMany, emptyState, sameState } from './link-state.js';
import { type SwitchedSide, assertStateWritableForTakeOut, assertSwitchedInputUsable, switchedSides, takeBackSwitched } from './link-switch.js';
import { LinkerError, isInterruption, reasonOf, stopIfInterrupted } from './linker-error.js';
import {
  type AllVms,
  type FailedVm,
  type KeepGoingOutcome,
  type KeepGoingStop,
  type LeftDownLink,
  type LinkReport,
  type LinkerOptions,
  type RunDevices,
  type TransactionBugs,
  type UndoCutShort,
  type UndoStateWriteFailure,
  type UndoStepFailure,
  type VmmDetachFailure,
  type VmmKind,
  type VmmPort,
  type WholeConfigDir,
  keyOf,
  linkDevicesOf,
  newRunDevices,
  vmmNics,
} from './linker-types.js';
import {
  type LinkTransaction,
  type NicCount,
  type RunVms,
  type TransactionMode,
  assertLinksUsable,
  attachToVmms,
  devicesLeft,
  finishRun,
  isStateFailure,
  linkTransaction,
  linksByPair,
  linksLeftDown,
  listRunDevices,
  namespaceLeft,
  pairOf,
  pairsOf,
  readAllVms,
  recordedMeanwhile,
  restoreMtus,
  runKeptAttach,
  runSocketSharing,
  takenBackLeftDown,
  underLinkLock,
  undoneState,
  writeBack,
} from './linker.js';
import { deleteNamespaces, undoDevices } from './netlink-devices.js';
import { assertNetnsPrefixUsable, assertNoUnrecordedDevices, loadLinkRunState } from './state-prefix.js';
import { assertRunNamespacesLast } from './netns-lasting.js';
import { StateStoreError, stateDirAbsent } from './state-store.js';
import type { VmName } from './vm-name.js';
import { vmName } from './vm-name.js';

/** The VM namespaces a link's netns sides live in (`<netnsPrefix><vm>`). */
const linkNamespacesOf = (report: LinkReport, netnsPrefix: string): string[] => [
  ...(report.clientAttach === 'netns' ? [`${netnsPrefix}${report.vm}`] : []),
  ...(report.providerAttach === 'netns' ? [`${netnsPrefix}${report.provider}`] : []),
];

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
 * also carries the VMs linked again one by one before it, LinkerError.linked, to be printed (as
 * does a bug that stops the run, also those whose NICs were hot-plugged before it), and
 * with `--all` what it leaves as it is in the config dir, LinkerError.leftAsItIs, to be said; and
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
    socketKey: (path) => options.vmm.socketKey?.(path) ?? path,
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
  // Its first links, recorded in a state that claims no device prefix: devices named as links with
  // the run's (another state dir's) refuse the whole run before the lock makes the dir (and again under it).
  if (early !== undefined) await assertNoUnrecordedDevices(options);
  // VM namespaces to add where they would not outlive the run: the whole run refused before the lock makes the dir (and again under it).
  if (early !== undefined) {
    const valid = partitionValidVms(early.snapshot, early.vms.vms).valid;
    assertRunNamespacesLast(valid.flatMap((vm) => pairsOf(early.snapshot, vm)), await runKeptAttach(valid, early.snapshot, emptyState(), options), options.netnsPrefix);
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
      // Stopped by a state failure after VMs were linked again one by one (or by a bug after VMs
      // were linked VM by VM): those stay linked.
      if (error instanceof LinkerError) linked = error.linked;
      throw error;
    } finally {
      if (undetached.length > 0) options.onUndoDetachFailed?.(undetached);
      for (const failure of stepsStillLeft(steps, linked, options.netnsPrefix)) options.onUndoStepFailed?.(failure);
    }
  }).catch(async (error: unknown) => {
    // The lock not taken (its dir could not be made, say; or a signal came while another run held
    // it): the VMs whose config was read before it and that fail their checks are said with that
    // failure, as with one under the lock, or with the signal, as with one in the transaction.
    if (locked || early === undefined) throw error;
    if (isStateFailure(error)) {
      // No state dir: nothing recorded, so nothing of the config dir is left as it is with links.
      const left = await leftAsItIsOf(early.vms, emptyState(), options);
      throw stateFailedAfter(error, early.vms.vms, failingChecks(early.vms.vms, early.snapshot, options), new Map(), left);
    }
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
export function stepsStillLeft(failures: readonly UndoStepFailure[], linked: ReadonlyMap<VmName, readonly LinkReport[]>, netnsPrefix: string): UndoStepFailure[] {
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
    // The MTU not put back on devices of a link the run linked at last is that link's now; the
    // other links of the line (another VM's, failed again) keep it, as their records do not.
    if (failure.step === 'mtu') {
      const still = failure.left.filter(({ link }) => !linked.has(vmName(link.vm)));
      if (still.length > 0) left.push({ ...failure, left: still });
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
 * The state failure that stops a `link --keep-going` run (the state is every VM's), or the bug
 * (an error of no kind: said as one, `internal error:`, exit 70), with the VMs
 * that had failed before it, so that their failures are said with it (as interruptedAfter), those
 * it had linked VM by VM (`linked`: linked again one by one; where a bug stops it, hot-plugged
 * too), so that they are printed, and, where it had read the
 * config dir whole (`link --all`), what it leaves as it is there (`left`), so that it is said as
 * where the run ends well; as thrown where there is none of these.
 */
function stateFailedAfter(
  error: unknown,
  vms: readonly VmName[],
  failures: ReadonlyMap<VmName, unknown>,
  linked: ReadonlyMap<VmName, readonly LinkReport[]> = new Map(),
  left?: LinkerError['leftAsItIs'],
  stopped: KeepGoingStop = {},
): unknown {
  if (failures.size === 0 && linked.size === 0 && left === undefined && stopped.transactionBug === undefined && stopped.transactionUndoBug === undefined && stopped.cutShort === undefined) return error;
  const linkedInOrder = new Map(vms.flatMap((vm): [VmName, readonly LinkReport[]][] => (linked.has(vm) ? [[vm, linked.get(vm) ?? []]] : [])));
  return new LinkerError('state-failed', reasonOf(error), error, failedInOrder(vms, failures), linkedInOrder, undefined, undefined, left, stopped);
}

/**
 * The bug (an error of no kind) that the one transaction of several VMs (`vms`) failed by
 * (`failure`), which had them linked again one by one, where none of them failed by it there
 * (`failures`: none by a bug of its message, which that VM's line says; a VM failed before the
 * transaction, none of its, is no such one): to be said all the same, none of one VM's; else
 * undefined (no bug, or said). `stoppedBy`: the bug that stopped the run, said as it is.
 */
function unsaidTransactionBug(failure: unknown, vms: readonly VmName[], failures: ReadonlyMap<VmName, unknown>, stoppedBy?: unknown): unknown {
  return unsaidBug(failure, [...vms.map((vm) => failures.get(vm)), stoppedBy]);
}

/** `bug` where it is one (an error of no kind) that none of `said` is a bug of its message (which says it), else undefined. */
function unsaidBug(bug: unknown, said: readonly unknown[]): unknown {
  if (bug === undefined || !isLinkBug(bug)) return undefined;
  return said.some((error) => error !== undefined && isLinkBug(error) && reasonOf(error) === reasonOf(bug)) ? undefined : bug;
}

/**
 * The bugs of the one transaction of several VMs to be said all the same (TransactionBugs): the
 * one it failed by (unsaidTransactionBug), and the one that cut its undo short, where the bug that
 * stopped the run (`stoppedBy`) is not of its message; only those there are.
 */
function transactionBugsOf(soFar: Pick<PassesSoFar, 'failures' | 'transactionVms' | 'transactionFailure' | 'transactionUndoBug'>, stoppedBy?: unknown): TransactionBugs {
  const transactionBug = unsaidTransactionBug(soFar.transactionFailure, soFar.transactionVms ?? [], soFar.failures, stoppedBy);
  const transactionUndoBug = unsaidBug(soFar.transactionUndoBug, [stoppedBy]);
  return { ...(transactionBug !== undefined && { transactionBug }), ...(transactionUndoBug !== undefined && { transactionUndoBug }) };
}

/**
 * What a `link --all --keep-going` run that a state failure stopped leaves as it is in the config
 * dir it read whole (`run`: its VMs and that dir; none where it read VMs named): the misnamed
 * directories (of the dir), and the gone clients and unusable entries with their links as `state`
 * records them (those clients are none of the run's: the state as read tells them); none of these
 * two where the state could not be read (`state` undefined).
 */
async function leftAsItIsOf(run: RunVms, state: LinkState | undefined, options: LinkerOptions): Promise<LinkerError['leftAsItIs']> {
  const { wholeDir } = run;
  if (wholeDir === undefined) return undefined;
  const { orphaned, unusable } = state === undefined ? { orphaned: [], unusable: [] } : await leftAsTheyAre(state, wholeDir.snapshot, options);
  return { all: { vms: run.vms, wholeDir }, orphaned, unusable };
}

/** What keepGoing's passes had done when a state failure (or a bug) stopped them, for that failure to carry (stateFailedAfter). */
interface PassesSoFar {
  /** The VMs failed so far, each with why. */
  readonly failures: Map<VmName, unknown>;
  /**
   * The VMs linked so far VM by VM: their NICs hot-plugged (attachVmByVm), or linked again one by
   * one (linkOneByOne). They stay linked.
   */
  readonly linked: Map<VmName, LinkReport[]>;
  /** The state as the passes read it, once read. */
  before?: LinkState;
  /** Why the one transaction of several VMs failed, once it has (the VMs then linked again one by one), and its VMs. */
  transactionFailure?: unknown;
  transactionVms?: readonly VmName[];
  /** The bug that cut short that transaction's undo, where one did (the VMs linked again one by one all the same). */
  transactionUndoBug?: unknown;
  /** Where a bug cut short an undo of a pass VM by VM (thrown, stopping the run): what that leaves. */
  cutShort?: UndoCutShort;
}

/** linkVmsKeepGoing under the state lock; `snapshot`: the config of its VMs as read. */
async function keepGoing(vms: readonly VmName[], options: LinkerOptions, snapshot: ConfigSnapshot, wholeDir?: WholeConfigDir): Promise<KeepGoingOutcome> {
  const soFar: PassesSoFar = { failures: new Map(), linked: new Map() };
  try {
    return await keepGoingPasses(vms, options, snapshot, soFar, wholeDir);
  } catch (error) {
    // A bug stops the run where it is too: what the passes had done by then is said with it, as with a state failure.
    if (!isStateFailure(error) && !isLinkBug(error)) throw error;
    // A bug the one transaction failed by, that no VM failed by since (the pass one by one stopped before the VM, maybe), is said too.
    // So is the bug that cut that transaction's undo short, where it is not the one that stops the run.
    const stopped = { ...transactionBugsOf(soFar, isLinkBug(error) ? error : undefined), ...(soFar.cutShort && { cutShort: soFar.cutShort }) };
    throw stateFailedAfter(error, vms, soFar.failures, soFar.linked, await leftAsItIsOf({ vms, wholeDir }, soFar.before, options), stopped);
  }
}

/** keepGoing's passes; `soFar`: what they did so far (for a state failure to carry). */
async function keepGoingPasses(vms: readonly VmName[], options: LinkerOptions, snapshot: ConfigSnapshot, soFar: PassesSoFar, wholeDir?: WholeConfigDir): Promise<KeepGoingOutcome> {
  const { failures } = soFar;
  const partition = partitionValidVms(snapshot, vms);
  for (const { name, error } of partition.invalid) failures.set(name, error);
  const { state: before, claimsPrefix, netnsRefusal } = await loadLinkRunState(options);
  soFar.before = before;
  // The links (client, provider) of its valid VMs, as their config names them: the checks below take them.
  const pairs = partition.valid.flatMap((vm) => pairsOf(snapshot, vm));
  // Links to record in a state that claims no device prefix: not over devices named as links with
  // the run's; the whole run refused, nothing made (the state dir, or the prefix, is not theirs).
  if (!claimsPrefix && pairs.length > 0) await assertNoUnrecordedDevices(options);
  // The modes it keeps, checked as it links each VM (no check up front: a VM whose mode cannot be,
  // kept or chosen, fails alone).
  const kept = await runKeptAttach(partition.valid, snapshot, before, options);
  // Another netns prefix than the state records: the whole run refused where a link of it would use it.
  assertNetnsPrefixUsable(netnsRefusal, pairs, kept);
  // VM namespaces to add where they would not outlive the run (under ip netns exec): the whole run refused.
  assertRunNamespacesLast(pairs, kept, options.netnsPrefix);
  // A VM at a VMM socket path an earlier VM of the run has (a template without {vm}), or the state records for another VM's side, fails alone.
  for (const [vm, error] of runSocketSharing(partition.valid, snapshot, kept, options, before)) failures.set(vm, error);
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
  // (Each link's MTU, without --mtu, as the state records it: a lookup made once.)
  const recorded = options.mtu === undefined && switched.length > 0 ? linksByPair(before) : undefined;
  for (const vm of partition.valid) {
    const own = switchedOf.get(vm) ?? [];
    if (own.length === 0) continue;
    try {
      assertLinksUsable(vm, snapshot, kept, options, recorded);
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
  // Whether its undo, where it failed, went on to its end, and what it undid it for.
  let transactionUndone = false;
  let undoneFor: unknown;
  try {
    devicesMade = await linkTransaction(valid, options, snapshot, before, made, {
      attachModes: kept,
      attach: false,
      leftDown: (links) => void leftDown.push(...links),
      undoWriteFailed: (failure) => void (undoWrite = failure),
      failing: (error) => void (undoneFor = error),
      undone: () => void (transactionUndone = true),
    });
  } catch (error) {
    // A run of one VM whose undo a bug cut short (thrown instead): stopped, as in the pass one by
    // one, its failure said all the same (not a signal's, nor the state's: the run's), and that
    // what the run made for it may be left over. So too a run of several that a signal or a state
    // failure failed, which stop the whole run (below), the undo of all of them cut short. (Of
    // several VMs failed otherwise, the pass one by one goes on from the state file as the undo
    // left it, and undoes a VM that fails there: below.)
    const undoneForWhole = isInterruption(undoneFor) || undoneFor instanceof StateStoreError;
    if (!transactionUndone && (valid.length === 1 || undoneForWhole)) {
      if (valid.length === 1 && undoneFor !== undefined && !undoneForWhole) failures.set(valid[0] as VmName, undoneFor);
      soFar.cutShort = { undoing: valid, notLinked: [], madeForNotLinked: false };
      throw error;
    }
    // Undone already (no NIC was hot-plugged). Nothing one VM could be spared: the state is every VM's.
    const whole = isInterruption(error) || error instanceof StateStoreError;
    if ((whole || valid.length === 1) && leftDown.length > 0) options.onLeftDown?.(leftDown);
    if (whole || valid.length === 1) sayUndoWrite(new Map());
    if (whole) throw isInterruption(error) ? interruptedAfter(error, vms, failures) : error;
    if (valid.length === 1) failures.set(valid[0] as VmName, error);
    // A bug too (an error of no kind, of no one VM in a transaction of several): the VMs linked
    // again one by one, a VM that fails by it failing alone; where none does, it is said all the
    // same (unsaidTransactionBug), not lost. Where a bug cut its undo short (thrown instead), what
    // had it link VM by VM is the failure it undid, and that bug, none of one VM's, is said too.
    transactionFailure = transactionUndone ? error : (undoneFor ?? error);
    soFar.transactionFailure = transactionFailure;
    soFar.transactionVms = valid;
    if (!transactionUndone) soFar.transactionUndoBug = error;
  }
  let pass: KeepGoingPass;
  // The VMs it hot-plugs, as it goes: also where a bug stops it (in a VM's undo, say), those it
  // had linked by then stay linked, and come with the bug, to be printed (keepGoing).
  if (devicesMade !== undefined) pass = await attachVmByVm(valid, devicesMade, before, made, options, soFar);
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
    // those it had come with that failure, to be printed (keepGoing).
    const linkedNow = soFar.linked;
    const sayUnsaid = (): void => {
      const unsaid = leftDown.filter((link) => !linkedNow.has(vmName(link.vm)) && !said.has(keyOf(link)));
      if (unsaid.length > 0) options.onLeftDown?.(unsaid);
    };
    try {
      pass = await linkOneByOne(valid, { ...options, onLeftDown: tell }, snapshot, (await loadLinkRunState(options)).state, made, kept, soFar);
    } catch (error) {
      sayUnsaid();
      sayUndoWrite(linkedNow);
      throw error;
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
    // (Why it linked VM by VM said so; the bug that cut the transaction's undo short said too.)
    const { transactionUndoBug } = transactionBugsOf(soFar);
    return { linked: linkedInOrder, unlinked: new Map(), orphaned: [], unusable: [], vmmFailures: [], ambiguousAttach: ambiguous, failed, interrupted: said, ...(transactionUndoBug !== undefined && { transactionUndoBug }) };
  }
  // Where the take-down fails, the VMs linked stay linked and those failed stay failed: they come
  // with its failure, to be said as where the run ends well (finishRun); so do the bugs of the one
  // transaction that no VM failed by.
  return finishRun({ state, linked: linkedInOrder, providers, failed, ambiguousAttach: ambiguous, transactionBugs: transactionBugsOf(soFar) }, { vms, wholeDir }, options, true);
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
  /** The VMs failed and linked, filled as it goes (a bug that stops the pass leaves them as far as it got, and where it cut an undo short, what that leaves). */
  soFar: PassesSoFar,
): Promise<KeepGoingPass> {
  const { failures, linked } = soFar;
  let { state } = run;
  // An undo that a bug cuts short (VMs `undoing`) stops the pass there: the VMs after them were
  // neither linked nor undone, their devices and ids left as the one transaction made them.
  const undoOrStop = async (undoing: readonly VmName[], notLinked: readonly VmName[]): Promise<LinkState> => {
    try {
      return await undoVms(undoing, run, state, before, made, options);
    } catch (error) {
      soFar.cutShort = { undoing, notLinked, madeForNotLinked: true };
      throw error;
    }
  };
  const providers = new Map<VmName, readonly VmName[]>();
  const nicsOf = (vm: VmName): number => (run.linked.get(vm) ?? []).flatMap((report) => vmmNics(report)).length;
  const count: NicCount = { done: 0, failed: 0, total: vms.reduce((total, vm) => total + nicsOf(vm), 0) };
  for (const [index, vm] of vms.entries()) {
    const reports = run.linked.get(vm) ?? [];
    const triedBefore = count.done;
    try {
      // On failure it takes back the NICs it added for this VM.
      await attachToVmms(reports, options, count);
      linked.set(vm, reports);
      providers.set(vm, run.providers.get(vm) ?? []);
    } catch (error) {
      if (isInterruption(error)) {
        state = await undoOrStop(vms.slice(index), []);
        return { state, linked, providers, interrupted: { during: 'attach', undone: vm, notLinked: vms.slice(index + 1) } };
      }
      // Failed before its undo: where a bug cuts that short (stopping the run), it is said all the same.
      failures.set(vm, error);
      // Its NICs are tried, none hot-plugged (those that were are taken back): the progress line
      // moves on a failure as on a success, and says the undo it waits for (seconds, where the
      // VMMs are not up yet: devices deleted, the state written back, for each VM).
      count.done = triedBefore + nicsOf(vm);
      count.failed = (count.failed ?? 0) + nicsOf(vm);
      options.progress?.({ phase: 'vmm', done: count.done, total: count.total, failed: count.failed, undoing: vm });
      state = await undoOrStop([vm], vms.slice(index + 1));
      options.progress?.({ phase: 'vmm', done: count.done, total: count.total, failed: count.failed });
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
  // The MTU the run changed on its devices that were there before goes back too (restoreMtus).
  await restoreMtus(reports, made, options);
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
 * VM from the state the last one left; a VM that fails is undone alone and added to `failures`
 * (a bug in its undo, which leaves the state unknown, stops the pass: thrown).
 * A signal stops it before the next VM, or undoes the VM in progress at its next safe point.
 */
async function linkOneByOne(
  vms: readonly VmName[],
  options: LinkerOptions,
  snapshot: ConfigSnapshot,
  before: LinkState,
  made: RunDevices,
  attachModes: KeptAttach,
  /** The VMs failed and linked, filled as it goes (a failure that stops the pass leaves them as far as it got, and where a bug cut an undo short, what that leaves). */
  soFar: PassesSoFar,
): Promise<KeepGoingPass> {
  const { failures, linked } = soFar;
  const { progress, onLeftDown, ...quiet } = options;
  let state = before;
  const providers = new Map<VmName, readonly VmName[]>();
  const undoWrite = options.onUndoStateWriteFailed;
  for (const [index, vm] of vms.entries()) {
    if (options.signal?.aborted === true) return { state, linked, providers, interrupted: { during: 'one-by-one', notLinked: vms.slice(index) } };
    // Whether its transaction's undo went on to its end (telling the state the file holds), and
    // what it undid it for (known also where a bug cuts that undo short).
    let undone = false;
    let failure: unknown;
    try {
      // `made` still holds what the one transaction replaced: a VM failing here leaves those links down too.
      // Where it fails, the next VM goes on from the state the file holds after its undo: records
      // kept there (devices it could not delete, or a write back that failed) are kept.
      const mode: TransactionMode = {
        attachModes,
        attach: true,
        ...(onLeftDown === undefined ? {} : { leftDown: onLeftDown }),
        ...(undoWrite === undefined ? {} : { undoWriteFailed: undoWrite }),
        failing: (error) => void (failure = error),
        undone: (holds) => {
          state = holds;
          undone = true;
        },
      };
      const run = await linkTransaction([vm], quiet, snapshot, state, made, mode);
      state = run.state;
      linked.set(vm, run.linked.get(vm) ?? []);
      providers.set(vm, run.providers.get(vm) ?? []);
    } catch (error) {
      if (isInterruption(error)) return { state, linked, providers, interrupted: { during: 'one-by-one', undone: vm, notLinked: vms.slice(index + 1) } };
      // The state is every VM's: one that cannot be written fails the run (as in the one transaction), not each VM after.
      if (error instanceof StateStoreError) throw error;
      // An undo that a bug cut short (what it throws then) left the state file and this VM's
      // devices unknown: the next VM, going on from the state before, could write its ids away
      // while their devices may be there. The bug stops the run where it is (keepGoing), the VMs
      // linked by then with it, and what it leaves (nothing made yet for the VMs after it).
      if (!undone) {
        // The VM's own failure is said all the same (not a signal's, nor the state's: the run's).
        if (failure !== undefined && !isInterruption(failure) && !(failure instanceof StateStoreError)) failures.set(vm, failure);
        soFar.cutShort = { undoing: [vm], notLinked: vms.slice(index + 1), madeForNotLinked: false };
        throw error;
      }
      failures.set(vm, error);
    }
    progress?.({ phase: 'one-by-one', done: index + 1, total: vms.length });
  }
  return { state, linked, providers };
}
