// A VMM's Unix socket, reached without following a symlink the VM's user may have made.
// connect(2) follows symlinks, and a VM's runtime directory (/run/vm/<vm>/) may be writable by the
// VM's user: a symlink there to another VM's socket would have spectrum-link, running as root,
// hot-plug this VM's tap into that other VM (a confused deputy; cloud-hypervisor gets the tap's
// descriptor with the very first request). So the path's last component is opened O_PATH |
// O_NOFOLLOW, which opens a symlink itself instead of following it, the descriptor is checked to
// be a socket, and the connection goes through /proc/self/fd/<n>, which leads to that very socket
// inode: nothing put at the path in between is reached. Nor is a symlink followed below the VM's
// directory (the first component of the template with {vm} in it, `vmDir`): that directory is
// opened (followed: it may be a symlink, e.g. /run/vm/<vm> to a directory named by VM id, the
// host's to make, as are the directories above it), the rest of the path opened from it, and the
// socket opened must be where that rest names literally: the kernel's path of the descriptor (its
// /proc/self/fd link) is the directory's plus the rest, else a symlink below was followed.
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { posix } from 'node:path';
import { shownSocket } from '../vm-name.js';

/** O_PATH, which Node's fs.constants lacks; the same value on x86-64 and arm64 (asm-generic). */
const O_PATH = 0o10000000;

export type VmmSocketErrorKind =
  /** Nothing at the path. */
  | 'missing'
  /** A symlink at the path: not followed. */
  | 'symlink'
  /** A symlink below the VM's directory on the way to the socket (`sub` in /run/vm/<vm>/sub/qmp.sock): not followed. */
  | 'symlink-below-vm-dir'
  /** A regular file, a directory or a special file at the path. */
  | 'not-a-socket'
  /** The path cannot be looked up: permissions, a file where a directory should be. */
  | 'unopenable';

