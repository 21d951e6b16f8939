// Recorded links as found: a VM's links and each client's in the state (linksOfVm,
// statesByClient), what is under a link's names among the host's devices (seenOf: a link recorded
// without attach modes is up where a device of its kind is there, as `list` takes it and `unlink`,
// `link` and the take-downs take it too), and what shows them: `list`, `show`, and what
// `link --all` leaves as it is (its orphaned clients and unusable VM dirs, as `list` shows their
// links). Below the modules that take links down, switch their modes or link them, which all tell
// a link that is up the same way.
import { pathCheck, shownOrigin } from '../shared/cli/option-source.js';
import type { AttachMode } from './attach-mode.js';
import { readConfigVms } from './config-reader.js';
import { CONFIG_DIR_ENV, ConfigError, type ConfigSnapshot, leadsNowhere, vmDirProblem } from './config.js';
import { linkDeviceNames } from './device-names.js';
import { DEVICE_KIND, type ObservedDevice } from './device-plan.js';
import { shownAttachMode } from './kept-attach.js';
import { type FarEndsFound, type LinkDevicesSeen, expectedLinkDevices, linkDevicesSeen, foreignOnBridge, portsOffBridge, settingsOff } from './link-device-kinds.js';
import { type Link, type LinkState, linksOfClient, linksOfProvider } from './link-state.js';
import { LinkerError } from './linker-error.js';
import { type LeftLink, type LinkerOptions, type ListOptions, type ListedLink, type OrphanedVm, type ShowOptions, type UnusableVmDir, linkReport } from './linker-types.js';
import { farEndNames, namespaceIds, observeDevices } from './netlink-devices.js';
import { loadLinkState } from './state-prefix.js';
import { STATE_DIR_ENV } from './state-store.js';
import type { VmName } from './vm-name.js';
import { vmName } from './vm-name.js';

/**
 * Client VMs with recorded links that a whole config dir has no entry for: gone. Their links are
 * left alone (the VM may still run: its directory going says nothing of that); the operator is
 * told, and `unlink VM --forget` releases them. (One whose entry is a symlink to nothing or round
 * a loop is said as what it is: an unusable entry, unusableVmDirs.)
 */
function orphanedClients(state: LinkState, snapshot: ConfigSnapshot): { vm: VmName; links: Link[]; provided: Link[] }[] {
  const byClient = new Map<VmName, Link[]>();
  for (const link of state.links) {
    if (snapshot.vms.has(link.client)) continue;
    const links = byClient.get(link.client) ?? [];
    if (links.length === 0) byClient.set(link.client, links);
    links.push(link);
  }
  // With the links recorded with it as provider: the unlink that releases its links takes those down too.
  return [...byClient].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([vm, links]) => ({ vm, links, provided: linksOfProvider(state, vm) }));
}

/**
 * The entries of a whole config dir with a VM name that are no usable VM directory: `link --all`
 * links none of them and leaves their links as they are (`link <vm>` of one fails, saying why), so
 * each is said as what it is, with the links recorded with it as provider (`provided`:
 * leftAsTheyAre says those linked). A symlink to nothing (or round a loop) is one too, also where
 * its VM has links recorded as client (`leadsNowhere`: its directory is gone, as an orphaned
 * client's); a file that is no directory, only where links are recorded for its name as client,
 * or linked with it as provider (leftAsTheyAre).
 */
