// Plugs the VMM clients (host/vmm/) into the linker: socket paths from templates, one timeout,
// and the rule that a VM where no VMM runs (nothing at its socket path, or a socket that refuses
// connections) has nothing left to detach; anything else at the path fails the detach.
import { lstatSync, realpathSync } from 'node:fs';
import { integerOption } from '../shared/cli/integer-option.js';
import { CliError, EXIT } from '../shared/cli/run-cli.js';
import { type Logger, createLogger } from '../shared/log.js';
import { characterCount, quoteText, shownSocket } from '../shared/shown-text.js';
import { UNIX_SOCKET_PATH_MAX } from '../shared/unix-socket-path.js';
import type { AttachChoice, AttachMode } from './attach-mode.js';
import { type SameSocket, sameSocketBy } from './kept-attach.js';
import { isRecordedSocket } from './link-state.js';
import { type LinkReport, VMM_NAMES, VMM_SOCKET_OPTIONS, type VmmPort } from './linker-types.js';
import type { VmmNic } from './vmm/nic.js';
import { deadline } from './vmm/deadline.js';
import { cloudHypervisorNetArguments, qemuNetArguments } from './vmm/vmm-arguments.js';

export interface VmmFlags {
  readonly qmpSocket: string;
  readonly chSocket: string;
  readonly vmmTimeout?: string;
  readonly qemuBus?: string;
}

export { UNIX_SOCKET_PATH_MAX };

/**
 * A socket template as given: not empty, where Node's clients would take an empty path for TCP
 * to localhost (the cloud-hypervisor client would send its API requests to localhost:80).
 */
export function socketTemplate(flag: string, template: string): string {
  if (template === '') throw new CliError(`${flag} "" is not valid: give the path of the VMM's Unix socket, {vm} standing for the VM name`, EXIT.usage);
  return template;
}

/** QEMU's rule for ids (id_wellformed), which bus names given on its command line follow. */
const QEMU_ID = /^[A-Za-z][A-Za-z0-9_.-]*$/;

/** --qemu-bus as given: a QEMU id, where anything else (or "") would only fail at device_add. */
export function qemuBus(text: string): string {
  if (!QEMU_ID.test(text)) {
    throw new CliError(`--qemu-bus ${JSON.stringify(text)} is not valid: give the id of a QEMU bus (a letter, then letters, digits, '_', '.' or '-'), e.g. a free pcie-root-port's`, EXIT.usage);
  }
  return text;
}

/**
 * How much of a socket template, and of the path it gives, a refusal shows: a path somewhat over a
 * Unix socket path's limit whole, a far longer one (a 64 KiB template) cut, its length said.
 */
const TEMPLATE_SHOWN_MAX = 200;

/** A socket path from a template such as /run/vm/{vm}/qmp.sock, refused where it cannot be a Unix socket path. */
export function socketPath(template: string, vm: string, flag = 'the socket template'): string {
  const path = template.replaceAll('{vm}', vm);
  const bytes = Buffer.byteLength(path);
  if (bytes > UNIX_SOCKET_PATH_MAX) {
    // The path's length is said after it, in bytes; the template's in characters (code points), as quoteText cuts it.
    const characters = characterCount(template);
    const length = characters > TEMPLATE_SHOWN_MAX ? ` (${characters} characters)` : '';
    throw new CliError(
      `${flag} ${quoteText(template, TEMPLATE_SHOWN_MAX)}${length} gives VM ${vm} the socket path ${quoteText(path, TEMPLATE_SHOWN_MAX)}, ${bytes} bytes: a Unix socket path has at most ${UNIX_SOCKET_PATH_MAX}; use a shorter path`,
      EXIT.usage,
    );
  }
  return path;
}

/**
 * The VM's directory in the socket path a template gives a VM: the path up to the end of the
 * template's first component with {vm} in it, the host's naming (it may be a symlink, e.g. to a
 * directory by VM id); below it the VM's user may write, so no symlink there is followed
 * (vmm/vmm-socket.ts). Undefined where no directory of the template has {vm} in it (none, or only
 * the socket's own name): that name alone is not followed then.
 */
