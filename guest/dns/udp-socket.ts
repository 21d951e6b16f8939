// Adapter over the udp-batch addon (guest/native/udp-batch.c): UDP sockets whose datagrams are
// read in batches (recvmmsg) into one shared arena and handed to JS in place, with the sender
// as numbers. Node's dgram costs about as much CPU per datagram as the kernel's whole UDP path;
// the forwarder relays tens of thousands of datagrams a second.
import { closeSync } from 'node:fs';
import { Socket as TcpSocket } from 'node:net';
import { constants } from 'node:os';
import { loadNativeAddon } from '../../shared/native-addon.js';
import { type BoundLink, NO_BIND_TO_INDEX } from '../link-binding.js';
import { endpointText } from './upstream.js';

/** 'zone': an IPv6 address's zone names no interface (neither the name nor the index of one). */
export type UdpErrorKind = 'addon-missing' | 'socket' | 'zone';

export class UdpError extends Error {
  override readonly name = 'UdpError';
  constructor(
    readonly kind: UdpErrorKind,
    /** errno name (EADDRNOTAVAIL, ...) for 'socket'. */
    readonly code: string,
    message: string,
    /**
     * For a socket's failure for good (receive()'s onFailed): whether reading or a send found it.
     * A send that did returned its errno to its caller too, which may have counted it already.
     */
    readonly foundBy: 'read' | 'send' | undefined = undefined,
  ) {
    super(message);
  }
}

declare const handleBrand: unique symbol;
type Handle = { readonly [handleBrand]: true };

interface Addon {
  arena(buffer: ArrayBuffer, meta: Int32Array, slots: number, slotSize: number): void;
  open(family: 4 | 6, address: string, port: number, bufferBytes: number): Handle;
  connect(handle: Handle, address: string, port: number): void;
  bindToIndex(handle: Handle, ifindex: number): void;
  watch(handle: Handle, onBatch: (count: number, failed: boolean) => void): void;
  send(handle: Handle, bytes: Uint8Array, offset: number, length: number): number;
  sendTo(handle: Handle, bytes: Uint8Array, offset: number, length: number, port: number, a0: number, a1: number, a2: number, a3: number): number;
  localPort(handle: Handle): number;
  close(handle: Handle): void;
  tcpConnect(family: 4 | 6, address: string, port: number, source: string, ifindex: number, zoneIndex?: number): number;
  tcpUnacknowledged(fd: number): number;
  errorClass(errno: number, sending: boolean): number;
  zoneIndex(address: string): number;
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, number]) => [number, name]));

/**
 * What an errno means for a socket (udp-batch.c, ERROR_CLASSES, where each is explained): 'again',
 * nothing wrong (nothing to read, a send dropped for want of room); 'datagram', a datagram's or a
 * peer's trouble (ICMP errors, a lost route), reported while the socket goes on; 'fatal', the
 * socket is broken for good.
 */
export type UdpErrorClass = 'again' | 'datagram' | 'fatal';
const ERROR_CLASS_NAMES: readonly UdpErrorClass[] = ['again', 'datagram', 'fatal'];

/** The addon's class of `errno` met reading or sending. Throws UdpError where the addon is missing. */
export function udpErrorClass(errno: number, direction: 'read' | 'send'): UdpErrorClass {
  return ERROR_CLASS_NAMES[required().addon.errorClass(errno, direction === 'send')] ?? 'fatal';
}

/** Why a socket failed for good with `code`, for its error's message. */
function failureReason(code: string, direction: 'read' | 'send'): string {
  if (code === 'ECONNABORTED' || code === 'EDESTADDRREQ') return 'the kernel destroyed it (ss -K, say)';
  return direction === 'read' ? 'its poll failed' : 'a send on it failed';
}

/** Datagrams one read takes at most. */
const SLOTS = 32;
/** Any UDP payload fits: nothing is ever cut short. Pages are touched only as far as datagrams reach. */
const SLOT_SIZE = 65_536;
/** Per slot: length, port, a0..a3, flags, unused (udp-batch.c). */
const META_INTS = 8;

