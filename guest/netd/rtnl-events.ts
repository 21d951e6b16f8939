// Adapter over the rtnl-events addon (guest/native/rtnl-events.c): the agent's route netlink
// notification socket. It hands on whole netlink messages, parsed by the `netlink` package, and
// tells an overflow (notifications lost: read the whole state again) and a datagram that cannot be
// split into messages (what it said lost, likewise) from a failure.
import { constants } from 'node:os';
import { type NetlinkMessage, parseMessages, rt } from 'netlink';
import { loadNativeAddon } from '../../shared/native-addon.js';
import { NetdError } from './netd-error.js';

interface Addon {
  open(groups: number, bufferBytes: number): object;
  receiveBuffer(handle: object): ReceiveBuffer;
  watch(handle: object, onEvent: (status: number, bytes: Buffer | undefined) => void): void;
  close(handle: object): void;
}

/** The socket's receive buffer as the kernel set it (twice what was asked, for its bookkeeping). */
export interface ReceiveBuffer {
  readonly bytes: number;
  /** SO_RCVBUFFORCE set it; else SO_RCVBUF did, capped at net.core.rmem_max. */
  readonly forced: boolean;
}

export interface NotificationHandlers {
  messages(messages: readonly NetlinkMessage[]): void;
  /**
   * Notifications were lost; the socket reads on. What it still held is discarded first: every
   * notification told after this was sent after it, none lost between (until the next overflow).
   */
  overflow(): void;
  /**
   * A datagram the `netlink` package could not split into messages (the parser's error): what it
   * said is lost, as in an overflow, but nothing was discarded; the socket reads on.
   */
  unsplittable(error: string): void;
  /** The socket failed for good (the errno's name); it reads no more. */
  failed(code: string): void;
}

export type MulticastGroup = keyof typeof rt.MulticastGroups;

const ENOBUFS = constants.errno.ENOBUFS;
const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, number]) => [number, name]));

let addon: Addon | undefined;

/** The addon, loaded once; a build without it is an error that says what to do. */
export function loadRtnlEventsAddon(): Addon {
  addon ??= loadNativeAddon<Addon>(import.meta.url, 'rtnl_events.node');
  if (addon === undefined) {
    throw new NetdError('netlink', 'the rtnl-events addon (build/Release/rtnl_events.node) is missing: run npm run build (it needs make, g++ and python3)');
  }
  return addon;
}

function codeOf(error: unknown): string {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : 'EIO';
}

/**
 * Hand what the addon read to `handlers`: an overflow (-ENOBUFS), a failure (another -errno), or
 * the datagrams it read (status 0), split into messages. Exported for the tests: the kernel sends
 * no datagram the parser cannot split, so nothing outside makes that case happen.
 */
export function deliverDatagram(handlers: NotificationHandlers, status: number, bytes: Buffer | undefined): void {
  if (status === -ENOBUFS) {
    handlers.overflow();
    return;
  }
  if (status < 0) {
    handlers.failed(ERRNO_NAMES.get(-status) ?? `E${-status}`);
    return;
  }
  let messages: NetlinkMessage[];
  try {
    messages = parseMessages(bytes ?? Buffer.alloc(0));
  } catch (error) {
    // Not an overflow (nothing was discarded): said as what it is, so the log names the cause.
    handlers.unsplittable(error instanceof Error ? error.message : String(error));
    return;
  }
  handlers.messages(messages);
}

export class RtnlEventSocket {
  #handle: object | undefined;

  private constructor(
    private readonly native: Addon,
    handle: object,
  ) {
    this.#handle = handle;
  }

  /** A socket in this network namespace, member of `groups`, asking for a receive buffer of `bufferBytes`. */
  static open(groups: readonly MulticastGroup[], bufferBytes: number): RtnlEventSocket {
    const native = loadRtnlEventsAddon();
    // The legacy bitmask of bind(2): group n is bit n-1.
    const mask = groups.reduce((bits, group) => bits | (1 << (rt.MulticastGroups[group] - 1)), 0);
    try {
      return new RtnlEventSocket(native, native.open(mask, bufferBytes));
    } catch (error) {
      throw new NetdError('netlink', `cannot open an rtnetlink notification socket (${codeOf(error)}): is this Linux?`);
    }
  }

  receiveBuffer(): ReceiveBuffer {
    return this.native.receiveBuffer(this.#open());
  }

  /** Hand every notification to `handlers`, in the order the kernel sent them. */
  watch(handlers: NotificationHandlers): void {
    this.native.watch(this.#open(), (status, bytes) => deliverDatagram(handlers, status, bytes));
  }

  close(): void {
    if (this.#handle === undefined) return;
    this.native.close(this.#handle);
    this.#handle = undefined;
  }

  #open(): object {
    if (this.#handle === undefined) throw new NetdError('netlink', 'the rtnetlink notification socket is closed');
    return this.#handle;
  }
}
