// `link`, `unlink`, `list`, `show`, `gc`: option parsing and output; the work is in linker.ts
// (link), link-keep-going.ts (link --keep-going), link-take-down.ts (unlink, gc) and
// link-listing.ts (list, show).
import { Command, Option } from 'commander';
import { NO_PROGRESS, type Progress, terminalProgress } from '../shared/cli/progress.js';
import { refuseRepeatedValues } from '../shared/cli/single-value.js';
import { directoryOption } from '../shared/cli/directory-option.js';
import { exitOnSignals, interruptOnSignals, signalExitCode } from '../shared/cli/interruption.js';
import { integerOption } from '../shared/cli/integer-option.js';
import { type OptionSource, optionSource, pathCheck, pathFix, shownOrigin, sourceName, usablePath } from '../shared/cli/option-source.js';
import { CliError, EXIT, exitCodeOf, oneLine } from '../shared/cli/run-cli.js';
import { type Logger, createLogger, wouldLog } from '../shared/log.js';
import { shownPath } from '../shared/shown-text.js';
import { LINK_EXIT_CODES, isLinkBug, isLinkUsageError } from './exit-codes.js';
import { type AttachChoice, type AttachMode, TAP_MTU_MAX, parseAttachChoice } from './attach-mode.js';
import { CONFIG_DIR_ENV, type MisnamedVmDir, configDirFrom, looksLikeVmDir } from './config.js';
import { DEFAULT_DEVICE_PREFIX, DeviceNameError, type DevicePrefix, devicePrefix } from './device-names.js';
import { BRIDGE_SETTINGS, DEVICE_KIND, type ForeignChanged, PORT_SETTINGS, settingText } from './device-plan.js';
import type { BridgeForeign, FarEndElsewhere, ForeignDevice, OffBridge, SettingOff } from './link-device-kinds.js';
import type { AmbiguousAttach, ModeChange } from './kept-attach.js';
import { linkAllKeepGoing, linkVmsKeepGoing } from './link-keep-going.js';
import { listLinks, showLinks } from './link-listing.js';
import { relinkedText } from './link-relinks.js';
import { collectGarbage, devicesLeft, gcStoppedDevices, hostSideDeleted, unlinkVm } from './link-take-down.js';
import { isStateFailure, linkAll, linkVms, strayAttachModes, unusedAttachModes } from './linker.js';
import { LinkerError } from './linker-error.js';
import {
  type AllVms,
  type PrefixSource,
  type FailedVm,
  type FinishedOutcome,
  type KeepGoingOutcome,
  type KeepGoingStop,
  type LeftDownLink,
  type LeftLink,
  type LinkProgressEvent,
  type TakeDownProgressEvent,
  type LinkReport,
  type LinkerOptions,
  type ListedLink,
  type OrphanedVm,
  type PrintedCommands,
  type RecordedLinkReport,
  type ReleasedLinkReport,
  type StoppedRelease,
  type TransactionBugs,
  type UndoCutShort,
  type UndoStateWriteFailure,
  type UndoStepFailure,
  type UnusableVmDir,
  type VmmDetachFailure,
  type VmmKind,
  type VmmPort,
  VMM_NAMES,
  checkNetnsPrefix,
} from './linker-types.js';
import { type GivenOptions, linkCommand, shellWord, socketFromAnywhere, unlinkCommand } from './printed-command.js';
import { type StatePrefixes, netnsPrefixNotRecordedNote, recordedPrefixesOf } from './state-prefix.js';
import { DEFAULT_LOCK_TIMEOUT_MS, LOCK_WAIT_ENV, STATE_DIR_ENV, type StateStoreError, requireNamedStateDir, stateDirAbsent, stateDirFrom } from './state-store.js';
import { type VmName, vmName } from './vm-name.js';
import {
  type SideArguments,
  VMM_TIMEOUT_MAX_MS,
  VMM_TIMEOUT_MIN_MS,
  type VmmFlags,
  absoluteSocket,
  sameSocketPath,
  shownSocket,
  socketPath,
  socketTemplate,
  vmmArgumentsFor,
} from './vmm-port.js';
import { DEFAULT_NIC_MTU, qemuNetdevId } from './vmm/nic.js';

type Env = Readonly<Record<string, string | undefined>>;

const DEVICE_PREFIX_ENV = 'SPECTRUM_DEVICE_PREFIX';
const NETNS_PREFIX_ENV = 'SPECTRUM_NETNS_PREFIX';
/** --mtu: IPv4's least (RFC 791) to the most a device takes (a tap less: TAP_MTU_MAX). */
const [MTU_MIN, MTU_MAX] = [68, 65535] as const;
/**
 * --lock-wait, in seconds: 0 takes the lock only where it is free; at most an hour, six times the
 * default (DEFAULT_LOCK_TIMEOUT_MS says why it is 10 minutes): a holder still there after that is
 * stuck, not slow, and milliseconds typed for seconds (--vmm-timeout's unit) are refused.
 */
const [LOCK_WAIT_MIN_S, LOCK_WAIT_MAX_S] = [0, 3600] as const;
const DEFAULT_LOCK_WAIT_S = DEFAULT_LOCK_TIMEOUT_MS / 1000;

/** The flags of every linker command: where links are recorded, what their devices are called. */
interface StateFlags {
  stateDir?: string;
  devicePrefix: string;
  json?: boolean;
}

/** The VMM flags of `link` and `unlink` (--qemu-bus: `link` only). */
interface VmmOptionFlags extends VmmFlags {
  attach: string[];
}

/** The flag of the commands that take the state lock: `link`, `unlink`, `gc`. */
interface LockFlags {
  lockWait: string;
}

interface LinkFlags extends StateFlags, VmmOptionFlags, LockFlags {
  configDir?: string;
  netnsPrefix: string;
  mtu: string;
  all?: boolean;
  keepGoing?: boolean;
}

interface UnlinkFlags extends StateFlags, VmmOptionFlags, LockFlags {
  forget?: boolean;
  force?: boolean;
}

/** The flags of `list` (and `show`): where netns-mode VMs live, for where their veths' far ends are to be. */
interface ListFlags extends StateFlags {
  netnsPrefix: string;
}

interface ShowFlags extends ListFlags {
  configDir?: string;
}

interface GcFlags extends StateFlags, LockFlags {}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/**
 * The linker commands' options. Each command adds only those it uses, so that one it would
 * ignore (`list --mtu 9000`) is refused as unknown instead of silently doing nothing.
 */
function linkerOptionsOf(env: Env) {
  return {
    configDir: () =>
      new Option('--config-dir <dir>', `directory of VM directories (default: $SPECTRUM_CONFIG_DIR or ${configDirFrom(undefined, {})})`).argParser(directoryOption('--config-dir')),
    stateDir: () =>
      new Option('--state-dir <dir>', `where link ids are kept (default: $SPECTRUM_STATE_DIR or ${stateDirFrom(undefined, {})})`).argParser(directoryOption('--state-dir')),
    devicePrefix: () =>
      new Option(
        '--device-prefix <prefix>',
        "prefix of host device names (bridge <p>b<id>, client <p>c<id>, provider <p>p<id>); the state records its links' prefix, and refuses another",
      ).default(env[DEVICE_PREFIX_ENV] || DEFAULT_DEVICE_PREFIX, `$${DEVICE_PREFIX_ENV}, else the one the state records, else ${DEFAULT_DEVICE_PREFIX}`),
    // An empty variable is no prefix, as none is.
    netnsPrefix: () =>
      new Option('--netns-prefix <prefix>', 'netns attach: VM v lives in network namespace <prefix>v').default(env[NETNS_PREFIX_ENV] ?? '', `$${NETNS_PREFIX_ENV}, else the one the state records, else none`),
    // No default value: a link given no --mtu keeps the MTU it records (LinkerOptions.mtu).
    mtu: () =>
      new Option(
        '--mtu <bytes>',
        `MTU of every link device, which the VMs' NICs learn: ${MTU_MIN} to ${MTU_MAX}, a tap at most ${TAP_MTU_MAX} (default: the MTU the link records, else 1500)`,
      ),
    attach: (description: string, fallback = 'none') => new Option('--attach <mode>', description).argParser(collect).default([], fallback),
    qmpSocket: () => new Option('--qmp-socket <template>', 'QEMU QMP socket of a VM ({vm} is replaced)').default('/run/vm/{vm}/qmp.sock'),
    chSocket: () => new Option('--ch-socket <template>', 'cloud-hypervisor API socket of a VM ({vm} is replaced)').default('/run/vm/{vm}/vmm'),
    vmmTimeout: () =>
      new Option(
        '--vmm-timeout <ms>',
        `bound on each VMM request, and on waiting for a guest to release a NIC: ${VMM_TIMEOUT_MIN_MS} to ${VMM_TIMEOUT_MAX_MS}; a NIC's whole attach, and its whole detach, gets twice it`,
      ).default('5000', '5000'),
    qemuBus: () => new Option('--qemu-bus <id>', 'QEMU bus to hot-plug into (q35: a free pcie-root-port)'),
    lockWait: () =>
      new Option('--lock-wait <seconds>', `how long to wait for another spectrum-link that holds the state lock: ${LOCK_WAIT_MIN_S} (not at all) to ${LOCK_WAIT_MAX_S}`).default(
        env[LOCK_WAIT_ENV] || String(DEFAULT_LOCK_WAIT_S),
        `$${LOCK_WAIT_ENV} or ${DEFAULT_LOCK_WAIT_S}`,
      ),
    json: () => new Option('--json', 'print JSON'),
  };
}

/**
 * Where the value of an option whose default is an environment variable's came from: commander
 * says 'cli' of a value typed, 'default' of the `.default()` (the variable's value, or ours).
 */
function sourceOf(command: Command, key: string, flag: string, variable: string, env: Env): OptionSource {
  return optionSource(flag, command.getOptionValueSource(key) === 'cli', variable, env);
}

/** The device prefix checked, a bad one's message naming where it came from: the option or the variable. */
function devicePrefixFrom(text: string, source: OptionSource): DevicePrefix {
  try {
    return devicePrefix(text);
  } catch (error) {
    if (!(error instanceof DeviceNameError)) throw error;
    throw new DeviceNameError(error.kind, `${sourceName(source)}: ${error.message}`);
  }
}

/** The netns prefix checked; a bad value is said to be the source's (the option, or the variable). */
function netnsPrefixFrom(text: string, source: OptionSource): string {
  return checkNetnsPrefix(text, sourceName(source));
}

/**
 * A prefix option's value (`given`, from `source`, whose environment variable is `variable`) or,
 * given none, the one the state records (`recorded`, read only then), and where it came from: the
 * state, or with the option the variable it overrides where that is set (for the refusal's fix,
 * state-prefix.ts).
 */
async function chosenPrefix<P extends string>(given: P, source: OptionSource, variable: string, env: Env, recorded: () => Promise<P | undefined>): Promise<{ readonly prefix: P; readonly source: PrefixSource<P> }> {
  const found = source.from === 'default' ? await recorded() : undefined;
  if (found !== undefined) return { prefix: found, source: { from: 'state', otherwise: given } };
  const value = env[variable];
  return { prefix: given, source: source.from === 'option' && value ? { ...source, overrides: { variable, value } } : source };
}

/**
 * The state dir and where it came from (for messages that say what to check), and the device
 * prefix and where it came from: given none, the one the state records for its links (state-prefix.ts).
 */
async function stateOptions(flags: StateFlags, env: Env, command: Command, state: RecordedPrefixes = recordedPrefixes()): Promise<Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'devicePrefix' | 'devicePrefixSource'>> {
  const stateDirSource = optionSource('--state-dir', flags.stateDir !== undefined, STATE_DIR_ENV, env);
  const stateDir = usablePath(stateDirFrom(flags.stateDir, env), stateDirSource);
  const source = sourceOf(command, 'devicePrefix', '--device-prefix', DEVICE_PREFIX_ENV, env);
  const device = await chosenPrefix(devicePrefixFrom(flags.devicePrefix, source), source, DEVICE_PREFIX_ENV, env, async () => (await state(stateDir)).devicePrefix);
  return { stateDir, stateDirSource, devicePrefix: device.prefix, devicePrefixSource: device.source };
}

/** The prefixes the state in a state dir records (state-prefix.ts's recordedPrefixesOf), read once however often asked. */
type RecordedPrefixes = (stateDir: string) => Promise<StatePrefixes>;

function recordedPrefixes(): RecordedPrefixes {
  let read: Promise<StatePrefixes> | undefined;
  return (stateDir) => (read ??= recordedPrefixesOf(stateDir));
}

/**
 * stateOptions of `link`, `list` and `show`, with the netns prefix and where it came from: given
 * none (no --netns-prefix, $SPECTRUM_NETNS_PREFIX unset or empty), the one the state records for
 * its links up in netns mode (state-prefix.ts), where it records one; the state read once for both.
 */
async function stateNetnsOptions(
  flags: StateFlags & { netnsPrefix: string },
  env: Env,
  command: Command,
  state: RecordedPrefixes = recordedPrefixes(),
): Promise<Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'devicePrefix' | 'devicePrefixSource' | 'netnsPrefix' | 'netnsPrefixSource'>> {
  const options = await stateOptions(flags, env, command, state);
  const source = sourceOf(command, 'netnsPrefix', '--netns-prefix', NETNS_PREFIX_ENV, env);
  const netns = await chosenPrefix(netnsPrefixFrom(flags.netnsPrefix, source), source, NETNS_PREFIX_ENV, env, async () => (await state(options.stateDir)).netnsPrefix);
  return { ...options, netnsPrefix: netns.prefix, netnsPrefixSource: netns.source };
}

