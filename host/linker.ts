// The host linker's imperative shell: config and state in, devices and VMM attachments out.
// Decisions live in pure modules (config, link-state, device-plan); this file sequences a `link`
// run under the state lock (linkVms, linkAll): its checks, its transaction (linkTransaction), the
// undo of a failed run's own work, and its end (finishRun). Split off from it: linker-types.ts
// (options, reports), linker-error.ts (LinkerError), link-listing.ts (list, show), link-relinks.ts
// (relink commands), link-take-down.ts (unlink, gc, take-downs), link-switch.ts (mode switches).
import { type AttachChoice, type AttachMode, assertSideMtu, chosenAttachMode } from './attach-mode.js';
import { readConfigDir, readConfigVms } from './config-reader.js';
import { type ConfigSnapshot, type Listing, partitionValidVms, requireValidVm, vmDirProblem } from './config.js';
import { linkDeviceNames } from './device-names.js';
import { type DesiredConnection, type DesiredSide, type DevicePlan, type ObservedDevice, planDevices, replacedDevices } from './device-plan.js';
import { type AmbiguousAttach, type KeptAttach, type StandingLink, ambiguousAttach, goneLink, keptAttach, linkAttachModes, newLinkMode, shownAttachMode } from './kept-attach.js';
import { leftAsTheyAre, noVmReason, seenOf, statesByClient } from './link-listing.js';
import {
  type Link,
  type LinkAttachment,
  type LinkPair,
  type LinkState,
  StateError,
  allocateMany,
  emptyState,
  linksToUnlisted,
  restorePairs,
  sameAttachment,
  sameState,
  setAttachments,
} from './link-state.js';
import { type SwitchedSide, assertStateWritableForTakeOut, assertSwitchedInputUsable, switchedSides, takeBackSwitched, withSockets } from './link-switch.js';
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
  type UndoStateWriteFailure,
  type UndoStepFailure,
  type VmmDetachFailure,
  type VmmKind,
  type VmmPort,
  type VmmTarget,
  type WholeConfigDir,
  keyOf,
  linkDevicesOf,
  linkReport,
  newRunDevices,
  vmmNics,
} from './linker-types.js';
import { type NamespaceLeft, type PlanMade, type PlanUndone, applyDevicePlan, deleteNamespaces, newPlanMade, observeDevices, undoDevicePlan, undoDevices } from './netlink-devices.js';
import { StateStoreError, hasStateFile, loadState, saveState, stateDirAbsent, stateFilePath } from './state-store.js';
import type { VmName } from './vm-name.js';
import { vmName } from './vm-name.js';

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

/** What a report says of how its link is attached: its modes, and its sockets where known (to record). */
function attachmentOf(report: LinkReport): LinkAttachment {
  return {
    client: report.clientAttach,
    provider: report.providerAttach,
    ...(report.clientSocket === undefined ? {} : { clientSocket: report.clientSocket }),
    ...(report.providerSocket === undefined ? {} : { providerSocket: report.providerSocket }),
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

/** The VMs a `link` run links, and the whole config dir they come from where it has one (`link --all`). */
interface RunVms {
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
async function readAllVms(options: Pick<LinkerOptions, 'configDir' | 'configDirSource'>): Promise<AllVms> {
  return allVmsOf(await readConfigDir(options.configDir, options.configDirSource));
}

/** What one link transaction made: the state after it, each VM's links, each VM's providers now. */
interface LinkTransaction {
  readonly state: LinkState;
  readonly linked: Map<VmName, LinkReport[]>;
  readonly providers: Map<VmName, readonly VmName[]>;
}

/**
 * A state's links by pair (keyOf), in one pass: for a lookup per link or per VM of a run, where
 * link-state.ts's lookupLink would scan the whole state each time (quadratic in a bulk run).
 */
function linksByPair(state: LinkState): Map<string, Link> {
  return new Map(state.links.map((link) => [keyOf({ vm: link.client, provider: link.provider }), link]));
}

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
