import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { loadNativeAddon } from '../../shared/native-addon.js';
import { NO_BIND_TO_INDEX } from '../link-binding.js';
import { DhcpError } from './dhcp-error.js';

/**
 * raw-socket's native socket (build/Release/raw.node), the part of raw-socket this server uses.
 * Its JS `Socket` wraps each native socket in an EventEmitter with four bound listeners, a send
 * queue and a receive buffer: measured about 3 KiB per socket against 0.4 KiB for the native
 * object alone. A provider holds one socket per client link, thousands of them, so the server
 * drives the native object directly. The native object calls `this.emit(event, ...)` for
 * 'recvReady', 'sendReady', 'error' and 'close'.
 */
interface NativeSocket {
  setOption(level: number, option: number, value: number): void;
  setOption(level: number, option: number, value: Buffer, length: number): void;
  /** getsockopt() into `value`; throws on failure. */
  getOption(level: number, option: number, value: Buffer, length: number): number;
  /** recvfrom() once into `buffer`, then calls back synchronously; throws on failure (EAGAIN too). */
  recv(buffer: Buffer, callback: (buffer: Buffer, bytes: number, source: string) => void): void;
  /** sendto() now, non-blocking, then calls back synchronously; throws on failure (EAGAIN too). */
  send(buffer: Buffer, offset: number, length: number, address: string, callback: (bytes: number) => void): void;
  close(): void;
  emit: (this: NativeSocket, event: string, error?: Error) => void;
  owner?: LinkSocket;
}

interface NativeModule {
  readonly SocketWrap: new (protocol: number, family: number) => NativeSocket;
  readonly SocketLevel: { readonly SOL_SOCKET: number; readonly IPPROTO_IP: number };
  readonly SocketOption: { readonly SO_BROADCAST: number; readonly SO_BINDTODEVICE: number; readonly IP_HDRINCL: number };
}

const IPPROTO_UDP = 17;
/** raw-socket's own numbering: 1 is IPv4. */
const RAW_SOCKET_IPV4 = 1;

/** A socket option as setsockopt(2) takes it (guest/native/dhcp-filter.c). */
interface SocketOptionBytes {
  readonly level: number;
  readonly option: number;
  readonly value: Buffer;
}

/** The port-67 filter, and for the same option a program that keeps nothing. */
interface FilterOption extends SocketOptionBytes {
  readonly dropAll: Buffer;
}

/** An integer socket option's level and number, from the C headers. */
interface IntegerOption {
  readonly level: number;
  readonly option: number;
}

interface FilterAddon {
  dhcpServerFilter(): FilterOption;
  /** SO_BINDTOIFINDEX. */
  bindToIndexOption(): IntegerOption;
  /** A UDP socket bound to `address`:`port` (IP_FREEBIND) that queues nothing (a filter that keeps nothing); its descriptor. */
  holdUdpPort(address: string, port: number): number;
  /** The MTU of the device of index `ifindex` now (SIOCGIFMTU); throws (ENODEV) for none. */
  linkMtu(ifindex: number): number;
}

interface NativeParts {
  readonly raw: NativeModule;
  readonly portFilter: FilterOption;
  readonly bindToIndex: IntegerOption;
  readonly holdUdpPort: (address: string, port: number) => number;
  readonly linkMtu: (ifindex: number) => number;
}

let native: NativeParts | undefined;
/**
 * Load raw-socket's addon and our socket filter's; a server does so when it starts, so a broken
 * install fails there.
 */
export function nativeParts(): NativeParts {
  if (native === undefined) {
    // Native addons (CommonJS), loaded only when a server starts.
    const require = createRequire(import.meta.url);
    const raw = require(join(dirname(require.resolve('raw-socket')), 'build', 'Release', 'raw.node')) as NativeModule;
    const filters = loadNativeAddon<FilterAddon>(import.meta.url, 'dhcp_filter.node');
    if (filters === undefined) throw new Error('the dhcp-filter addon (build/Release/dhcp_filter.node) is missing: run npm run build');
    native = { raw, portFilter: filters.dhcpServerFilter(), bindToIndex: filters.bindToIndexOption(), holdUdpPort: (address, port) => filters.holdUdpPort(address, port), linkMtu: (ifindex) => filters.linkMtu(ifindex) };
  }
  return native;
}

/**
 * The MTU the link of index `ifindex` has now, as the kernel says (about 6 µs: asked only for a
 * reply larger than every client takes); undefined when it cannot be read (the link is gone).
 */
export function linkMtuOf(ifindex: number): number | undefined {
  try {
    return nativeParts().linkMtu(ifindex);
  } catch {
    return undefined;
  }
}

/** What a link socket reports: datagrams read (a view valid only during the call) and failures. */
export interface LinkSocketEvents {
  onDatagram(bytes: Buffer): void;
  /** The socket failed and is closed. */
  onError(error: Error): void;
}

/** Where the name of the device a socket is bound to is read (IFNAMSIZ). */
const boundName = Buffer.alloc(16);

/** All link sockets read into one buffer: each datagram is handled before the next read. */
const receiveBuffer = Buffer.alloc(65_536);
/** What the one shared receive callback was handed (no closure per packet). */
let received: Buffer | undefined;
function onReceived(buffer: Buffer, bytes: number): void {
  received = buffer.subarray(0, bytes);
}