/**
 * The config dir (--config-dir, else $SPECTRUM_CONFIG_DIR, else Spectrum's) and where it came
 * from; a relative one needs the working directory.
 */
function configOptions(flag: string | undefined, env: Env): Pick<LinkerOptions, 'configDir' | 'configDirSource'> {
  const configDirSource = optionSource('--config-dir', flag !== undefined, CONFIG_DIR_ENV, env);
  return { configDir: usablePath(configDirFrom(flag, env), configDirSource), configDirSource };
}

/** --lock-wait (or $SPECTRUM_LOCK_WAIT) checked, in ms; a bad value is said to be its source's. */
function lockWaitOf(flags: LockFlags, env: Env, command: Command): Pick<LinkerOptions, 'lockWaitMs' | 'onLockWait'> {
  const source = sourceName(sourceOf(command, 'lockWait', '--lock-wait', LOCK_WAIT_ENV, env));
  const seconds = integerOption(source, flags.lockWait, LOCK_WAIT_MIN_S, LOCK_WAIT_MAX_S, 'seconds');
  // A wait of up to minutes says so, once, so that it is not taken for a hang.
  const onLockWait = (holderPid: string | undefined): void => {
    const set = source === 'the default' ? `--lock-wait or ${LOCK_WAIT_ENV} sets it` : `set by ${source}`;
    if (wouldLog('warn')) createLogger('spectrum-link').warn(`waiting for another spectrum-link${holderPid === undefined ? '' : ` (PID ${holderPid})`} to let go of the state lock: giving up after ${seconds} s (${set})`);
  };
  return { lockWaitMs: seconds * 1000, onLockWait };
}

/** The working directory, which a relative path given is relative to; undefined where it is gone. */
function workingDirectory(): string | undefined {
  try {
    return process.cwd();
  } catch {
    return undefined;
  }
}

/**
 * This run's options as given (typed, or from their environment variables: the values taken), for
 * the commands its lines tell the operator to run (printed-command.ts); those at their built-in
 * default are left out, but for the paths and prefixes that say what a command acts on (state
 * dir, config dir, device prefix, netns prefix), which are always given: left out, a
 * $SPECTRUM_STATE_DIR (or _CONFIG_DIR, _DEVICE_PREFIX, _NETNS_PREFIX) in the shell the command is
 * run from would have it act on other links, devices or namespaces than this run's. (The lock
 * wait only says how long to wait: at its default, the shell's variable may set it.) The state dir
 * and config dir (`link`'s) as stateOptions and configOptions resolve them.
 */
export function givenOptions(flags: StateFlags & VmmOptionFlags & LockFlags & { configDir?: string; netnsPrefix?: string; mtu?: string }, command: Command, env: Env): GivenOptions {
  const typed = (key: string): boolean => command.getOptionValueSource(key) === 'cli';
  const fromUser = (key: string, flag: string, variable: string): boolean => sourceOf(command, key, flag, variable, env).from !== 'default';
  const given = (use: boolean, key: string, value: string | undefined): Record<string, string> => (use && value !== undefined ? { [key]: value } : {});
  const takesConfigDir = command.options.some((option) => option.long === '--config-dir');
  return {
    cwd: workingDirectory(),
    ...given(takesConfigDir, 'configDir', configDirFrom(flags.configDir, env)),
    stateDir: stateDirFrom(flags.stateDir, env),
    devicePrefix: flags.devicePrefix,
    // (link's; unlink takes none.)
    ...given(flags.netnsPrefix !== undefined, 'netnsPrefix', flags.netnsPrefix),
    ...given(typed('mtu'), 'mtu', flags.mtu),
    attach: flags.attach,
    ...given(typed('qmpSocket'), 'qmpSocket', flags.qmpSocket),
    ...given(typed('chSocket'), 'chSocket', flags.chSocket),
    ...given(typed('vmmTimeout'), 'vmmTimeout', flags.vmmTimeout),
    ...given(typed('qemuBus'), 'qemuBus', flags.qemuBus),
    ...given(fromUser('lockWait', '--lock-wait', LOCK_WAIT_ENV), 'lockWait', flags.lockWait),
  };
}

/**
 * The VMM socket templates, checked before any is used: a relative one needs the working
 * directory, without which connecting says ENOENT, which unlink takes for a VMM that has gone.
 */
function checkSocketTemplates(flags: VmmFlags): void {
  for (const [flag, template] of [['--qmp-socket', flags.qmpSocket], ['--ch-socket', flags.chSocket]] as const) {
    usablePath(socketTemplate(flag, template), { from: 'option', flag });
  }
}

/** list and show take no --attach: a link without a recorded attach mode is shown with the default. */
const DEFAULT_ATTACH = parseAttachChoice([]);

/**
 * A link as printed: its attach modes may be unknown (null), for a link `list` found up whose
 * record has none (written before the state kept them) where its device does not tell.
 */
type ShownLink = Omit<LinkReport, 'clientAttach' | 'providerAttach'> & { readonly clientAttach: AttachMode | null; readonly providerAttach: AttachMode | null };

/**
 * `attached`: false for a link with no attach mode recorded (unlinked, id kept), shown `-`; an
 * attached side whose mode is unknown is shown `?`. `sockets` (list, show): each side's recorded
 * VMM socket after its mode, where there is one, escaped where it holds what a terminal acts on
 * (shownSocket: the state file may have been edited by hand; --json gives it exact). The link
 * MTU last, where it is not the default 1500 (recorded, or, for what link makes, to be).
 */
function reportLine(report: ShownLink, attached = true, sockets = false): string {
  const mode = (value: AttachMode | null, socket: string | undefined): string =>
    attached ? `${value ?? '?'}${sockets && socket !== undefined ? `, socket ${shownSocket(socket)}` : ''}` : '-';
  return [
    `${report.vm} -> ${report.provider}`,
    `id ${report.id}`,
    `ip ${report.clientIp}`,
    `client ${report.clientDevice} ${report.clientMac} (${mode(report.clientAttach, report.clientSocket)})`,
    `provider ${report.providerDevice} ${report.providerMac} (${mode(report.providerAttach, report.providerSocket)})`,
    `bridge ${report.bridge}`,
    ...(attached && report.mtu !== undefined ? [`mtu ${report.mtu}`] : []),
  ].join('  ');
}

/** The JSON of a listed link's recorded VMM sockets (`list`, `show`), each only where there is one. */
function socketsJson(report: ShownLink): Record<string, string> {
  const { clientSocket, providerSocket } = report;
  return { ...(clientSocket === undefined ? {} : { clientSocket }), ...(providerSocket === undefined ? {} : { providerSocket }) };
}

/** The kernel's kinds as a listing says them: a tap is a `tun` device. */
const KIND_WORDS: Readonly<Record<string, string>> = { [DEVICE_KIND.tap]: 'tap' };

/** A device of a kind the kernel reports (null: no link info), in words. */
const deviceOfKind = (kind: string | null): string => (kind === null ? 'a device without a kind (no link info)' : `a device of kind ${kind}`);

/** What `list` and `show` say, under a link, of a device under one of its names that is of another kind than the link makes there. */
function foreignLine({ role, device, kind, expected }: ForeignDevice): string {
  const wanted = expected.map((one) => KIND_WORDS[one] ?? one).join(' or ');
  return `  ${device} is ${deviceOfKind(kind)}, not this link's ${role === 'bridge' ? 'bridge' : `${role} ${wanted}`}`;
}

/**
 * What `list` and `show` say, under a link, of a veth of it whose far end is not in its VM's
 * namespace under its name; looked for under a netns prefix the state does not record (`stray`),
 * not that link makes the pair anew (given that prefix, link is refused; given none, it finds it).
 */
function farEndLine({ device, netns }: FarEndElsewhere, stray?: StrayNetnsPrefix): string {
  const hint = stray === undefined ? 'link makes the pair anew' : `looked for under netns prefix ${JSON.stringify(stray.given)}, not the one the state records, ${JSON.stringify(stray.recorded)}`;
  return `  ${device} is a veth whose far end is not ${device} in network namespace ${netns} (${hint})`;
}

/** A netns prefix given to `list` or `show` that is not the one the state records for its netns links. */
interface StrayNetnsPrefix {
  readonly given: string;
  readonly recorded: string;
}

/**
 * `list` and `show`'s options (stateNetnsOptions), and the netns prefix given where the state
 * records another for its netns links (said on stderr, one line: netnsPrefixNotRecordedNote), of
 * the one read of the state that gives the recorded prefixes.
 */
async function listingNetnsOptions(
  flags: StateFlags & { netnsPrefix: string },
  env: Env,
  command: Command,
): Promise<{ options: Awaited<ReturnType<typeof stateNetnsOptions>>; stray?: StrayNetnsPrefix }> {
  const state = recordedPrefixes();
  const options = await stateNetnsOptions(flags, env, command, state);
  if (options.netnsPrefixSource?.from === 'state') return { options };
  const recorded = (await state(options.stateDir)).netnsPrefix;
  if (recorded === undefined || recorded === options.netnsPrefix) return { options };
  process.stderr.write(`spectrum-link: ${oneLine(netnsPrefixNotRecordedNote(options.stateDir, recorded, options.netnsPrefix, options.netnsPrefixSource))}\n`);
  return { options, stray: { given: options.netnsPrefix, recorded } };
}

/** What `list` and `show` say, under a link, of a side device of it that is not a port of its bridge (the master a device name from the kernel: escaped where it holds control characters). */
function offBridgeLine({ device, master }: OffBridge, bridge: string): string {
  const where = master === null ? 'is a port of no bridge' : `is a port of ${shownPath(master)}`;
  return `  ${device} ${where}, not of this link's bridge ${bridge} (link puts it back)`;
}

/** What `list` and `show` say, under a link, of what is on its bridge that is none of the link's (names and addresses from the kernel: escaped where they hold control characters). */
function onBridgeLines({ ports, addresses, uppers }: BridgeForeign, bridge: string): string[] {
  return [
    ...ports.map((port) => `  ${shownPath(port)} is a port of this link's bridge ${bridge}, not one of the link's (link takes it off)`),
    ...uppers.map(({ device, kind }) => `  ${shownPath(device)} (${shownPath(kind ?? 'no kind')}) is stacked on this link's bridge ${bridge}: whoever holds it is a party on a VM's link (link leaves it, not spectrum-link's: delete it)`),
    ...addresses.map((address) => `  ${bridge} has address ${address}: the host is no party on a VM's link (link removes it)`),
  ];
}

/** What `list` and `show` say, under a link, of a setting of its bridge or of a port of it there other than a new one has. */
function settingOffLine({ device, setting, value, expected, valueDevice }: SettingOff, bridge: string): string {
  const table = device === bridge ? BRIDGE_SETTINGS : PORT_SETTINGS;
  return `  ${device} has ${setting} ${settingText(table, setting, value, valueDevice === undefined ? undefined : shownPath(valueDevice))}, not ${settingText(table, setting, expected)} (link puts it back)`;
}

/** Whether anything is on a link's bridge that is none of the link's. */
const bridgeShared = ({ ports, addresses, uppers }: BridgeForeign): boolean => ports.length + addresses.length + uppers.length > 0;

/** What `unlink` (and `link` taking down a provider dropped) says, under a link it took down, of the devices of other kinds under its names that it deleted with the link's own. */
function foreignDeletedLine(foreign: readonly ForeignDevice[]): string {
  const each = foreign.map(({ role, device, kind }) => `${device}, ${deviceOfKind(kind)} under this link's ${role === 'bridge' ? 'bridge' : `${role} device`} name`);
  return `  also deleted ${each.join('; ')}`;
}

/** The JSON of devices under a link's names of another kind than it makes there (`foreign` of list and show, `foreignDeleted` of unlink and of link's `unlinked`). */
const foreignJson = (foreign: readonly ForeignDevice[]): Record<string, unknown>[] => foreign.map(({ device, kind, expected }) => ({ device, kind, expected }));

/**
 * For a side attached by hand (`--attach none`), the arguments that give its VMM a NIC on the tap
 * (whose guest learns the link MTU), one line per VMM, so that the operator can start the VM with
 * them. (Tap names and MACs need no shell quoting.)
 */
function vmmArgumentLines(report: ShownLink, mtu: number): string[] {
  const sides = vmmArgumentsFor(report, mtu);
  const lines = (vm: string, side: SideArguments | undefined): string[] =>
    side === undefined ? [] : [`  ${vm}: qemu ${side.qemu.join(' ')}`, `  ${vm}: cloud-hypervisor ${side.cloudHypervisor.join(' ')}`];
  return [...lines(report.vm, sides?.client), ...lines(report.provider, sides?.provider)];
}

/**
 * The JSON link object of the contract without VMM arguments: for links taken down, whose taps are
 * gone. A recorded link that is not linked (`unlink` took it down, its id kept) is attached no way:
 * its attach modes are null, wherever it is printed (list, show, unlink, link --all's records).
 * A recorded link as it stands (list, show, link --all's records) says whether its modes are the
 * state's (`attachRecorded`): where the state has none for a link up, they are as its devices show them.
 * A linked link's MTU (`mtu`) only where the state records one (not the default 1500), as it does.
 */
function linkFieldsJson(report: ShownLink | RecordedLinkReport | LeftLink): Record<string, unknown> {
  const { vm, provider, id, clientIp, clientMac, providerMac, bridge, clientDevice, providerDevice } = report;
  const attached = !('linked' in report) || report.linked;
  const [clientAttach, providerAttach] = attached ? [report.clientAttach, report.providerAttach] : [null, null];
  const recorded = 'attachRecorded' in report ? { attachRecorded: report.attachRecorded } : {};
  const mtu = attached && report.mtu !== undefined ? { mtu: report.mtu } : {};
  return { vm, provider, id, clientIp, clientMac, providerMac, bridge, clientDevice, providerDevice, clientAttach, providerAttach, ...recorded, ...mtu };
}