export function templateVmDir(template: string, vm: string): string | undefined {
  const at = template.indexOf('{vm}');
  if (at < 0) return undefined;
  const end = template.indexOf('/', at + '{vm}'.length);
  return end < 0 ? undefined : template.slice(0, end).replaceAll('{vm}', vm);
}

/**
 * The VM's directory in a socket path the state records for it (or would: socketOf): the
 * template's (templateVmDir, made absolute) where this run's template gives that very path; else,
 * the state recording no template, the path up to its first component with the VM's name in it,
 * where the {vm} that made it was at the latest: no fewer components are kept from symlinks than
 * the template kept (more, where a directory above has the name in it too). Undefined where none
 * but the socket's own name has it.
 */
export function recordedVmDir(recorded: string, vm: string, template: string): string | undefined {
  if (absoluteSocket(template.replaceAll('{vm}', vm)) === recorded) {
    const dir = templateVmDir(template, vm);
    return dir === undefined ? undefined : absoluteSocket(dir);
  }
  const names = recorded.split('/');
  const at = names.findIndex((name) => name.includes(vm));
  return at < 0 || at === names.length - 1 ? undefined : names.slice(0, at + 1).join('/');
}

export interface SideArguments {
  readonly cloudHypervisor: readonly string[];
  readonly qemu: readonly string[];
}

/**
 * For sides attached by hand (`none`): the arguments that give the VMM its NIC on our tap, whose
 * guest learns the link MTU `mtu`. A side whose mode is unknown (null: `list` of a link whose
 * record has none) gets none.
 */
export function vmmArgumentsFor(
  report: Pick<LinkReport, 'clientDevice' | 'clientMac' | 'providerDevice' | 'providerMac'> & { readonly clientAttach: AttachMode | null; readonly providerAttach: AttachMode | null },
  mtu: number,
): { client?: SideArguments; provider?: SideArguments } | undefined {
  const sideArguments = (tap: string, mac: string): SideArguments => {
    const nic: VmmNic = { id: tap, tap, mac, mtu };
    return { cloudHypervisor: cloudHypervisorNetArguments(nic), qemu: qemuNetArguments(nic) };
  };
  const client = report.clientAttach === 'none' ? sideArguments(report.clientDevice, report.clientMac) : undefined;
  const provider = report.providerAttach === 'none' ? sideArguments(report.providerDevice, report.providerMac) : undefined;
  if (client === undefined && provider === undefined) return undefined;
  return { ...(client === undefined ? {} : { client }), ...(provider === undefined ? {} : { provider }) };
}

// The VMM clients (node:net, node:http) load only when a VMM is actually talked to.
const qmp = (): Promise<typeof import('./vmm/qmp.js')> => import('./vmm/qmp.js');
const cloudHypervisor = (): Promise<typeof import('./vmm/cloud-hypervisor.js')> => import('./vmm/cloud-hypervisor.js');

/** Whether `error` is a VMM client's of this kind. */
async function vmmErrorOfKind(error: unknown, kind: 'no-socket' | 'stale-socket' | 'timeout'): Promise<boolean> {
  const [{ QmpError }, { CloudHypervisorError }] = await Promise.all([qmp(), cloudHypervisor()]);
  return (error instanceof QmpError || error instanceof CloudHypervisorError) && error.kind === kind;
}

/**
 * Whether a VMM client's error says that no VMM runs at the socket, so that it holds no NIC:
 * nothing at the path, or a socket that refuses connections (left by a VMM that exited). Anything
 * else there (a symlink, a file, a socket that may not be opened) says nothing of the VMM.
 */
async function vmmGone(error: unknown): Promise<'no-socket' | 'stale-socket' | undefined> {
  if (await vmmErrorOfKind(error, 'no-socket')) return 'no-socket';
  return (await vmmErrorOfKind(error, 'stale-socket')) ? 'stale-socket' : undefined;
}

export class VmmPortError extends Error {
  override readonly name = 'VmmPortError';
  constructor(
    readonly kind:
      /** An attach not tried: the same VMM did not answer an earlier one in time. */
      | 'unanswered-earlier'
      /** A VMM that answered each step of an attach, but did not finish it within its whole bound. */
      | 'attach-deadline'
      /** A VMM that answered each step of a detach, but did not finish it within its whole bound. */
      | 'detach-deadline'
      /** A socket the state records that is no path it would record (isRecordedSocket): not connected to. */
      | 'recorded-socket',
    message: string,
  ) {
    super(message);
  }
}