let addon: Addon | undefined;
let arenaBytes: Buffer | undefined;
let meta: Int32Array | undefined;

/** Load the addon and give it its arena; the forwarder does so when it starts, so a broken build fails there. */
export function loadUdpAddon(): void {
  if (addon !== undefined) return;
  const loaded = loadNativeAddon<Addon>(import.meta.url, 'udp_batch.node');
  if (loaded === undefined) throw new UdpError('addon-missing', 'ENOENT', 'the udp-batch addon (build/Release/udp_batch.node) is missing: run npm run build (it needs make, g++ and python3)');
  const buffer = new ArrayBuffer(SLOTS * SLOT_SIZE);
  meta = new Int32Array(SLOTS * META_INTS);
  loaded.arena(buffer, meta, SLOTS, SLOT_SIZE);
  arenaBytes = Buffer.from(buffer);
  addon = loaded;
}

function required(): { addon: Addon; bytes: Buffer; meta: Int32Array } {
  loadUdpAddon();
  if (addon === undefined || arenaBytes === undefined || meta === undefined) throw new UdpError('addon-missing', 'ENOENT', 'the udp-batch addon did not load');
  return { addon, bytes: arenaBytes, meta };
}

/**
 * Where a datagram came from: the port and the address as four 32-bit words (IPv4: a0 alone).
 * The object handed to a receive handler is reused for the next datagram: copy what you keep.
 */
export class UdpPeer {
  constructor(
    public family: 4 | 6 = 4,
    public port = 0,
    public a0 = 0,
    public a1 = 0,
    public a2 = 0,
    public a3 = 0,
  ) {}

  copy(): UdpPeer {
    return new UdpPeer(this.family, this.port, this.a0, this.a1, this.a2, this.a3);
  }

  /** A key that tells hosts apart (rate limits): the IPv4 address as a number, IPv6 as canonical text. */
  hostKey(): number | string {
    return this.family === 4 ? this.a0 : canonicalIpv6(this.addressText());
  }

  /** Printable address, for logs. */
  addressText(): string {
    const a = this.a0;
    if (this.family === 4) return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
    return [this.a0, this.a1, this.a2, this.a3].flatMap((word) => [(word >>> 16).toString(16), (word & 0xffff).toString(16)]).join(':');
  }
}

/** A receive handler: `message` is a view into the shared arena, valid only during the call. */
export type DatagramHandler = (message: Buffer, from: UdpPeer) => void;

/**
 * Tests only: handed each socket as it starts reading, with a function that fails it as the addon
 * does when its poll fails (onFailed with that errno; reading goes on until its owner closes it, as
 * the forwarder does at once). Such a failure cannot be caused from outside the process.
 */
export type UdpFailureInjector = (socket: UdpSocket, fail: (errno: number) => void) => void;

let failureInjector: UdpFailureInjector | undefined;

/** Tests only: see UdpFailureInjector (undefined: none). */
export function injectUdpFailuresForTests(injector: UdpFailureInjector | undefined): void {
  failureInjector = injector;
}

function socketError(error: unknown, what: string): UdpError {
  const code = error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : 'EIO';
  return new UdpError('socket', code, `${what}: ${error instanceof Error ? error.message : String(error)}`);
}

/**
 * The error of a bind or connect to `address`: of kind 'zone' where its zone names no interface
 * (the addon's ENXIO, which neither bind(2) nor connect(2) returns), else as socketError. An
 * address without a zone has none to blame: its ENXIO, whatever gave it, is said as socketError.
 */
function addressError(error: unknown, what: string, address: string): UdpError {
  const failure = socketError(error, what);
  const percent = address.indexOf('%');
  if (failure.code !== 'ENXIO' || percent === -1) return failure;
  const zone = address.slice(percent);
  return new UdpError('zone', failure.code, `${what}: the zone ${zone} names no interface: no interface has that name (on a link-local address) or that index`);
}