function dispatch(this: NativeSocket, event: string, error?: Error): void {
  const owner = this.owner;
  if (owner === undefined) return;
  if (event === 'recvReady') owner.read();
  else if (event === 'error') owner.fail(error ?? new Error('socket error'));
}

/** The link a socket is for: its index binds the socket, its name is for messages. */
export interface SocketLink {
  readonly ifname: string;
  readonly ifindex: number;
}

/**
 * A raw IPPROTO_UDP socket bound to one link (SO_BINDTOIFINDEX): it sees the client's broadcasts
 * from 0.0.0.0, which no dgram socket can tell apart by link, and sends complete IP datagrams
 * (IP_HDRINCL) out of that link only. Bound by index, not name: a socket opened again later (a
 * retry after a failure) binds the device the agent configured or fails with ENODEV, never
 * another device that took the name meanwhile. A socket filter keeps its reads to datagrams for
 * port 67. The handle owns the descriptor until close().
 */
export class LinkSocket {
  #socket: NativeSocket | undefined;

  private constructor(
    socket: NativeSocket,
    readonly ifname: string,
    readonly events: LinkSocketEvents,
  ) {
    this.#socket = socket;
  }

  static open(link: SocketLink, events: LinkSocketEvents): LinkSocket {
    const { raw, portFilter: filter, bindToIndex } = nativeParts();
    const { ifname, ifindex } = link;
    let socket: NativeSocket;
    try {
      socket = new raw.SocketWrap(IPPROTO_UDP, RAW_SOCKET_IPV4);
    } catch (error) {
      throw new DhcpError('socket', `cannot open a DHCP socket on ${ifname}: ${errorText(error)} (does the agent have CAP_NET_RAW?)`);
    }
    const handle = new LinkSocket(socket, ifname, events);
    socket.owner = handle;
    socket.emit = dispatch;
    try {
      // Until it is bound the socket reads every link's datagrams: one another link's client
      // sent to port 67 then, with this link's client MAC in chaddr (every client MAC is known),
      // would be served as this link's client's. So nothing is kept until the bind, and what was
      // queued before it is read and dropped.
      socket.setOption(filter.level, filter.option, filter.dropAll, filter.dropAll.length);
      try {
        socket.setOption(bindToIndex.level, bindToIndex.option, ifindex);
      } catch (error) {
        // ENOPROTOOPT: a kernel before 5.1 has no SO_BINDTOIFINDEX.
        if (/protocol not available/i.test(errorText(error))) throw new DhcpError('socket', `cannot open a DHCP socket on ${ifname}: ${NO_BIND_TO_INDEX}`);
        throw error;
      }
      // The kernel takes an index no device has (the socket then hears nothing); reading the
      // device's name back fails with ENODEV for one, so a link gone fails here, as by name.
      socket.getOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_BINDTODEVICE, boundName, boundName.length);
      drain(socket);
      // Only datagrams to port 67 reach the socket: the client's other UDP to the provider (its
      // DNS queries) would each wake the server otherwise.
      socket.setOption(filter.level, filter.option, filter.value, filter.value.length);
      socket.setOption(raw.SocketLevel.IPPROTO_IP, raw.SocketOption.IP_HDRINCL, 1);
      socket.setOption(raw.SocketLevel.SOL_SOCKET, raw.SocketOption.SO_BROADCAST, 1);
    } catch (error) {
      handle.close();
      if (error instanceof DhcpError) throw error;
      // ENODEV: raw-socket gives strerror's text only.
      if (/no such device/i.test(errorText(error))) throw new DhcpError('no-device', `cannot open a DHCP socket on ${ifname}: the kernel has no interface of index ${ifindex}`);
      throw new DhcpError('socket', `cannot open a DHCP socket on ${ifname}: ${errorText(error)} (does the link exist, and does the agent have CAP_NET_RAW?)`);
    }
    return handle;
  }

  /**
   * Send one IP datagram now. A raw socket with room in its send buffer takes it at once; when
   * it has none (EAGAIN) the datagram is dropped like any UDP server drops under overload, and
   * the client retransmits. Returns the failure, if any.
   */
  send(frame: Uint8Array, destination: string): Error | undefined {
    const socket = this.#socket;
    if (socket === undefined) return new Error('socket closed');
    try {
      const buffer = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
      socket.send(buffer, 0, buffer.length, destination, ignoreSent);
      return undefined;
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  }

  /** @internal The native socket is readable. */
  read(): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    received = undefined;
    try {
      socket.recv(receiveBuffer, onReceived);
    } catch (error) {
      // EAGAIN after a spurious wake-up is normal; anything else is the socket failing.
      if (!/temporarily unavailable/i.test(errorText(error))) this.fail(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    const bytes = received;
    received = undefined;
    if (bytes !== undefined) this.events.onDatagram(bytes);
  }

  /** @internal */
  fail(error: Error): void {
    this.close();
    this.events.onError(error);
  }

  close(): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    this.#socket = undefined;
    socket.close();
    delete socket.owner;
  }
}

function ignoreSent(): void {}

function ignoreReceived(): void {}

/**
 * Read and drop what the socket holds. Terminates: with the drop-all filter on, nothing new is
 * queued. Throws what recvfrom fails with, but EAGAIN (empty).
 */
function drain(socket: NativeSocket): void {
  for (;;) {
    try {
      socket.recv(receiveBuffer, ignoreReceived);
    } catch (error) {
      if (/temporarily unavailable/i.test(errorText(error))) return;
      throw error;
    }
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
