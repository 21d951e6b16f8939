// The device prefix a state's links carry (link-state.ts records it, one per state file): which
// one a command uses, and its refusal of another. A command given none (no --device-prefix, no
// $SPECTRUM_DEVICE_PREFIX) uses the one recorded, read by the CLI before the run (recordedPrefixesOf),
// so that the commands its lines print carry it too; one given another is refused before anything
// is done (loadLinkState, on the state as the run reads it, under the lock where the command takes
// it): it would look for the links' devices under names that are not theirs, so that `unlink`
// would say it took down links that stay up, and delete whatever holds those names (another state
// dir's links, say), and gc would delete every device of the other prefix. The prefix stays
// recorded once every link is forgotten, so that the next command given none still uses it. A
// state that records none (never linked, or written before the prefix was recorded, or before it
// was kept without links, or left by the undo of its first links) takes the prefix given or the
// default, and the write of its first links records it.
//
// A state that claims no prefix (claimsDevicePrefix: no state file, or one recording neither links
// nor a prefix) does not take over devices named as links with the run's: `link` into it is refused
// before anything is made where the host namespace has any (assertNoUnrecordedDevices), since they
// are another state dir's as likely as leftovers (a --state-dir mistyped, in the namespace and
// with the prefix of another's live links, would otherwise reconfigure those); nor does gc delete
// them (gcUnrecordedDevicesRefusal: it would delete every one). A state that claims it owns them:
// its own leftovers, which `link` converges on (ids are recorded before their devices are made, so
// a crash's are its recorded links') and gc deletes.
import { pathCheck, shownOrigin } from '../shared/cli/option-source.js';
import { type DevicePrefix, parseDeviceName } from './device-names.js';
import { type LinkPair, type LinkState, claimsDevicePrefix, conflictingDevicePrefix, conflictingNetnsPrefix, recordedNetnsPrefix, withDevicePrefix, withNetnsPrefix } from './link-state.js';
import { type KeptAttach, linkAttachModes } from './kept-attach.js';
import { LinkerError } from './linker-error.js';
import type { DevicePrefixSource, LinkerOptions, NetnsPrefixSource } from './linker-types.js';
import { observeDevices } from './netlink-devices.js';
import { STATE_DIR_ENV, loadState, stateFilePath } from './state-store.js';

/** Where a run's prefix came from, as the refusal says it after the prefix. */
function originOf(source: DevicePrefixSource | NetnsPrefixSource | undefined): string {
  switch (source?.from) {
    case 'option':
      return `from ${source.flag}`;
    case 'environment':
      return `from $${source.variable}`;
    case 'default':
      return 'the default';
    case 'state':
      return 'recorded when this run began';
    default:
      return 'given';
  }
}

/** Where a refusal of the prefixes sends the operator for the rest (what it leaves out). */
const DEVICE_PREFIX_README = 'README: Device prefix';
const NETNS_PREFIX_README = 'README: Netns prefix';
export const UNRECORDED_README = 'README: Unrecorded devices';

/**
 * The one thing a prefix refusal says to do, by where the run's prefix came from (the README
 * section it names says the rest): where an option gave it, leave it out (and unset the variable
 * it overrode, where that gives another than `recorded`), where the variable did, unset it (the
 * recorded prefix is then used); `give` the recorded prefix as given (itself, or its option).
 */
function fixOf(source: DevicePrefixSource | NetnsPrefixSource | undefined, recorded: string, give: string): string {
  switch (source?.from) {
    case 'option':
      // Left out, the option would give the variable's prefix where that is set: unset too, unless it gives the recorded one.
      if ('overrides' in source && source.overrides.value !== recorded) return `leave ${source.flag} out and unset ${source.overrides.variable}`;
      return `leave ${source.flag} out`;
    case 'environment':
      return `unset ${source.variable}`;
    case 'default':
    case 'state':
      // Only where another run recorded it after this one looked (an empty state linked meanwhile).
      return 'another spectrum-link recorded it meanwhile: run this again';
    default:
      return `use ${give}`;
  }
}

/**
 * Refuse `prefix` for a state that records another for its links (exit 2): one line naming both,
 * where each came from, and what to do.
 */