/** The JSON link object of the contract, with the VMM arguments for sides attached by hand (link MTU `mtu`). */
function linkJson(report: ShownLink, mtu: number): Record<string, unknown> {
  const vmmArguments = vmmArgumentsFor(report, mtu);
  return { ...linkFieldsJson(report), ...(vmmArguments === undefined ? {} : { vmmArguments }) };
}

/**
 * What `unlink` says of a VM with no recorded links, as unlinkVm says it (link-take-down.ts): here for a
 * state dir that does not exist, which unlink does not lock (test/host/link-option-sources.test.ts
 * holds the two to the same line).
 */
function notLinkedError(vm: string, options: Pick<LinkerOptions, 'stateDir' | 'stateDirSource'>): LinkerError {
  const check = pathCheck('the state dir', '--state-dir', STATE_DIR_ENV, options.stateDirSource);
  return new LinkerError('not-linked', `${vm} has no recorded links in ${shownOrigin('state dir', options.stateDir, options.stateDirSource)}; check the name and ${check}`);
}

/**
 * What `link --all` says of a client VM whose directory has gone but whose links are recorded:
 * how to release them, as an unlink with this run's options that find them (`given`).
 */
function orphanWarning({ vm, links, linkedAsProvider }: OrphanedVm, configDir: string, given: GivenOptions): string {
  const recorded = `${links.length} recorded link${links.length === 1 ? '' : 's'}`;
  // The unlink offered takes down every link of the VM, those linked with it as provider too (as unusableWarning says): named.
  const clients = linkedAsProvider.map((link) => link.vm);
  const asProvider = clients.length === 0 ? '' : ` and its ${clients.length} link${clients.length === 1 ? '' : 's'} as provider (${linksNamed(clients, vm)})`;
  const [left, them] = links.length === 1 ? ['it is', 'it'] : ['they are', 'them'];
  return `${vm} has ${recorded} but no directory in ${configDir}: left as ${left} (devices too), as the VM may still run; if it is gone for good, release ${them}${asProvider} with: ${unlinkCommand(vm, ['--forget'], given)}`;
}

/** How many links a warning names, at most; the rest are counted. */
const LINKS_NAMED_MAX = 3;

/** The links of `clients` with `vm` as provider, as a warning names them: `a -> vm, b -> vm, c -> vm and 2 more`. */
function linksNamed(clients: readonly string[], vm: string): string {
  const named = clients
    .slice(0, LINKS_NAMED_MAX)
    .map((client) => `${client} -> ${vm}`)
    .join(', ');
  return clients.length > LINKS_NAMED_MAX ? `${named} and ${clients.length - LINKS_NAMED_MAX} more` : named;
}

/**
 * What `link --all` says of an entry of the config dir with a VM name that is no usable VM
 * directory (a symlink leading outside or to nothing, not a directory, unreadable): not linked,
 * its recorded links as client left as they are (where it leads nowhere, how to release them, as
 * of an orphaned client, with those as provider, which that unlink takes down too); those linked
 * with it as provider, named by client, are their clients' to link (which fails while a client
 * names it) or take down.
 */
function unusableWarning({ vm, problem, leadsNowhere, links, linkedAsProvider }: UnusableVmDir, given: GivenOptions): string {
  const clients = linkedAsProvider.map((link) => link.vm);
  const role = clients.length === 0 ? '' : ' as client';
  // The unlink offered takes down every link of the VM, those linked with it as provider too: said so.
  const asProvider = clients.length === 0 ? '' : ' and its links as provider';
  const release = leadsNowhere ? `, as the VM may still run; if it is gone for good, release ${links.length === 1 ? 'it' : 'them'}${asProvider} with: ${unlinkCommand(vm, ['--forget'], given)}` : '';
  const recorded =
    links.length === 0
      ? `no links are recorded for it${role}`
      : `its ${links.length} recorded link${links.length === 1 ? '' : 's'}${role} ${links.length === 1 ? 'is' : 'are'} left as ${links.length === 1 ? 'it is' : 'they are'} (devices too)${release}`;
  if (clients.length === 0) return `${vm} is not linked: ${problem}; ${recorded}`;
  const theirs = clients.length === 1 ? "its client's" : "their clients'";
  return `${vm} is not linked: ${problem}; ${recorded}; as provider, ${clients.length} recorded link${clients.length === 1 ? '' : 's'} (${linksNamed(clients, vm)}), ${theirs} to link or take down`;
}

/**
 * What `link` says of a VM that --attach did not name whose up links have different modes on its
 * side: those links kept theirs, and its links of the run that were not up got `none`.
 */
function ambiguousWarning({ vm, modes, links }: AmbiguousAttach): string {
  const named = links.map((link) => `${link.client} -> ${link.provider}`).join(', ');
  const take = links.length === 1 ? 'takes' : 'take';
  const shown = modes.length > 1 ? `${modes.slice(0, -1).join(', ')} and ${modes.at(-1) ?? ''}` : modes.join('');
  return `${vm}'s links are attached as ${shown} on its side, so its mode is ambiguous: those links keep theirs, and ${named} ${take} none; to attach ${vm} one way, link with --attach ${vm}=MODE`;
}

/**
 * What `link` says of a VM's side of links it gave another mode than the one last recorded for it
 * (kept-attach.ts's modeChanges): the VM, the links, both modes and the --attach that brings the
 * old one back.
 */
function modeChangeWarning({ vm, was, now, links }: ModeChange): string {
  const named = links.map((link) => `${link.client} -> ${link.provider}`).join(', ');
  return `${vm}'s side of ${named} was ${was} and is ${now} now (a link not up, after unlink or a reboot, gets the mode of the VM's links up, none where none is up); to attach it as before: link with --attach ${vm}=${was}`;
}

/**
 * What `link --all` says where the config dir has no VM with providers, so that it linked nothing
 * (a wrong $SPECTRUM_CONFIG_DIR at boot would otherwise link no VM in silence): where it holds VM
 * directories (none naming a provider: a valid config), a warning; where it holds nothing that
 * looks like one (an empty mount, a dir one level too high, not populated yet), a failure, exit 1,
 * saying what to check. Undefined where it has a VM with providers. (Pure.)
 */
export function nothingToLinkAll(all: AllVms, options: Pick<LinkerOptions, 'configDir' | 'configDirSource'>): { readonly warning: string } | { readonly failure: string } | undefined {
  if (all.vms.length > 0) return undefined;
  const { snapshot } = all.wholeDir;
  const shown = shownOrigin('config dir', options.configDir, options.configDirSource);
  const vmDirs = [...snapshot.vms.values()].filter(looksLikeVmDir).length + (snapshot.misnamed ?? []).length;
  if (vmDirs > 0) return { warning: `${shown} has no VM with providers (providers/net): nothing linked` };
  const fix = pathFix('--config-dir', CONFIG_DIR_ENV, options.configDirSource, 'the directory holding the VM directories');
  return { failure: `${shown} holds no VM directory (a directory with a vmlinux, blk or providers/net): nothing linked; ${fix}` };
}

/** What `link --all` says of a directory with providers whose name is no VM name (under a config dir `/`, one slash, as entryPath). */
export function misnamedWarning(dir: MisnamedVmDir, configDir: string): string {
  return `${configDir === '/' ? '' : configDir}/${dir.shown} has a providers/net but no VM name, so it is not linked: ${dir.reason}; rename it to link it`;
}

const reasonText = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** A failure's line where a signal's exit code outranks its own: a bug's still starts `internal error:`, as runCli says it alone. */
const failureText = (error: unknown): string => `${exitCodeOf(error, LINK_EXIT_CODES) === EXIT.internal ? 'internal error: ' : ''}${reasonText(error)}`;

/**
 * What is said of a VMM that did not detach a NIC of a link taken down all the same: one line.
 * `retry`: how to detach it once the VMM answers, if any.
 */
function vmmFailureLine(failure: VmmDetachFailure, retry: string): string {
  const { link, vmm, vm, nic, error } = failure;
  return (
    `${VMM_NAMES[vmm]} of ${vm} did not detach NIC ${nic} (link ${link.vm} -> ${link.provider}): ${error}; ` +
    `the host side was removed anyway (tap ${nic}, bridge ${link.bridge}), but the VMM may still hold the NIC (README: A VMM that does not detach): ${retry}restart ${vm}`
  );
}

/**
 * The `spectrum-link unlink` that, once a VMM answers, detaches the NIC it did not (`failure`), of
 * a link the run took down, as the state is after the run (`unlinked`: the VM to unlink); or
 * undefined where no such command does that and nothing else. The state no longer records how
 * that link was attached, so `--attach VM=MODE` brings back that VM's side, and only its: not
 * this run's own --attach, which would give other sides modes too. With this run's options that
 * find the link and its VMMs (`given`: state dir, device prefix, socket templates, made absolute
 * as the VMMs were reached from this run's directory, VMM timeout, lock wait: unlinkCommand).
 * Its socket: this run's socket options give it (and every socket the state does not record, as
 * in this run); else (`elsewhere`, recorded where this run's option does not lead) the command
 * names it, as a template without `{vm}`, which that unlink would take for every socket of that
 * kind the state does not record: offered only where it reaches no other NIC so
 * (VmmDetachFailure.throughTemplate).
 */
function unlinkRetry(unlinked: string, failure: VmmDetachFailure, elsewhere: string | undefined, given: GivenOptions): string | undefined {
  const { vm, vmm } = failure;
  const attach = [`${vm}=${vmm}`];
  if (elsewhere === undefined) return unlinkCommand(unlinked, [], given, attach);
  if ((failure.throughTemplate ?? []).length > 0) return undefined;
  return unlinkCommand(unlinked, [], given, attach, vmm === 'qemu' ? { qmpSocket: elsewhere } : { chSocket: elsewhere });
}

/**
 * What `unlink <unlinked> --force` says of a VMM that did not detach a NIC, whose socket is
 * `socket`: how to remove the NIC there, or an unlink that does (unlinkRetry, with this run's
 * options `given`); with --forget, only the first (no record is left for an unlink to find).
 */
export function forcedLine(failure: VmmDetachFailure, unlinked: string, forget: boolean, socket: string, elsewhere: string | undefined, given: GivenOptions): string {
  const { vmm, nic } = failure;
  const retry = forget ? undefined : unlinkRetry(unlinked, failure, elsewhere, given);
  const unlinkAgain = retry === undefined ? '' : `, or ${retry} detaches it`;
  return vmmFailureLine(failure, `once the VMM answers, remove the NIC with ${nicRemoval(vmm, socket, nic, given.cwd)}${unlinkAgain}; or `);
}

/**
 * What `link` says of a VMM that did not detach a NIC of a link to a provider the config no longer
 * names, whose socket is `socket`. Only an unlink of the client reaches that NIC now (with
 * --attach, as the state no longer records it: unlinkRetry), and that takes the client's other
 * links down too, and the links it provides, so the line says the link after it of the client, with
 * this run's options (`given`) and the modes of its links (VmmDetachFailure.relinkAttach), and of
 * each client of those, without this run's --attach, pinning that link's modes as recorded
 * (VmmDetachFailure.relinkClients: its other links, left up, are not switched); where no unlink does that alone, the
 * line says how to remove the NIC at its socket.
 */
export function unlistedLine(failure: VmmDetachFailure, socket: string, elsewhere: string | undefined, given: GivenOptions): string {
  const { link, vmm, nic } = failure;
  const clients = failure.relinkClients ?? [];
  const unlink = unlinkRetry(link.vm, failure, elsewhere, given);
  const retry =
    unlink === undefined
      ? `once the VMM answers, remove the NIC with ${nicRemoval(vmm, socket, nic, given.cwd)} (an unlink naming that socket would look there for NICs of other VMs too), or `
      : `once the VMM answers, ${unlink} detaches it (taking ${link.vm}'s other links down too: run ${relinkedText(link.vm, `${linkCommand([link.vm], given, failure.relinkAttach)} after`, clients.map(({ client, attach }) => ({ client, command: `run ${linkCommand([client], { ...given, attach: [] }, attach)}` })))}), or `;
  return vmmFailureLine(failure, retry);
}

/**
 * A link taken down as JSON (no VMM arguments: its taps are gone), with the VMMs that did not
 * detach it and the devices of other kinds under its names that went with it (`unlink`, and
 * `link` taking down a provider dropped, say them alike).
 */
function unlinkedJson(report: ReleasedLinkReport, failures: readonly VmmDetachFailure[]): Record<string, unknown> {
  const failed = failures.filter((failure) => failure.link.id === report.id).map(({ vm, vmm, nic, error }) => ({ vm, vmm, nic, error }));
  return { ...linkFieldsJson(report), ...(failed.length > 0 && { vmmFailures: failed }), ...(report.foreignDeleted.length > 0 && { foreignDeleted: foreignJson(report.foreignDeleted) }) };
}

/**
 * A link whose take-down stopped part-way (`stopped`) as JSON, as recorded still (linked), with
 * what the take-down had done of it: the NICs that came out of their VMMs (`nicsDetached`), the
 * VMMs that did not detach theirs (`vmmFailures`), the devices the kernel deleted of its names
 * (`devicesDeleted`) and those that may still exist (`devicesLeft`: devicesLeft), each null where
 * what it deleted is unknown; and of those deleted, the devices of other kinds than it makes there
 * (`foreignDeleted`, where any: as unlinkedJson says them).
 */
