// Adapter over the tap_fd addon (host/native/tap-fd.c): queues of existing taps as descriptors,
// and Unix stream connections that carry descriptors with their first bytes (SCM_RIGHTS). A
// TapFd owns its descriptor until it is closed.
import { closeSync } from 'node:fs';
import { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { loadNativeAddon } from '../../shared/native-addon.js';

interface Addon {
  openTap(name: string, netnsPath: string | null): number;
  connectUnix(path: string): number;
  sendWithRights(fd: number, bytes: Uint8Array, fds: readonly number[]): number;
  peekRights(fd: number, max: number): number[] | null;
  tapName(fd: number): string;
  peerPid(fd: number): number;
  peerPidfd(fd: number): number;
  pidfdExited(pidfd: number): boolean;
  pidfdNetns(pidfd: number): number;
  deviceMtu(netnsFd: number, name: string): number;
}

let addon: Addon | undefined;

function loaded(): Addon {
  if (addon !== undefined) return addon;
  const found = loadNativeAddon<Addon>(import.meta.url, 'tap_fd.node');
  if (found === undefined) {
    throw Object.assign(new Error('the tap_fd addon (build/Release/tap_fd.node) is missing: run npm run build (it needs make, g++ and python3)'), { code: 'ERR_ADDON_MISSING' });
  }
  addon = found;
  return addon;
}

/** One queue of a persistent tap, open in this process. */
export class TapFd {
  private open = true;

  private constructor(
    readonly fd: number,
    readonly tap: string,
  ) {}

  /**
   * Open a queue of the existing tap `tap` in the namespace at netnsPath (a /run/netns file), or
   * in ours (null). Throws an errno error: ENODEV no such tap, EBUSY its queue is held elsewhere;
   * or, where `tap` is only another device's altname (which is left alone), code ERR_TAP_ALTNAME
   * with `device` that device's own name.
   */
  static open(tap: string, netnsPath: string | null = null): TapFd {
    return new TapFd(loaded().openTap(tap, netnsPath), tap);
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    closeSync(this.fd);
  }
}

/**
 * Why a queue of tap `tap` could not be opened (an error from TapFd.open), said for an operator;
 * undefined for EBUSY: its one queue is held elsewhere (by a VMM, having it attached).
 */
export function tapOpenProblem(error: unknown, tap: string): string | undefined {
  const code = (error as NodeJS.ErrnoException).code;
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case 'EBUSY':
      return undefined;
    case 'ENODEV':
      return `tap ${tap} does not exist in this network namespace: has the link been made (spectrum-link link)?`;
    case 'ERR_TAP_ALTNAME': {
      const device = (error as { device?: unknown }).device;
      return `tap ${tap} does not exist in this network namespace: ${tap} is an altname of device ${String(device)}, which was left alone; delete that altname (ip link property del dev ${String(device)} altname ${tap}) and link again`;
    }
    case 'EINVAL':
      return `device ${tap} is not a tap: was it made by someone else?`;
    case 'ERR_ADDON_MISSING':
      return `cannot hand over tap ${tap}: ${message}`;
    default:
      return `cannot open tap ${tap}: ${message}: opening a tap needs CAP_NET_ADMIN or the tap's owner`;
  }
}

/** The tap a received descriptor is a queue of; throws if it is none. */
export function tapNameOf(fd: number): string {
  return loaded().tapName(fd);
}

/** The descriptors that came with the first unread bytes on a socket descriptor (copies), null if no bytes came yet. */
export function peekRights(fd: number, max = 16): number[] | null {
  return loaded().peekRights(fd, max);
}

/**
 * Write `bytes` with `fds` attached (one sendmsg with SCM_RIGHTS) on a connected Unix stream
 * net.Socket that has nothing else waiting to be written (else the descriptors would come with
 * earlier bytes). Throws an errno error.
 */
export function writeWithRights(socket: Socket, bytes: Uint8Array, fds: readonly number[]): void {
  // net.Socket keeps its descriptor on its (undocumented, long-stable) libuv handle.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw Object.assign(new Error('the socket has no descriptor (not connected?)'), { code: 'EBADF' });
  if (socket.writableLength > 0) throw Object.assign(new Error('the socket still has bytes to write'), { code: 'EBUSY' });
  const sent = loaded().sendWithRights(fd, bytes, fds);
  if (sent < bytes.length) socket.write(bytes.subarray(sent));
}

/**
 * The process that made a connected socket's peer listen: its pid (SO_PEERCRED) and, where the
 * kernel gives one, a pidfd for it (SO_PEERPIDFD, Linux 6.5). The pid alone names another
 * process once that one has exited and its number is reused (a launcher that handed the socket
 * over with `--api-socket fd=` and exited); the pidfd says whether it has. Owns the pidfd until
 * closed.
 */
export class SocketPeer {
  private constructor(
    /** As our PID namespace sees it; 0 if it cannot see that process. */
    readonly pid: number,
    /** Its pidfd; 'exited' where the kernel gave none as it is gone; undefined before Linux 6.5 (no SO_PEERPIDFD). */
    private pidfd: number | 'exited' | 'closed' | undefined,
  ) {}

