// The host linker's imperative shell: config and state in, devices and VMM attachments out.
// Decisions live in pure modules (config, link-state, device-plan); this file sequences a `link`
// run under the state lock (linkVms, linkAll): its checks, its transaction (linkTransaction), the
// undo of a failed run's own work, and its end (finishRun). Split off from it: linker-types.ts
// (options, reports), linker-error.ts (LinkerError), link-listing.ts (list, show), link-relinks.ts
// (relink commands), link-take-down.ts (unlink, gc, take-downs), link-switch.ts (mode switches),
// link-keep-going.ts (--keep-going, on top of this one).
import type { CliError } from '../shared/cli/run-cli.js';
import { type AttachChoice, type AttachMode, assertSideMtu, chosenAttachMode } from './attach-mode.js';
import { readConfigDir, readConfigVms } from './config-reader.js';
import { type ConfigSnapshot, type Listing, requireValidVm, vmDirProblem } from './config.js';
import { linkDeviceNames, parseDeviceName } from './device-names.js';
import { DEVICE_KIND, type DesiredConnection, type DesiredSide, type DevicePlan, type ObservedDevice, type ObservedDevices, foreignChanged, mtuDeviceKey, mtuRestorePlan, planDevices, replacedDevices } from './device-plan.js';
import { type AmbiguousAttach, type KeptAttach, type ModeChange, type ModeSource, type StandingLink, ambiguousAttach, goneLink, isVmmMode, keptAttach, linkAttachModes, modeChanges, newLinkMode, shownAttachMode, sideMode } from './kept-attach.js';
import { leftAsTheyAre, noVmReason, seenOf, statesByClient } from './link-listing.js';
import { DEFAULT_LINK_MTU, type Link, type LinkAttachment, type LinkPair, type LinkState, allocateMany, emptyState, hasNetnsLinks, linksToUnlisted, mtuField, restorePairs, sameAttachment, sameState, setAttachments, withDevicePrefix, withNetnsPrefix } from './link-state.js';
import { assertStateWritableForTakeOut, assertSwitchedInputUsable, switchedSides, takeBackSwitched, withSockets } from './link-switch.js';
import { type UnlistedTakedown, detachFailure, hostSideDeleted, notRecorded, takeDownUnlisted } from './link-take-down.js';
import { LinkerError, isInterruption, reasonOf, stopIfInterrupted, underStateLock } from './linker-error.js';
import {
  type AllVms,
  type FailedVm,
  type FinishedOutcome,
  type KeepGoingOutcome,
  type LeftDownLink,
  type LinkOutcome,
  type LinkReport,
  type LinkerOptions,
  type RunDevices,
  type TakenBackNic,
  type TransactionBugs,
  type UndoStateWriteFailure,
  type UndoStepFailure,
  type VmmDetachFailure,
  type VmmTarget,
  type WholeConfigDir,
  keyOf,
  linkDevicesOf,
  linkReport,
  newRunDevices,
  vmmNics,
} from './linker-types.js';
import { type NamespaceLeft, type PlanMade, type PlanUndone, applyDevicePlan, newPlanMade, observeDevices, undoDevicePlan } from './netlink-devices.js';
import { assertNetnsPrefixUsable, assertNoUnrecordedDevices, loadLinkRunState } from './state-prefix.js';
import { assertRunNamespacesLast } from './netns-lasting.js';
import { recordedSides, sharedSocketFailures, vmmSidesOf } from './vmm-socket-sharing.js';
import { StateStoreError, hasStateFile, saveState, stateDirAbsent, stateFilePath } from './state-store.js';
import type { VmName } from './vm-name.js';
import { isVmName, vmName } from './vm-name.js';

/** The failure of an undo's device step, its devices grouped by the links of `reports`; none where none of them is left. */
export function devicesLeft(devices: readonly string[], reports: readonly LinkReport[], error: string): UndoStepFailure | undefined {
  const there = new Set(devices);
  const left = reports.flatMap((link) => {
    const of = linkDevicesOf(link).filter((device) => there.has(device));
    return of.length > 0 ? [{ link, devices: of }] : [];
  });
  return left.length > 0 ? { step: 'devices', error, left } : undefined;
}

export const namespaceLeft = ({ netns, error }: NamespaceLeft): UndoStepFailure => ({ step: 'namespace', netns, error });

/** Note in `made` the devices `plan` found and changes the MTU of (its carrying out begun), for an undo (restoreMtus). */
function noteMtusBefore(plan: DevicePlan, ipv6: boolean, made: RunDevices): void {
  for (const entry of plan.mtusBefore ?? []) {
    const key = mtuDeviceKey(entry);
    // The first plan that changed it saw what it had before the run.
    if (!made.mtusBefore.has(key)) made.mtusBefore.set(key, { entry, plan, ipv6 });
  }
}

/**
 * Part of the undo of a failed run (or of VMs of it): put back the MTU the run changed on devices
 * of `reports` it found (a link up at another MTU than --mtu gave it), so that a link that was up
 * keeps the MTU its VMs learnt, as its record (written back) keeps it. Where that fails, it is
 * told (options.onUndoStepFailed) and the undo goes on.
 */