function stoppedJson(report: ReleasedLinkReport, stopped: StoppedRelease): Record<string, unknown> {
  const ofLink = (entry: { readonly link: LinkReport }): boolean => entry.link.id === report.id;
  const { deleted } = stopped;
  const devices = [report.clientDevice, report.providerDevice, report.bridge];
  return {
    ...linkFieldsJson(report),
    nicsDetached: stopped.detached.filter(ofLink).map(({ vm, vmm, nic }) => ({ vm, vmm, nic })),
    vmmFailures: stopped.failures.filter(ofLink).map(({ vm, vmm, nic, error }) => ({ vm, vmm, nic, error })),
    devicesDeleted: deleted === undefined ? null : devices.filter((device) => deleted.includes(device)),
    devicesLeft: devicesLeft(report, stopped) ?? null,
    ...(report.foreignDeleted.length > 0 && { foreignDeleted: foreignJson(report.foreignDeleted) }),
  };
}

/**
 * The line of `unlink --json` whose take-down stopped part-way (`stopped`): as a finished one's,
 * `unlinked` holding the links it had wholly taken down by then (no device of theirs left; the
 * state file still records them as it did), `forgotten` false (it released no id), and the rest
 * as `link --json` says them (`takeDownStopped`, stoppedJson).
 */
function stoppedUnlinkJson(vm: string, stopped: StoppedRelease): Record<string, unknown> {
  const down = (report: RecordedLinkReport): boolean => devicesLeft(report, stopped)?.length === 0;
  return {
    vm,
    unlinked: stopped.reports.filter(down).map((report) => unlinkedJson(report, stopped.failures)),
    forgotten: false,
    takeDownStopped: stopped.reports.filter((report) => !down(report)).map((report) => stoppedJson(report, stopped)),
  };
}

const PROGRESS_TEXT: Readonly<Record<LinkProgressEvent['phase'], (done: number, total: number) => string>> = {
  devices: (done, total) => `linking: devices for ${done} of ${total} VMs`,
  vmm: (done, total) => `linking: ${done} of ${total} NICs hot-plugged`,
  'one-by-one': (done, total) => `linking VM by VM after a failure: ${done} of ${total} VMs`,
};

/**
 * The progress line of `link` for an event: how many VMs have their devices, then how many NICs
 * are hot-plugged; with --keep-going, once a VM failed there, how many NICs were tried and how
 * many of those failed, and the failed VM whose undo is under way.
 */
export function linkProgressLine({ phase, done, total, failed = 0, undoing }: LinkProgressEvent): string {
  if (phase !== 'vmm' || (failed === 0 && undoing === undefined)) return PROGRESS_TEXT[phase](done, total);
  return `linking: ${done} of ${total} NICs tried, ${failed} failed${undoing === undefined ? '' : `, undoing ${undoing}`}`;
}

/**
 * The progress line of `unlink` for an event: NICs asked out of their VMMs, then the links'
 * devices being deleted, a kernel request that takes seconds for hundreds of links, with the
 * seconds it has taken so far (`seconds`, once there is one).
 */
export function unlinkProgressLine(vm: string, event: TakeDownProgressEvent, seconds = 0): string {
  if (event.phase === 'detach') return `unlinking ${vm}: ${event.done} of ${event.total} NICs asked out of their VMMs`;
  return `unlinking ${vm}: deleting the ${event.devices} devices of its ${event.links} links${seconds > 0 ? ` (${seconds} s)` : ''}`;
}

/**
 * `unlink`'s progress line (of a take-down of several links: one goes in an instant), redrawn
 * each second while the devices are deleted; `stop` ends that (the caller erases the line).
 */
function unlinkProgress(vm: string, progress: Progress): { readonly told: (event: TakeDownProgressEvent) => void; stop(): void } {
  let ticker: NodeJS.Timeout | undefined;
  const stop = (): void => {
    clearInterval(ticker);
    ticker = undefined;
  };
  const told = (event: TakeDownProgressEvent): void => {
    if (event.links < 2) return;
    stop();
    progress.update(unlinkProgressLine(vm, event));
    if (event.phase !== 'delete') return;
    const started = performance.now();
    ticker = setInterval(() => progress.update(unlinkProgressLine(vm, event, Math.floor((performance.now() - started) / 1000))), 1000);
    ticker.unref();
  };
  return { told, stop };
}

function linkProgressText(progress: Progress): (event: LinkProgressEvent) => void {
  return (event) => progress.update(linkProgressLine(event));
}

/**
 * What `link` prints on stdout of a VM: its links (each with the VMM arguments of its sides), and
 * those it took down (no longer among its providers, `gone`); with --json (`json`) one line, with
 * the links of the VM whose take-down stopped part-way (`stopped`: the failure's line says them in
 * text) as `takeDownStopped`.
 */
function linkedVmLines(
  vm: string,
  reports: readonly LinkReport[],
  gone: readonly ReleasedLinkReport[],
  vmmFailures: readonly VmmDetachFailure[],
  json: boolean,
  stopped?: StoppedRelease,
  foreign: readonly ForeignChanged[] = [],
): string[] {
  // Each link's VMM arguments carry the MTU it was linked with (--mtu, else its record's).
  const mtu = (report: LinkReport): number => report.mtu ?? DEFAULT_NIC_MTU;
  if (json) {
    const unlinkedEntries = gone.map((report) => unlinkedJson(report, vmmFailures));
    const stoppedEntries = stopped === undefined ? [] : stopped.reports.filter((report) => report.vm === vm).map((report) => stoppedJson(report, stopped));
    const entry = {
      vm,
      links: reports.map((report) => linkJson(report, mtu(report))),
      ...(gone.length > 0 && { unlinked: unlinkedEntries }),
      ...(stoppedEntries.length > 0 && { takeDownStopped: stoppedEntries }),
      ...(foreign.length > 0 && { foreignChanged: foreign }),
    };
    return [`${JSON.stringify(entry)}\n`];
  }
  const lines: string[] = [];
  if (reports.length === 0 && gone.length === 0) lines.push(`${vm}: no providers, nothing to link\n`);
  for (const report of reports) lines.push(`${reportLine(report)}\n`, ...vmmArgumentLines(report, mtu(report)).map((line) => `${line}\n`));
  for (const report of gone) {
    const forced = vmmFailures.some((failure) => failure.link.id === report.id) ? ', VMM detach failed' : '';
    lines.push(`unlinked ${report.vm} -> ${report.provider} (id ${report.id}, kept${forced}): ${report.provider} is no longer among ${report.vm}'s providers\n`);
    if (report.foreignDeleted.length > 0) lines.push(`${foreignDeletedLine(report.foreignDeleted)}\n`);
  }
  return lines;
}

/** What `link` says on stderr (a warning each) of what it changed of another's on a link's bridge of `vm`'s. */
export function foreignChangedLines(vm: string, { bridge, released, releasedFromLink = [], movedHome = [], addressesRemoved, settingsPutBack }: ForeignChanged): string[] {
  const homeOf = (port: string): string | undefined => releasedFromLink.find((entry) => entry.device === port)?.bridge;
  return [
    ...movedHome.map(({ device, bridge: home }) => `link ${vm}: put ${device}, another link's side device, back on its link's bridge ${home} (off bridge ${bridge})`),
    ...released.map((port) => {
      const home = homeOf(port);
      const note = home === undefined ? '' : ` (another link's side device, whose bridge ${home} is not there: it is on no bridge now; link its VM to make it)`;
      // A foreign port's name is another tool's: escaped where a terminal acts on it, as list shows it.
      return `link ${vm}: took foreign port ${shownPath(port)} off bridge ${bridge}${note}`;
    }),
    ...addressesRemoved.map((address) => `link ${vm}: removed address ${address} from bridge ${bridge}`),
    // A port's STP state refused as its carrier was lost meanwhile: not forwarding yet, said so.
    ...settingsPutBack.map(
      ({ device, settings, untilCarrier }) =>
        `link ${vm}: put back ${device}'s ${settings.join(', ')}${device === bridge ? '' : ` (a port of bridge ${bridge})`}${untilCarrier === true ? `; its state once its carrier is back: the kernel holds it disabled until then` : ''}`,
    ),
  ];
}

/** What `link --keep-going` says of a VM it did not link: one line; a bug's reason starts `internal error:`, as plain link says one (failureText). */
function failedLine({ vm, error }: FailedVm): string {
  return `link ${vm} failed: ${failureText(error)}`;
}

/**
 * The JSON line of `link --keep-going --json` for a VM it did not link (`badInput`: it failed by
 * bad usage or input, as plain link would have exited 2; `internalError`: by a bug, an error of no
 * kind, as plain link would have exited 70).
 */
function failedJson({ vm, error }: FailedVm): Record<string, unknown> {
  return { vm, links: [], error: reasonText(error), ...(isLinkUsageError(error) && { badInput: true }), ...(isLinkBug(error) && { internalError: true }) };
}

/**
 * The exit code that the VMs a `link --keep-going` run did not link (`failed`) make it end with,
 * as plain link would have exited on the worst of their failures: 70 where one failed by a bug,
 * or where its one transaction did, or its undo, no VM failing by it (`bugs`), else 2 where one
 * failed by bad usage or input, else 1 (a bug outranks bad usage, which outranks a failure; a
 * signal's 130 or 143 outranks them all, said where it comes).
 */
function failedVmsExitCode(failed: readonly FailedVm[], bugs: TransactionBugs = {}): number {
  if (anyTransactionBug(bugs) || failed.some((entry) => isLinkBug(entry.error))) return EXIT.internal;
  return failed.some((entry) => isLinkUsageError(entry.error)) ? EXIT.usage : EXIT.failure;
}

/** Whether a `link --keep-going` run has a bug of its one transaction to say (TransactionBugs). */
const anyTransactionBug = ({ transactionBug, transactionUndoBug }: TransactionBugs): boolean => transactionBug !== undefined || transactionUndoBug !== undefined;

/**
 * What `link --keep-going` says of why it linked the VMs VM by VM (its one transaction failed:
 * `failure`), where a signal stopped that pass, or where that failure was a bug no VM failed by
 * again (KeepGoingOutcome.transactionBug): one line, a bug's reason `internal error: ...`.
 */
function vmByVmFailureLine(failure: unknown): string {
  return `the failure that had it link VM by VM: ${failureText(failure)}`;
}

/**
 * The lines of the bugs of a `link --keep-going` run's one transaction that no VM failed by, where
 * there are any (TransactionBugs): the one it failed by (vmByVmFailureLine), then the one that cut
 * its undo short, which left what it had made (the VMs linked again one by one all the same).
 */
function transactionBugLines({ transactionBug, transactionUndoBug }: TransactionBugs): string[] {
  return [
    ...(transactionBug === undefined ? [] : [vmByVmFailureLine(transactionBug)]),
    ...(transactionUndoBug === undefined
      ? []
      : [
          `the undo of its one transaction, which had it link VM by VM, was cut short by a bug: what that had made for the VMs it did not link (devices, ids) may be left over (run it again, and it converges): ${failureText(transactionUndoBug)}`,
        ]),
  ];
}

/**
 * What `link --keep-going` says where a bug cut short an undo of it, stopping the run
 * (UndoCutShort): the VMs it was undoing, what it had made for which may be left over, and those
 * after them in that pass, neither linked nor undone; one line.
 */
function cutShortLine({ undoing, notLinked, madeForNotLinked }: UndoCutShort): string {
  const them = undoing.length === 1 ? 'it' : 'them';
  const those = notLinked.length === 1 ? 'it' : 'them';
  const were = notLinked.length === 1 ? 'was' : 'were';
  const rest =
    notLinked.length === 0
      ? ''
      : madeForNotLinked
        ? `; ${notLinked.join(', ')}, after ${them}, ${were} neither linked nor undone: the devices and ids the run had made for ${those} are left`
        : `; ${notLinked.join(', ')}, after ${them}, ${were} not linked (the pass one by one had not got to ${those})`;
  return `link stopped by a bug as it undid ${undoing.join(', ')}: what the run had made for ${them} (devices, ids) may be left over${rest}: run it again, and it converges`;
}

/** What a `link --keep-going` run that a state failure or a bug stopped in its passes says after its failed VMs (KeepGoingStop): the undo a bug cut short, the bug of its one transaction no VM failed by. */
function keepGoingStopLines(stopped: KeepGoingStop): string[] {
  return [...(stopped.cutShort === undefined ? [] : [cutShortLine(stopped.cutShort)]), ...transactionBugLines(stopped)];
}

/** What `unlink` or `gc` says where a signal stopped its wait for another run's state lock. */
const waitInterrupted = (name: string, signal: NodeJS.Signals, nothing: string): string => `${name} interrupted by ${signal} while waiting for another spectrum-link to finish: ${nothing}`;

/**
 * Run `unlink` or `gc` so that the first SIGINT, SIGTERM or SIGHUP while it waits for another run's state
 * lock stops the wait, saying so in one line (exit 128 + the signal's number). Once the lock is
 * held a signal still ends the process at once (their work is not interruptible: a kernel bulk
 * delete goes on without it), but after one line, `held`'s: what may be partly done, what to run;
 * before they begin to take anything down (onTakeDownBegun), a line saying `nothing` was.
 * A run that failed is said as `said` makes its failure (the lines its command says with it), the
 * line of a lock not released as it should be after them (as `link` says it: withLeftDown).
 */