  /** The peer of the connected Unix socket `fd`; throws an errno error (and holds nothing) if it cannot be asked. */
  static of(fd: number): SocketPeer {
    const native = loaded();
    const pid = native.peerPid(fd);
    try {
      return new SocketPeer(pid, native.peerPidfd(fd));
    } catch (error) {
      switch ((error as NodeJS.ErrnoException).code) {
        // No SO_PEERPIDFD (before Linux 6.5), or no peer pid recorded (ENODATA; SO_PEERCRED then
        // gives 0): nothing but the pid tells, as before.
        case 'ENOPROTOOPT':
        case 'ENODATA':
          return new SocketPeer(pid, undefined);
        // Reaped: EINVAL (from Linux 6.5), later ESRCH; newer kernels give a pidfd that polls
        // as exited instead.
        case 'EINVAL':
        case 'ESRCH':
          return new SocketPeer(pid, 'exited');
        default:
          throw error;
      }
    }
  }

  /**
   * Whether the process still runs (a zombie has exited); undefined on a kernel without
   * SO_PEERPIDFD, where nothing tells. What /proc/PID showed was about this process if it still
   * ran afterwards: until it exits, its pid cannot name another.
   */
  running(): boolean | undefined {
    if (this.pidfd === 'closed') throw new Error(`the pidfd of process ${this.pid} is closed`);
    if (this.pidfd === 'exited') return false;
    if (this.pidfd === undefined) return undefined;
    return !loaded().pidfdExited(this.pidfd);
  }

  /**
   * Its network namespace, open (the caller closes the descriptor), asked of its pidfd
   * (PIDFD_GET_NET_NAMESPACE, Linux 6.11): no /proc read, so no pid that could name another
   * process. Undefined where the kernel cannot be asked so (no pidfd, or before 6.11): then only
   * /proc/PID tells. Throws an errno error: ESRCH once it has exited, EACCES without ptrace access.
   */
  netnsFd(): number | undefined {
    if (this.pidfd === 'closed') throw new Error(`the pidfd of process ${this.pid} is closed`);
    if (this.pidfd === 'exited') throw Object.assign(new Error(`process ${this.pid} has exited`), { code: 'ESRCH' });
    if (this.pidfd === undefined) return undefined;
    try {
      return loaded().pidfdNetns(this.pidfd);
    } catch (error) {
      // ENOTTY: a pidfd without namespace ioctls (before Linux 6.11).
      if ((error as NodeJS.ErrnoException).code === 'ENOTTY') return undefined;
      throw error;
    }
  }

  close(): void {
    if (typeof this.pidfd === 'number') closeSync(this.pidfd);
    this.pidfd = 'closed';
  }
}

/**
 * The MTU of the device that `name` resolves to in the network namespace open as `netnsFd` (its
 * own name or an altname, as a VMM's SIOCGIFMTU there resolves it), asked by route netlink
 * (RTM_GETLINK by name), which loads no kernel module for a name nothing has, where SIOCGIFMTU
 * would; changes nothing. Throws an errno error: ENODEV if no device there has that name.
 */
export function deviceMtuIn(netnsFd: number, name: string): number {
  return loaded().deviceMtu(netnsFd, name);
}

/** A connection that carries descriptors with its first bytes (connectWithRights). */
export interface RightsConnection extends Duplex {
  /** Who listens at the other end: the process that made the socket listen. Closed with the connection. */
  readonly peer: SocketPeer;
}

/**
 * A connection to the Unix stream socket at `path` whose first write carries `fds` (one sendmsg
 * with SCM_RIGHTS); later writes and all reads go through a plain net.Socket on the same
 * descriptor. Usable as node:http's `createConnection`. Throws an errno error if it cannot connect.
 */
export function connectWithRights(path: string, fds: readonly number[]): RightsConnection {
  const native = loaded();
  const fd = native.connectUnix(path);
  let peer: SocketPeer;
  try {
    peer = SocketPeer.of(fd);
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  const socket = new Socket({ fd, readable: true, writable: true });
  let rights: readonly number[] | undefined = fds;
  const connection = new Duplex({
    write(chunk: Buffer, _encoding, callback) {
      // node:http ends a request with an empty write: sending it could only fail (EPIPE) where the
      // peer has already answered the whole request and closed.
      if (chunk.length === 0) {
        callback();
        return;
      }
      if (rights === undefined) {
        socket.write(chunk, callback);
        return;
      }
      try {
        const sent = native.sendWithRights(fd, chunk, rights);
        rights = undefined;
        if (sent === chunk.length) callback();
        else socket.write(chunk.subarray(sent), callback);
      } catch (error) {
        callback(error instanceof Error ? error : new Error(String(error)));
      }
    },
    read() {
      socket.resume();
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(error, callback) {
      peer.close();
      socket.destroy();
      callback(error);
    },
  });
  socket.on('data', (data: Buffer) => {
    if (!connection.push(data)) socket.pause();
  });
  socket.on('end', () => connection.push(null));
  socket.on('error', (error) => connection.destroy(error));
  socket.on('close', () => connection.destroy());
  return Object.assign(connection, { peer });
}