function prefixMismatch(stateDir: string, recorded: DevicePrefix, prefix: DevicePrefix, source: DevicePrefixSource | undefined): LinkerError {
  return new LinkerError(
    'device-prefix-mismatch',
    `device prefix ${prefix} (${originOf(source)}) is not ${recorded}, the one state file ${stateFilePath(stateDir)} records: nothing done; ${fixOf(source, recorded, recorded)} (${DEVICE_PREFIX_README})`,
  );
}

/**
 * Refuse `prefix`, which the state file recorded when the run began (the CLI read it before the
 * lock), where the state read under the lock claims none and the run would otherwise use another
 * (`otherwise`, the default): a run that recorded it with its first links was undone whole
 * meanwhile (a mistyped --device-prefix, say), leaving the state as it was. Used, the prefix would
 * be recorded again with this run's links, so that the failed run's retry with the prefix
 * corrected would be refused, which that undo took the prefix back to spare (link-state.ts's
 * restorePairs). Where it is the one the run would use all the same (VMs starting together at a
 * first boot, one of which failed), the run goes on.
 */
function prefixNoLongerRecorded(stateDir: string, prefix: DevicePrefix, otherwise: DevicePrefix): LinkerError {
  return new LinkerError(
    'device-prefix-mismatch',
    `device prefix ${prefix} (recorded when this run began) is no longer recorded in state file ${stateFilePath(stateDir)}: nothing done; run this again, which uses ${otherwise} (${DEVICE_PREFIX_README})`,
  );
}

/**
 * The state recorded in the run's state dir (loadState), refused where it records another device
 * prefix for its links than the run's (`devicePrefix`, from `devicePrefixSource`), and otherwise
 * recording the run's where it has links (a file written before the prefix was recorded), so that
 * the next write records it. A state that claims none (claimsDevicePrefix: no links, no prefix) is
 * as read: the run's first links record the prefix with them (linkTransaction), and an undo that
 * takes them all back leaves the state as it was, claiming none (were the prefix left recorded, a
 * retry with the prefix corrected would be refused, and devices named with it taken as leftovers).
 * Refused too where the run's prefix is one the state recorded when the run began (source 'state')
 * and it claims none now, the run otherwise using another (prefixNoLongerRecorded): such an undo
 * came meanwhile.
 */
export async function loadLinkState(options: StatePrefixOptions): Promise<LinkState> {
  return (await loadRunState(options)).state;
}

type StatePrefixOptions = Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'devicePrefix' | 'devicePrefixSource'>;

/**
 * loadLinkState for a `link` run, with whether the state as read claims the run's device prefix
 * (claimsDevicePrefix): where it does not, the run checks the host before it records its first
 * links (assertNoUnrecordedDevices).
 */
export async function loadRunState(options: StatePrefixOptions): Promise<{ readonly state: LinkState; readonly claimsPrefix: boolean }> {
  const state = await loadState(options.stateDir, options.stateDirSource);
  const recorded = conflictingDevicePrefix(state, options.devicePrefix);
  if (recorded !== undefined) throw prefixMismatch(options.stateDir, recorded, options.devicePrefix, options.devicePrefixSource);
  const claimsPrefix = claimsDevicePrefix(state);
  const source = options.devicePrefixSource;
  if (!claimsPrefix && source?.from === 'state' && source.otherwise !== options.devicePrefix) throw prefixNoLongerRecorded(options.stateDir, options.devicePrefix, source.otherwise);
  return { state: claimsPrefix ? withDevicePrefix(state, options.devicePrefix) : state, claimsPrefix };
}

// The netns prefix (--netns-prefix, $SPECTRUM_NETNS_PREFIX) says where a `netns` link's VM lives:
// its interface, the veth's far end, is in `<prefix><vm>`. The state records it while a link is up
// in netns mode (link-state.ts's recordedNetnsPrefix), one per state as the device prefix is (a
// VM lives in one namespace; one value is what a command given none can take), and as that one:
// `link`, `list` and `show` given none use it (recordedPrefixesOf, read by the CLI), and
// `link` given another is refused before anything is done where a link of the run has a side in
// netns mode (loadLinkRunState, assertNetnsPrefixUsable), as it would move the VMs' interfaces
// into the other prefix's namespaces (the far ends not found where it looks, each pair is made
// anew there), cutting the VMs off with exit 0; a run whose links have none does not use it, and
// the state keeps the one it records. A state that records none (no
// link up in netns mode, or a file written before the prefix was recorded) takes the run's, which
// its next write records. `unlink` and `gc` take no netns prefix: deleting a veth's host end
// deletes its far end, wherever that is.