/**
 * How many --vmm-timeouts a series of requests for one NIC gets as a whole, each request bounded
 * by one too: a VMM that answers each just in time cannot stretch it to one per step (a QMP attach
 * has up to seven, the take-back of a failed one two more). Twice leaves a well-behaved VMM room:
 * its steps take milliseconds, and a detach's wait for the guest to release the NIC one timeout.
 * An attach gets it, then, where it was given up after asking the VMM to add something, taking
 * that back gets it again (so one NIC costs at most 4 timeouts); every detach (plain or forced
 * unlink, link taking down a dropped provider, the undo of a failed link) gets it too.
 */
export const WHOLE_NIC_TIMEOUTS = 2;

/** --vmm-timeout's range, in ms: up to ten minutes, as a VMM stalled longer is stuck, not slow. */
export const VMM_TIMEOUT_MIN_MS = 1;
export const VMM_TIMEOUT_MAX_MS = 600_000;

/**
 * A socket path made absolute: one relative to the working directory of this run, as connect(2)
 * takes it, joined to it as it is, not normalized (`..` after a symlinked directory leads where
 * the kernel takes it). Undefined where the working directory is deleted (the CLI refuses a
 * relative template then). It may be longer than a Unix socket path (a relative one is not).
 */
export function absoluteSocket(path: string): string | undefined {
  if (path.startsWith('/')) return path;
  try {
    const cwd = process.cwd();
    return `${cwd === '/' ? '' : cwd}/${path}`;
  } catch {
    return undefined;
  }
}

/**
 * A socket path as the state records it: absolute (absoluteSocket), where the state can hold it
 * (isRecordedSocket); else undefined, and nothing is recorded.
 */
export function recordableSocket(path: string): string | undefined {
  const absolute = absoluteSocket(path);
  return absolute !== undefined && isRecordedSocket(absolute) ? absolute : undefined;
}

// For a human line (list, show, a message): one way for every socket path (shared/shown-text.ts).
export { shownSocket };

/**
 * A socket the state records for a VM's NIC, checked again before it is connected to, as every
 * socket path is: a path the state would record (absolute, at most a Unix socket path's 107
 * bytes: isRecordedSocket); the last component is then opened O_NOFOLLOW by the VMM client
 * (vmm/vmm-socket.ts), a symlink there refused, as at a template's path, and so is one below the
 * VM's directory in it (recordedVmDir). The path was checked when
 * it was recorded, and the parser refuses a state file holding another; past that, a path in the
 * state is trusted as much as the state file is: it is root's (the state dir's owner's), and
 * whoever may write it may as well have any NIC taken out anywhere.
 */
function recordedSocketPath(path: string, kind: 'qemu' | 'cloud-hypervisor', vm: string): string {
  if (!isRecordedSocket(path)) {
    throw new VmmPortError(
      'recorded-socket',
      `the state records ${JSON.stringify(path)} as the socket of the ${VMM_NAMES[kind]} of ${vm}, which is no path it records (absolute, at most ${UNIX_SOCKET_PATH_MAX} bytes, without control characters, '"' or '\\'): check the state file`,
    );
  }
  return path;
}

/**
 * A recorded socket path with its directory resolved (realpath: symlinks, `.`, `..` and repeated
 * slashes as the kernel takes them), its last component as it is: the socket itself is not
 * followed (a symlink there is refused at connect, vmm/vmm-socket.ts). Undefined where the
 * directory cannot be resolved (gone, no permission) or the last component names no file of its
 * own (empty, `.` or `..`).
 */
function resolvedSocket(path: string): string | undefined {
  const slash = path.lastIndexOf('/');
  const name = path.slice(slash + 1);
  if (name === '' || name === '.' || name === '..') return undefined;
  try {
    const dir = realpathSync.native(path.slice(0, slash) || '/');
    return `${dir === '/' ? '' : dir}/${name}`;
  } catch {
    return undefined;
  }
}

/**
 * Whether two socket paths the state records (or would: recordableSocket) name the same socket:
 * the same text, or one key (socketKey: the same file, a hard link of it too, where one is there;
 * else the same once their directories are resolved), so that `qmp/{vm}.sock` from /srv and
 * `/srv/./qmp/{vm}.sock` are one, as the socket sharing check takes them. Where neither is there
 * and a directory cannot be resolved, only the same text is.
 */