function unusableVmDirs(state: LinkState, snapshot: ConfigSnapshot): { vm: VmName; problem: string; leadsNowhere: boolean; links: Link[]; provided: Link[]; stray: boolean }[] {
  const stateOf = statesByClient(state);
  return [...snapshot.vms.values()].flatMap((dir) => {
    if (dir.location === 'directory') return [];
    const links = linksOfClient(stateOf(dir.name), dir.name);
    // A stray file (notes, a README) is no VM anyone meant: passed over quietly, as a directory
    // without providers/net is, unless links are recorded for its name as client, or linked with it as provider.
    const stray = dir.location === 'not-a-directory' && links.length === 0;
    return [{ vm: dir.name, problem: vmDirProblem(snapshot, dir.name) ?? dir.location, leadsNowhere: leadsNowhere(dir), links, provided: linksOfProvider(state, dir.name), stray }];
  });
}

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
export async function leftAsTheyAre(state: LinkState, snapshot: ConfigSnapshot, options: Pick<LinkerOptions, 'devicePrefix' | 'attach'>): Promise<{ orphaned: OrphanedVm[]; unusable: UnusableVmDir[] }> {
  const orphans = orphanedClients(state, snapshot);
  const unusables = unusableVmDirs(state, snapshot);
  // With the links recorded with an unusable entry as provider: only those linked are said (one
  // taken down, its id kept, as the run takes down a link to a provider dropped, is no one's to do).
  const links = [...new Set([...orphans, ...unusables].flatMap((entry) => entry.links).concat([...orphans, ...unusables].flatMap((entry) => entry.provided)))];
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
  const linkedOf = (provided: readonly Link[]): LeftLink[] =>
    shownOf(provided)
      .filter((link) => link.linked)
      .sort((a, b) => (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0));
  return {
    orphaned: orphans.map(({ vm, links: own, provided }) => ({ vm, links: shownOf(own), linkedAsProvider: linkedOf(provided) })),
    unusable: unusables.flatMap(({ vm, problem, leadsNowhere: gone, links: own, provided, stray }) => {
      const linkedAsProvider = linkedOf(provided);
      return stray && linkedAsProvider.length === 0 ? [] : [{ vm, problem, leadsNowhere: gone, links: shownOf(own), linkedAsProvider }];
    }),
  };
}

/**
 * A state's links by client, each client's as a state of its own (in the state's order), in one
 * pass: link-state.ts's queries of one client (linksOfClient, linksToUnlisted) then scan that
 * client's links alone, not the whole state once per VM of a run.
 */
export function statesByClient(state: LinkState): (client: VmName) => LinkState {
  const byClient = new Map<VmName, Link[]>();
  for (const link of state.links) {
    const links = byClient.get(link.client);
    if (links === undefined) byClient.set(link.client, [link]);
    else links.push(link);
  }
  return (client) => ({ version: state.version, links: byClient.get(client) ?? [] });
}

/** The links a VM takes part in, as client or as provider. */
export function linksOfVm(state: LinkState, vm: VmName): Link[] {
  return [...linksOfClient(state, vm), ...linksOfProvider(state, vm)];
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
export function seenOf(
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
  const devices = (await observeDevices([], undefined, { bridges: true })).host;
  // Where the VM namespaces are known (list, show): whether each veth's far end is in its VM's
  // under its name, by the namespace ids the dump gave and queries after it (farEndsFound).
  const { netnsPrefix } = options;
  const farEnds = netnsPrefix === undefined ? undefined : { prefix: netnsPrefix, found: await farEndsFound(links, devices, { ...options, netnsPrefix }) };
  return links.map((link): ListedLink => {
    const report = linkReport(link, options);
    const names = linkDeviceNames(options.devicePrefix, link.id);
    const seen = seenOf(link, devices, options, farEnds);
    const bridge = devices.get(report.bridge);
    const bridgeMtu = bridge?.kind === DEVICE_KIND.bridge ? bridge.mtu : undefined;
    const base = { ...report, present: seen.whole, devicesThere: seen.devicesThere, foreign: seen.foreign, farEndsElsewhere: seen.farEndsElsewhere, offBridge: portsOffBridge(names, seen, devices), onBridge: foreignOnBridge(names, seen, devices), settingsOff: settingsOff(names, seen, devices), ...(bridgeMtu === undefined ? {} : { bridgeMtu }) };
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
  return listed((await loadLinkState(options)).links, options);
}

/** Why `vm` is no VM of the config dir (`dir`: the config dir itself is unusable, its error), or undefined. */
export async function noVmReason(options: Pick<ShowOptions, 'configDir' | 'configDirSource'>, vm: VmName): Promise<{ reason: string; dir?: ConfigError } | undefined> {
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
  const links = linksOfVm(await loadLinkState(options), vm);
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