export class VmmSocketError extends Error {
  override readonly name = 'VmmSocketError';
  constructor(
    readonly kind: VmmSocketErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** The socket found at a path, held (an O_PATH descriptor) until closed. */
export class VmmSocket {
  private open = true;

  private constructor(
    readonly path: string,
    private readonly fd: number,
  ) {}

  /**
   * The socket at `path`, a symlink there not followed, nor one below `vmDir` (where given: the
   * path's first part, naming the VM's directory, which may be a symlink itself). `missing`: the
   * hint for a path where nothing is (which VMM option makes the socket). Throws a VmmSocketError
   * whose message says what is there instead, in words that say what to check.
   */
  static find(path: string, missing: string, vmDir?: string): VmmSocket {
    // The rest of the path, without the slashes after the directory (`{vm}//qmp.sock`): not resolved from the root.
    const below = vmDir !== undefined && path.startsWith(`${vmDir}/`) ? path.slice(vmDir.length + 1).replace(/^\/+/, '') : undefined;
    let fd: number;
    let expected: string | undefined;
    if (vmDir === undefined || below === undefined) {
      try {
        fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
      } catch (error) {
        throw openError(error as NodeJS.ErrnoException, path, missing);
      }
    } else {
      let dirFd: number;
      try {
        dirFd = openSync(vmDir, O_PATH | constants.O_DIRECTORY);
      } catch (error) {
        throw openError(error as NodeJS.ErrnoException, vmDir, missing);
      }
      try {
        try {
          expected = posix.resolve(readlinkSync(`/proc/self/fd/${dirFd}`), below);
        } catch {
          // Not ENOENT's 'missing', which would have a detach take the VM for stopped.
          throw new VmmSocketError('unopenable', `/proc/self/fd/${dirFd} cannot be read: spectrum-link finds VMM sockets through /proc, which must be mounted`);
        }
        fd = openSync(`/proc/self/fd/${dirFd}/${below}`, O_PATH | constants.O_NOFOLLOW);
      } catch (error) {
        if (error instanceof VmmSocketError) throw error;
        throw openError(error as NodeJS.ErrnoException, `/proc/self/fd/${dirFd}/${below}`, missing, path);
      } finally {
        closeSync(dirFd);
      }
    }
    let kind: 'socket' | 'a symlink' | 'a regular file' | 'a directory' | 'a special file';
    try {
      // Where the VM's directory decides, the descriptor must be of what the rest of the path names literally.
      if (expected !== undefined && vmDir !== undefined && readlinkSync(`/proc/self/fd/${fd}`) !== expected) {
        throw new VmmSocketError('symlink-below-vm-dir', symlinkBelow(vmDir, path));
      }
      const info = fstatSync(fd);
      kind = info.isSocket() ? 'socket' : info.isSymbolicLink() ? 'a symlink' : info.isFile() ? 'a regular file' : info.isDirectory() ? 'a directory' : 'a special file';
    } catch (error) {
      closeSync(fd);
      if (error instanceof VmmSocketError) throw error;
      throw new VmmSocketError('unopenable', error instanceof Error ? error.message : String(error));
    }
    if (kind === 'socket') return new VmmSocket(path, fd);
    closeSync(fd);
    if (kind === 'a symlink') {
      throw new VmmSocketError(
        'symlink',
        "not a socket but a symlink, which spectrum-link does not follow for VMM sockets (whoever may write the VM's directory could point it at another VM's socket): give the path of the socket itself",
      );
    }
    throw new VmmSocketError('not-a-socket', `not a socket but ${kind}: check the path`);
  }

  /** Where to connect: the socket found, whatever is at its path by now. */
  get connectPath(): string {
    return `/proc/self/fd/${this.fd}`;
  }

  /** Why connecting to it failed, in words that say what to check. */
  connectProblem(error: NodeJS.ErrnoException): string {
    switch (error.code) {
      case 'ECONNREFUSED':
        return 'connection refused: nothing listens there; the VMM may have exited and left the socket file behind';
      case 'EACCES':
        return 'permission denied: run as a user that may open the socket';
      case 'ENOENT':
        // The socket was found: its /proc/self/fd link is what is missing.
        return `${this.connectPath} is missing: spectrum-link connects to VMM sockets through /proc, which must be mounted`;
      default:
        // A function, not a string: '$' in the path is no replacement pattern ('$&' put back what it replaces).
        return error.message.replaceAll(this.connectPath, () => shownSocket(this.path));
    }
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    closeSync(this.fd);
  }
}

/**
 * What a failure to reach a VMM socket says of the VMM: that none runs there, where nothing is at
 * the path ('no-socket': a VM not started, or stopped and its socket removed) or the socket refuses
 * connections ('stale-socket': left by a VMM that exited); else nothing (undefined): a symlink, a
 * file or a directory at the path, no permission, a path above that is no directory leave it
 * open whether a VMM runs and holds NICs.
 */
export function noVmmThere(error: unknown): 'no-socket' | 'stale-socket' | undefined {
  if (error instanceof VmmSocketError) return error.kind === 'missing' ? 'no-socket' : undefined;
  return error instanceof Error && 'code' in error && error.code === 'ECONNREFUSED' ? 'stale-socket' : undefined;
}

/** Why opening `opened` failed; `path`: the socket path it stands for in Node's message, where another. */
function openError(error: NodeJS.ErrnoException, opened: string, missing: string, path = opened): Error {
  switch (error.code) {
    case 'ENOENT':
      return new VmmSocketError('missing', `no such socket: ${missing}`);
    case 'EACCES':
      return new VmmSocketError('unopenable', 'permission denied: run as a user that may open the socket');
    case 'ENOTDIR':
      return new VmmSocketError('unopenable', 'a path above it is not a directory: check the path');
    default:
      // Node's message names the path (e.g. "ELOOP: ..., open '<path>'"): shown as every socket path is.
      return new VmmSocketError('unopenable', error.message.replaceAll(opened, () => shownSocket(path)));
  }
}

/**
 * The refusal of a socket reached through a symlink below the VM's directory, naming the first
 * one found there now (lstat, for the message alone: the check was of the descriptor opened).
 */
function symlinkBelow(vmDir: string, path: string): string {
  const why = "which spectrum-link does not follow for VMM sockets (whoever may write the VM's directory could point it at another VM's socket)";
  const what = `give a socket path with no symlink below the VM's directory (make that a directory of its own)`;
  const names = path.slice(vmDir.length + 1).split('/');
  let at = vmDir;
  for (const name of names.slice(0, -1)) {
    if (name === '') continue;
    at = `${at}/${name}`;
    try {
      if (lstatSync(at).isSymbolicLink()) {
        return `${shownSocket(at)} is a symlink (to ${shownSocket(readlinkSync(at))}) below the VM's directory ${shownSocket(vmDir)}, ${why}: ${what}`;
      }
    } catch {
      break;
    }
  }
  return `reached through a symlink below the VM's directory ${shownSocket(vmDir)}, ${why}: ${what}`;
}

/**
 * Whether a VMM takes connections at a socket path (the last component not followed, as
 * VmmSocket.find, nor one below `vmDir`): connected, then closed at once, nothing sent (QEMU and cloud-hypervisor take a
 * client that leaves without a request). Else why not: nothing there or a socket refusing
 * connections (`none`: no VMM runs there, noVmmThere), or anything else (a symlink, not a socket,
 * no permission, no connection within `timeoutMs`).
 */
export type VmmPresence = { readonly running: true } | { readonly running: false; readonly none: boolean; readonly why: string };

export async function vmmPresence(path: string, timeoutMs: number, vmDir?: string): Promise<VmmPresence> {
  let found: VmmSocket;
  try {
    found = VmmSocket.find(path, 'nothing at that path', vmDir);
  } catch (error) {
    const none = noVmmThere(error) !== undefined;
    return { running: false, none, why: none ? 'nothing is at that path' : error instanceof Error ? error.message : String(error) };
  }
  return new Promise((resolve) => {
    const socket = createConnection({ path: found.connectPath });
    let settled = false;
    const settle = (presence: VmmPresence): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      found.close();
      resolve(presence);
    };
    const timer = setTimeout(() => settle({ running: false, none: false, why: `it took no connection within ${timeoutMs} ms` }), timeoutMs);
    socket.once('connect', () => settle({ running: true }));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const none = noVmmThere(error) !== undefined;
      settle({ running: false, none, why: none ? 'a socket there refuses connections (left by a VMM that exited)' : found.connectProblem(error) });
    });
  });
}