export async function restoreMtus(reports: readonly LinkReport[], made: RunDevices, options: Pick<LinkerOptions, 'onUndoStepFailed'>): Promise<void> {
  const devices = new Set(reports.flatMap(linkDevicesOf));
  const restored = [...made.mtusBefore].filter(([, { entry }]) => devices.has(entry.name) && !made.created.has(entry.name));
  if (restored.length === 0) return;
  for (const [key] of restored) made.mtusBefore.delete(key);
  const seen = new Map(restored.flatMap(([, { plan }]) => plan.seenNamespaces).map((namespace) => [namespace.netns, namespace]));
  const plan = mtuRestorePlan(
    { createNamespaces: [], seenNamespaces: [...seen.values()], clearFarEnds: [], hostSteps: [], configureFarEnds: [], creates: [], mtusBefore: restored.map(([, { entry }]) => entry) },
    restored.some(([, { ipv6 }]) => ipv6),
  );
  try {
    await applyDevicePlan(plan);
  } catch (error) {
    const names = new Set(restored.map(([, { entry }]) => entry.name));
    const left = reports.flatMap((link) => {
      const of = linkDevicesOf(link).filter((device) => names.has(device));
      return of.length > 0 ? [{ link, devices: of }] : [];
    });
    options.onUndoStepFailed?.({ step: 'mtu', error: reasonOf(error), left });
  }
}

/**
 * The state an undo writes back over `state` (the run's): each of `reports`' records as `before`
 * had it (ids the run allocated given back), but for a link new in the run whose devices may still
 * exist (`left`): its record stays as the run made it. Ids are given back only once their devices
 * are gone, so that none is given to another link (whose plan would take those devices as its
 * own) while they may be there; gc leaves them, unlink and a link again converge them.
 */
export function undoneState(state: LinkState, before: LinkState, reports: readonly LinkReport[], left: ReadonlySet<string>): LinkState {
  const earlier = left.size === 0 ? new Map<string, Link>() : linksByPair(before);
  const kept = (report: LinkReport): boolean => !earlier.has(keyOf(report)) && linkDevicesOf(report).some((device) => left.has(device));
  return restorePairs(state, before, reports.filter((report) => !kept(report)).map(pairOf));
}

/**
 * Write `target` over the state file, which holds `held` (the undo of a failed run, or of VMs of
 * it). Where that fails, the failure being undone stays what is thrown: this one is told (`told`)
 * with what the file still records, and the state it holds is returned, so that a later write of
 * the run (--keep-going) keeps those records, as the line that says so tells. Only the store's
 * failure is told so: anything else (a bug) is thrown, the undo cut short there, as a bug
 * elsewhere in it (what the file holds is then unknown: it is not told as a write that failed).
 */