/** The device and netns prefixes a state records (recordedPrefixesOf): each absent where it records none. */
export interface StatePrefixes {
  readonly devicePrefix?: DevicePrefix;
  readonly netnsPrefix?: string;
}

/**
 * The device prefix the state in `stateDir` records for its links (its links all forgotten too),
 * and the netns prefix it records (while a link is up in netns mode), of one read of the state,
 * for a command given none; each undefined where it records none (no state, or a file written
 * before it was recorded, or, the device prefix, before it was kept without links). Read without
 * the lock: the run reads the state again (loadLinkState, loadLinkRunState), which refuses a
 * prefix recorded meanwhile. A state that cannot be read is left to the run too (none), which
 * says why where it always has.
 */
export async function recordedPrefixesOf(stateDir: string): Promise<StatePrefixes> {
  try {
    const state = await loadState(stateDir);
    const netnsPrefix = recordedNetnsPrefix(state);
    return { ...(state.devicePrefix === undefined ? {} : { devicePrefix: state.devicePrefix }), ...(netnsPrefix === undefined ? {} : { netnsPrefix }) };
  } catch {
    return {};
  }
}

/** What the netns prefix refusal says to do, by where the run's prefix came from (fixOf: the prefix quoted, given as the option). */
function netnsFixOf(source: NetnsPrefixSource | undefined, recorded: string): string {
  return fixOf(source, recorded, `--netns-prefix ${JSON.stringify(recorded)}`);
}

/** What the netns prefix refusal and list's note say first: the run's prefix, where it came from, and the one the state records. */
function netnsPrefixNotRecorded(stateDir: string, recorded: string, prefix: string, source: NetnsPrefixSource | undefined): string {
  return `netns prefix ${JSON.stringify(prefix)} (${originOf(source)}) is not the one state file ${stateFilePath(stateDir)} records for its links attached in netns mode, ${JSON.stringify(recorded)}`;
}

/**
 * What `list` and `show` given netns prefix `prefix` (from `source`) say where the state records
 * another for its links up in netns mode: one line naming both, that the veths' far ends were
 * looked for under the one given, where `link` does not put them (given it, link is refused:
 * netnsPrefixMismatch), and how to look where they are.
 */
export function netnsPrefixNotRecordedNote(stateDir: string, recorded: string, prefix: string, source: NetnsPrefixSource | undefined): string {
  return (
    `${netnsPrefixNotRecorded(stateDir, recorded, prefix, source)}: ` +
    `their veths' far ends were looked for in network namespaces ${prefix}<vm>, not in ${recorded}<vm> where link puts them, and link given it is refused; to see them where they are: ${netnsFixOf(source, recorded)}`
  );
}

/**
 * Refuse netns prefix `prefix` for a state that records another for its links up in netns mode
 * (exit 2): one line naming both, where the run's came from, and what to do.
 */
function netnsPrefixMismatch(stateDir: string, recorded: string, prefix: string, source: NetnsPrefixSource | undefined): LinkerError {
  return new LinkerError(
    'netns-prefix-mismatch',
    `netns prefix ${JSON.stringify(prefix)} (${originOf(source)}) is not ${JSON.stringify(recorded)}, the one state file ${stateFilePath(stateDir)} records for its netns links: ` +
      `nothing done; ${netnsFixOf(source, recorded)} (${NETNS_PREFIX_README})`,
  );
}

/**
 * loadRunState for a `link` run, taking the run's netns prefix (`netnsPrefix`, from
 * `netnsPrefixSource`), so that its write records it with the netns links it has or makes (a file
 * written before the prefix was recorded gets the run's, as its device prefix does); except where
 * the state records another for its links up in netns mode (or no longer the one the run took from
 * it): the state keeps its own, and `netnsRefusal` is the run's refusal, for a run whose links
 * would use the prefix (assertNetnsPrefixUsable, once their modes are known).
 */
