// Whether a VMM runs in the network namespace of the taps it is handed. cloud-hypervisor reads a
// tap it gets as a descriptor by name (TUNGETIFF, then SIOCGIFMTU on that name) in its own
// namespace: elsewhere it finds no such device, or another one, and the guest does not learn the
// tap's MTU (cloud-hypervisor net_util/src/tap.rs; since PR #8112 it then offers none, before it
// the add-net failed). Namespaces are told apart as the kernel does: by the (st_dev, st_ino) of
// their nsfs inode.
import { readFileSync, statSync } from 'node:fs';
import { DEFAULT_NIC_MTU } from './nic.js';

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
 * What to do about a NIC whose guest is to learn link MTU `mtu` (absent: the default), its VMM
 * in `peer` relative to the taps: 'attach'; 'note' (another namespace, but the guest's default
 * is the link MTU); 'warn' (cannot tell, and it matters); 'refuse' (the guest would get another
 * MTU than the link's).
 */
export function mtuVerdict(peer: PeerNetns, mtu: number | undefined): 'attach' | 'note' | 'warn' | 'refuse' {
  if (peer.kind === 'same') return 'attach';
  const matters = mtu !== undefined && mtu !== DEFAULT_NIC_MTU;
  if (peer.kind === 'unknown') return matters ? 'warn' : 'attach';
  return matters ? 'refuse' : 'note';
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
}

const exited = (pid: number): string => `its process ${pid} has exited`;

/** Where process `peer` runs, relative to `taps`. */
export function peerNetns(peer: PeerProcess, taps: NetnsIdentity): PeerNetns {
  const { pid } = peer;
  if (pid <= 0) return { kind: 'unknown', why: 'its process is not visible from our PID namespace (SO_PEERCRED gave no pid)' };
  let read: NetnsIdentity | NodeJS.ErrnoException;
  try {
    read = identity(`/proc/${pid}/ns/net`);
  } catch (error) {
    read = error instanceof Error ? error : new Error(String(error));
  }
  // After the read: a process gone by then may have left its pid to another, read instead.
  if (peer.running() === false) return { kind: 'unknown', why: exited(pid) };
  if (read instanceof Error) {
    const code = read.code;
    const why =
      code === 'ENOENT' || code === 'ESRCH'
        ? exited(pid)
        : code === 'EACCES' || code === 'EPERM'
          ? `we may not read /proc/${pid}/ns/net (it takes ptrace access to process ${pid}: root, or the VMM's user)`
          : `/proc/${pid}/ns/net: ${read.message}`;
    return { kind: 'unknown', why };
  }
  return sameNetns(read, taps) ? { kind: 'same' } : { kind: 'other', peer: read, taps };
}

/** The device names of a /proc/PID/net/dev text (two header lines, then `name: counters` a line). */
export function netDevNames(text: string): string[] {
  return text
    .split('\n')
    .slice(2)
    .flatMap((line) => {
      const colon = line.indexOf(':');
      return colon < 0 ? [] : [line.slice(0, colon).trim()];
    });
}

/**
 * Whether process `peer`'s network namespace has a device named `name` (/proc/PID/net/dev, the
 * devices of that process's namespace); undefined where that cannot be read (the process gone,
 * also by the time it was read, or no permission).
 */
export function peerHasDevice(peer: PeerProcess, name: string): boolean | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${peer.pid}/net/dev`, 'utf8');
  } catch {
    return undefined;
  }
  return peer.running() === false ? undefined : netDevNames(text).includes(name);
}