export async function writeBack(options: Pick<LinkerOptions, 'stateDir' | 'devicePrefix' | 'attach'>, held: LinkState, target: LinkState, told?: (failure: UndoStateWriteFailure) => void): Promise<LinkState> {
  try {
    await saveState(options.stateDir, target);
    return target;
  } catch (error) {
    if (!(error instanceof StateStoreError)) throw error;
    const written = error.kind === 'sync-failed';
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

/** What a report says of how its link is attached: its modes, and its sockets where known (to record). */
function attachmentOf(report: LinkReport): LinkAttachment {
  return {
    client: report.clientAttach,
    provider: report.providerAttach,
    ...(report.clientSocket === undefined ? {} : { clientSocket: report.clientSocket }),
    ...(report.providerSocket === undefined ? {} : { providerSocket: report.providerSocket }),
    ...mtuField(report.mtu ?? DEFAULT_LINK_MTU),
  };
}

/**
 * The MTU a link of the run gets: --mtu where given (options.mtu), else the one its record has
 * (`recorded`: its attachment, or the MTU a report carries), else 1500. So a `link` without --mtu
 * (a boot script's) keeps the MTU a link was made with, as it keeps its modes.
 */
export function linkMtu(options: Pick<LinkerOptions, 'mtu'>, recorded?: { readonly mtu?: number }): number {
  return options.mtu ?? recorded?.mtu ?? DEFAULT_LINK_MTU;
}

function sideOf(mode: AttachMode, vm: VmName, device: string, mac: string, options: LinkerOptions): DesiredSide {
  return { device, mac, attach: mode === 'netns' ? { kind: 'veth', netns: `${options.netnsPrefix}${vm}` } : { kind: 'tap' } };
}

/**
 * Refuse a side its device or VMM cannot be given: bad input, said before anything is made. `mtu`:
 * the link's (linkMtu); undefined where not known yet (no --mtu: a link's record tells it, checked
 * per link then), and `recorded` where it is a link's record's, not --mtu's.
 */
function assertSideUsable(mode: AttachMode, vm: string, options: LinkerOptions, mtu = options.mtu, recorded?: LinkPair): void {
  if (mtu !== undefined) assertSideMtu(mtu, mode, vm, options.mtu === undefined ? recorded : undefined);
  if (mode === 'qemu' || mode === 'cloud-hypervisor') options.vmm.checkSocket?.(mode, vmName(vm));
}

function desiredConnection(report: LinkReport, options: LinkerOptions): DesiredConnection {
  const mtu = linkMtu(options, report);
  assertSideUsable(report.clientAttach, report.vm, options, mtu, pairOf(report));
  assertSideUsable(report.providerAttach, report.provider, options, mtu, pairOf(report));
  return {
    bridge: report.bridge,
    mtu,
    client: sideOf(report.clientAttach, vmName(report.vm), report.clientDevice, report.clientMac, options),
    provider: sideOf(report.providerAttach, vmName(report.provider), report.providerDevice, report.providerMac, options),
  };
}

/**
 * The side devices of links the state records besides these connections' found as ports of these
 * connections' bridges, each with its own link's bridge (planDevices puts it back there), and the
 * observation with those bridges looked at too (only then: a second look, which most runs skip).
 */
async function withHomeBridges(
  observed: ObservedDevices,
  state: LinkState,
  connections: readonly DesiredConnection[],
  options: Pick<LinkerOptions, 'devicePrefix'>,
  runSides: ReadonlySet<string>,
): Promise<{ observed: ObservedDevices; homeBridges: Map<string, string> }> {
  const ours = new Set([...connections.flatMap((c) => [c.client.device, c.provider.device]), ...runSides]);
  const ports = new Set(connections.flatMap((c) => (observed.host.get(c.bridge)?.ports ?? []).map((port) => port.name)).filter((name) => !ours.has(name)));
  const homeBridges = new Map<string, string>();
  if (ports.size === 0) return { observed, homeBridges };
  const recorded = new Set(state.links.map((link) => link.id));
  for (const name of ports) {
    const parsed = parseDeviceName(options.devicePrefix, name);
    if (parsed !== undefined && parsed.role !== 'bridge' && recorded.has(parsed.id)) homeBridges.set(name, linkDeviceNames(options.devicePrefix, parsed.id).bridge);
  }
  if (homeBridges.size === 0) return { observed, homeBridges };
  const bridges = await observeDevices([], [...new Set(homeBridges.values())]);
  return { observed: { ...observed, host: new Map([...bridges.host, ...observed.host]) }, homeBridges };
}

/**
 * The side devices of the links the state `before` records that a run of these VMs links (each
 * VM's with the providers it names): found on the bridge of another of its links, each is left to
 * its own link's steps, which put it on its bridge, silently, as a side device off its bridge.
 * Not moved home by the plan of another chunk: that chunk may look while an earlier one's plan
 * still runs, and would then say (and do) a move the device's own plan makes, or not, by timing.
 */
function runSideDevices(vms: readonly VmName[], snapshot: ConfigSnapshot, before: LinkState, options: Pick<LinkerOptions, 'devicePrefix'>): Set<string> {
  const recorded = linksByPair(before);
  const sides = new Set<string>();
  for (const vm of vms) {
    for (const provider of requireValidVm(snapshot, vm).providers) {
      const link = recorded.get(keyOf({ vm, provider }));
      if (link === undefined) continue;
      const names = linkDeviceNames(options.devicePrefix, link.id);
      sides.add(names.client).add(names.provider);
    }
  }
  return sides;
}

function netnsNames(connections: readonly DesiredConnection[]): string[] {
  return connections.flatMap((c) => [c.client, c.provider]).flatMap((side) => (side.attach.kind === 'veth' ? [side.attach.netns] : []));
}

/** NICs hot-plugged so far of how many, for the progress line (`link --keep-going` attaches VM by VM). */
export interface NicCount {
  /** NICs tried: hot-plugged, or of a VM that failed (`failed`: those, with --keep-going). */
  done: number;
  failed?: number;
  readonly total: number;
}

/** Hot-plug each link's VMM sides; on failure detach what this did and rethrow. */
export async function attachToVmms(reports: readonly LinkReport[], options: LinkerOptions, count?: NicCount): Promise<void> {
  const attached: (VmmTarget & { link: LinkReport })[] = [];
  const targets = reports.flatMap((report) => vmmNics(report, linkMtu(options, report)).map((target) => ({ ...target, link: report })));
  const counted = count ?? { done: 0, total: targets.length };
  try {
    for (const target of targets) {
      stopIfInterrupted(options);
      // Only NICs this run added are taken back: one attached by an earlier run stays.
      if (await options.vmm.attach(target.kind, target.vm, target.nic)) attached.push(target);
      counted.done += 1;
      options.progress?.({ phase: 'vmm', done: counted.done, total: counted.total, ...(counted.failed === undefined ? {} : { failed: counted.failed }) });
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

/** The VMs a `link` run links, and the whole config dir they come from where it has one (`link --all`). */
export interface RunVms {
  readonly vms: readonly VmName[];
  readonly wholeDir?: WholeConfigDir | undefined;
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
export async function readAllVms(options: Pick<LinkerOptions, 'configDir' | 'configDirSource'>): Promise<AllVms> {
  return allVmsOf(await readConfigDir(options.configDir, options.configDirSource));
}

/** What one link transaction made: the state after it, each VM's links, each VM's providers now. */
export interface LinkTransaction {
  readonly state: LinkState;
  readonly linked: Map<VmName, LinkReport[]>;
  readonly providers: Map<VmName, readonly VmName[]>;
}

/**
 * A state's links by pair (keyOf), in one pass: for a lookup per link or per VM of a run, where
 * link-state.ts's lookupLink would scan the whole state each time (quadratic in a bulk run).
 */
export function linksByPair(state: LinkState): Map<string, Link> {
  return new Map(state.links.map((link) => [keyOf({ vm: link.client, provider: link.provider }), link]));
}

export const pairOf = (report: LinkReport): { client: VmName; provider: VmName } => ({ client: vmName(report.vm), provider: vmName(report.provider) });

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
export function linksLeftDown(reports: readonly LinkReport[], before: LinkState, made: RunDevices, options: LinkerOptions): LeftDownLink[] {
  const recorded = linksByPair(before);
  return reports.flatMap((report) => {
    const earlier = recorded.get(keyOf(report));
    const replaced = linkDevicesOf(report).some((device) => made.replaced.has(device));
    const takenBack = made.takenBack.get(keyOf(report))?.nics ?? [];
    return earlier?.attached !== undefined && (replaced || anyOut(takenBack)) ? [{ ...linkReport(earlier, options), replaced, takenBack }] : [];
  });
}

/** What a link transaction does beyond ids and devices. */
export interface TransactionMode {
  /** The attach modes it gives each side: --attach's, else kept (kept-attach.ts). */
  readonly attachModes: KeptAttach;
  /** Hot-plug the NICs too (false: `link --keep-going`, which attaches VM by VM after it). */
  readonly attach: boolean;
  /** Told of the links the transaction's undo leaves down (linksLeftDown). */
  readonly leftDown?: (links: readonly LeftDownLink[]) => void;
  /** Told where the undo could not write the state file back (writeBack). */
  readonly undoWriteFailed?: (failure: UndoStateWriteFailure) => void;
  /**
   * Told of a failure before it is undone: where a bug then cuts the undo short (thrown instead),
   * the failure is known all the same (`link --keep-going` says it as the VM's).
   */
  readonly failing?: (error: unknown) => void;
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
export async function linkTransaction(
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
  // Every VM of the run was checked before (requireValidVm throws for none here).
  const runSides = runSideDevices(vms, snapshot, before, options);
  try {
    for (const chunk of chunksOf(vms)) {
      if (failed) break;
      stopIfInterrupted(options);
      const wanted = chunk.map((vm) => requireValidVm(snapshot, vm));
      for (const vm of wanted) providers.set(vm.name, vm.providers);
      const pairs = wanted.flatMap((vm) => vm.providers.map((provider) => ({ client: vm.name, provider })));
      // The run's device prefix recorded with the links (a state that claimed none has it from its first ones on: loadRunState).
      const allocation = allocateMany(pairs.length === 0 ? state : withDevicePrefix(state, options.devicePrefix), pairs);
      const reports: LinkReport[] = [];
      for (const vm of wanted) byVm.set(vm.name, []);
      for (const link of allocation.links) {
        // Each VMM side with the socket it is attached through, recorded: where its NIC is taken out.
        // And with the MTU it gets (--mtu, else its record's), recorded too: a later run without --mtu keeps it.
        const report = linkReport(link, options, { ...withSockets(linkAttachModes(mode.attachModes, link), link, options.vmm, link.attached), ...mtuField(linkMtu(options, link.attached ?? link.unlinked)) });
        byVm.get(link.client)?.push(report);
        reports.push(report);
      }
      const attached = setAttachments(
        allocation.state,
        reports.map((report) => ({ pair: pairOf(report), attached: attachmentOf(report) })),
      );
      // The first links up in netns mode record the run's netns prefix (over one kept for links
      // unlink took down: loadLinkRunState leaves that one to an undo).
      const next = hasNetnsLinks(state) || !hasNetnsLinks(attached) ? attached : withNetnsPrefix(attached, options.netnsPrefix);
      const connections = reports.map((report) => desiredConnection(report, options));
      // The query only reads, so it runs while the state is written (and while the kernel
      // makes the previous chunk's devices, which are others).
      // With their bridges' ports and addresses: the plan takes what is none of a link's off its bridge.
      const observed = observeDevices(netnsNames(connections), connections.flatMap((c) => [c.bridge, c.client.device, c.provider.device]), { bridges: true });
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
      const seen = await withHomeBridges(await observed, state, connections, options, runSides);
      const plan = planDevices(connections, seen.observed, { homeBridges: seen.homeBridges, runSideDevices: runSides });
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
          noteMtusBefore(plan, seen.observed.ipv6, made);
          try {
            await applyDevicePlan(plan, planMade);
            foreignChanged(connections, plan, planMade.heldDisabled).forEach((changed, index) => {
              const vm = reports[index]?.vm;
              if (changed !== null && vm !== undefined) options.onForeignChanged?.(vm, changed);
            });
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
    mode.failing?.(error);
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
    // The MTU it changed on devices it found (links up at another MTU) goes back, as their records do.
    await restoreMtus(reports, made, options);
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

/**
 * The links up before a `link` run, whose modes it keeps where --attach does not name a VM
 * (kept-attach.ts): those recorded while a device of the link's kind exists under one of their
 * names, as unlink and list take them, each side in its recorded mode, or (a record written before
 * the state kept modes) as its device shows it. Of a record whose devices are all gone (after a
 * reboot: the state outlives the devices; devices of other kinds under its names are none of its,
 * link-device-kinds.ts) only the sides that need no VMM keep their mode (`netns`: the plan makes a
 * missing namespace; `none`); a `qemu` or `cloud-hypervisor` side is not up and gets the VM's mode
 * (goneLink); so does one that unlink took down, in the modes it kept (`unlinked`). Devices are
 * looked at (one listing, a request per name) only for links --attach does
 * not settle whole, and of those only where it tells: not for a link recorded with neither side
 * attached by a VMM, which stands in its recorded modes whether its devices are there or gone.
 * (A run passes only the links it takes modes from: runKeptAttach.)
 */
export async function standingLinks(state: LinkState, options: Pick<LinkerOptions, 'devicePrefix' | 'attach'>): Promise<StandingLink[]> {
  const namesOf = (link: Link): ReturnType<typeof linkDeviceNames> => linkDeviceNames(options.devicePrefix, link.id);
  // Not where --attach names both its VMs (`--attach MODE` names all): nothing of it is kept, and
  // each of its VMs has the mode --attach gives it on every link.
  const chosen = (vm: VmName): boolean => chosenAttachMode(options.attach, vm) !== undefined;
  const unsettled = state.links.filter((link) => !(chosen(link.client) && chosen(link.provider)));
  // Up or gone, such a link stands in its recorded modes (goneLink keeps netns and none): its
  // devices, not looked at, are taken as gone.
  const withoutVmm = (link: Link): boolean => link.attached !== undefined && !isVmmMode(link.attached.client) && !isVmmMode(link.attached.provider);
  // (One taken down by unlink is looked at: a device of its kind under its names makes it up, as
  // list takes it, recorded before the state kept modes.)
  const looked = unsettled.filter((link) => !withoutVmm(link));
  const host = looked.length === 0 ? new Map<string, ObservedDevice>() : (await observeDevices([], looked.flatMap((link) => Object.values(namesOf(link))))).host;
  return unsettled.flatMap((link): StandingLink[] => {
    const names = namesOf(link);
    // One unlink took down (its modes kept: unlinked) comes back as one whose devices are gone.
    const recorded = link.attached ?? link.unlinked;
    if (seenOf(link, host, options).own.length === 0) return recorded === undefined ? [] : [goneLink(link, recorded)];
    if (link.attached !== undefined) return [{ pair: link, modes: link.attached }];
    return [{ pair: link, modes: { client: shownAttachMode(host.get(names.client)?.kind), provider: shownAttachMode(host.get(names.provider)?.kind) } }];
  });
}

/** The links of `state` that a VM of `vms` is a side of (client or provider), but for those a VM of `but` is a side of. Pure. */
export function linksOfVms(state: LinkState, vms: ReadonlySet<VmName>, but: ReadonlySet<VmName> = new Set()): LinkState {
  const of = (link: Link): boolean => vms.has(link.client) || vms.has(link.provider);
  return { ...state, links: state.links.filter((link) => of(link) && !but.has(link.client) && !but.has(link.provider)) };
}

/** Where a side's mode comes from when it is not the VM's (its up links'): --attach, or the link's own. */
const OWN_MODE_SOURCES: ReadonlySet<ModeSource> = new Set(['attach', 'link', 'unshown']);

/**
 * The providers of a run of `vms` (clients) whose own mode (the one every up link of theirs has
 * on their side) a side of the run's links may take (kept-attach.ts): of each pair of the run,
 * to a provider its config names (in `snapshot`) or recorded (in `before`: a mode switch looks at
 * those), the provider where --attach does not name it and the link does not stand on its side
 * in `own` (the KeptAttach of the links the run's VMs are a side of, which holds every standing
 * link of a pair of the run). Pure.
 */
export function providersTakingVmMode(vms: readonly VmName[], snapshot: ConfigSnapshot, before: LinkState, own: KeptAttach): Set<VmName> {
  const run = new Set(vms);
  const named = vms.flatMap((client) => {
    const dir = snapshot.vms.get(client);
    const entries = dir?.location === 'directory' && dir.providers.state === 'directory' ? dir.providers.entries : [];
    return entries.flatMap(({ name }) => (isVmName(name) ? [{ client, provider: name }] : []));
  });
  const recorded = before.links.filter((link) => run.has(link.client));
  // Its side's mode is --attach's, or the link's own: no other link of the provider's counts for it.
  const takesVmMode = (pair: LinkPair): boolean => !OWN_MODE_SOURCES.has(sideMode(own, pair, 'provider').from);
  return new Set([...named, ...recorded].filter(takesVmMode).map((pair) => pair.provider));
}

/**
 * What a `link` run of `vms` (clients) knows of attach modes, from the links up before it
 * (standingLinks) that it takes a mode from, the others' devices not looked at (a run's cost does
 * not grow with the links of VMs it does not touch): the links its VMs are a side of (`own`, where
 * the caller looked at them already), which tell each VM's own mode and each of its links'; then
 * those of the providers whose own mode a side of its links takes (providersTakingVmMode).
 * Every side of a link of the run (kept-attach's sideMode, newLinkMode, ambiguousAttach) gets the
 * mode a KeptAttach of every recorded link gives it.
 */
export async function runKeptAttach(vms: readonly VmName[], snapshot: ConfigSnapshot, before: LinkState, options: Pick<LinkerOptions, 'devicePrefix' | 'attach'>, own?: readonly StandingLink[]): Promise<KeptAttach> {
  const run = new Set(vms);
  const ofRun = own ?? (await standingLinks(linksOfVms(before, run), options));
  const providers = providersTakingVmMode(vms, snapshot, before, keptAttach(options.attach, ofRun));
  const ofProviders = providers.size === 0 ? [] : await standingLinks(linksOfVms(before, providers, run), options);
  return keptAttach(options.attach, [...ofRun, ...ofProviders]);
}

/**
 * What a `link` run knows of attach modes (from the state `before` it, and the devices of links
 * recorded without modes or with a side attached by a VMM: runKeptAttach), each VM's side of its
 * new links checked as linkVms checks a chosen one; and the config of its VMs: `wholeDir` as read
 * (link --all), else the named VMs and the providers they reach, read here (once: its chunks take
 * them from it).
 */
async function runAttachModes(vms: readonly VmName[], before: LinkState, options: LinkerOptions, wholeDir?: ConfigSnapshot): Promise<{ kept: KeptAttach; snapshot: ConfigSnapshot }> {
  // The VMs' own modes first (their links), checked before the config is read; then, the config
  // read, those of the providers their links take a mode from.
  const own = await standingLinks(linksOfVms(before, new Set(vms)), options);
  const ownKept = keptAttach(options.attach, own);
  // (A new link's MTU: --mtu, else 1500; a recorded one's is checked with its record, assertLinksUsable.)
  for (const vm of vms) if (chosenAttachMode(options.attach, vm) === undefined) assertSideUsable(newLinkMode(ownKept, vm).mode, vm, options, linkMtu(options));
  const snapshot = wholeDir ?? (await readConfigVms(options.configDir, vms, options.configDirSource));
  const kept = await runKeptAttach(vms, snapshot, before, options, own);
  // Every VM valid, and every side of every link of the run, providers' too, in the order the
  // chunks would meet them: found as a later chunk is planned, the failure would come once earlier
  // chunks' devices are made, some replacing those of links up another way, which the undo
  // leaves down.
  // (assertLinksUsable throws an invalid VM's error first, as requireValidVm says it.)
  // (Each link's MTU, without --mtu, as the state records it: a lookup made once.)
  const recorded = options.mtu === undefined && before.links.length > 0 ? linksByPair(before) : undefined;
  for (const vm of vms) assertLinksUsable(vm, snapshot, kept, options, recorded);
  // Nor two VMs of the run at one VMM socket path (a socket template without {vm}).
  // Nor a VM of the run at the socket the state records for another VM's side.
  const [shared] = runSocketSharing(vms, snapshot, kept, options, before).values();
  if (shared !== undefined) throw shared;
  return { kept, snapshot };
}

/**
 * The clients of `vms` refused for a VMM socket path another VM of the run has, or the state
 * `before` the run records for another VM's side (sharedSocketFailures), each with its error.
 */
export function runSocketSharing(vms: readonly VmName[], snapshot: ConfigSnapshot, kept: KeptAttach, options: Pick<LinkerOptions, 'vmm'>, before?: LinkState): Map<VmName, CliError> {
  const clients = vms.map((client) => ({ client, sides: vmmSidesOf(client, requireValidVm(snapshot, client).providers, kept) }));
  const { vmm } = options;
  const recorded = before === undefined ? [] : recordedSides(before.links);
  return sharedSocketFailures(clients, (kind, vm) => vmm.templateSocket?.(kind, vm), (path) => vmm.socketKey?.(path) ?? path, recorded);
}

/**
 * Refuse, as bad input, a side of a (valid) client's links that its device or VMM cannot be given,
 * in the modes the run gives them, at the MTU it gives them: --mtu, else the one the state records
 * for the link (`recorded`, the state's links by pair: linksByPair, made once per run), else 1500.
 */
export function assertLinksUsable(vm: VmName, snapshot: ConfigSnapshot, kept: KeptAttach, options: LinkerOptions, recorded?: ReadonlyMap<string, Link>): void {
  for (const provider of requireValidVm(snapshot, vm).providers) {
    const pair = { client: vm, provider };
    const modes = linkAttachModes(kept, pair);
    const link = recorded?.get(keyOf({ vm, provider }));
    const mtu = linkMtu(options, link?.attached ?? link?.unlinked);
    assertSideUsable(modes.client, vm, options, mtu, pair);
    assertSideUsable(modes.provider, provider, options, mtu, pair);
  }
  // Both ends of one of its links, or two of them, at one VMM socket path.
  const [shared] = runSocketSharing([vm], snapshot, kept, options).values();
  if (shared !== undefined) throw shared;
}

/** The pairs a client of a run links (the VM valid): to each provider its config names, in order. */
export function pairsOf(snapshot: ConfigSnapshot, vm: VmName): LinkPair[] {
  return requireValidVm(snapshot, vm).providers.map((provider) => ({ client: vm, provider }));
}

/**
 * List the host devices and VM namespaces of these links (their ids allocated), each side in the
 * mode the run gives it, as the run's transaction lists them (observeDevices, a chunk at a time):
 * done before the NICs of switched sides come out (takeBackSwitched), so that a listing that
 * fails fails the run (or, with --keep-going, the VM) with none out, not after, their links down.
 */
export async function listRunDevices(links: readonly Link[], kept: KeptAttach, options: LinkerOptions): Promise<void> {
  const connections = links.map((link) => desiredConnection(linkReport(link, options, linkAttachModes(kept, link)), options));
  await observeDevices(netnsNames(connections), connections.flatMap((c) => [c.bridge, c.client.device, c.provider.device]));
}

/**
 * Refuse, before anything is made or taken out, a link of the run up as a VMM attached it (and
 * kept so) whose tap the run would give another MTU while that VMM's NIC keeps the MTU its guest
 * learnt when it came (VmmPort.checkNicMtu: QEMU's host_mtu): found only at the attach, the run
 * would fail after it had set the new MTU on the link's devices, under a guest that still sends
 * frames of the old. Only such taps are asked about (one lookup of the run's recorded VMM taps).
 */
async function assertNicMtusKept(pairs: readonly LinkPair[], before: LinkState, kept: KeptAttach, options: LinkerOptions): Promise<void> {
  const check = options.vmm.checkNicMtu;
  if (check === undefined) return;
  const recorded = linksByPair(before);
  const targets = pairs.flatMap((pair) => {
    const link = recorded.get(keyOf({ vm: pair.client, provider: pair.provider }));
    if (link?.attached === undefined) return [];
    const report = linkReport(link, options);
    const modes = linkAttachModes(kept, pair);
    const mtu = linkMtu(options, link.attached);
    // Its sides that stay as the VMM attached them (one switched comes out of it first).
    return vmmNics(report, mtu).filter((target) => (target.vm === link.client ? modes.client : modes.provider) === target.kind);
  });
  if (targets.length === 0) return;
  const { host } = await observeDevices([], targets.map((target) => target.nic.tap));
  for (const target of targets) {
    const tap = host.get(target.nic.tap);
    if (tap !== undefined && tap.kind === DEVICE_KIND.tap && tap.mtu !== target.nic.mtu) await check(target.kind, target.vm, target.nic);
  }
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
async function assertRunStartable(pairs: readonly LinkPair[], before: LinkState, kept: KeptAttach, options: LinkerOptions): Promise<void> {
  const { links } = allocateMany(before, pairs);
  await listRunDevices(links, kept, options);
}

/**
 * The links whose NICs `made` says were taken out of their VMMs (or found no longer held there:
 * anyOut), of these clients, as left down (a run that failed before it made anything for them).
 */
export function takenBackLeftDown(made: RunDevices, clients: ReadonlySet<string>): LeftDownLink[] {
  return [...made.takenBack.values()].filter(({ link, nics }) => clients.has(link.vm) && anyOut(nics)).map(({ link, nics }) => ({ ...link, replaced: false, takenBack: nics }));
}

/**
 * Under the lock of a `link` run that found no state dir and so read its config before the lock
 * (which makes the dir): whether another run made the dir and recorded meanwhile (a state file is
 * there), while this one waited for it (at a first boot, VMs that start together each `link`).
 * Its config is then read again: it may have changed while this run waited (up to --lock-wait),
 * and a refusal now makes nothing (the dir is the other run's).
 */
export function recordedMeanwhile(options: Pick<LinkerOptions, 'stateDir' | 'stateDirSource'>): boolean {
  return hasStateFile(options.stateDir, options.stateDirSource);
}

/** Run `link`'s fn under the state lock; an interruption while waiting for it is said as such. */
export function underLinkLock<T>(options: LinkerOptions, fn: () => Promise<T>): Promise<T> {
  return underStateLock(options, 'nothing was made', fn);
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
    // (With --mtu; without, each link's MTU is its record's, checked once the state is read: runAttachModes.)
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
  const freshPairs = known !== undefined && fresh !== undefined ? known.vms.flatMap((vm) => pairsOf(fresh.snapshot, vm)) : undefined;
  if (known !== undefined && fresh !== undefined && freshPairs?.length === 0) {
    const { orphaned, unusable } = known.wholeDir === undefined ? { orphaned: [], unusable: [] } : await leftAsTheyAre(emptyState(), fresh.snapshot, options);
    return { linked: new Map(known.vms.map((vm) => [vm, []])), unlinked: new Map(), orphaned, unusable, vmmFailures: [], ambiguousAttach: [], run: known };
  }
  // Its first links, recorded in a state that claims no device prefix: devices named as links with
  // the run's (another state dir's) refuse it before the lock makes the dir (and again under it).
  if (fresh !== undefined) await assertNoUnrecordedDevices(options);
  // VM namespaces to add where they would not outlive the run: refused before the lock makes the dir (and again under it).
  if (freshPairs !== undefined && fresh !== undefined) assertRunNamespacesLast(freshPairs, fresh.kept, options.netnsPrefix);
  return underLinkLock(options, async () => {
    // The config read before the lock may have changed while another run made the dir and
    // recorded (recordedMeanwhile): read again then, as where the dir was there.
    const again = absent && recordedMeanwhile(options);
    const run = known === undefined || (again && typeof target === 'function') ? await read() : known;
    if (run !== known) assertChosenSidesUsable(run.vms, options);
    const { vms, wholeDir } = run;
    const leftDown = options.onLeftDown;
    const undoWrite = options.onUndoStateWriteFailed;
    const { state: before, claimsPrefix, netnsRefusal } = await loadLinkRunState(options);
    // Still nothing recorded: the checks made before the lock, on an empty state and this config,
    // hold as they are (a thousand VMs' take milliseconds).
    const unchanged = fresh !== undefined && !again && before.links.length === 0;
    const { kept, snapshot } = unchanged ? fresh : await runAttachModes(vms, before, options, wholeDir?.snapshot ?? (again ? undefined : fresh?.snapshot));
    // The run's links (client, provider), as its config names them: the checks below take them.
    const pairs = unchanged && freshPairs !== undefined ? freshPairs : vms.flatMap((vm) => pairsOf(snapshot, vm));
    // Another netns prefix than the state records: refused where a link of the run would use it.
    assertNetnsPrefixUsable(netnsRefusal, pairs, kept);
    // VM namespaces to add where they would not outlive the run (under ip netns exec): refused.
    assertRunNamespacesLast(pairs, kept, options.netnsPrefix);
    // Links to record in a state that claims no device prefix: not over devices named as links with the run's.
    if (!claimsPrefix && pairs.length > 0) await assertNoUnrecordedDevices(options);
    const made = newRunDevices();
    // Failed (and undone); a signal that came meanwhile (while a VMM answered, or while the undo
    // ran, which only a second one cuts short) is said with the failure, not instead of it, and
    // not lost either: the exit code tells of it. Where a bug cut the undo short (`cutShort`: it is
    // thrown), that is said too: what the run made may be left over.
    const failedThenSignalled = (error: unknown, cutShort = false): unknown => {
      if (options.signal?.aborted !== true || isInterruption(error)) return error;
      const stopped = cutShort ? { cutShort: { undoing: vms, notLinked: [], madeForNotLinked: false } } : {};
      return new LinkerError('interrupted-undoing', `${reasonOf(error)} (then interrupted while undoing the run)`, error, [], new Map(), undefined, undefined, undefined, stopped);
    };
    // A side up as a VMM attached it that is to be attached another way: its NIC comes out of that
    // VMM first, as unlink takes it out; a VMM refusing stops the run with nothing made, and so
    // do ids that run out, a device listing that fails (assertRunStartable) and a state dir that
    // cannot be written, each checked before the first NIC.
    const switched = await switchedSides(vms, snapshot, before, kept, options);
    const takeOut = async (): Promise<void> => {
      // Bad input first, as a socket path too long is found before anything else.
      assertSwitchedInputUsable(switched, options);
      // A QEMU NIC whose guest keeps another MTU than the run gives its link: refused now, not once the devices have it.
      await assertNicMtusKept(pairs, before, kept, options);
      if (switched.length > 0) await assertRunStartable(pairs, before, kept, options);
      await assertStateWritableForTakeOut(switched, options);
      await takeBackSwitched(switched, options, made);
    };
    await takeOut().catch((error: unknown) => {
      const down = takenBackLeftDown(made, new Set(vms));
      if (down.length > 0) leftDown?.(down);
      throw failedThenSignalled(error);
    });
    // Whether a failure's undo went on to its end (a bug that cuts it short is thrown instead).
    let undone = false;
    const mode: TransactionMode = {
      attachModes: kept,
      attach: true,
      ...(leftDown === undefined ? {} : { leftDown }),
      ...(undoWrite === undefined ? {} : { undoWriteFailed: undoWrite }),
      undone: () => void (undone = true),
    };
    const linkedRun = await linkTransaction(vms, options, snapshot, before, made, mode).catch((error: unknown) => {
      throw failedThenSignalled(error, !undone);
    });
    const ambiguous = ambiguousAttach(kept, [...linkedRun.linked.values()].flat().map(pairOf));
    const changed = runModeChanges(kept, before, [...linkedRun.linked.values()].flat());
    const linked = new Map(vms.map((vm): [VmName, LinkReport[]] => [vm, linkedRun.linked.get(vm) ?? []]));
    const { failed: _, ...outcome } = await finishRun({ state: linkedRun.state, linked, providers: linkedRun.providers, failed: [], ambiguousAttach: ambiguous, modeChanges: changed }, run, options, false);
    return { ...outcome, run };
  });
}

/** The sides of a run's links (`reports`) it gave another mode than `before` last recorded for them (modeChanges). Pure. */
export function runModeChanges(kept: KeptAttach, before: LinkState, reports: readonly LinkReport[]): ModeChange[] {
  if (reports.length === 0) return [];
  const recorded = linksByPair(before);
  return modeChanges(
    kept,
    reports.map((report) => {
      const link = recorded.get(keyOf(report));
      return { pair: pairOf(report), recorded: link?.attached ?? link?.unlinked };
    }),
  );
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
  readonly modeChanges?: readonly ModeChange[];
  /** With --keep-going, the bugs of its one transaction no VM failed by (KeepGoingOutcome.transactionBug, transactionUndoBug). */
  readonly transactionBugs?: TransactionBugs;
}

/**
 * The end of a `link` run once its links are made (`soFar`): the links to providers dropped taken
 * down (also those of the VMs of `run`'s whole config dir that name no provider now) and recorded,
 * then what `link --all` leaves as it is. A take-down that fails (not begun: the state dir not
 * writable, a socket path, the kernel; or done and not recorded) fails the run, carrying what the
 * run did (takeDownFailed), so that it is said as where the run ends well: its links stay made,
 * and where the take-down was done, its links are down whatever the state file says.
 */
export async function finishRun(soFar: RunSoFar, run: RunVms, options: LinkerOptions, keepGoing: boolean): Promise<KeepGoingOutcome> {
  const { wholeDir } = run;
  const outcomeOf = async (state: LinkState, down: Pick<KeepGoingOutcome, 'unlinked' | 'vmmFailures'>): Promise<KeepGoingOutcome> => {
    const { orphaned, unusable } = wholeDir === undefined ? { orphaned: [], unusable: [] } : await leftAsTheyAre(state, wholeDir.snapshot, options);
    return { linked: soFar.linked, unlinked: down.unlinked, orphaned, unusable, vmmFailures: down.vmmFailures, ambiguousAttach: soFar.ambiguousAttach, ...(soFar.modeChanges === undefined ? {} : { modeChanges: soFar.modeChanges }), failed: soFar.failed, ...soFar.transactionBugs };
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
 * LinkerError of its kind; anything else (another module's error, or a bug) as a 'take-down-failed'
 * that carries it, to be said as it is.
 */
function takeDownFailed(error: unknown, outcome: FinishedOutcome, keepGoing: boolean): unknown {
  if (keepGoing && isStateFailure(error)) return new LinkerError('state-failed', error.message, error, outcome.failed, outcome.linked, outcome);
  if (!(error instanceof LinkerError)) return new LinkerError('take-down-failed', reasonOf(error), error, outcome.failed, outcome.linked, outcome);
  return new LinkerError(error.kind, error.message, error.failure, outcome.failed, outcome.linked, outcome);
}

/** The LinkerErrors of a state dir that could not be written (their `failure`, the StateStoreError). */
const STATE_WRITE_KINDS: ReadonlySet<LinkerError['kind']> = new Set(['state-not-writable', 'unlisted-not-taken-down', 'taken-down-not-recorded']);

/**
 * Whether `error` is a failure of the state file, which stops a whole `link --keep-going` run: the
 * store's own, or a state dir found not writable before NICs came out for other modes, or before
 * or after a take-down of links to providers dropped (a LinkerError carrying the store's).
 */
export function isStateFailure(error: unknown): error is StateStoreError | LinkerError {
  if (error instanceof StateStoreError) return true;
  return error instanceof LinkerError && STATE_WRITE_KINDS.has(error.kind) && error.failure instanceof StateStoreError;
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