export async function loadLinkRunState(
  options: StatePrefixOptions & Pick<LinkerOptions, 'netnsPrefix' | 'netnsPrefixSource'>,
): Promise<{ readonly state: LinkState; readonly claimsPrefix: boolean; readonly netnsRefusal?: LinkerError }> {
  const { state, claimsPrefix } = await loadRunState(options);
  return { ...withRunNetnsPrefix(state, options), claimsPrefix };
}

/**
 * Throw the refusal of the run's netns prefix (loadLinkRunState's `netnsRefusal`) where a link of
 * the run (`pairs`, each in the modes `kept` gives it: made, kept or switched to) has a side in
 * netns mode: its VM's interface is looked for, or put, in `<prefix><vm>`. A run whose links have
 * none (`--attach none`, say) does not use the prefix: not refused.
 */
export function assertNetnsPrefixUsable(refusal: LinkerError | undefined, pairs: readonly LinkPair[], kept: KeptAttach): void {
  if (refusal === undefined) return;
  const used = pairs.some((pair) => {
    const modes = linkAttachModes(kept, pair);
    return modes.client === 'netns' || modes.provider === 'netns';
  });
  if (used) throw refusal;
}

/**
 * Refuse netns prefix `prefix`, which the state file recorded when the run began (the CLI read it
 * before the lock), where the state read under the lock has no link up in netns mode and the run
 * would otherwise use another (`otherwise`), as prefixNoLongerRecorded does a device prefix: the
 * run that recorded it (a mistyped --netns-prefix, say) was undone meanwhile, or its links taken
 * down. Used, it would put this run's VMs' interfaces in that prefix's namespaces and record it,
 * so that the failed run's retry with the prefix corrected would be refused.
 */
function netnsPrefixNoLongerRecorded(stateDir: string, prefix: string, otherwise: string): LinkerError {
  return new LinkerError(
    'netns-prefix-mismatch',
    `netns prefix ${JSON.stringify(prefix)} (recorded when this run began) is no longer recorded in state file ${stateFilePath(stateDir)}: nothing done; run this again, which uses ${JSON.stringify(otherwise)} (${NETNS_PREFIX_README})`,
  );
}

/**
 * `state` (as a `link` run read it) taking the run's netns prefix; where it records another, as it
 * is, with the refusal of the run's (for a run that would use it: assertNetnsPrefixUsable); where
 * it no longer records the one the run took from it, with that refusal (loadLinkRunState).
 */
function withRunNetnsPrefix(state: LinkState, options: Pick<LinkerOptions, 'stateDir' | 'netnsPrefix' | 'netnsPrefixSource'>): { readonly state: LinkState; readonly netnsRefusal?: LinkerError } {
  const recorded = conflictingNetnsPrefix(state, options.netnsPrefix);
  if (recorded !== undefined) return { state, netnsRefusal: netnsPrefixMismatch(options.stateDir, recorded, options.netnsPrefix, options.netnsPrefixSource) };
  const source = options.netnsPrefixSource;
  // A prefix kept only for links unlink took down in netns mode stays as it is: the run records
  // its own with the first link it brings up in netns mode (linkTransaction), so that a run that
  // brings none up, or is undone, leaves the file's.
  const taken = recordedNetnsPrefix(state) === undefined ? withNetnsPrefix(state, options.netnsPrefix) : state;
  if (source?.from === 'state' && recordedNetnsPrefix(state) === undefined && source.otherwise !== options.netnsPrefix) {
    return { state: taken, netnsRefusal: netnsPrefixNoLongerRecorded(options.stateDir, options.netnsPrefix, source.otherwise) };
  }
  return { state: taken };
}

/** How many of the devices a refusal names. */
const DEVICES_SHOWN = 3;

/** Of these device names, those named as a link's are with `prefix` (gc's), ordered by id, then bridge, client, provider. */
export function linkNamedDevices(names: Iterable<string>, prefix: DevicePrefix): string[] {
  const order = { bridge: 0, client: 1, provider: 2 } as const;
  return [...names]
    .flatMap((name) => {
      const parsed = parseDeviceName(prefix, name);
      return parsed === undefined ? [] : [{ name, rank: parsed.id * 3 + order[parsed.role] }];
    })
    .sort((a, b) => a.rank - b.rank)
    .map(({ name }) => name);
}