/** A failure to bind to `link`, saying what it means where the kernel is why. */
function linkBindError(error: unknown, what: string, link: BoundLink): UdpError {
  const failure = socketError(error, what);
  if (failure.code === 'ENOPROTOOPT') return new UdpError('socket', failure.code, `${what}: ${NO_BIND_TO_INDEX}`);
  if (failure.code === 'ENODEV') return new UdpError('socket', failure.code, `${what}: the kernel has no interface of index ${link.ifindex}`);
  return failure;
}

/**
 * One UDP socket; the handle owns its descriptor until close(). Sends never throw: they return
 * the bytes sent or a negative errno (a full buffer or an unreachable client drops the datagram,
 * as UDP does; the caller counts it).
 */
export class UdpSocket {
  #handle: Handle | undefined;
  readonly #peer: UdpPeer;
  /** Where a failure for good is reported (set by receive()), and whether it was. */
  #onFailed: ((error: UdpError) => void) | undefined;
  #failed = false;

  private constructor(
    handle: Handle,
    readonly family: 4 | 6,
  ) {
    this.#handle = handle;
    this.#peer = new UdpPeer(family);
  }

  /** A socket bound to `address` ('' for any) and `port` (0: the kernel picks). Throws UdpError. */
  static bind(family: 4 | 6, address: string, port: number, bufferBytes: number): UdpSocket {
    const { addon: native } = required();
    try {
      return new UdpSocket(native.open(family, address, port, bufferBytes), family);
    } catch (error) {
      throw addressError(error, `cannot bind UDP ${address === '' ? `any:${port}` : endpointText(address, port)}`, address);
    }
  }