async function interruptibleLockWait<T>(
  name: 'unlink' | 'gc',
  nothing: string,
  held: (signal: NodeJS.Signals) => string,
  run: (wait: { signal: AbortSignal; onLockHeld: () => void; onLockWaitBegun: () => void; onTakeDownBegun: () => void; onUnlockFailed: (failure: StateStoreError) => void }) => Promise<T>,
  said: (error: unknown) => unknown = (error) => error,
): Promise<{ done: T; unreleased: readonly StateStoreError[] }> {
  const interruption = interruptOnSignals('spectrum-link', nothing, process.stderr, { hangup: true, untilExit: true });
  let exiting: { dispose(): void } | undefined;
  // Under the lock, reading the state and listing devices changes nothing: a signal then says so.
  // Told it holds the lock with none to wait for (gc with no state file), then waiting for it after
  // all (onLockWaitBegun): a signal then says it stopped the wait, as before the lock is held.
  let begun = false;
  let waiting = false;
  const interrupted = (signal: NodeJS.Signals): string =>
    waiting ? waitInterrupted(name, signal, nothing) : begun ? held(signal) : `${name} interrupted by ${signal} before it changed anything: ${nothing}`;
  const onLockHeld = (): void => {
    waiting = false;
    interruption.dispose();
    exiting ??= exitOnSignals('spectrum-link', (signal) => oneLine(interrupted(signal)), process.stderr, { hangup: true, untilExit: true });
  };
  const unlockFailures: StateStoreError[] = [];
  try {
    // After a run that succeeded, the caller says it after what the run did (its work is done).
    const done = await run({
      signal: interruption.signal,
      onLockHeld,
      onLockWaitBegun: () => void (waiting = true),
      onTakeDownBegun: () => void (begun = true),
      onUnlockFailed: (failure) => void unlockFailures.push(failure),
    });
    return { done, unreleased: unlockFailures };
  } catch (error) {
    const failure =
      error instanceof LinkerError && error.kind === 'interrupted-waiting' && interruption.received !== undefined
        ? new CliError(waitInterrupted(name, interruption.received, nothing), signalExitCode(interruption.received))
        : said(error);
    // The state lock not released as it should be after the run failed: a line after the
    // failure's (its first line stays the failure, as link's does), but before a bug's or bad
    // usage's, which comes last.
    throw withLeftDown(
      failure,
      unlockFailures.map((unreleased) => unreleased.message),
    );
  } finally {
    // The result is decided: a signal from here to exit is ignored (untilExit).
    interruption.dispose();
    exiting?.dispose();
  }
}

/**
 * What `link --keep-going` says where a signal stopped it VM by VM (hot-plugging NICs, or linking
 * one by one after a failure): what was undone, what stays linked, what was not done.
 */
function interruptedVmByVm(signal: NodeJS.Signals, interrupted: NonNullable<KeepGoingOutcome['interrupted']>, linked: number): string[] {
  const { during, undone, notLinked } = interrupted;
  const left = notLinked.length;
  // While hot-plugging, the VMs after the one it was at had their devices and ids already: undone too.
  const after = during === 'attach' && left > 0 ? ', and for the VMs after it' : '';
  const undid = undone === undefined ? '' : `undid what it had made for ${undone}, the VM it was linking${after}; `;
  const where = during === 'attach' ? 'hot-plugging NICs VM by VM' : 'linking VM by VM after a failure';
  const stopped =
    `link interrupted by ${signal} while ${where} (--keep-going): ${undid}` +
    `the ${linked} VM${linked === 1 ? '' : 's'} it had linked (printed) stay linked; ${left} VM${left === 1 ? ' was' : 's were'} not linked and no link was taken down: run it again`;
  // The pass may have been stopped before it got to the VM that failed (or during the undo of the
  // one transaction): what failed is said all the same.
  const { failure } = interrupted;
  return failure === undefined ? [stopped] : [stopped, vmByVmFailureLine(failure)];
}

/**
 * What is said after the failure of a `link` that a signal interrupted while it failed and undid
 * the run: the undo went on to its end (a second SIGINT would have cut it short, saying so).
 * `linkedStay`: a `link --keep-going` whose passes VM by VM (hot-plugging NICs, or linking one by
 * one) had linked VMs (printed), which stay; where a bug (`bug`) stopped it so, it may have cut
 * short what it did then (a VM's undo, say), and left what it had made for the VMs not linked:
 * the line says no more than that those stay. So too where it cut an undo short (`cutShort`,
 * KeepGoingStop), no VM linked: not that the undo went on to its end.
 */
function interruptedUndoingLine(signal: NodeJS.Signals, linkedStay = false, bug = false, cutShort = false): string {
  if (bug && (linkedStay || cutShort)) {
    const stay = linkedStay ? 'the VMs it had linked VM by VM (printed) stay linked; ' : '';
    return `link interrupted by ${signal} as a bug stopped it (above): ${stay}what it had made for the VMs it did not link (devices, ids) may be left over: run it again, and it converges`;
  }
  if (linkedStay) {
    return `link interrupted by ${signal} while it failed (above) and undid the VM it was linking: the undo went on to its end; the VMs it had linked VM by VM (printed) stay linked, and links made before it are as they were`;
  }
  return (
    `link interrupted by ${signal} while it failed (above) and undid the run: the undo went on to its end: what this run had made (its devices, the NICs it hot-plugged, the ids it allocated) is undone; ` +
    'links made before it are as they were'
  );
}

/**
 * How far the take-down of links to providers dropped that failed at the end of a `link` run
 * (`error`, with what the run did: `done`) had got: it took none of them down (not begun, or
 * stopped before anything went); part of them (stopped part-way: takeDownStopped); all of them
 * (the failure came after it: the state file not written); or, failed with an error of no
 * LinkerError, which does not say (take-down-failed), unknown.
 */
function takeDownReach(error: LinkerError, done: FinishedOutcome): 'none' | 'part' | 'all' | 'unknown' {
  if (done.takeDownStopped !== undefined) return 'part';
  if (done.notTakenDown === undefined) return 'all';
  return error.kind === 'take-down-failed' ? 'unknown' : 'none';
}

/** What the signal's line says the take-down did, by how far it got (takeDownReach). */
const TAKE_DOWN_DONE = {
  none: 'failed (above) before it took any of them down',
  part: 'went on regardless, and stopped part-way (above)',
  all: 'went on regardless and took them down (printed), then failed (above)',
  unknown: 'failed (above)',
} as const;

/**
 * What a `link` ends with that failed only after its links were made, taking down links to
 * providers dropped (said as where it ends well: FinishedOutcome), where a signal came after its
 * last safe point (it cut nothing short and undid nothing): the failure's lines (its first, then
 * any further ones it carried), then what the signal did and how far the take-down got (`reach`),
 * then `after` (the VMs failed, what an undo left, the VMMs that did not detach a link taken down);
 * the exit code the signal's, as where such a run ends well.
 */
export function interruptedTakingDownError(failure: unknown, signal: NodeJS.Signals, anyFailed: boolean, reach: keyof typeof TAKE_DOWN_DONE, after: readonly string[]): CliError {
  const further = failure instanceof CliError ? failure.details : [];
  const undone = anyFailed ? 'the signal undid nothing, but each VM that failed (below) was undone alone, as without it' : 'the signal undid nothing';
  const said = `link interrupted by ${signal} after it had made its links: ${undone}; the links it made stay (printed), and its take-down of links to providers no longer named ${TAKE_DOWN_DONE[reach]}`;
  return new CliError(failureText(failure), signalExitCode(signal), [...further, said, ...after], 'lines');
}

/**
 * What a `link` that failed, then got a signal while it undid the run, ends with: the failure's
 * lines (its first, then any further ones it carried, as a CliError's details), then what the
 * signal did, then `after` (links left down, NICs not taken back); the exit code the signal's.
 */
export function interruptedUndoingError(failure: unknown, signal: NodeJS.Signals, after: readonly string[], linkedStay = false, cutShort = false): CliError {
  const further = failure instanceof CliError ? failure.details : [];
  return new CliError(failureText(failure), signalExitCode(signal), [...further, interruptedUndoingLine(signal, linkedStay, isLinkBug(failure), cutShort), ...after], 'lines');
}

/**
 * What is said of a link that a failed run leaves down, its record as before the run: up before,
 * its devices replaced by the run (to attach it another way), the new ones deleted by the undo,
 * the old not brought back; or NICs of it taken out of their VMMs by the run (to attach those
 * sides another way), which the undo does not put back. A side whose VMM was not running had no
 * NIC to take out, and one whose VMM no longer held its NIC (the link down before the run, though
 * recorded up) had none either: each said so, not as one taken out.
 */
export function leftDownLine(link: LeftDownLink): string {
  const down = `${link.vm} -> ${link.provider} (id ${link.id}) is down`;
  const taken = link.takenBack.filter((nic) => nic.outcome === 'taken');
  const untaken = link.takenBack
    .filter((nic) => nic.outcome !== 'taken')
    .map(({ vmm, vm, nic, outcome }) =>
      outcome === 'absent'
        ? `the ${VMM_NAMES[vmm]} of ${vm} no longer held NIC ${nic}`
        : `the ${VMM_NAMES[vmm]} of ${vm} was not running`,
    )
    .join('; ');
  const notTaken = untaken === '' ? '' : ` (${untaken})`;
  const again = `its record is as before (README: What an undo leaves): link ${link.vm} again`;
  if (taken.length === 0 && link.replaced) {
    return `${down}: this run replaced its devices to attach it another way, and undoing the run deleted the new ones (the old ones cannot be brought back)${notTaken}: link ${link.vm} again`;
  }
  if (taken.length === 0) {
    // Down before the run: a VMM no longer held its NIC, and the run took nothing out.
    return `${down}: this run took no NIC of it out${notTaken}; ${again}`;
  }
  // A side kept in its mode through another socket: the sockets say what changed.
  const nics = taken
    .map(({ vmm, vm, nic, toSocket, socket }) =>
      toSocket === undefined || socket === undefined ? `NIC ${nic} out of the ${VMM_NAMES[vmm]} of ${vm}` : `NIC ${nic} out of the ${VMM_NAMES[vmm]} of ${vm} at ${shownSocket(socket)}`,
    )
    .join(' and ');
  const replaced = link.replaced ? ' and replaced its devices' : '';
  return `${down}: this run took its ${nics}${replaced}${notTaken} and cannot put ${taken.length === 1 ? 'it' : 'them'} back; ${again}`;
}

/**
 * How to remove by hand a NIC a VMM may still hold, at its socket: cloud-hypervisor's
 * `PUT /api/v1/vm.remove-device {"id"}` (ch-remote's remove-device); QEMU's device_del, which the
 * guest has to acknowledge (DEVICE_DELETED), then netdev_del of the NIC's netdev. A socket
 * relative to this run's directory (`cwd`: a relative template's) is said absolute, or, where that
 * is too long for a socket, with that directory to run from: the command works from anywhere.
 */
export function nicRemoval(vmm: VmmKind, socket: string, nic: string, cwd?: string): string {
  const { path, from } = socketFromAnywhere(socket, cwd);
  if (vmm === 'cloud-hypervisor') {
    const command = `ch-remote --api-socket ${shellWord(path)} remove-device ${nic}`;
    return `${from === undefined ? command : `cd ${shellWord(from)} && ${command}`} (PUT /api/v1/vm.remove-device {"id":"${nic}"} on that socket)`;
  }
  const at = from === undefined ? shownSocket(path) : `${shownSocket(path)} (from directory ${shellWord(from)})`;
  return `QMP at ${at}: device_del {"id":"${nic}"}, then, once DEVICE_DELETED says the guest released it, netdev_del {"id":"${qemuNetdevId({ id: nic })}"}`;
}

/**
 * What is said of a NIC that the undo of a failed `link` had hot-plugged and could not detach (the
 * VMM refused, or did not answer in time): one line. The undo went on, so the VMM may still hold
 * that NIC, on a tap the undo deleted where this run had made it; the state no longer records
 * it, so no spectrum-link command reaches it: the line says how to remove it at `socket`.
 */
function undoDetachLine(failure: VmmDetachFailure, socket: string, cwd: string | undefined): string {
  const { link, vmm, vm, nic, error } = failure;
  return (
    `undoing the run, ${VMM_NAMES[vmm]} of ${vm} did not detach NIC ${nic} that the run had hot-plugged (link ${link.vm} -> ${link.provider}): ${error}; ` +
    `the undo went on, so that VMM may still hold it (README: What an undo leaves): once it answers, remove it with ${nicRemoval(vmm, socket, nic, cwd)}; or restart ${vm}`
  );
}

/**
 * What is said where the undo of a failed `link` (or of a VM of it) could not write the state file
 * back: one line, after the failure, which stays the first. The file still records what the run
 * had (or, where only its directory's sync failed, may bring it back after a crash), while the
 * devices the run made for those links are gone; a link of their clients again, with this run's
 * options (`given`), makes them.
 */
export function undoStateLine(failure: UndoStateWriteFailure, given: GivenOptions): string {
  const { error, written, recorded, clients } = failure;
  const links = recorded.map((link) => `${link.vm} -> ${link.provider} (id ${link.id})`).join(', ');
  const again = `run ${linkCommand(clients, given)}`;
  if (written) {
    return `undoing the run, ${error}: a crash before its next write may bring back this run's records of ${links}, whose devices are deleted (README: What an undo leaves); if one does, ${again}`;
  }
  return `undoing the run, the state file could not be written back: ${error}; it still records ${links} as this run made them, whose devices are deleted (README: What an undo leaves): once it can be written, ${again}`;
}

/**
 * What is said of a step of the undo of a failed `link` (or of a VM of it) that failed: one line,
 * after the failure, which stays the first. The undo went on with its other steps. Devices the
 * kernel did not delete keep their links' ids recorded (none is given to another link while they
 * may be there), so a link of their clients again, with this run's options (`given`), converges
 * them; a namespace it made is left to delete by hand.
 */