export const sameSocketPath: SameSocket = sameSocketBy(socketKey);

/**
 * One key of a socket path however spelled (VmmPort.socketKey): where a file is at the path, its
 * device and inode (lstat: a symlink there is its own file, refused at connect), so that two hard
 * links of one socket, through either of which a connect reaches the one listener, are one, as are
 * `//`, `./` and symlinked directories; where none is (yet), the path with its directory resolved
 * (resolvedSocket), else as it is. One lstat (and, where nothing is there, one realpath) a path.
 * An inode key does not start with `/`, so no path's key is one.
 */
export function socketKey(path: string): string {
  try {
    const stat = lstatSync(path, { bigint: true, throwIfNoEntry: false });
    if (stat !== undefined) return `inode ${stat.dev}:${stat.ino}`;
  } catch {
    // A directory on the way that is not one, or may not be searched: the path decides.
  }
  return resolvedSocket(path) ?? path;
}

/**
 * What a port was told of VMMs that did not answer in time, by socket: one VMM however its socket
 * is spelled (relative or absolute, `./`, `..`, `//`, a symlinked directory, a hard link of the
 * socket where it is there), as sameSocketPath takes two spellings for one, so that a VMM that stalled at the path a template gives is known
 * at the path the state records for it, and the other way round.
 */
class UnansweredVmms {
  /** What was said, by each socket's absolute path and, where its directory resolves, its resolved one. */
  private readonly said = new Map<string, string>();

  /**
   * The keys a socket is known by: its absolute path, its resolved one (resolvedSocket) where there
   * is one, and its file's (socketKey: device and inode) where one is there, so that a hard link of
   * the socket is one VMM here as in the checks of one socket (sameSocketPath, socket sharing).
   */
  private static keysOf(socket: string): string[] {
    const absolute = absoluteSocket(socket) ?? socket;
    const resolved = resolvedSocket(absolute);
    const paths = resolved === undefined || resolved === absolute ? [absolute] : [resolved, absolute];
    const key = socketKey(absolute);
    return key.startsWith('/') ? paths : [key, ...paths];
  }

  note(socket: string, said: string): void {
    for (const key of UnansweredVmms.keysOf(socket)) this.said.set(key, said);
  }

  of(socket: string): string | undefined {
    if (this.said.size === 0) return undefined;
    for (const key of UnansweredVmms.keysOf(socket)) {
      const said = this.said.get(key);
      if (said !== undefined) return said;
    }
    return undefined;
  }
}

