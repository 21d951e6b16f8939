// Whether a VMM runs in the network namespace of the taps it is handed. cloud-hypervisor reads a
// tap it gets as a descriptor by name (TUNGETIFF, then SIOCGIFMTU on that name) in its own
// namespace: elsewhere it finds no such device, or another one, and the guest does not learn the
// tap's MTU (cloud-hypervisor net_util/src/tap.rs; since PR #8112 it then offers none, before it
// the add-net failed). Namespaces are told apart as the kernel does: by the (st_dev, st_ino) of
// their nsfs inode. The VMM's namespace is held open while it is judged, and what the tap's name
// resolves to there is asked in it (a route netlink socket made there, which loads no module for
// a missing name as SIOCGIFMTU would), never read from /proc/PID/net/dev, which lists no altnames.
import { closeSync, fstatSync, openSync, statSync } from 'node:fs';
import { DEFAULT_NIC_MTU } from './nic.js';
import { deviceMtuIn } from './tap-fd.js';

/** A network namespace as the kernel names it (nsfs device and inode). */
export interface NetnsIdentity {
  readonly dev: bigint;
  readonly ino: bigint;
}

/** How `readlink /proc/PID/ns/net` shows a namespace. */
export const shownNetns = (ns: NetnsIdentity): string => `net:[${ns.ino}]`;

export type PeerNetns =
  | { readonly kind: 'same' }
  | { readonly kind: 'other'; readonly peer: NetnsIdentity; readonly taps: NetnsIdentity }
  /** The peer's namespace cannot be read; `why` says so for an operator. */
  | { readonly kind: 'unknown'; readonly why: string };

export const sameNetns = (a: NetnsIdentity, b: NetnsIdentity): boolean => a.dev === b.dev && a.ino === b.ino;

/**
 * Where a VMM runs relative to the taps, as far as its guest's MTU goes: in the taps' namespace,
 * in one that cannot be told, or in another, where it reads the MTU of whatever the tap's name
 * resolves to there (`named`).
 */
export type VmmPlace =
  | { readonly kind: 'same' }
  /** Its namespace cannot be opened; `why` says so for an operator. */
  | { readonly kind: 'unknown'; readonly why: string }
  | { readonly kind: 'other'; readonly peer: NetnsIdentity; readonly named: NamedDevice };

/**
 * The MTU a guest learns from a VMM that reads its tap's MTU by name where that name resolves to
 * `named`: that device's; none read (nothing has the name), the guest's default, 1500
 * (cloud-hypervisor then offers none); undefined where that cannot be told.
 */
export function guestMtu(named: NamedDevice): number | undefined {
  switch (named.kind) {
    case 'none':
      return DEFAULT_NIC_MTU;
    case 'device':
      return named.mtu;
    case 'unknown':
      return undefined;
  }
}

export type MtuVerdict =
  /** Nothing to say: the taps' namespace, or one that cannot be told where the link MTU is the default. */
  | 'attach'
  /** Another namespace, where the guest learns the link MTU all the same (guestMtu): attach, saying so. */
  | 'note'
  /** Cannot tell what the guest learns (its namespace unknown at another link MTU than the default; or, in another namespace at the default, what has the tap's name there): attach, warning. */
  | 'warn'
  /** Another namespace, where the guest would learn another MTU than the link's, or, at another MTU than the default, cannot be told to learn it. */
  | 'refuse';

/** What to do about a NIC whose guest is to learn link MTU `mtu` (absent: the default), its VMM at `place`. */
export function mtuVerdict(place: VmmPlace, mtu: number | undefined): MtuVerdict {
  const link = mtu ?? DEFAULT_NIC_MTU;
  switch (place.kind) {
    case 'same':
      return 'attach';
    case 'unknown':
      // Most likely the taps' (as Spectrum runs it): attach, warning only where it matters.
      return link === DEFAULT_NIC_MTU ? 'attach' : 'warn';
    case 'other': {
      const guest = guestMtu(place.named);
      if (guest === undefined) return link === DEFAULT_NIC_MTU ? 'warn' : 'refuse';
      return guest === link ? 'note' : 'refuse';
    }
  }
}

function identity(path: string): NetnsIdentity {
  const info = statSync(path, { bigint: true });
  return { dev: info.dev, ino: info.ino };
}

/** The namespace the taps are in: at `tapNetnsPath` (a /run/netns file), else this thread's (where taps are opened). */
export function tapsNetns(tapNetnsPath: string | undefined): NetnsIdentity {
  return identity(tapNetnsPath ?? '/proc/thread-self/ns/net');
}

/**
 * The process behind a VMM's socket (tap-fd.ts SocketPeer): its pid in our PID namespace (0: not
 * visible there), and whether it still runs, asked after /proc/PID is read: while it runs, its
 * pid is its own, so what was read is about it; once it has exited the pid may name another
 * process (false); undefined where that cannot be told (a kernel without pidfds of socket peers).
 */