export function undoStepLine(failure: UndoStepFailure, given: GivenOptions): string {
  if (failure.step === 'namespace') {
    const { netns, error } = failure;
    return (
      `undoing the run, deleting network namespace ${netns}, which the run had made, failed: ${error}; it may be left (README: What an undo leaves): ` +
      `check what holds it (findmnt /run/netns/${netns}; ip netns pids ${netns}), then ip netns delete ${netns}`
    );
  }
  const { error, left } = failure;
  const devices = left.flatMap((entry) => entry.devices);
  const links = left.map(({ link }) => `${link.vm} -> ${link.provider} (id ${link.id})`).join(', ');
  const clients = [...new Set(left.map(({ link }) => link.vm))];
  if (failure.step === 'mtu') {
    // The records are as before the run: a link of its clients again with no --mtu gives them back the MTU they record.
    const { mtu: _, ...kept } = given;
    return (
      `undoing the run, putting back the MTU it had changed on ${devices.join(' ')} failed: ${error}; ${links} may keep the run's MTU there (README: What an undo leaves): ` +
      `check them (ip link show ${devices[0] ?? ''}), then run ${linkCommand(clients, kept)}`
    );
  }
  return (
    `undoing the run, deleting devices it had made failed: ${error}; ${devices.join(' ')} may still exist, the ids of ${links} kept (README: What an undo leaves): ` +
    `check why (ip -d link show ${devices[0] ?? ''}), then run ${linkCommand(clients, given)}`
  );
}

/**
 * The error a failed `link` ends with, and after it a line per link its undo left down. An
 * expected failure (a CliError, or a module error with a `kind`: exit 1) gets them as its further
 * lines, keeping its exit code; anything else (a bug, bad usage) is rethrown as it is, the lines
 * written before it.
 */
function withLeftDown(error: unknown, lines: readonly string[]): unknown {
  if (lines.length === 0) return error;
  // A bug's line (takeDownFailure's) comes last, as a bug's own does (below).
  if (error instanceof CliError && error.exitCode !== EXIT.internal && (error.details.length === 0 || error.detailsAs === 'lines')) {
    return new CliError(error.message, error.exitCode, [...error.details, ...lines], 'lines', false, { errorKind: error.errorKind });
  }
  const kind = error instanceof Error ? (error as { kind?: unknown }).kind : undefined;
  const expected = typeof kind === 'string' && !isLinkUsageError(error);
  if (expected && error instanceof Error && !(error instanceof CliError)) return new CliError(error.message, EXIT.failure, lines, 'lines', false, { errorKind: kind });
  // Each escaped and on one line, as runCli says the lines of an error (a failed VM's reason may hold anything).
  process.stderr.write(lines.map((line) => `spectrum-link: ${oneLine(line)}\n`).join(''));
  return error;
}

/**
 * The failure of a `link` run's take-down of links to providers dropped (`error`), as it is said:
 * one a bug stopped (a LinkerError whose `failure` is an error of no kind: takeDownUnlisted) is a
 * bug still (exit 70, its line `internal error:`), the line the take-down's, saying what it had
 * done; any other as it is.
 */
function takeDownFailure(error: unknown): unknown {
  if (!(error instanceof LinkerError) || error.failure === undefined || exitCodeOf(error.failure, LINK_EXIT_CODES) !== EXIT.internal) return error;
  return new CliError(error.message, EXIT.internal);
}

/**
 * The error a `link --keep-going` run ends with that failed as a whole (a state file, the take-down
 * of links to providers dropped) after VMs of it had failed (`failed`), as withLeftDown makes it,
 * its exit code ranked as where the run ends well (failedVmsExitCode): 70 where one of them failed
 * by a bug, or its one transaction did, or its undo, no VM failing by it (`bugs`; their own lines
 * say so; the first, the run's failure's, does not), else 2 where one failed by bad input, over the
 * run's own 1 or 2. A signal's exit code and an internal error's of the run's own stay theirs.
 */
function failedVmsOutrank(error: unknown, failed: readonly FailedVm[], bugs: TransactionBugs = {}): unknown {
  const own = exitCodeOf(error, LINK_EXIT_CODES);
  const code = failedVmsExitCode(failed, bugs);
  // (With no VM failed and no bug, code is 1: never above the run's own 1 or 2.)
  if ((own !== EXIT.failure && own !== EXIT.usage) || code <= own) return error;
  const bug = code === EXIT.internal;
  if (error instanceof CliError) return new CliError(error.message, code, error.details, error.detailsAs, bug, { errorKind: error.errorKind });
  // Bad usage, which withLeftDown rethrows after the VMs' lines: its line still last, as it is.
  const kind = error instanceof Error ? (error as { kind?: unknown }).kind : undefined;
  return new CliError(reasonText(error), code, [], 'details', bug, { errorKind: typeof kind === 'string' ? kind : undefined });
}

export type VmmPortFactory = (attach: AttachChoice, flags: VmmFlags) => VmmPort;

/**
 * The commands a `link` run's refusals print (PrintedCommands, linker-types.ts): an unlink with
 * this run's options an unlink takes (not its --attach, which means another thing to unlink), and
 * this link again (`names`: its VMs, or undefined for --all; and --keep-going where given) with
 * VM=MODE values and clients added (those already named, or all with --all, are not said twice).
 */
function linkRunCommands(given: GivenOptions, names: readonly string[] | undefined, keepGoing: boolean): PrintedCommands {
  const keep = keepGoing ? ['--keep-going'] : [];
  return {
    unlink: (vm, words) => unlinkCommand(vm, words, given),
    link: (attach) => linkCommand([...(names === undefined ? ['--all'] : names), ...keep], given, attach),
    // Without the run's --attach, which would switch the client's other links (left up by the unlink).
    // None where that link names the client: it links it as this run asks (a pin would undo that).
    relink: (client, attach) => (names === undefined || names.includes(client) ? undefined : linkCommand([client], { ...given, attach: [] }, attach)),
  };
}

/**
 * Where the VMM of a NIC left is reached: the socket the run used, as the template gave it
 * (relative to this run's directory, for a relative one: nicRemoval says it from anywhere).
 * (socketPath refuses only a path too long to be one, which reached no VMM and so left no NIC;
 * were it to, the line is still said, with the path unchecked, rather than this error replacing
 * the failure.)
 */
function vmmSocket(flags: VmmFlags, kind: VmmKind, vm: string): string {
  const template = kind === 'qemu' ? flags.qmpSocket : flags.chSocket;
  try {
    return socketPath(template, vm);
  } catch {
    return template.replaceAll('{vm}', vm);
  }
}

/**
 * The socket a NIC was asked at where the state recorded it and this run's template leads to
 * another (the same socket spelled otherwise is none: sameSocketPath), or gives a path no socket
 * can have (too long: a detach at the socket recorded never used it, but an unlink under it, the
 * record gone, is refused): a later unlink, the record gone, reaches it only with the option naming it.
 */
function recordedElsewhere(flags: VmmFlags, failure: VmmDetachFailure): string | undefined {
  const { socket, vmm, vm } = failure;
  if (socket === undefined) return undefined;
  let now: string | undefined;
  try {
    now = absoluteSocket(socketPath(vmm === 'qemu' ? flags.qmpSocket : flags.chSocket, vm));
  } catch {
    return socket;
  }
  return now !== undefined && sameSocketPath(socket, now) ? undefined : socket;
}