/**
 * The refusal of a `link` into a state that claims no device prefix while `devices` (named as
 * links with the run's, linkNamedDevices) exist (exit 2: the state dir or prefix given is not the
 * one they are recorded with): one line naming how many, the first few, the state dir and the
 * prefix with where each came from, and what to do.
 */
export function unrecordedDevicesRefusal(options: StatePrefixOptions, devices: readonly string[]): LinkerError {
  return new LinkerError('unrecorded-devices', `${unrecordedDevicesText(options, devices)}: nothing made; ${stateDirCheck(options.stateDirSource)} (${UNRECORDED_README})`);
}

/**
 * `gc`'s refusal of a state that claims no device prefix (a file recording no link and no prefix:
 * written by hand, or by an older spectrum-link) while `devices` (named as links with the run's
 * prefix, linkNamedDevices) exist, as `link`'s is (unrecordedDevicesRefusal; exit 2: the state
 * dir given is not the one they are recorded with): gc would delete every one of them, another
 * state dir's live links as likely as leftovers (a --state-dir mistyped). One line, `gc:` first as
 * its others: how many, the first few, the state dir and the prefix with where each came from, and
 * what to check (the state dir); the README section it names says what to do where the state is
 * really lost.
 */
export function gcUnrecordedDevicesRefusal(options: StatePrefixOptions, devices: readonly string[]): LinkerError {
  return new LinkerError('unrecorded-devices', `gc: ${unrecordedDevicesText(options, devices)}: nothing deleted; ${stateDirCheck(options.stateDirSource)} (${UNRECORDED_README})`);
}

/** What a refusal of devices no state claims says to check: the state dir, as it was given. */
export function stateDirCheck(source: StatePrefixOptions['stateDirSource']): string {
  return `check ${pathCheck('the state dir', '--state-dir', STATE_DIR_ENV, source)}`;
}

/** A refusal's start: the state dir claims no prefix, yet `devices` are named as links with the run's (how many, the first few). */
function unrecordedDevicesText(options: StatePrefixOptions, devices: readonly string[]): string {
  const { stateDir, stateDirSource, devicePrefix: prefix, devicePrefixSource } = options;
  const shown = devices.slice(0, DEVICES_SHOWN).join(' ');
  const more = devices.length > DEVICES_SHOWN ? ` +${devices.length - DEVICES_SHOWN}` : '';
  return `${shownOrigin('state dir', stateDir, stateDirSource)} records no link, yet ${devices.length} link ${devices.length === 1 ? 'device' : 'devices'} with prefix ${prefix} (${originOf(devicePrefixSource)}) ${devices.length === 1 ? 'is' : 'are'} here: ${shown}${more}`;
}

/**
 * Refuse a `link` run that would record links in a state that claims no device prefix (loadRunState)
 * where devices named as links with the run's prefix exist in this (the host) network namespace
 * (unrecordedDevicesRefusal), before anything is made: it would take them over as the devices of
 * the ids it allocates, reconfiguring another state dir's live links; not where the state, read
 * after the listing, claims a prefix by then (claimedSince). One listing of the namespace's
 * devices, made only for such a state (a state dir's first links).
 */
export async function assertNoUnrecordedDevices(options: StatePrefixOptions): Promise<void> {
  const devices = linkNamedDevices((await observeDevices([])).host.keys(), options.devicePrefix);
  if (devices.length > 0 && !(await claimedSince(options.stateDir))) throw unrecordedDevicesRefusal(options, devices);
}

/**
 * Whether the state in `stateDir`, read after the listing (without the lock, as before it: a state
 * dir not made yet), claims a device prefix now: another run of this state dir (VMs starting
 * together at a first boot, each linking a state dir not made yet) records its ids before it
 * makes their devices, so that devices of its that the listing saw come with a state that claims
 * them. Such a run's devices refuse nothing: the run reads the state again under the lock (and
 * refuses another prefix there). A state that cannot be read is left to that read too, which says why.
 */
async function claimedSince(stateDir: string): Promise<boolean> {
  try {
    return claimsDevicePrefix(await loadState(stateDir));
  } catch {
    return true;
  }
}