  /**
   * Send and receive through `link` only, bound by its index (SO_BINDTOIFINDEX): routes through
   * other links are not considered, nor local addresses on them, and another device that took the
   * link's name is not it. Throws UdpError (ENODEV: no device of that index; EPERM without
   * CAP_NET_RAW, which a socket not yet bound to a device needs only before Linux 5.7;
   * ENOPROTOOPT before Linux 5.1).
   */
  bindToLink(link: BoundLink): void {
    try {
      required().addon.bindToIndex(this.#live(), link.ifindex);
    } catch (error) {
      throw linkBindError(error, `cannot bind UDP to link ${link.ifname}`, link);
    }
  }

  /**
   * Only datagrams from `address`:`port` arrive, and send() goes there. A link-local IPv6 address
   * may carry a zone as glibc reads one: an interface's name or index (fe80::1%eth0, fe80::1%2).
   * Throws UdpError (ENETUNREACH: no route yet; kind 'zone': its zone names no interface).
   */
  connect(address: string, port: number): void {
    try {
      required().addon.connect(this.#live(), address, port);
    } catch (error) {
      throw addressError(error, `cannot connect UDP to ${endpointText(address, port)}`, address);
    }
  }

  /**
   * Start reading: `onDatagram` for each datagram, `onError` with the errno of an error the
   * kernel queued on the socket (ICMP unreachable on a connected socket, say), reading going on;
   * `onFailed` once if the socket cannot be read any more (its poll failed, or a read's error is
   * 'fatal': see udpErrorClass), reading stopped: the socket is then of no use but to close. A
   * send whose error is 'fatal' is reported there too, from the event loop (never from inside
   * the send), its error's foundBy 'send' (the send returned it as well).
   * Throws UdpError where reading cannot start: also where a send found the socket broken before
   * (with that send's error), which nothing then reports.
   */
  receive(onDatagram: DatagramHandler, onError: (code: number) => void, onFailed: (error: UdpError) => void): void {
    const { addon: native, bytes, meta: slots } = required();
    const peer = this.#peer;
    const family = this.family;
    const onBatch = (count: number, failed: boolean): void => {
      if (failed) {
        if (this.#failed) return;
        this.#failed = true;
        const code = ERRNO_NAMES.get(-count) ?? 'EIO';
        onFailed(new UdpError('socket', code, `the UDP socket cannot be read any more (${code}): ${failureReason(code, 'read')}`, 'read'));
        return;
      }
      if (count < 0) {
        onError(-count);
        return;
      }
      for (let slot = 0; slot < count && this.#handle !== undefined; slot++) {
        const base = slot * META_INTS;
        const length = slots[base] ?? 0;
        peer.port = slots[base + 1] ?? 0;
        peer.a0 = (slots[base + 2] ?? 0) >>> 0;
        if (family === 6) {
          peer.a1 = (slots[base + 3] ?? 0) >>> 0;
          peer.a2 = (slots[base + 4] ?? 0) >>> 0;
          peer.a3 = (slots[base + 5] ?? 0) >>> 0;
        }
        const start = slot * SLOT_SIZE;
        onDatagram(bytes.subarray(start, start + length), peer);
      }
    };
    try {
      native.watch(this.#live(), onBatch);
    } catch (error) {
      throw socketError(error, 'cannot read the UDP socket');
    }
    this.#onFailed = onFailed;
    failureInjector?.(this, (errno) => {
      if (this.#handle !== undefined) onBatch(-errno, true);
    });
  }

  /** Send on a connected socket. */
  send(message: Uint8Array): number {
    if (this.#handle === undefined) return -9; // EBADF
    const sent = required().addon.send(this.#handle, message, 0, message.length);
    if (sent < 0) this.#sendFailed(-sent);
    return sent;
  }

  sendTo(message: Uint8Array, to: UdpPeer): number {
    if (this.#handle === undefined) return -9; // EBADF
    const sent = required().addon.sendTo(this.#handle, message, 0, message.length, to.port, to.a0, to.a1, to.a2, to.a3);
    if (sent < 0) this.#sendFailed(-sent);
    return sent;
  }

  /**
   * A send failed with `errno`: one that is fatal (the addon stopped reading) is reported as the
   * socket's failure, once, from the event loop: the sender may be in the middle of handling a
   * datagram of this very socket, and its owner closes it on failure.
   */
  #sendFailed(errno: number): void {
    const onFailed = this.#onFailed;
    if (onFailed === undefined || this.#failed || udpErrorClass(errno, 'send') !== 'fatal') return;
    this.#failed = true;
    const code = ERRNO_NAMES.get(errno) ?? 'EIO';
    const error = new UdpError('socket', code, `the UDP socket cannot be used any more (${code}): ${failureReason(code, 'send')}`, 'send');
    setImmediate(() => {
      if (this.#handle !== undefined) onFailed(error);
    });
  }

  localPort(): number {
    return required().addon.localPort(this.#live());
  }

  get closed(): boolean {
    return this.#handle === undefined;
  }

  /** Idempotent. */
  close(): void {
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle !== undefined) required().addon.close(handle);
  }

  #live(): Handle {
    if (this.#handle === undefined) throw new UdpError('socket', 'EBADF', 'the UDP socket is closed');
    return this.#handle;
  }
}

/**
 * A TCP connection to `address`:`port` from `source` through `link` only, bound by its index as
 * UdpSocket.bindToLink (which Node's net cannot do), as a net.Socket that owns the descriptor. It
 * may still be connecting: what is written waits for it; a refusal arrives as an 'error' event.
 * Throws UdpError.
 */
export function connectTcpThroughLink(family: 4 | 6, address: string, port: number, source: string, link: BoundLink): TcpSocket {
  const { addon: native } = required();
  let fd: number;
  try {
    fd = native.tcpConnect(family, address, port, source, link.ifindex);
  } catch (error) {
    throw linkBindError(error, `cannot connect TCP to ${endpointText(address, port)} through ${link.ifname}`, link);
  }
  return tcpSocketOf(fd, endpointText(address, port));
}

/** A net.Socket owning the connected (or connecting) TCP descriptor `fd`, to `peer`. Throws UdpError. */
function tcpSocketOf(fd: number, peer: string): TcpSocket {
  try {
    return new TcpSocket({ fd, readable: true, writable: true });
  } catch (error) {
    closeSync(fd);
    throw socketError(error, `cannot use the TCP connection to ${peer}`);
  }
}

/**
 * A TCP connection to a link-local `address` through the link its zone picks, by name or by index
 * as UdpSocket.connect reads it (Node's net takes only a name there: libuv reads fe80::1%2 as
 * naming no link, and the kernel refuses a link-local address without one), as a net.Socket that
 * owns the descriptor. It may still be connecting, as connectTcpThroughLink's. Throws UdpError.
 *
 * `zoneIndex`: through the interface of that index instead, the one the zone named when the
 * upstream's UDP sockets were connected (see zoneIndexOf), whatever it is called now and whatever
 * has the zone's name now, as those sockets are; a zone read afresh at each connection followed
 * the name, TCP and UDP then reaching two interfaces after a rename. Gone, it is ENXIO, kind 'zone'.
 */
export function connectTcpThroughZone(address: string, port: number, zoneIndex?: number): TcpSocket {
  const { addon: native } = required();
  const percent = address.indexOf('%');
  // The index given apart, as a number: written into the address as its zone (`%3`), it is read
  // as glibc reads a zone, a name first, and an interface called "3" would be taken for it.
  const byIndex = zoneIndex !== undefined && percent !== -1;
  let fd: number;
  try {
    fd = byIndex ? native.tcpConnect(6, address.slice(0, percent), port, '', 0, zoneIndex) : native.tcpConnect(6, address, port, '', 0);
  } catch (error) {
    const failure = addressError(error, `cannot connect TCP to ${endpointText(address, port)}`, address);
    if (failure.kind !== 'zone' || !byIndex) throw failure;
    throw new UdpError('zone', failure.code, `cannot connect TCP to ${endpointText(address, port)}: the interface of index ${zoneIndex} that its zone ${address.slice(percent)} named when the upstream was connected is gone`);
  }
  return tcpSocketOf(fd, endpointText(address, port));
}

/**
 * The index of the interface that the zone of the IPv6 `address` names now (`fe80::1%eth0`,
 * `fe80::1%2`), read as UdpSocket.connect reads it; undefined where it has none, or names no
 * interface (or could not be read: the connect then says why).
 */
export function zoneIndexOf(address: string): number | undefined {
  if (!address.includes('%')) return undefined;
  try {
    const index = required().addon.zoneIndex(address);
    return index > 0 ? index : undefined;
  } catch (error) {
    if (error instanceof UdpError) throw error;
    return undefined;
  }
}

/**
 * Bytes written to a TCP connection that its peer has not acknowledged yet: those Node still holds
 * and those in the kernel, sent or not (SIOCOUTQ). Undefined where that cannot be told (no
 * descriptor: the socket is closed; the ioctl failed).
 */
export function tcpUnacknowledged(socket: TcpSocket): number | undefined {
  // net.Socket keeps its descriptor on its (undocumented, long-stable) libuv handle, as tap-fd.ts reads it.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  try {
    return socket.writableLength + required().addon.tcpUnacknowledged(fd);
  } catch {
    return undefined;
  }
}

/** RFC 5952 text of an IPv6 address (the WHATWG URL parser's serialisation); the zone is dropped. */
function canonicalIpv6(text: string): string {
  try {
    return new URL(`http://[${text.split('%')[0] ?? ''}]/`).hostname.slice(1, -1);
  } catch {
    return text;
  }
}

/** The host key (see UdpPeer.hostKey) of a textual address, as TCP reports its peers. */
export function hostKeyOfText(address: string): number | string {
  const octets = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(address);
  if (octets !== null) {
    const [a, b, c, d] = octets.slice(1).map(Number) as [number, number, number, number];
    if (a < 256 && b < 256 && c < 256 && d < 256) return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  }
  return canonicalIpv6(address);
}
