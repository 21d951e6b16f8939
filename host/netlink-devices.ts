// Adapter between device plans and the kernel, through route netlink (shared/rtnl-socket.ts):
// observe devices by name (or all of them), carry out plan steps in order per namespace, undo
// what a failed run created. No decisions are made here. VM namespaces are made with
// `ip netns add` (it also mounts them under /run/netns, where this module finds them).
import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, statfsSync, unlinkSync } from 'node:fs';
import {
  type DevicePlan,
  type DeviceStep,
  type NamespaceIdentity,
  type ObservedDevice,
  type ObservedDevices,
  type ObservedNamespace,
  createdKinds,
  isStateAlone,
  stepText,
} from './device-plan.js';
import { readMountinfo } from './mountinfo.js';
import { type LinkInfo, ProgramWriter, decodeAddresses, decodeLinks, decodeNamespaceId, decodePorts, observedDevices } from './link-message.js';
import { type MarkedOutcome, type RecordOutcome, RtnlError, RtnlSocket, withRtnlSocket } from '../shared/rtnl-socket.js';

export type DeviceErrorKind = 'netlink' | 'step-failed' | 'query-failed' | 'netns-create' | 'netns-replaced';

export class DeviceError extends Error {
  override readonly name = 'DeviceError';
  constructor(
    readonly kind: DeviceErrorKind,
    message: string,
    /**
     * Of a removal (removeDevices) that failed: the devices it had deleted all the same (none, for
     * a lookup refused before any went), as its `removed` says them; absent where that is unknown.
     */
    readonly removed?: readonly { readonly name: string; readonly kind: string | null }[],
    /**
     * Of a removal whose deletion the kernel refused ('step-failed'): the devices of its names its
     * lookup found, to be deleted (those not among `removed` may still exist), less those its
     * deletion found gone; absent where it failed before it knew them.
     */
    readonly found?: readonly string[],
  ) {
    super(message);
  }
}

/** Where `ip netns` mounts the namespaces it names. */
export const NETNS_DIR = '/run/netns';
/** Present where the kernel runs IPv6 in our network namespace (/proc/sys/net is per namespace). */
const IPV6_CONF_DIR = '/proc/sys/net/ipv6/conf';

/**
 * IPv6 in this process's network namespace, where host steps run: whether the kernel runs it,
 * and whether a new device forwards (net.ipv6.conf.default.forwarding, which setting `all` sets too).
 */
export function namespaceIpv6(): { ipv6: boolean; ipv6Forwarding: boolean } {
  if (!existsSync(IPV6_CONF_DIR)) return { ipv6: false, ipv6Forwarding: false };
  try {
    return { ipv6: true, ipv6Forwarding: readFileSync(`${IPV6_CONF_DIR}/default/forwarding`, 'utf8').trim() !== '0' };
  } catch {
    return { ipv6: true, ipv6Forwarding: false };
  }
}

export function netnsExists(name: string): boolean {
  return existsSync(`${NETNS_DIR}/${name}`);
}

/** The file system of a namespace's file (NSFS_MAGIC), as bind-mounted under /run/netns. */
const NSFS_MAGIC = 0x6e736673;

/**
 * Whether a network namespace is mounted at /run/netns/NAME: not merely a file there, as an
 * `ip netns add` cut short between making the file and mounting the namespace leaves it.
 */