export function vmmPort(_attach: AttachChoice, flags: VmmFlags): VmmPort {
  const timeoutMs = integerOption('--vmm-timeout', flags.vmmTimeout ?? '5000', VMM_TIMEOUT_MIN_MS, VMM_TIMEOUT_MAX_MS, 'milliseconds');
  // Checked up front, for every command: unlink talks to the VMMs recorded, whatever --attach says.
  socketTemplate('--qmp-socket', flags.qmpSocket);
  socketTemplate('--ch-socket', flags.chSocket);
  const bus = flags.qemuBus === undefined ? undefined : qemuBus(flags.qemuBus);
  const qmpSocket = (vm: string): string => socketPath(flags.qmpSocket, vm, '--qmp-socket');
  const chSocket = (vm: string): string => socketPath(flags.chSocket, vm, '--ch-socket');
  const template = (kind: 'qemu' | 'cloud-hypervisor'): string => (kind === 'qemu' ? flags.qmpSocket : flags.chSocket);
  let logger: Logger | undefined;
  const log = (): Logger => (logger ??= createLogger('spectrum-link'));
  // The sockets of VMMs that did not answer an attach in time, with what was said: they are not
  // asked again while this port lasts (one run). `link --keep-going` links VM by VM after a
  // failure, and a provider's VMM that stalls would cost a --vmm-timeout (and a take-back) for
  // each of its clients, the state lock held throughout.
  const unanswered = new UnansweredVmms();
  // Likewise those that did not answer a detach in time: a detach still asks them (unlink --force
  // tries every NIC), but link does not ask one again to take out a NIC for another mode, at the
  // socket recorded or at the template's, however either spells it.
  const unansweredDetaches = new UnansweredVmms();
  // Where a NIC is detached: at the socket the state records for it (checked again), else at the template's.
  const detachSocket = (kind: 'qemu' | 'cloud-hypervisor', vm: string, recorded: string | undefined): string =>
    recorded !== undefined ? recordedSocketPath(recorded, kind, vm) : kind === 'qemu' ? qmpSocket(vm) : chSocket(vm);
  // And the VM's directory in it, below which no symlink is followed.
  const detachVmDir = (kind: 'qemu' | 'cloud-hypervisor', vm: string, recorded: string | undefined): string | undefined =>
    recorded !== undefined ? recordedVmDir(recorded, vm, template(kind)) : templateVmDir(template(kind), vm);
  return {
    checkSocket(kind, vm, recorded) {
      detachSocket(kind, vm, recorded);
    },
    unansweredDetach(kind, vm, recorded) {
      return unansweredDetaches.of(detachSocket(kind, vm, recorded));
    },
    async vmmAt(kind, vm, socket) {
      // Bounded by one --vmm-timeout; a socket the state would not record is refused as at a detach.
      return (await import('./vmm/vmm-socket.js')).vmmPresence(detachSocket(kind, vm, socket), timeoutMs, detachVmDir(kind, vm, socket));
    },
    socketKey,
    socketOf(kind, vm) {
      try {
        return recordableSocket(kind === 'qemu' ? qmpSocket(vm) : chSocket(vm));
      } catch {
        return undefined; // too long: checkSocket refuses it before anything is made
      }
    },
    templateSocket(kind, vm) {
      try {
        return absoluteSocket(kind === 'qemu' ? qmpSocket(vm) : chSocket(vm));
      } catch {
        return undefined; // too long: checkSocket refuses it before anything is made
      }
    },
    async checkNicMtu(kind, vm, nic) {
      if (kind !== 'qemu') return; // cloud-hypervisor cannot be asked which MTU a NIC was given
      const socket = qmpSocket(vm);
      const wholeMs = WHOLE_NIC_TIMEOUTS * timeoutMs;
      const whole = deadline(wholeMs, `asking for the MTU of NIC ${nic.id} took over ${wholeMs} ms`);
      try {
        await (await qmp()).qemuCheckMtu(socket, nic, { timeoutMs, signal: whole.signal, vmDir: templateVmDir(flags.qmpSocket, vm) });
      } catch (error) {
        // No QEMU runs there: it holds no NIC; the attach says what it finds.
        if ((await vmmGone(error)) !== undefined) return;
        throw error;
      } finally {
        whole.clear();
      }
    },
    async attach(kind, vm, nic) {
      const socket = kind === 'qemu' ? qmpSocket(vm) : chSocket(vm);
      const earlier = unanswered.of(socket);
      if (earlier !== undefined) {
        throw new VmmPortError(
          'unanswered-earlier',
          `the ${VMM_NAMES[kind]} of ${vm} did not answer in time earlier in this run (${earlier}), so it was not asked to add NIC ${nic.id}: check that VMM, then run link again`,
        );
      }
      // The whole attach is bounded too (WHOLE_NIC_TIMEOUTS), and so is the take-back after it.
      const wholeMs = WHOLE_NIC_TIMEOUTS * timeoutMs;
      const why = `the whole attach of NIC ${nic.id} took over ${wholeMs} ms`;
      const whole = deadline(wholeMs, why);
      const bound = { timeoutMs, signal: whole.signal, takeBackMs: wholeMs, vmDir: templateVmDir(template(kind), vm) };
      try {
        if (kind === 'qemu') return !(await (await qmp()).qemuAttach(socket, nic, { ...bound, ...(bus === undefined ? {} : { bus }) })).alreadyAttached;
        const say = (level: 'info' | 'warn', message: string): void => log()[level]({ vm, nic: nic.id }, message);
        return (await (await cloudHypervisor()).chAttach(socket, nic, { ...bound, vm, log: say })).outcome !== 'already-attached';
      } catch (error) {
        const timedOut = await vmmErrorOfKind(error, 'timeout');
        // Given up by the whole bound (not a request's own, whose take-back may outlast it).
        const failure =
          timedOut && error instanceof Error && error.message.includes(why)
            ? new VmmPortError(
                'attach-deadline',
                `the ${VMM_NAMES[kind]} of ${vm} (socket ${shownSocket(socket)}) did not finish adding NIC ${nic.id} within ${wholeMs} ms (twice --vmm-timeout): check that VMM (overloaded? paused?) or give a larger --vmm-timeout, then run link again`,
              )
            : error;
        if (timedOut) unanswered.note(socket, failure instanceof Error ? failure.message : String(failure));
        throw failure;
      } finally {
        whole.clear();
      }
    },
    async detach(kind, vm, nic, recorded) {
      // The whole detach is bounded too: each request is, but a VMM answering each just before
      // its bound could stretch a QMP detach (seven steps) to some 7 times --vmm-timeout under the
      // state lock. Twice is room for a well-behaved one: the wait for an unplug the guest does
      // not acknowledge takes one --vmm-timeout, the rest milliseconds.
      const socket = detachSocket(kind, vm, recorded);
      const wholeMs = WHOLE_NIC_TIMEOUTS * timeoutMs;
      const why = `the whole detach of NIC ${nic.id} took over ${wholeMs} ms`;
      const finishBy = performance.now() + wholeMs;
      const whole = deadline(wholeMs, why);
      const bound = { timeoutMs, signal: whole.signal, vmDir: detachVmDir(kind, vm, recorded) };
      try {
        if (kind === 'qemu') {
          const result = await (await qmp()).qemuDetach(socket, nic, { ...bound, finishBy });
          if (!result.acknowledged) log().warn({ vm, nic: nic.id }, 'guest did not acknowledge the unplug in time; its netdev was removed anyway');
          // The VMM runs without that NIC (an earlier detach took it out, or the VM restarted
          // without it): nothing was taken out now.
          if (result.alreadyDetached) return 'absent';
        } else if ((await (await cloudHypervisor()).chDetach(socket, nic, bound)).alreadyDetached) return 'absent';
      } catch (error) {
        // No VMM runs there: the VM holds no NIC of ours. A socket missing is what a VMM that
        // exited leaves (QEMU removes its QMP socket at exit, checked with Debian's 7.2; a stopped
        // VM's runtime directory goes with it): the usual unlink after a VM stopped, so said only
        // at level info. Where the state recorded the socket, that is where the NIC was attached.
        // Where it did not (a record written before sockets were recorded), a VMM run with its
        // socket elsewhere would keep the NIC, on the tap deleted next, so the line says what a
        // later unlink needs (the record no longer says how it was attached).
        const gone = await vmmGone(error);
        if (gone === 'no-socket') {
          const option = VMM_SOCKET_OPTIONS[kind];
          const elsewhere =
            recorded !== undefined
              ? 'the state records that socket as the one it was attached through'
              : `if ${vm} runs with its VMM socket elsewhere, that NIC stays there, on a deleted tap: unlink again with ${option} giving that path and --attach ${vm}=${kind} (before any --forget), or remove the NIC at that socket`;
          log().info({ vm, nic: nic.id }, `no ${VMM_NAMES[kind]} socket at ${shownSocket(socket)}: ${vm} taken as not running, and its NIC ${nic.id} as gone with it (not detached); ${elsewhere}`);
          return 'not-running';
        }
        if (gone === 'stale-socket') {
          log().info({ vm, nic: nic.id }, `${VMM_NAMES[kind]} socket ${shownSocket(socket)} refuses connections: the VMM has exited; nothing to detach`);
          return 'not-running';
        }
        if (await vmmErrorOfKind(error, 'timeout')) {
          // Given up by the whole bound (not a request's own).
          const failure =
            error instanceof Error && error.message.includes(why)
              ? new VmmPortError(
                  'detach-deadline',
                  `the ${VMM_NAMES[kind]} of ${vm} (socket ${shownSocket(socket)}) did not finish removing NIC ${nic.id} within ${wholeMs} ms (twice --vmm-timeout): check that VMM (overloaded? paused?) or give a larger --vmm-timeout`,
                )
              : error;
          unansweredDetaches.note(socket, failure instanceof Error ? failure.message : String(failure));
          throw failure;
        }
        throw error;
      } finally {
        whole.clear();
      }
    },
  };
}