export interface PeerProcess {
  readonly pid: number;
  running(): boolean | undefined;
  /**
   * Its network namespace, open (the caller closes it), asked of its pidfd, no /proc read
   * (SocketPeer.netnsFd); undefined, or absent, where only /proc/PID can tell. Throws an errno error.
   */
  netnsFd?(): number | undefined;
}

/** A process's network namespace held open (the caller closes `fd`), or why it cannot be. */
export type OpenedNetns =
  | { readonly kind: 'open'; readonly fd: number; readonly identity: NetnsIdentity }
  | { readonly kind: 'unknown'; readonly why: string };

const exited = (pid: number): string => `its process ${pid} has exited`;

/** Why process `pid`'s namespace could not be opened at `what`, for an operator. */
function netnsProblem(error: unknown, pid: number, what: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ESRCH') return exited(pid);
  if (code === 'EACCES' || code === 'EPERM') return `we may not open ${what} (it takes ptrace access to process ${pid}: root, or the VMM's user)`;
  return `${what}: ${error instanceof Error ? error.message : String(error)}`;
}

/**
 * Process `peer`'s network namespace, opened by its pidfd where the kernel can (nothing then
 * rests on its pid), else at /proc/PID/ns/net, trusted only if the process still ran after the
 * open: one gone by then may have left its pid to another, opened instead.
 */
export function openPeerNetns(peer: PeerProcess): OpenedNetns {
  const { pid } = peer;
  let fd: number | undefined;
  try {
    fd = peer.netnsFd?.();
  } catch (error) {
    return { kind: 'unknown', why: netnsProblem(error, pid, `process ${pid}'s network namespace by its pidfd`) };
  }
  if (fd === undefined) {
    if (pid <= 0) return { kind: 'unknown', why: 'its process is not visible from our PID namespace (SO_PEERCRED gave no pid)' };
    const path = `/proc/${pid}/ns/net`;
    let error: unknown;
    try {
      fd = openSync(path, 'r');
    } catch (failure) {
      error = failure;
    }
    if (peer.running() === false) {
      if (fd !== undefined) closeSync(fd);
      return { kind: 'unknown', why: exited(pid) };
    }
    if (fd === undefined) return { kind: 'unknown', why: netnsProblem(error, pid, path) };
  }
  try {
    const info = fstatSync(fd, { bigint: true });
    return { kind: 'open', fd, identity: { dev: info.dev, ino: info.ino } };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** Where a namespace opened by openPeerNetns is, relative to `taps`. */
export function netnsRelation(opened: OpenedNetns, taps: NetnsIdentity): PeerNetns {
  if (opened.kind === 'unknown') return opened;
  return sameNetns(opened.identity, taps) ? { kind: 'same' } : { kind: 'other', peer: opened.identity, taps };
}

/**
 * Where the VMM whose namespace openPeerNetns opened runs, relative to `taps`; in another
 * namespace, what its tap's name `tap` resolves to there (namedDevice).
 */
export function vmmPlace(opened: OpenedNetns, taps: NetnsIdentity, tap: string): VmmPlace {
  if (opened.kind === 'unknown') return opened;
  if (sameNetns(opened.identity, taps)) return { kind: 'same' };
  return { kind: 'other', peer: opened.identity, named: namedDevice(opened.fd, tap) };
}

/** Where process `peer` runs, relative to `taps`. */
export function peerNetns(peer: PeerProcess, taps: NetnsIdentity): PeerNetns {
  const opened = openPeerNetns(peer);
  if (opened.kind === 'open') closeSync(opened.fd);
  return netnsRelation(opened, taps);
}

/** What a name resolves to in a network namespace, as a VMM there reads a tap's MTU by it. */
export type NamedDevice =
  /** No device there has that name (nor an altname of it). */
  | { readonly kind: 'none' }
  /** A device has it (its own name or an altname) and this MTU. */
  | { readonly kind: 'device'; readonly mtu: number }
  | { readonly kind: 'unknown'; readonly why: string };

/**
 * What `name` resolves to in the network namespace open as `netnsFd`, as cloud-hypervisor's
 * SIOCGIFMTU there resolves its tap's name (device names and altnames alike), asked by route
 * netlink (tap-fd.ts deviceMtuIn): reads only, and loads no kernel module for a name nothing has.
 */
export function namedDevice(netnsFd: number, name: string): NamedDevice {
  try {
    return { kind: 'device', mtu: deviceMtuIn(netnsFd, name) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENODEV') return { kind: 'none' };
    return { kind: 'unknown', why: error instanceof Error ? error.message : String(error) };
  }
}