export function namespaceMounted(name: string): boolean {
  try {
    return statfsSync(`${NETNS_DIR}/${name}`).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

const netnsPath = (netns: string | null): string | null => (netns === null ? null : `${NETNS_DIR}/${netns}`);
const where = (netns: string | null): string => (netns === null ? '' : ` in namespace ${netns}`);

/** A socket in that namespace for the length of `use`; socket problems become DeviceErrors. */
async function inNamespace<T>(netns: string | null, use: (socket: RtnlSocket) => Promise<T>): Promise<T> {
  try {
    return await withRtnlSocket(netnsPath(netns), use);
  } catch (error) {
    if (error instanceof RtnlError) throw new DeviceError('netlink', error.message);
    throw error;
  }
}

/**
 * The named devices of a namespace that exist (missing names are simply absent), or all of them.
 * With `bridges`, also each bridge's ports and each device's addresses (ObservedDevice's `ports`
 * and `addresses`): a dump of the addresses in the same program, and, where only some devices
 * are named, their bridges' ports (listDevicesOn).
 */
async function listDevices(netns: string | null, only?: readonly string[], bridges = false): Promise<Map<string, ObservedDevice>> {
  if (only?.length === 0) return new Map();
  return inNamespace(netns, (socket) => listDevicesOn(socket, netns, only, bridges));
}

/**
 * A VM namespace's devices as listDevices gives them, and which namespace they are of: that of
 * the socket that listed them (its namespace file's descriptor, fstat: no request).
 */
async function observeNamespace(netns: string, only?: readonly string[]): Promise<ObservedNamespace> {
  return inNamespace(netns, async (socket) => {
    const identity = socket.namespace();
    if (identity === null) throw new DeviceError('netlink', `a socket opened in network namespace ${netns} says it is in this one`);
    return { identity, devices: only?.length === 0 ? new Map() : await listDevicesOn(socket, netns, only) };
  });
}

/** listDevices on a socket in namespace `netns`. */
async function listDevicesOn(socket: RtnlSocket, netns: string | null, only?: readonly string[], bridges = false): Promise<Map<string, ObservedDevice>> {
  const writer = new ProgramWriter();
  if (only === undefined) writer.dumpLinks();
  else for (const name of only) writer.getLink(name);
  const named = writer.count;
  if (bridges) writer.dumpAddresses();
  const outcomes = checkListed(await socket.run(writer.finish(), true), netns);
  const links: LinkInfo[] = replies(outcomes.slice(0, named)).flatMap(decodeLinks);
  if (!bridges) return observedDevices(links);
  const addresses = replies(outcomes.slice(named)).flatMap(decodeAddresses);
  // A dump of every device has every port already. Else the ports of the bridges named: each
  // bridge's by a dump the kernel filters by master (its answer: those ports alone, but the kernel
  // goes through every device for it, 1 ms on a host of 1000 links), or, for more bridges than a
  // few, one dump of every bridge port (25 ms there, whatever the number of bridges).
  const found = only === undefined ? [] : links.filter((link) => link.kind === 'bridge');
  if (found.length === 0) return observedDevices(links, { ports: [], addresses });
  const query = new ProgramWriter();
  if (found.length <= PORT_DUMPS_MAX) for (const bridge of found) query.dumpPortsOf(bridge.index);
  else query.dumpBridgePorts();
  const ports = replies(checkListed(await socket.run(query.finish(), true), netns)).flatMap(decodePorts);
  return observedDevices(links, { ports, addresses });
}

/** The most bridges whose ports a listing asks for bridge by bridge (listDevicesOn): above, one dump of every port is cheaper. */
const PORT_DUMPS_MAX = 8;

/** A listing's outcomes, where none failed but for a device not there (ENODEV); else its failure. */
function checkListed(outcomes: RecordOutcome[], netns: string | null): RecordOutcome[] {
  for (const outcome of outcomes) {
    if (outcome.state === 'failed' && outcome.code !== 'ENODEV') throw new DeviceError('query-failed', `listing devices${where(netns)} failed: ${outcome.text}`);
  }
  return outcomes;
}

/** The answers of the outcomes that are done. */
const replies = (outcomes: readonly RecordOutcome[]): Uint8Array[] => outcomes.flatMap((outcome) => (outcome.state === 'done' ? [outcome.reply] : []));

/**
 * The devices of the current namespace and of each named VM namespace (null where absent): all
 * of them, or only those named in `only` (all a plan needs, and far cheaper on a busy host), each
 * VM namespace's with which namespace it was (the plan's steps by index there go to that one
 * only); and the ids the current namespace gives those namespaces (namespaceIds: one socket for
 * all of them). With `options.bridges`, the current namespace's bridges with their ports and its
 * devices with their addresses (listDevices): what `link` takes off a link's bridge.
 */
export async function observeDevices(netnsNames: Iterable<string>, only?: readonly string[], options: { readonly bridges?: boolean } = {}): Promise<ObservedDevices> {
  const names = [...new Set(netnsNames)];
  // A file there without a namespace mounted is none: the plan makes it, and its undo (or ip's
  // refusal, said) clears the file, instead of every run failing to enter it.
  const mounted = new Set(names.filter((name) => namespaceMounted(name)));
  const [{ hostDevices, netnsIds }, ...farDevices] = await Promise.all([
    // The ids after the listing: reporting a veth whose peer is in a namespace without an id gives it one.
    listDevices(null, only, options.bridges).then(async (devices) => ({ hostDevices: devices, netnsIds: await namespaceIds(mounted) })),
    ...names.map((name) => (mounted.has(name) ? observeNamespace(name, only) : Promise.resolve(null))),
  ]);
  return { ...namespaceIpv6(), host: hostDevices, netns: new Map(names.map((name, index) => [name, farDevices[index] ?? null])), netnsIds };
}

const errorCode = (error: unknown): string => (error instanceof Error && 'code' in error ? String(error.code) : 'EIO');

/**
 * Whether opening /run/netns/NAME failed as it does where no namespace is there: no such file (or
 * no such dir), or one this user may not open that holds none (an `ip netns add` cut short leaves
 * its file so; a mounted one anyone may open). Not one this user cannot even look at (a symlink
 * to another user's /proc/PID/ns/net, say): a namespace may be there.
 */
function namespaceAbsent(name: string, code: string): boolean {
  if (code === 'ENOENT' || code === 'ENOTDIR') return true;
  if (code !== 'EACCES' && code !== 'EPERM') return false;
  try {
    return statfsSync(`${NETNS_DIR}/${name}`).type !== NSFS_MAGIC;
  } catch (error) {
    const statCode = errorCode(error);
    return statCode === 'ENOENT' || statCode === 'ENOTDIR';
  }
}

/** Opening a namespace's file failed for another reason than its absence: where veths' far ends are is then unknown. */
function namespaceUnopened(name: string, code: string): DeviceError {
  const check =
    code === 'EMFILE'
      ? 'this process has too many files open: raise its limit (ulimit -n) and run it again'
      : code === 'ENFILE'
        ? 'the system has too many files open: close some (or raise fs.file-max) and run it again'
        : code === 'EACCES' || code === 'EPERM'
          ? 'this user may not open it (another user\'s process\'s namespace, say): run it as root'
          : 'run it again';
  return new DeviceError('query-failed', `looking up the id of network namespace ${name} failed (cannot open ${NETNS_DIR}/${name}: ${code}), so whether veths have their far end there is unknown; ${check}`);
}

/** Namespace descriptors open at once for namespaceIds: well below the usual 1024 a process may have. */
const NAMESPACE_IDS_AT_ONCE = 256;

/**
 * The id the current namespace gives each of these VM namespaces (RTM_GETNSID, by a descriptor of
 * its /run/netns file), as a device's IFLA_LINK_NETNSID names the namespace of its peer: those
 * mounted and given one (the kernel gives one to the namespace of every veth peer it reports, so
 * a namespace without one holds no peer of a device here). One socket for all of them, 256 at a
 * time. A query the kernel fails for a namespace fails it (DeviceError 'query-failed'): where a
 * pair's far end is is then unknown; so does a file there that cannot be opened for another reason
 * than that it holds no namespace (too many files open: EMFILE, ENFILE).
 */
export async function namespaceIds(names: Iterable<string>): Promise<Map<string, number>> {
  const ids = new Map<string, number>();
  const unique = [...new Set(names)];
  if (unique.length === 0) return ids;
  await inNamespace(null, async (socket) => {
    for (let start = 0; start < unique.length; start += NAMESPACE_IDS_AT_ONCE) {
      const open: { name: string; fd: number }[] = [];
      try {
        for (const name of unique.slice(start, start + NAMESPACE_IDS_AT_ONCE)) {
          try {
            open.push({ name, fd: openSync(`${NETNS_DIR}/${name}`, 'r') });
          } catch (error) {
            const code = errorCode(error);
            // Not there: no id. Any other failure (too many files open, say) leaves it unknown.
            if (!namespaceAbsent(name, code)) throw namespaceUnopened(name, code);
          }
        }
        const query = new ProgramWriter();
        for (const { fd } of open) query.getNamespaceId(fd);
        const outcomes = await socket.run(query.finish(), true);
        open.forEach(({ name }, index) => {
          const outcome = outcomes[index];
          // EINVAL: what it opened is no namespace (a file an `ip netns add` cut short left): no id.
          if (outcome?.state === 'failed' && outcome.code === 'EINVAL') return;
          if (outcome?.state !== 'done') {
            const why = outcome?.state === 'failed' ? outcome.text : 'not run';
            throw new DeviceError('query-failed', `looking up the id of network namespace ${name} failed (${why}), so whether veths have their far end there is unknown; run it again`);
          }
          const id = decodeNamespaceId(outcome.reply);
          if (id !== null) ids.set(name, id);
        });
      } finally {
        for (const { fd } of open) closeSync(fd);
      }
    }
  });
  return ids;
}

/** A veth of the current namespace whose peer is in another: that one's id here and the peer's index there. */
export interface VethPeer {
  readonly device: string;
  readonly netnsId: number;
  readonly index: number;
}

/**
 * The name each of these veths' far end has in its namespace (RTM_GETLINK by its index there,
 * IFLA_TARGET_NETNSID: one socket, here, for all of them), by the veth's name: a far end that is
 * there under another name is not where a plan looks for it (by name). Null for one that is gone
 * meanwhile (ENODEV), or whose namespace is (EINVAL). None where the kernel shows it only to a
 * process with CAP_NET_ADMIN there (EACCES, EPERM: `list` as another user): unknown. Any other
 * failure fails it (DeviceError 'query-failed').
 */
export async function farEndNames(peers: readonly VethPeer[]): Promise<Map<string, string | null>> {
  const names = new Map<string, string | null>();
  if (peers.length === 0) return names;
  await inNamespace(null, async (socket) => {
    const query = new ProgramWriter();
    for (const { netnsId, index } of peers) query.getLinkIn(netnsId, index);
    const outcomes = await socket.run(query.finish(), true);
    peers.forEach(({ device }, index) => {
      const outcome = outcomes[index];
      if (outcome?.state === 'failed' && (outcome.code === 'ENODEV' || outcome.code === 'EINVAL')) names.set(device, null);
      else if (outcome?.state === 'failed' && (outcome.code === 'EACCES' || outcome.code === 'EPERM')) return;
      else if (outcome?.state !== 'done') {
        const why = outcome?.state === 'failed' ? outcome.text : 'not run';
        throw new DeviceError('query-failed', `looking up the far end of veth ${device} failed (${why}), so whether it is where its link has it is unknown; run it again`);
      } else names.set(device, decodeLinks(outcome.reply)[0]?.name ?? null);
    });
  });
  return names;
}

function openNamespace(name: string): number {
  try {
    return openSync(`${NETNS_DIR}/${name}`, 'r');
  } catch (error) {
    const code = errorCode(error);
    throw new DeviceError('netlink', `cannot open network namespace ${name} (${NETNS_DIR}/${name}: ${code}); was it deleted meanwhile?`);
  }
}

/** The VM namespaces a plan saw, by name: the identity each had when it looked (DevicePlan.seenNamespaces). */
type SeenNamespaces = ReadonlyMap<string, NamespaceIdentity>;

/**
 * Fail where a descriptor of VM namespace `name` (its identity given) is not of the namespace the
 * plan saw under that name: one deleted and made anew since, or another mounted there, numbers
 * its devices afresh, and a step by an index the plan saw would hit whatever has that index now.
 * Nothing to check where the plan saw none there (one it creates): it has no steps by index there.
 */
function checkSeen(name: string, identity: NamespaceIdentity | null, seen: SeenNamespaces): void {
  const expected = seen.get(name);
  if (expected === undefined || (identity !== null && identity.dev === expected.dev && identity.ino === expected.ino && identity.cookie === expected.cookie)) return;
  throw new DeviceError(
    'netns-replaced',
    `network namespace ${name} was replaced since this run looked at it (deleted and made anew, or another mounted at ${NETNS_DIR}/${name}): its devices are not the ones this run saw, so it changes nothing there; run link again`,
  );
}

/**
 * Which namespace a descriptor of VM namespace `name` holds (its cookie told by a socket opened
 * there through it: an inode number alone may be a deleted namespace's, given again).
 */
function identityOf(name: string, fd: number): NamespaceIdentity | null {
  try {
    const socket = RtnlSocket.open(`/proc/self/fd/${fd}`);
    try {
      return socket.namespace();
    } finally {
      socket.close();
    }
  } catch (error) {
    if (error instanceof RtnlError) throw new DeviceError('netlink', `cannot tell which network namespace ${name} is: ${error.message}`);
    throw error;
  }
}

/** What running steps did, by device name: each set given is filled in as the steps run. */
interface StepsDone {
  /** The devices its add steps made (add-bridge, add-tap, add-veth done). */
  readonly made?: Set<string> | undefined;
  /** The devices its delete steps deleted. */
  readonly deleted?: Set<string>;
  /** The devices its delete steps found gone already (ENODEV for the index the plan saw): none of those it deleted. */
  readonly gone?: Set<string>;
  /** The ports whose STP state step was refused as they had lost their carrier (ENETDOWN, counted as done: foundGone). */
  readonly heldDisabled?: Set<string> | undefined;
}

/**
 * Whether a delete step's failure says that its device is gone: the kernel's ENODEV for the index
 * it was seen under (the step goes by that alone: link-message.ts). What it was to bring about
 * (no such device there) is so: reconciled, not a failure. So for a release (a foreign port taken
 * off a link's bridge): gone, it is off it; and for an address's delete, the address found gone
 * (EADDRNOTAVAIL: flushed meanwhile by a DHCP client, another tool), or its device. And for a
 * port's STP state put back alone (device-plan.ts's portSettingsSteps), refused as its device
 * stopped running meanwhile (ENETDOWN: its carrier lost): the kernel holds it disabled until it
 * runs again, and then, STP off, forwards on it by itself, as the step was to make it.
 */
const foundGone = (step: DeviceStep, outcome: MarkedOutcome & { state: 'failed' }): boolean =>
  outcome.marks.failure === 'refused' &&
  (((step.op === 'delete' || step.op === 'release' || step.op === 'delete-address') && outcome.code === 'ENODEV') ||
    (step.op === 'delete-address' && outcome.code === 'EADDRNOTAVAIL') ||
    (isStateAlone(step) && outcome.code === 'ENETDOWN'));

/**
 * Run steps in one namespace, in order; the first failure stops them and is thrown. A delete
 * whose device is gone already (deleted by something else since the plan looked, or with the far
 * end of its veth pair: a pair dies together) counts as done, and the steps after it run. What
 * they did goes into `done`. Before any runs, each VM namespace they go into (theirs, and those
 * veth peers go to) is checked to be the one the plan saw under its name (`seen`: checkSeen), by
 * the descriptor they go through (one fstat each).
 */
async function runSteps(netns: string | null, steps: readonly DeviceStep[], seen: SeenNamespaces, done: StepsDone = {}): Promise<void> {
  if (steps.length === 0) return;
  // A veth's peer is placed by a descriptor of its namespace, open for the length of the run.
  const fds = new Map<string, number>();
  try {
    for (const step of steps) {
      if (step.op === 'add-veth' && !fds.has(step.peerNetns)) fds.set(step.peerNetns, openNamespace(step.peerNetns));
    }
    for (const [name, fd] of fds) if (seen.has(name)) checkSeen(name, identityOf(name, fd), seen);
    const failure = await inNamespace(netns, async (socket) => {
      if (netns !== null) checkSeen(netns, socket.namespace(), seen);
      // One program, whatever devices went meanwhile: a delete step's record lets it go on past
      // its device found gone (link-message.ts), and its first other failure stops it.
      const writer = new ProgramWriter();
      for (const step of steps) writer.step(step, fds);
      const outcomes = await socket.runMarked(writer.finish());
      for (const [index, outcome] of outcomes.entries()) {
        const step = steps[index];
        if (step === undefined) break;
        if (outcome.state === 'done') {
          if (step.op.startsWith('add-')) done.made?.add(step.name);
          else if (step.op === 'delete') done.deleted?.add(step.name);
        } else if (outcome.state === 'failed') {
          if (!foundGone(step, outcome)) return `${stepText(step)}${where(netns)} failed: ${await failureText(socket, step, outcome)}`;
          // A port released gone is off its bridge, and none of the plan's devices: nothing to note.
          if (step.op === 'delete') done.gone?.add(step.name);
          else if (step.op === 'port-settings') done.heldDisabled?.add(step.name);
        }
      }
      return undefined;
    });
    if (failure !== undefined) throw new DeviceError('step-failed', failure);
  } finally {
    for (const fd of fds.values()) closeSync(fd);
  }
}

/**
 * Why a step failed, in words. A join whose master the program looked up for an earlier port
 * gives the kernel that index again; where the master was deleted meanwhile (by something else:
 * a run holds the state lock), the kernel says only EINVAL, so the master is looked up once more
 * to say that it is gone. Where that lookup fails, the kernel's word stands. A master that is no
 * bridge (rtnl.c's own EOPNOTSUPP, not the kernel's refusal; its text names the device's kind)
 * was made under the bridge's name by something else since the plan looked: the plan replaces
 * such a device where it finds one.
 */
async function failureText(socket: RtnlSocket, step: DeviceStep, outcome: MarkedOutcome & { state: 'failed' }): Promise<string> {
  if ((step.op === 'add-bridge' || step.op === 'add-veth') && outcome.code === 'EEXIST') return await nameHolderText(socket, step.name, outcome.text);
  const master = step.op === 'set' ? step.change.master : undefined;
  if (master !== undefined && outcome.code === 'EOPNOTSUPP' && outcome.marks.failure === null) {
    return (
      `${outcome.text}; something else made it under this link's bridge name after this run looked (README: How devices are made): ` +
      'check what else makes network devices on this host (a network manager, another spectrum-link), then link again'
    );
  }
  if (master === undefined || outcome.code !== 'EINVAL') return outcome.text;
  let lookup: RecordOutcome | undefined;
  try {
    [lookup] = await socket.run(new ProgramWriter().getLink(master).finish(), true);
  } catch {
    // Only a better word for the failure: one of its own must not take the step's place.
    return outcome.text;
  }
  // No device has that name as its own now (an altname of another device is not the master).
  const gone = lookup?.state === 'failed' ? lookup.code === 'ENODEV' : lookup?.state === 'done' && !decodeLinks(lookup.reply).some((link) => link.name === master);
  if (!gone) return outcome.text;
  return `No such device: master ${master}, there when this run looked it up, was deleted meanwhile by something else; check what else deletes network devices on this host (another spectrum-link with another --state-dir, a network manager), then link again`;
}

/**
 * A device made under a name the kernel found taken (EEXIST), in words: where another device has
 * it as an altname (the plan looks names up as devices' own), that device is named, as rtnl.c's
 * tap creation names it (EBUSY). Else, or where that lookup fails, the kernel's word stands.
 */
async function nameHolderText(socket: RtnlSocket, name: string, text: string): Promise<string> {
  let holder: string | undefined;
  try {
    const [lookup] = await socket.run(new ProgramWriter().getLink(name).finish(), true);
    holder = lookup?.state === 'done' ? decodeLinks(lookup.reply).find((link) => link.name !== name)?.name : undefined;
  } catch {
    // Only a better word for the failure: one of its own must not take the step's place.
  }
  return holder === undefined ? text : `${text}: device ${holder} has that name as an altname`;
}

function byNamespace(steps: readonly DeviceStep[]): Map<string | null, DeviceStep[]> {
  const groups = new Map<string | null, DeviceStep[]>();
  for (const step of steps) {
    const group = groups.get(step.netns);
    if (group === undefined) groups.set(step.netns, [step]);
    else group.push(step);
  }
  return groups;
}

interface IpResult {
  /** null when a signal ended it. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

function runIpOnce(args: readonly string[]): Promise<IpResult> {
  return new Promise((resolve) => {
    // A process group of its own: a terminal's Ctrl-C (sent to the foreground group) must reach
    // spectrum-link alone, which stops at a safe point and undoes its run, not kill an `ip netns`
    // step half-way.
    const child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (error) => resolve({ code: 127, signal: null, stderr: error.message }));
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

/** Signals meant for spectrum-link (its interruption) that a child can catch while it is forked. */
const GROUP_STOP_SIGNALS: ReadonlySet<string> = new Set(['SIGINT', 'SIGTERM', 'SIGHUP']);
/** Runs of one `ip` command that such a signal may end before one is let run. */
const IP_RUNS_MAX = 3;

/**
 * Run `ip` with these arguments. The child leaves our process group only once forked (libuv calls
 * setsid() in it): a Ctrl-C or a signal to the group in between is pending in the child, which it
 * dies of before ip starts, though the signal was spectrum-link's (it handles it at a safe point).
 * So a run ended by SIGINT, SIGTERM or SIGHUP (a shell's hangup is sent to its job's group) is run again; ip did nothing yet, and its commands here are
 * idempotent where it did (the callers check the namespace, not the exit code alone).
 */
async function runIp(args: readonly string[]): Promise<IpResult> {
  let result = await runIpOnce(args);
  for (let run = 1; run < IP_RUNS_MAX && result.signal !== null && GROUP_STOP_SIGNALS.has(result.signal); run += 1) {
    result = await runIpOnce(args);
  }
  return result;
}

/** Why `ip ARGS` failed, in one line: its own first line, else how it ended. */
function ipFailure(args: readonly string[], result: IpResult): string {
  if (result.code === 127) return 'the ip command (iproute2) is missing';
  const said = result.stderr.split('\n')[0]?.trim() ?? '';
  if (said !== '') return said;
  const command = ['ip', ...args].join(' ');
  if (result.signal !== null) return `${command} was killed by ${result.signal}`;
  return `${command} exited with code ${String(result.code)}, saying nothing`;
}

/** What carrying out a plan made, for its undo: a name not in it is none of the plan's to delete. */
export interface PlanMade {
  /** The devices its add steps made (add-bridge, add-tap, add-veth done). */
  readonly devices: Set<string>;
  /**
   * The VM namespaces its `ip netns add` made; and those it found as a file holding no namespace
   * (or nothing, its ip having failed), which the undo clears. Not one mounted there by someone
   * else between the plan's look and its `ip netns add` (which ip refused: File exists): that one
   * is used, never deleted.
   */
  readonly namespaces: Set<string>;
  /**
   * Host devices its delete steps found gone already (something else deleted them since the plan
   * looked): not ones it deleted, so not ones it replaced. Not a veth whose peer may have been the
   * far end of its name that it had deleted (a pair dies together): that one it took itself.
   */
  readonly vanished: Set<string>;
  /**
   * Ports whose STP state put back (alone: device-plan.ts's portSettingsSteps) the kernel refused
   * as they had lost their carrier since the plan looked (ENETDOWN, counted as done): disabled
   * until their carrier is back, when the kernel forwards on them by itself. Said so (foreignChanged).
   */
  readonly heldDisabled: Set<string>;
}

export const newPlanMade = (): PlanMade => ({ devices: new Set(), namespaces: new Set(), vanished: new Set(), heldDisabled: new Set() });

/** Whether something is mounted at `path` in our mount namespace; undefined where mountinfo cannot be read. */
function mountPoint(path: string): boolean | undefined {
  return readMountinfo()?.some((entry) => entry.mountPoint === path);
}

/**
 * Clear a file at /run/netns/NAME that holds no namespace and is no mount point, so that `ip
 * netns add` can make it (ip refuses one there: File exists): left by an `ip netns add` cut short,
 * or by one whose mount went with the mount namespace it was made in (a run under ip netns exec).
 * Nothing is there to lose; every stale file a run needs goes in that run, not one per run (each
 * failing on the next). One that is a mount point (of something else) is left.
 */
function clearStaleNamespaceFile(name: string): void {
  const path = `${NETNS_DIR}/${name}`;
  if (!netnsExists(name) || namespaceMounted(name) || mountPoint(path) !== false) return;
  try {
    unlinkSync(path);
  } catch {
    // Gone meanwhile, or mounted on meanwhile (EBUSY): ip says what is there.
  }
}

/** Make a VM namespace; where this call made it (or left a file to clear), its name goes into `made`. */
async function createNamespace(name: string, made?: Set<string>): Promise<void> {
  clearStaleNamespaceFile(name);
  const args = ['netns', 'add', name];
  const result = await runIp(args);
  if (result.code === 0) {
    made?.add(name);
    return;
  }
  // Failed, yet there: made meanwhile by someone else (ip's File exists). Used, but not this
  // run's: its undo leaves it (ip killed after it mounted one is taken so too: better a namespace
  // left than another's deleted).
  if (namespaceMounted(name)) return;
  const path = `${NETNS_DIR}/${name}`;
  // Something else mounted there: not the run's to take (ip netns delete would unmount it).
  if (netnsExists(name) && mountPoint(path) === true) {
    throw new DeviceError('netns-create', `could not create network namespace ${name}: ${ipFailure(args, result)}; ${path} holds no network namespace but has something else mounted on it: look at it (findmnt ${path}), and ip netns delete ${name} if it is no one's`);
  }
  // A file without a namespace mounted is none (ip's retry meets it as "File exists"), or there
  // is nothing: the undo deletes it (ip netns delete), so that it stops no later run.
  made?.add(name);
  const empty = netnsExists(name) ? `; ${path} holds no network namespace (an ip netns add cut short leaves it so): ip netns delete ${name} clears it` : '';
  throw new DeviceError('netns-create', `could not create network namespace ${name}: ${ipFailure(args, result)}${empty}`);
}

/**
 * Carry out a plan. A failure is thrown as it is; the caller undoes the plan (undoDevicePlan),
 * which tells what that undo could not delete, and keeps the failure that is thrown. What it made
 * goes into `made`, for that undo: a device of a name it was to create that it did not make (its
 * step refused, as one someone else made meanwhile is, or not reached) is not its to delete, nor
 * is a VM namespace someone else made meanwhile, nor one it did not reach. A device its delete
 * step finds gone already is as the plan wants it (runSteps): the run goes on, and, where it went
 * by something else's doing, its name goes into `made.vanished`. A VM namespace the plan saw
 * that is another by the time its steps (or veth peers) go there, deleted and made anew or
 * another mounted under its name, fails the run before any of them (DeviceError
 * 'netns-replaced'): the indexes the plan saw there are not that one's.
 */
export async function applyDevicePlan(plan: DevicePlan, made?: PlanMade): Promise<void> {
  for (const name of plan.createNamespaces) await createNamespace(name, made?.namespaces);
  const seen: SeenNamespaces = new Map(plan.seenNamespaces.map(({ netns, identity }) => [netns, identity]));
  // Far ends are named as their host ends: one deleted here takes the host end along where it
  // is that one's peer, which only a delete step withFarEnd may be (the plan could not tell).
  const farEndsDeleted = new Set<string>();
  await inEachNamespace(plan.clearFarEnds, seen, { deleted: farEndsDeleted });
  const hostSteps = plan.hostSteps.flat();
  const withFarEnd = new Set(hostSteps.flatMap((step) => (step.op === 'delete' && step.withFarEnd === true ? [step.name] : [])));
  const gone = new Set<string>();
  try {
    await runSteps(null, hostSteps, seen, { made: made?.devices, gone, heldDisabled: made?.heldDisabled });
  } finally {
    for (const name of gone) if (!(withFarEnd.has(name) && farEndsDeleted.has(name))) made?.vanished.add(name);
  }
  await inEachNamespace(plan.configureFarEnds, seen);
}

/**
 * Run steps in their namespaces side by side, and return once all are done: an undo that began
 * while another namespace's steps ran would race them. The first failure is thrown.
 */
async function inEachNamespace(steps: readonly DeviceStep[], seen: SeenNamespaces, done?: StepsDone): Promise<void> {
  const outcomes = await Promise.allSettled([...byNamespace(steps)].map(([netns, group]) => runSteps(netns, group, seen, done)));
  const failure = outcomes.find((outcome) => outcome.status === 'rejected');
  if (failure !== undefined) throw failure.reason as unknown;
}

/** Devices an undo could not delete: those still there after their removal failed, and why. */
export interface DevicesLeft {
  readonly devices: readonly string[];
  /** The kernel's refusal (or the socket's failure), in one line. */
  readonly error: string;
}

/** A VM namespace an undo could not delete, and why (`ip netns delete`'s reason). */
export interface NamespaceLeft {
  readonly netns: string;
  readonly error: string;
}

/** What deleting devices as far as possible did. */
export interface DevicesUndone {
  /** Devices under a name given but of another kind than the one given for it (or, undoing a plan, one it did not make): left as they are. */
  readonly kept: string[];
  /** Where the removal failed: the devices still there. */
  readonly left?: DevicesLeft;
}

/** What undoing a plan did: as DevicesUndone, and the namespaces it made that are still there. */
export interface PlanUndone extends DevicesUndone {
  readonly namespaces: NamespaceLeft[];
}

/**
 * Remove what a plan created (devices, then the namespaces it made), as far as possible: each
 * step is tried whatever the one before did, and what a failed one left is returned. A device
 * under the name of one it creates but of another kind is the one it was to replace, which it did
 * not reach (a step before failed): left as it is, and returned (`kept`). With `made` (what
 * applyDevicePlan said it made), only those of its devices and namespaces go: one of those names
 * that it did not make is someone else's, or the one it was to replace, and is left as it is too
 * (a device returned as kept where it is there).
 */
export async function undoDevicePlan(plan: DevicePlan, made?: PlanMade): Promise<PlanUndone> {
  const ours = made === undefined ? plan.creates : plan.creates.filter((name) => made.devices.has(name));
  const devices = await undoDevices(ours, createdKinds(plan));
  const notMade = made === undefined ? [] : plan.creates.filter((name) => !made.devices.has(name));
  // Where that cannot be seen, taken as there (as one not reached is): what is not ours is not said to be down.
  const there = notMade.length === 0 ? [] : await listDevices(null, notMade).then((found) => [...found.keys()], () => notMade);
  const namespaces = made === undefined ? plan.createNamespaces : plan.createNamespaces.filter((name) => made.namespaces.has(name));
  return { ...devices, kept: [...devices.kept, ...there], namespaces: await deleteNamespaces(namespaces) };
}

/** Whether a device is of the kind `kinds` gives its name; any kind where it gives none. */
function ofKindGiven(device: { readonly name: string; readonly kind: string | null }, kinds: ReadonlyMap<string, string> | undefined): boolean {
  return kinds?.has(device.name) !== true || kinds.get(device.name) === device.kind;
}

/**
 * Delete these devices as removeDevices does (only those of the kind `kinds` gives their name,
 * if it does), never throwing: where the removal fails, the devices still there afterwards are
 * returned as left with why (every one named, where even that cannot be seen).
 */
export async function undoDevices(names: readonly string[], kinds?: ReadonlyMap<string, string>): Promise<DevicesUndone> {
  try {
    return { kept: (await removeDevices(names, undefined, kinds)).kept };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    try {
      const there = [...(await listDevices(null, names)).values()];
      const ours = (device: ObservedDevice): boolean => ofKindGiven(device, kinds);
      const left = there.filter(ours).map((device) => device.name);
      return { kept: there.filter((device) => !ours(device)).map((device) => device.name), ...(left.length > 0 && { left: { devices: left, error: reason } }) };
    } catch {
      return { kept: [], left: { devices: [...names], error: reason } };
    }
  }
}

/**
 * Delete these VM namespaces (`ip netns delete`), as far as possible: one already gone is no
 * failure; each still there after its deletion failed is returned, with ip's reason (e.g. its
 * file still a mount point: `Cannot remove namespace file ...: Device or resource busy`).
 */
export async function deleteNamespaces(names: readonly string[]): Promise<NamespaceLeft[]> {
  const left: NamespaceLeft[] = [];
  for (const name of names) {
    const args = ['netns', 'delete', name];
    const result = await runIp(args);
    if (result.code === 0 || !netnsExists(name)) continue;
    left.push({ netns: name, error: ipFailure(args, result) });
  }
  return left;
}

/** A link's devices (bridge and two ports) go one by one; more go together (removeTogether). */
const ONE_BY_ONE_MAX = 3;
/** Device groups for removal: above what administrators number theirs with (/etc/iproute2/group). */
const REMOVAL_GROUPS = { min: 0x4000_0000, max: 0xffff_ffff } as const;

/** What removeDevices did. */
export interface DevicesRemoved {
  /**
   * The devices it deleted, each with its kind as the kernel reported it (null: no link info): a
   * veth whose peer among them it deleted first went with that one. Not one found gone as it was
   * to be deleted (by something else meanwhile): it never says it deleted what it did not.
   */
  readonly removed: { readonly name: string; readonly kind: string | null }[];
  /** The names whose device is of another kind than `kinds` gives them: left as they are. */
  readonly kept: string[];
}

/**
 * Delete these devices from the current namespace where they exist; a veth takes its peer along.
 * More than a link's devices go together (removeTogether), in device group `group` (random).
 * Each is deleted by the index it was found under, and only where the name is its own: a name
 * the kernel resolves to another device's altname is not this device. With `kinds`, only a
 * device of the kind given for its name goes; the names of those found of another kind are
 * returned as kept. A name the kernel cannot look up (any failure but ENODEV) fails it before any
 * device goes (DeviceError 'query-failed', `removed` empty); a deletion the kernel refuses fails it
 * once the others were tried ('step-failed', `removed` those that went).
 */
export async function removeDevices(
  names: readonly string[],
  group = randomInt(REMOVAL_GROUPS.min, REMOVAL_GROUPS.max),
  kinds?: ReadonlyMap<string, string>,
): Promise<DevicesRemoved> {
  if (names.length === 0) return { removed: [], kept: [] };
  return inNamespace(null, async (socket) => {
    const wanted = new Set(names);
    const query = new ProgramWriter();
    for (const name of names) query.getLink(name);
    const answers = await socket.run(query.finish(), true);
    // A lookup the kernel failed (other than ENODEV, no such device) leaves unknown whether that
    // device exists: passed over, it would stay while the caller records it gone.
    const unanswered = answers.findIndex((outcome) => outcome.state !== 'done' && (outcome.state !== 'failed' || outcome.code !== 'ENODEV'));
    if (unanswered >= 0) throw lookupFailed(names[unanswered] ?? '', answers[unanswered]);
    const found = answers.flatMap((outcome) => (outcome.state === 'done' ? decodeLinks(outcome.reply) : []));
    const named = found.filter((link) => wanted.has(link.name));
    const ofKind = (link: LinkInfo): boolean => ofKindGiven(link, kinds);
    const kept = named.filter((link) => !ofKind(link)).map((link) => link.name);
    const doomed = [...new Map(named.filter(ofKind).map((link) => [link.index, link])).values()];
    const doneOf = (deleted: ReadonlySet<number>): DevicesRemoved => ({ removed: doomed.filter((link) => deleted.has(link.index)).map(({ name, kind }) => ({ name, kind })), kept });
    if (doomed.length > ONE_BY_ONE_MAX) {
      const together = await removeTogether(socket, doomed, group);
      if (together !== undefined) return doneOf(together);
    }
    const removal = new ProgramWriter();
    for (const link of doomed) removal.deleteByIndex(link.index);
    const outcomes = await socket.run(removal.finish(), true);
    const failed = outcomes.findIndex((outcome) => outcome.state === 'failed' && outcome.code !== 'ENODEV');
    const outcome = outcomes[failed];
    const deleted = deletedOf(doomed, outcomes);
    const done = doneOf(deleted);
    // The deletions after a refused one are run too: what went is said with the failure, as a
    // caller that took links down part-way has to say it (releaseLinks). Found: not one its
    // deletion found gone (something else deleted it meanwhile), which cannot still exist.
    if (outcome?.state === 'failed') {
      const gone = (link: LinkInfo, index: number): boolean => !deleted.has(link.index) && outcomes[index]?.state === 'failed' && outcomes[index].code === 'ENODEV';
      throw new DeviceError('step-failed', `removing device ${doomed[failed]?.name ?? ''} failed: ${outcome.text}`, done.removed, doomed.filter((link, index) => !gone(link, index)).map((link) => link.name));
    }
    return done;
  });
}

/**
 * Of devices deleted one by one (`outcomes` in their order), the indexes of those the deletions
 * took: each whose deletion was done, and each found gone (ENODEV) whose veth peer, in this
 * namespace, was one of those done (deleting a veth takes its peer). Another one found gone went
 * by something else meanwhile.
 */
function deletedOf(doomed: readonly LinkInfo[], outcomes: readonly RecordOutcome[]): Set<number> {
  const deleted = new Set(doomed.filter((_, index) => outcomes[index]?.state === 'done').map((link) => link.index));
  const withPeer = doomed.filter((link, index) => {
    const outcome = outcomes[index];
    return outcome?.state === 'failed' && outcome.code === 'ENODEV' && link.peerNetnsId === null && link.peerIndex !== null && deleted.has(link.peerIndex);
  });
  for (const link of withPeer) deleted.add(link.index);
  return deleted;
}

/** The failure of a removal whose lookup of `name` the kernel did not answer, saying what to check. */
function lookupFailed(name: string, outcome: RecordOutcome | undefined): DeviceError {
  const why = outcome?.state === 'failed' ? outcome.text : 'not run';
  const code = outcome?.state === 'failed' ? outcome.code : undefined;
  // EINVAL and ERANGE: the kernel's attribute policy refused the name itself.
  const check =
    code === 'EINVAL' || code === 'ERANGE'
      ? 'check that it is a device name the kernel takes (at most 15 bytes) and run it again'
      : "run it again; should it fail the same way, check the kernel's log (dmesg) and the host's free memory";
  return new DeviceError('query-failed', `removing devices failed before any was removed: looking up ${name} failed (${why}), so whether it exists is unknown; ${check}`, []);
}

/**
 * Delete these devices with one request: put them in a device group of their own and delete the
 * group. The kernel then unregisters them as one batch, waiting once for the network stack to let
 * go of them instead of once per device (300 links' devices: 22 s one by one, 5 s together, the
 * rest being each bridge's own grace period). The indexes of those deleted: those in the group
 * when it went (one gone before, by something else, is not among them). Undefined, with nothing
 * deleted, where the group turns out to hold a device that is not among them, or the kernel
 * refuses the group deletion.
 */
async function removeTogether(socket: RtnlSocket, doomed: readonly LinkInfo[], group: number): Promise<Set<number> | undefined> {
  const marking = new ProgramWriter();
  for (const link of doomed) marking.setGroup(link.index, group);
  marking.dumpLinks();
  const outcomes = await socket.run(marking.finish(), true);
  const dump = outcomes[outcomes.length - 1];
  if (dump?.state !== 'done') return undefined;
  // Never delete what is not ours: a device someone else put in this group stops the batch. And
  // one of ours that is there but not in the group (its marking refused) would be left behind.
  const ours = new Set(doomed.map((link) => link.index));
  const there = decodeLinks(dump.reply);
  if (there.some((link) => (link.group === group) !== ours.has(link.index))) return undefined;
  const [removal] = await socket.run(new ProgramWriter().deleteGroup(group).finish());
  return removal?.state === 'done' ? new Set(there.filter((link) => ours.has(link.index)).map((link) => link.index)) : undefined;
}