export function linkCommands(env: Env, vmmFactory: VmmPortFactory): Command[] {
  let logger: Logger | undefined;
  const log = (): Logger => (logger ??= createLogger('spectrum-link'));
  const option = linkerOptionsOf(env);

  const link = new Command('link')
    .description('link client VMs to each of their providers: ids, devices, VMM attachment (idempotent)')
    .argument('[vm...]', 'client VMs to link')
    .addOption(option.configDir())
    .addOption(option.stateDir())
    .addOption(option.devicePrefix())
    .addOption(option.netnsPrefix())
    .addOption(option.mtu())
    .addOption(
      option.attach(
        'attach mode: none|cloud-hypervisor|qemu|netns, or VM=MODE for one VM (repeatable); a VM it does not name keeps the mode its links record (none where they record none, or disagree)',
        'recorded, else none',
      ),
    )
    .addOption(option.qmpSocket())
    .addOption(option.chSocket())
    .addOption(option.vmmTimeout())
    .addOption(option.qemuBus())
    .addOption(option.lockWait())
    .addOption(option.json())
    .option('--all', 'link every VM of the config dir that has providers')
    .option(
      '--keep-going',
      'link every VM that can be: a VM that fails (its config, the kernel, its VMM, bad input such as a VMM socket path too long) is undone alone and reported; exits 70 if any failed by a bug, else 2 if any failed by bad input, else 1 if any failed',
    )
    .action(async (names: string[], flags: LinkFlags, command: Command) => {
      const attach = parseAttachChoice(flags.attach);
      checkSocketTemplates(flags);
      const paths = { ...(await stateNetnsOptions(flags, env, command)), ...configOptions(flags.configDir, env) };
      // What its lines tell the operator to run carries this run's options (printed-command.ts), its device and netns prefixes as the state gives them.
      const given = { ...givenOptions(flags, command, env), devicePrefix: paths.devicePrefix, netnsPrefix: paths.netnsPrefix };
      const linkerOpts: LinkerOptions = {
        ...paths,
        commands: linkRunCommands(given, flags.all === true ? undefined : names, flags.keepGoing === true),
        // Not given: each link keeps the MTU its record has (LinkerOptions.mtu).
        ...(flags.mtu === undefined ? {} : { mtu: integerOption('--mtu', flags.mtu, MTU_MIN, MTU_MAX, 'an MTU') }),
        ...lockWaitOf(flags, env, command),
        attach,
        vmm: vmmFactory(attach, flags),
      };
      // `link --all` reads the config dir itself, once it holds the state lock (linkAll).
      if (flags.all === true && names.length > 0) throw new CliError('link: give VM names or --all, not both', EXIT.usage);
      if (flags.all !== true && names.length === 0) throw new CliError('link: name at least one VM, or use --all', EXIT.usage);
      const started = performance.now();
      // A bulk link takes seconds: on a terminal, a line that says how far it has got.
      const progress: Progress = flags.json !== true && (flags.all === true || names.length > 1) ? terminalProgress() : NO_PROGRESS;
      // The first SIGINT, SIGTERM or SIGHUP (its terminal gone: an SSH session dropped) stops the
      // run at its next safe point and undoes it, as a failure would; a second SIGINT (Ctrl-C
      // again) exits at once, a SIGTERM or SIGHUP after the first is said and the undo finishes:
      // logind and a dropped SSH session send both close together, from no operator.
      const interruption = interruptOnSignals('spectrum-link', 'what this run made may be left over: run it again, and it converges', process.stderr, {
        hangup: true,
        goesOn: 'the undo (or the run, past its last safe point) goes on to its end',
        untilExit: true,
      });
      let outcome: KeepGoingOutcome;
      // `link --all`'s VMs and the config dir as the run linked them.
      let all: AllVms | undefined;
      // Links a failed run (or, with --keep-going, a failed VM) left down: a line each.
      const leftDown: LeftDownLink[] = [];
      // NICs an undo could not take back from their VMMs: a line each too.
      const undoFailures: VmmDetachFailure[] = [];
      // State files an undo could not write back: a line each too.
      const undoWrites: UndoStateWriteFailure[] = [];
      // Undo steps that failed (devices, namespaces left): a line each too.
      const undoSteps: UndoStepFailure[] = [];
      const foreign = new Map<string, ForeignChanged[]>();
      // The state lock not released as it should be (after the run failed, or did its work): a line too, last.
      const unlockFailures: StateStoreError[] = [];
      const undoDetachLines = (): string[] => undoFailures.map((failure) => undoDetachLine(failure, failure.socket ?? vmmSocket(flags, failure.vmm, failure.vm), given.cwd));
      const stepLine = (failure: UndoStepFailure): string => undoStepLine(failure, given);
      const stateLine = (failure: UndoStateWriteFailure): string => undoStateLine(failure, given);
      // Said after the failure: the links left down, the devices and namespaces left, the records
      // not written back, each VMM that did not detach a link taken down (`vmmFailures`), then the
      // NICs not taken back. With --keep-going, the VMs that failed (before a signal or a failure
      // stopped the run, or in a run that ends) come first, each with its links left down, then
      // what else its passes say (`passes`: an undo a bug cut short, a bug of its one transaction
      // that no VM failed by).
      const undoLines = (failed: readonly FailedVm[] = [], vmmFailures: readonly VmmDetachFailure[] = [], passes: readonly string[] = []): string[] => {
        const failedVms = new Set<string>(failed.map((entry) => entry.vm));
        return [
          ...failed.flatMap((entry) => [failedLine(entry), ...leftDown.filter((link) => link.vm === entry.vm).map(leftDownLine)]),
          ...passes,
          ...leftDown.filter((link) => !failedVms.has(link.vm)).map(leftDownLine),
          ...undoSteps.map(stepLine),
          ...undoWrites.map(stateLine),
          ...vmmFailures.map((failure) => unlistedLine(failure, failure.socket ?? vmmSocket(flags, failure.vmm, failure.vm), recordedElsewhere(flags, failure), given)),
          ...undoDetachLines(),
          ...unlockFailures.map((failure) => failure.message),
        ];
      };
      // What a run that did its work says of it (also one that failed only after its links were
      // made, taking down links to providers dropped: FinishedOutcome): first its warnings, a
      // line each (the message alone: fields would take more lines on a terminal), of the config
      // dir as linked (`all`: read under the lock), not as it was when the run began...
      const warnOutcome = async (done: FinishedOutcome, all: AllVms | undefined): Promise<void> => {
        if (!wouldLog('warn')) return;
        for (const orphan of done.orphaned) log().warn(orphanWarning(orphan, linkerOpts.configDir, given));
        for (const entry of done.unusable) log().warn(unusableWarning(entry, given));
        for (const entry of done.ambiguousAttach) log().warn(ambiguousWarning(entry));
        for (const entry of done.modeChanges ?? []) log().warn(modeChangeWarning(entry));
        const snapshot = all?.wholeDir.snapshot;
        for (const dir of snapshot?.misnamed ?? []) log().warn(misnamedWarning(dir, snapshot?.dir ?? linkerOpts.configDir));
        // A per-VM mode for a VM that is nowhere (a typo, most likely: the VM meant kept its mode)
        // is warned of, not refused: a VM that goes from the config dir would otherwise fail
        // every call of a script that passes one --attach set to all, until the script is changed.
        if (attach.perVm.size > 0) {
          for (const stray of await strayAttachModes(done, attach, linkerOpts, snapshot)) {
            log().warn(`--attach ${stray.vm}=${stray.mode} was not used: this run linked no ${stray.vm} (nor a VM with it as a provider), and there is no such VM (${stray.reason}); check the name`);
          }
        }
      };
      // ...then its stdout.
      const writeOutcome = (done: FinishedOutcome, all: AllVms | undefined): void => {
        const lines: string[] = [];
        // VMs without providers that had nothing to take down are not reported by --all; with
        // --json, one whose take-down stopped part-way is, with its `takeDownStopped` (in text
        // the failure's line says it).
        const stopped = done.takeDownStopped;
        const stoppedVms = flags.json === true ? (stopped?.reports ?? []).map((report) => vmName(report.vm)) : [];
        for (const vm of new Set([...done.linked.keys(), ...done.unlinked.keys(), ...stoppedVms])) {
          lines.push(...linkedVmLines(vm, done.linked.get(vm) ?? [], done.unlinked.get(vm) ?? [], done.vmmFailures, flags.json === true, stopped, foreign.get(vm)));
        }
        // With --keep-going, a line for each VM it did not link (stderr says why too).
        // (`badInput`: it failed by bad usage or input, as plain link would have exited 2;
        // `internalError`: by a bug, as plain link would have exited 70.)
        if (flags.json === true) for (const entry of done.failed) lines.push(`${JSON.stringify(failedJson(entry))}\n`);
        // In --json, a line for each VM whose directory has gone too, its recorded links as `orphaned`.
        if (flags.json === true) for (const { vm, links } of done.orphaned) lines.push(`${JSON.stringify({ vm, links: [], orphaned: links.map(linkFieldsJson) })}\n`);
        // And one for each entry that is no usable VM directory, its recorded links (left as they are) as
        // `recorded`, those linked with it as provider (its clients' to link or take down) as `linkedAsProvider`.
        if (flags.json === true) {
          for (const { vm, problem, links, linkedAsProvider } of done.unusable) {
            const recorded = links.length > 0 && { recorded: links.map(linkFieldsJson) };
            const provided = linkedAsProvider.length > 0 && { linkedAsProvider: linkedAsProvider.map(linkFieldsJson) };
            lines.push(`${JSON.stringify({ vm, links: [], unusableDir: problem, ...recorded, ...provided })}\n`);
          }
        }
        // And one for each directory with providers that --all skipped for its name.
        if (flags.json === true) for (const { name, reason } of all?.wholeDir.snapshot.misnamed ?? []) lines.push(`${JSON.stringify({ vm: name, links: [], invalidName: reason })}\n`);
        process.stdout.write(lines.join(''));
      };
      try {
        const onLeftDown = (links: readonly LeftDownLink[]): void => void leftDown.push(...links);
        const onUndoDetachFailed = (failures: readonly VmmDetachFailure[]): void => void undoFailures.push(...failures);
        const onUndoStateWriteFailed = (failure: UndoStateWriteFailure): void => void undoWrites.push(failure);
        const onUndoStepFailed = (failure: UndoStepFailure): void => void undoSteps.push(failure);
        const onUnlockFailed = (failure: StateStoreError): void => void unlockFailures.push(failure);
        // What it changed of another's on a link's bridge is said as it is done (a later failure does not undo it).
        const onForeignChanged = (vm: string, changed: ForeignChanged): void => {
          foreign.set(vm, [...(foreign.get(vm) ?? []), changed]);
          if (wouldLog('warn')) for (const line of foreignChangedLines(vm, changed)) log().warn(line);
        };
        const runOptions = { ...linkerOpts, progress: linkProgressText(progress), signal: interruption.signal, onLeftDown, onUndoDetachFailed, onUndoStateWriteFailed, onUndoStepFailed, onUnlockFailed, onForeignChanged };
        if (flags.all === true) {
          const whole = flags.keepGoing === true ? await linkAllKeepGoing(runOptions) : { ...(await linkAll(runOptions)), failed: [] };
          ({ all, ...outcome } = whole);
        } else outcome = flags.keepGoing === true ? await linkVmsKeepGoing(names, runOptions) : { ...(await linkVms(names, runOptions)), failed: [] };
      } catch (error) {
        // The VMs --keep-going had failed before a signal or a state failure stopped it: said as
        // where it ends unstopped (stdout too, with --json).
        const writeFailedJson = (failed: readonly FailedVm[]): void => {
          if (flags.json === true && failed.length > 0) process.stdout.write(failed.map((entry) => `${JSON.stringify(failedJson(entry))}\n`).join(''));
        };
        // (With --keep-going and no state dir yet, the VMs that failed their checks before the lock.)
        if (error instanceof LinkerError && error.kind === 'interrupted-waiting' && interruption.received !== undefined) {
          writeFailedJson(error.failed);
          const waited = `link interrupted by ${interruption.received} while waiting for another spectrum-link to finish: nothing was made`;
          throw new CliError(waited, signalExitCode(interruption.received), undoLines(error.failed), 'lines');
        }
        if (error instanceof LinkerError && error.kind === 'interrupted' && interruption.received !== undefined) {
          writeFailedJson(error.failed);
          throw new CliError(
            `link interrupted by ${interruption.received}: undid what this run had made (its devices, the NICs it hot-plugged, the ids it allocated); links made before it are as they were`,
            signalExitCode(interruption.received),
            undoLines(error.failed),
            'lines',
          );
        }
        // Failed, then (or as it failed) interrupted: first why it failed, then what the signal did.
        // (Where a bug cut that undo short, the signal's line says what it made may be left over.)
        if (error instanceof LinkerError && error.kind === 'interrupted-undoing' && interruption.received !== undefined) {
          throw interruptedUndoingError(error.failure, interruption.received, undoLines(), false, error.stopped.cutShort !== undefined);
        }
        // Failed only after its links were made, taking down links to providers dropped: what it
        // did is said as where it ends well (the progress line erased first, as there: else the
        // first line would go on where it ends, on a terminal), then the failure as it is said
        // without it (its exit code too), then the lines a run that ends well says after its
        // failures (the VMs failed, what an undo left, each VMM that did not detach a link the
        // take-down took down).
        if (error instanceof LinkerError && error.outcome !== undefined) {
          const { all: linkedAll, ...done } = error.outcome;
          progress.done();
          await warnOutcome(done, linkedAll);
          writeOutcome(done, linkedAll);
          const failure = error.kind === 'state-failed' || error.kind === 'take-down-failed' ? error.failure : takeDownFailure(error);
          // A signal that came meanwhile (after the last safe point: nothing was cut short or
          // undone for it) is said after the failure, and its exit code is the run's.
          const after = undoLines(done.failed, done.vmmFailures, transactionBugLines(done));
          if (interruption.received !== undefined) {
            throw interruptedTakingDownError(failure, interruption.received, done.failed.length > 0, takeDownReach(error, done), after);
          }
          throw failedVmsOutrank(withLeftDown(failure, after), done.failed, done);
        }
        // The state failure as it is said without them (its exit code too), then those VMs. The
        // VMs it had linked again one by one stay linked: printed first, as where it ends unstopped;
        // so, with --all, are the warnings and lines of what it leaves as it is in the config dir.
        if (error instanceof LinkerError && error.kind === 'state-failed') {
          const left = error.leftAsItIs;
          const linked = new Map([...error.linked].map(([vm, reports]): [VmName, LinkReport[]] => [vm, [...reports]]));
          const done: FinishedOutcome = { linked, unlinked: new Map(), orphaned: left?.orphaned ?? [], unusable: left?.unusable ?? [], vmmFailures: [], ambiguousAttach: [], failed: error.failed };
          // The progress line erased first (as before the lines of a run that ends unstopped):
          // else the first of them would go on where it ends, on a terminal.
          progress.done();
          if (left !== undefined) await warnOutcome(done, left.all);
          writeOutcome(done, left?.all);
          const after = undoLines(error.failed, [], keepGoingStopLines(error.stopped));
          // A signal that came as it failed (the failure's undo went on to its end, but where a bug cut one short): its exit code, as in plain link.
          if (interruption.received !== undefined) throw interruptedUndoingError(error.failure, interruption.received, after, linked.size > 0, error.stopped.cutShort !== undefined);
          throw failedVmsOutrank(withLeftDown(error.failure, after), error.failed, error.stopped);
        }
        // (So with no VM to say with it: plain link says it as interrupted-undoing.) So too a bug
        // that ended the run as a signal came: the signal's exit code outranks its 70 too, its
        // line still `internal error:` (failureText).
        if ((isStateFailure(error) || isLinkBug(error)) && interruption.received !== undefined) throw interruptedUndoingError(error, interruption.received, undoLines());
        throw withLeftDown(error, undoLines());
      } finally {
        // The result is decided: a signal from here to exit is ignored (untilExit), not let kill
        // the run as it says what it did.
        interruption.dispose();
        progress.done();
      }
      const { linked, unlinked, vmmFailures, failed } = outcome;
      await warnOutcome(outcome, all);
      // Logged only where it is seen: making the logger loads pino, a good part of a single link.
      if (wouldLog('info')) {
        log().info({ vms: all?.vms.length ?? names.length, links: [...linked.values()].flat().length, unlinked: [...unlinked.values()].flat().length, ms: Math.round(performance.now() - started) }, 'linked');
      }
      writeOutcome(outcome, all);
      const nothing = all === undefined ? undefined : nothingToLinkAll(all, linkerOpts);
      if (nothing !== undefined && 'warning' in nothing && wouldLog('warn')) log().warn(nothing.warning);
      // Each VM --keep-going did not link (and after it each of its links left down), the links
      // left down of VMs a signal undid, the devices and namespaces an undo left, the records an
      // undo could not write back, then each VMM that did not detach a link taken down, and each
      // NIC an undo did not take back: a line each.
      const failureLines = undoLines(failed, vmmFailures, transactionBugLines(outcome));
      // Stopped by a signal VM by VM: what was linked is printed and stays.
      if (outcome.interrupted !== undefined && interruption.received !== undefined) {
        const [stopped = '', ...why] = interruptedVmByVm(interruption.received, outcome.interrupted, linked.size);
        throw new CliError(stopped, signalExitCode(interruption.received), [...why, ...failureLines], 'lines');
      }
      // A signal after the last safe point: the run is done, and said; the exit code tells of the
      // signal. The signal undid nothing; with --keep-going a VM that failed (its VMM refusing
      // while the signal came, say) was undone alone all the same, as it is without one.
      if (interruption.received !== undefined) {
        const undone = failed.length === 0 ? 'nothing was undone' : 'the signal undid nothing, but each VM that failed (below) was undone alone, as without it';
        const done = `link interrupted by ${interruption.received} after it had done its work: ${undone}`;
        throw new CliError(done, signalExitCode(interruption.received), failureLines, 'lines');
      }
      // VMs not linked, links taken down despite a VMM that did not detach: what was linked stays
      // linked, but the run failed, a line each. A VM that failed by bad usage or input (which
      // plain link exits 2 on) makes it 2: bad usage outranks a failure, as in most tools
      // (and on every other ending but a signal's: failedVmsOutrank); one that failed by a bug
      // (which plain link exits 70 on), or its one transaction failed by one that no VM failed
      // by, makes it 70, its own line saying so.
      if (failureLines.length > 0) {
        const [first = '', ...rest] = failureLines;
        const code = failedVmsExitCode(failed, outcome);
        // With --json, each VM that failed has its line with its "error" (writeOutcome): no error object besides.
        throw new CliError(first, code, rest, 'lines', code === EXIT.internal, { saidInJson: flags.json === true && failed.length > 0 });
      }
      // A config dir with nothing that looks like a VM is most likely the wrong one: a failure.
      if (nothing !== undefined && 'failure' in nothing) throw new CliError(nothing.failure, EXIT.failure);
    });

  const unlink = new Command('unlink')
    .description("remove a VM's links (devices and VMM attachments); ids are kept unless --forget")
    .argument('<vm>', 'VM whose links (as client or as provider) go')
    .addOption(option.stateDir())
    .addOption(option.devicePrefix())
    // Links record how they were attached; --attach is for links that have no record of it.
    .addOption(option.attach('attach mode of links whose state records none: none|cloud-hypervisor|qemu|netns, or VM=MODE (repeatable)'))
    .addOption(option.qmpSocket())
    .addOption(option.chSocket())
    .addOption(option.vmmTimeout())
    .addOption(option.lockWait())
    .addOption(option.json())
    .option('--forget', 'also release the ids')
    .option('--force', "delete the devices even where a VMM does not detach its NIC (it refuses, or does not answer in time): cuts the VM off; exits 1 naming each such VMM")
    .action(async (name: string, flags: UnlinkFlags, command: Command) => {
      const attach = parseAttachChoice(flags.attach);
      const forget = flags.forget === true;
      checkSocketTemplates(flags);
      const state = await stateOptions(flags, env, command);
      // What its lines tell the operator to run carries this run's options, its --attach too (printed-command.ts), its device prefix as the state gives it.
      const given = { ...givenOptions(flags, command, env), devicePrefix: state.devicePrefix };
      const commands: PrintedCommands = { unlink: (vm, words) => unlinkCommand(vm, words, given, given.attach), link: (pinned) => linkCommand([name], given, pinned), relink: (client, pinned) => linkCommand([client], { ...given, attach: [] }, pinned) };
      // Many links take seconds to go: on a terminal, a line that says how far it has got (as link's).
      const progress: Progress = flags.json !== true ? terminalProgress() : NO_PROGRESS;
      const taking = unlinkProgress(name, progress);
      const endProgress = (): void => {
        taking.stop();
        progress.done();
      };
      const options = { ...state, ...lockWaitOf(flags, env, command), attach, vmm: vmmFactory(attach, flags), commands, onTakeDownProgress: taking.told };
      // Before the lock, which would make it.
      requireNamedStateDir(options.stateDir, options.stateDirSource);
      // The default one missing (a fresh host) records no links: said as unlinkVm says it, without
      // the lock, which would make the dir; a command that finds nothing to do leaves no trace.
      if (stateDirAbsent(options.stateDir)) throw notLinkedError(vmName(name), options);
      const {
        done: { reports, failures, recordedVms },
        unreleased,
      } = await interruptibleLockWait(
        'unlink',
        'nothing was taken down',
        // Once it holds the lock: NICs detached, devices deleted (a kernel bulk delete goes on
        // without it), the state not yet written; the same unlink finishes it. (The progress
        // line erased first: the line starts a line of its own.)
        (signal) => {
          endProgress();
          return (
            `unlink interrupted by ${signal}: its take-down may be partly done (NICs detached, devices deleted, the kernel finishing a deletion begun) ` +
            `while the state may still record ${name}'s links as before: run ${commands.unlink(name, [...(forget ? ['--forget'] : []), ...(flags.force === true ? ['--force'] : [])])} again to finish it`
          );
        },
        (wait) => unlinkVm(name, { forget, force: flags.force === true }, { ...options, ...wait }).finally(endProgress),
        (error: unknown) => {
          // A take-down stopped part-way: its line says what it had done; after it, the line of
          // each VMM that did not detach a NIC whose tap and bridge it deleted, as where --force
          // ends (the records are kept, --forget or not, so an unlink still finds that link).
          const stopped = error instanceof LinkerError ? error.released : undefined;
          if (stopped === undefined) return error;
          // With --json, what it had done on stdout too, for scripts: then the lines, as without.
          if (flags.json === true) process.stdout.write(`${JSON.stringify(stoppedUnlinkJson(name, stopped))}\n`);
          const lines = stopped.failures
            .filter((failure) => hostSideDeleted(failure, stopped.deleted))
            .map((failure) => forcedLine(failure, name, false, failure.socket ?? vmmSocket(flags, failure.vmm, failure.vm), recordedElsewhere(flags, failure), given));
          // Its kind kept (--json's error object), as where no VMM's line follows.
          return lines.length === 0 ? error : new CliError(reasonText(error), EXIT.failure, lines, 'lines', false, { errorKind: error instanceof LinkerError ? error.kind : undefined });
        },
      );
      // A per-VM mode for a VM that no recorded link involves could serve no unlink: a typo, most
      // likely, with which a link without a recorded mode got the default one. One for a VM with
      // other links is fine: scripts pass one --attach set to every call.
      if (attach.perVm.size > 0 && wouldLog('warn')) {
        for (const unused of unusedAttachModes(attach, recordedVms, [])) {
          log().warn(`--attach ${unused.vm}=${unused.mode} was not used: no recorded link involves ${unused.vm} (as client or provider); check the name`);
        }
      }
      const failuresOf = (report: LinkReport): VmmDetachFailure[] => failures.filter((failure) => failure.link.id === report.id);
      // The taps are gone: no VMM arguments (they would name devices that no longer exist). A
      // link taken down while a VMM did not detach its NIC says so (`vmmFailures`).
      // Devices of other kinds under a link's names went with its own: said under it (`foreignDeleted`).
      if (flags.json === true) {
        const unlinked = reports.map((report) => unlinkedJson(report, failures));
        process.stdout.write(`${JSON.stringify({ vm: name, unlinked, forgotten: forget })}\n`);
      } else {
        for (const report of reports) {
          const forced = failuresOf(report).length > 0 ? ', VMM detach failed' : '';
          process.stdout.write(`unlinked ${report.vm} -> ${report.provider} (id ${report.id}${forget ? ', forgotten' : ', kept'}${forced})\n`);
          if (report.foreignDeleted.length > 0) process.stdout.write(`${foreignDeletedLine(report.foreignDeleted)}\n`);
        }
      }
      // Then the state lock not released as it should be (the work is done, and said above): a line, last.
      const failureLines = [
        ...failures.map((failure) => forcedLine(failure, name, forget, failure.socket ?? vmmSocket(flags, failure.vmm, failure.vm), recordedElsewhere(flags, failure), given)),
        ...unreleased.map((failure) => failure.message),
      ];
      if (failureLines.length > 0) {
        const [first = '', ...rest] = failureLines;
        throw new CliError(first, EXIT.failure, rest, 'lines');
      }
    });

  // A listed link's VMM arguments carry the MTU its bridge has, which --mtu gave it when it was
  // made. Only a link whose devices exist gets them: those of one taken down (unlink keeps its
  // id) or that lost a device (a crash, a reboot) would name taps that are not there.
  // A link unlink took down (its id kept) has no attach mode: shown as null (`-`), not the default (linkFieldsJson).
  // One up whose record has no attach modes (written before the state kept them) is linked, its
  // modes as its devices show them: unknown for a tap (null, `?`), which gets no VMM arguments.
  // A device under a link's name of another kind than the link makes there is none of its (not
  // present, not linked): `foreign` in JSON, a line under the link in text.
  const printListed = (listed: ListedLink[], json: boolean, stray?: StrayNetnsPrefix): void => {
    const mtuOf = (entry: ListedLink): number => entry.bridgeMtu ?? DEFAULT_NIC_MTU;
    if (json) {
      const foreign = (entry: ListedLink): Record<string, unknown>[] => foreignJson(entry.foreign);
      // `farEndsElsewhere` only where there are any.
      const elsewhere = (entry: ListedLink): Record<string, unknown> =>
        entry.farEndsElsewhere.length === 0 ? {} : { farEndsElsewhere: entry.farEndsElsewhere.map(({ device, netns }) => ({ device, netns })) };
      // `clientSocket` and `providerSocket`: each only where the state records it (a linked link's VMM side).
      // `offBridge` only where there are any, as `farEndsElsewhere`.
      const offBridge = (entry: ListedLink): Record<string, unknown> => (entry.offBridge.length === 0 ? {} : { offBridge: entry.offBridge.map(({ device, master }) => ({ device, master })) });
      // `foreignPorts` and `bridgeAddresses` only where there are any, as `offBridge`.
      const onBridge = ({ onBridge: { ports, addresses, uppers } }: ListedLink): Record<string, unknown> => ({
        ...(ports.length > 0 && { foreignPorts: ports.map((device) => ({ device })) }),
        ...(addresses.length > 0 && { bridgeAddresses: addresses }),
        ...(uppers.length > 0 && { upperDevices: uppers }),
      });
      // `changedSettings` only where there are any, as `offBridge`.
      const changedSettings = ({ settingsOff }: ListedLink): Record<string, unknown> =>
        settingsOff.length === 0 ? {} : { changedSettings: settingsOff.map(({ device, setting, value, expected, valueDevice }) => ({ device, setting, value, expected, ...(valueDevice !== undefined && { valueDevice }) })) };
      // After the link's fields, linked or not: whether it is there and linked, and what of it is not as link leaves it.
      const seen = (entry: ListedLink): Record<string, unknown> => ({
        present: entry.present,
        linked: entry.linked,
        foreign: foreign(entry),
        ...elsewhere(entry),
        ...offBridge(entry),
        ...onBridge(entry),
        ...changedSettings(entry),
      });
      const entries = listed.map((entry) =>
        entry.linked ? { ...(entry.present ? linkJson(entry, mtuOf(entry)) : linkFieldsJson(entry)), ...socketsJson(entry), ...seen(entry) } : { ...linkFieldsJson(entry), ...seen(entry) },
      );
      process.stdout.write(`${JSON.stringify(entries)}\n`);
    } else if (listed.length === 0) process.stdout.write('no links recorded\n');
    else {
      const state = (entry: ListedLink): string => {
        if (!entry.linked) return 'unlinked (id kept)';
        // Every device there, yet not present: only for veths whose far end is not in its VM's namespace (lines under it say which).
        const elsewhere = entry.farEndsElsewhere.length === 1 ? 'far end elsewhere' : 'far ends elsewhere';
        // Present, but a side device off its bridge (lines under it say which): it carries nothing.
        // Or something else on its bridge: another port, an address; or settings changed (STP on, hairpin on): lines under it say what.
        const up = entry.offBridge.length > 0 ? 'not bridged' : bridgeShared(entry.onBridge) ? 'bridge shared' : entry.settingsOff.length > 0 ? 'settings changed' : 'up';
        const shown = entry.present ? up : entry.devicesThere ? elsewhere : 'devices missing';
        return entry.attachRecorded ? shown : `${shown} (attach modes not recorded)`;
      };
      const lines = listed.flatMap((entry) => [
        `${reportLine(entry, entry.linked, true)}  ${state(entry)}`,
        ...(entry.linked && entry.present ? vmmArgumentLines(entry, mtuOf(entry)) : []),
        ...entry.foreign.map(foreignLine),
        ...entry.farEndsElsewhere.map((elsewhere) => farEndLine(elsewhere, stray)),
        ...entry.offBridge.map((off) => offBridgeLine(off, entry.bridge)),
        ...onBridgeLines(entry.onBridge, entry.bridge),
        ...entry.settingsOff.map((off) => settingOffLine(off, entry.bridge)),
      ]);
      process.stdout.write(lines.map((line) => `${line}\n`).join(''));
    }
  };

  // --netns-prefix: a veth whose far end is not in its VM's namespace is not present (link makes
  // the pair anew), so list and show need to know where VMs live, as link does: given none, where
  // the state records (stateNetnsOptions); given another, they look there, and say of every veth
  // that its far end is elsewhere.

  const list = new Command('list')
    .description('list every recorded link and whether its devices exist')
    .addOption(option.stateDir())
    .addOption(option.devicePrefix())
    .addOption(option.netnsPrefix())
    .addOption(option.json())
    .action(async (flags: ListFlags, command: Command) => {
      const given = await listingNetnsOptions(flags, env, command);
      const options = { ...given.options, attach: DEFAULT_ATTACH };
      requireNamedStateDir(options.stateDir, options.stateDirSource);
      printListed(await listLinks(options), flags.json === true, given.stray);
    });

  const show = new Command('show')
    .description('show the links of one VM (as client or as provider); a name with no links and no VM directory is an error')
    .argument('<vm>', 'VM name')
    .addOption(option.configDir())
    .addOption(option.stateDir())
    .addOption(option.devicePrefix())
    .addOption(option.netnsPrefix())
    .addOption(option.json())
    .action(async (name: string, flags: ShowFlags, command: Command) => {
      const given = await listingNetnsOptions(flags, env, command);
      const options = { ...given.options, ...configOptions(flags.configDir, env), attach: DEFAULT_ATTACH };
      requireNamedStateDir(options.stateDir, options.stateDirSource);
      printListed(await showLinks(name, options), flags.json === true, given.stray);
    });

  const gc = new Command('gc')
    .description('delete host devices with the device prefix that no recorded link owns')
    .addOption(option.stateDir())
    .addOption(option.devicePrefix())
    .addOption(option.lockWait())
    .addOption(option.json())
    .action(async (flags: GcFlags, command: Command) => {
      const options = { ...(await stateOptions(flags, env, command)), ...lockWaitOf(flags, env, command) };
      requireNamedStateDir(options.stateDir, options.stateDirSource);
      const { done: removed, unreleased } = await interruptibleLockWait(
        'gc',
        'nothing was deleted',
        // Once it holds the lock: a kernel bulk delete goes on without it; gc again deletes what is left.
        (signal) => `gc interrupted by ${signal}: the devices it found to delete may be partly deleted (the kernel finishing a deletion begun): run gc again to delete what is left`,
        (wait) => collectGarbage({ ...options, ...wait }),
        (error: unknown) => {
          // The kernel stopped its removal: with --json, what it had deleted (none too) on stdout too (its line says it), for scripts.
          const stopped = gcStoppedDevices(error);
          if (flags.json === true && stopped !== undefined) process.stdout.write(`${JSON.stringify({ removed: stopped.removed, stopped: true, devicesLeft: stopped.left ?? null })}\n`);
          return error;
        },
      );
      if (flags.json === true) process.stdout.write(`${JSON.stringify({ removed })}\n`);
      else process.stdout.write(removed.length === 0 ? 'nothing to collect\n' : `removed ${removed.join(' ')}\n`);
      // The state lock not released as it should be: its line after what gc did, exit 1.
      const [first, ...rest] = unreleased.map((failure) => failure.message);
      if (first !== undefined) throw new CliError(first, EXIT.failure, rest, 'lines');
    });

  // An option of one value given twice with different values is refused, as --attach's modes are (a directory, given twice as two paths to it, is not).
  return [link, unlink, list, show, gc].map((command) => refuseRepeatedValues(command, ['--attach'], ['--state-dir', '--config-dir']));
}
