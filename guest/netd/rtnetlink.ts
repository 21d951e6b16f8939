// Adapter between the agent and the kernel: rtnetlink through the `netlink` package (dumps,
// changes, fixed headers and the splitting of attributes; the few attributes the agent reads are
// decoded here), notifications through our own socket
// (rtnl-events.ts), and /proc/sys for sysctls. Decoders are pure; no decisions here.
// /proc/sys reads and writes take microseconds: synchronous calls beat a thread-pool round trip.
import { readFileSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { getSystemErrorName } from 'node:util';
import {
  AttrStream,
  Flags,
  FlagsGet,
  MessageType,
  type NetlinkAttribute,
  type NetlinkMessage,
  type NetlinkSocket,
  type RtNetlinkSocket,
  createRtNetlink,
  getString,
  getU32,
  getU8,
  parseAttributes,
  parseMessages,
  putU8,
  rt,
} from 'netlink';
import { CLIENT_MARK, type DumpTable, type KernelAddress, type KernelEvent, type KernelLink, type KernelNeighbour, type KernelRoute, type KernelView } from './kernel-view.js';
import { NetdError } from './netd-error.js';
import { type Operation, SYSCTL_ABSENT } from './plan.js';
import { type ReceiveBuffer, RtnlEventSocket, loadRtnlEventsAddon, quietOverruns } from './rtnl-events.js';

const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const MAIN_TABLE = 254;
const NLM_F_REPLACE = 0x100;
const NLM_F_CREATE = 0x400;
const REQUEST_TIMEOUT_MS = 5_000;
/**
 * How many dumps of a table are taken in a row while the kernel marks each inconsistent
 * (NLM_F_DUMP_INTR), or ends each with an error, before the last is used as it is. Linux 6.18
 * marks its links' and IPv4 addresses' dumps so (not its IPv4 routes' or neighbours'); a dump runs
 * in parts, one for each read of the socket, and one that began before a change may miss an entry
 * moved by it. One that fails puts a negative errno in its NLMSG_DONE, and gives no more entries;
 * one the kernel could not start it refuses with an NLMSG_ERROR instead, and gives none.
 */
const DUMP_TRIES = 3;
/**
 * What the notification socket asks for (the kernel doubles it). A first reconcile's burst is
 * about 5.4 KiB of the buffer per provider link (a link's NEWLINK alone takes 2.3 KiB): 32 MiB
 * hold some 6000 links' worth; more is an overflow, which costs a full re-read, not a change.
 */
const DEFAULT_EVENT_BUFFER_BYTES = 16 * 1024 * 1024;
/** What the request socket asks for (the kernel doubles it, after capping it at net.core.rmem_max). */
const REQUEST_BUFFER_BYTES = 4 * 1024 * 1024;
/**
 * What one request in flight may take of the request socket's receive buffer: its ack (the
 * request echoed back) is charged about 800 bytes (Linux 6.18, measured); twice that, for
 * margin. An ack that finds the buffer full is dropped (said by no error: NETLINK_NO_ENOBUFS,
 * on which error the `netlink` package would abort the process), so no more requests are in
 * flight than the buffer holds acks for; one dropped all the same is found (see #unanswered).
 */
const ACK_BUDGET_BYTES = 2048;
/** The same for a request answered with one link's RTM_NEWLINK: charged 3136 bytes for a veth (Linux 6.18, measured). */
const LINK_REPLY_BUDGET_BYTES = 6144;
/** Troubles of the request socket of a kind less than this apart are one run of them: one warning. */
const TROUBLE_QUIET_MS = 60_000;

const ipBytes = (text: string): Buffer => Buffer.from(text.split('.').map(Number));

/** Exactly 4 bytes, dotted. */
function ipv4Text(bytes: Buffer): string {
  if (bytes.length !== 4) throw new Error(`Unexpected length (got ${bytes.length}, expected 4)`);
  return bytes.join('.');
}

/** Exactly 16 bytes, compressed as RFC 5952 has it (`fe80::1`): the WHATWG URL parser's serialisation (an IPv4-mapped one in hex). */
function ipv6Text(bytes: Buffer): string {
  if (bytes.length !== 16) throw new Error(`Unexpected length (got ${bytes.length}, expected 16)`);
  const groups = Array.from({ length: 8 }, (_, at) => bytes.readUInt16BE(2 * at).toString(16));
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

const macText = (bytes: Buffer | undefined): string =>
  bytes === undefined ? '' : [...bytes].map((octet) => octet.toString(16).padStart(2, '0')).join(':');
const macBytes = (text: string): Buffer => Buffer.from(text.split(':').map((pair) => parseInt(pair, 16)));
const enumIs = (value: unknown, name: string, number: number): boolean => value === name || value === number;

/** An attribute the agent reads: its type after a message's fixed header, and the kernel's name for it. */
interface AttributeType {
  readonly type: number;
  readonly name: string;
}

const IFLA_ADDRESS: AttributeType = { type: 1, name: 'IFLA_ADDRESS' };
const IFLA_IFNAME: AttributeType = { type: 3, name: 'IFLA_IFNAME' };
const IFLA_LINK: AttributeType = { type: 5, name: 'IFLA_LINK' };
const IFLA_GROUP: AttributeType = { type: 27, name: 'IFLA_GROUP' };
const IFA_ADDRESS: AttributeType = { type: 1, name: 'IFA_ADDRESS' };
const IFA_LOCAL: AttributeType = { type: 2, name: 'IFA_LOCAL' };
/** An address's protocol (u8, Linux 6.3 on): the `netlink` package (0.3) neither parses nor formats it, so requests carry it from here too. */
const IFA_PROTO: AttributeType = { type: 11, name: 'IFA_PROTO' };
const RTA_DST: AttributeType = { type: 1, name: 'RTA_DST' };
const RTA_OIF: AttributeType = { type: 4, name: 'RTA_OIF' };
const RTA_GATEWAY: AttributeType = { type: 5, name: 'RTA_GATEWAY' };
const RTA_PRIORITY: AttributeType = { type: 6, name: 'RTA_PRIORITY' };
const RTA_TABLE: AttributeType = { type: 15, name: 'RTA_TABLE' };
/** A next hop of another family (struct rtvia: a u16 family, then its address): an IPv4 route's IPv6 gateway (RFC 5549). */
const RTA_VIA: AttributeType = { type: 18, name: 'RTA_VIA' };
const NDA_DST: AttributeType = { type: 1, name: 'NDA_DST' };
const NDA_LLADDR: AttributeType = { type: 2, name: 'NDA_LLADDR' };

function undecodable(message: string): NetdError {
  return new NetdError('undecodable', message);
}

/**
 * A message's fixed header (ifinfomsg, ifaddrmsg, rtmsg, ndmsg), parsed by the `netlink` package,
 * and the attributes after it: only the few the agent reads are ever looked at. The package's own
 * message parsers decode every attribute, and throw on any whose length they do not expect (an
 * IPv4 route's RTA_VIA naming an IPv6 next hop, RFC 5549, which they take for 3 bytes, say): one
 * the agent has no use for would lose it the whole message.
 */
function splitMessage<T>(payload: Buffer, what: string, headerLength: number, parseHeader: (bytes: Buffer) => T): { readonly header: T; readonly attributes: () => Attributes } {
  if (payload.length < headerLength) throw undecodable(`a ${what} message of ${payload.length} bytes, shorter than its fixed header (${headerLength})`);
  return { header: parseHeader(payload.subarray(0, headerLength)), attributes: () => new Attributes(payload.subarray(headerLength)) };
}

/**
 * The attributes of a message, split by the `netlink` package (which throws on a stream it cannot
 * split: one whose length runs past the message). Of each type the last counts, as the kernel's own
 * nla_parse has it. A type is read only when asked for, and validated then: one the agent does not
 * read can never make the message undecodable, whatever its length or content.
 */
class Attributes {
  readonly #byType = new Map<number, NetlinkAttribute>();

  constructor(stream: Buffer) {
    parseAttributes(stream, (attribute) => this.#byType.set(attribute.type, attribute));
  }

  /** Its bytes as they are (any length); undefined where absent. */
  bytes(type: AttributeType): Buffer | undefined {
    const attribute = this.#byType.get(type.type);
    if (attribute === undefined) return undefined;
    // Neither flag is the kernel's on any attribute read here: its bytes would mean something else.
    if (attribute.nested === true || attribute.no === true) throw undecodable(`${type.name} is flagged ${attribute.nested === true ? 'nested' : 'in network byte order'}`);
    return attribute.data;
  }

  /** A u8 (the package's reader: exactly 1 byte). */
  u8(type: AttributeType): number | undefined {
    return this.#read(type, getU8);
  }

  /** A u32 in host order (the package's reader: exactly 4 bytes). */
  u32(type: AttributeType): number | undefined {
    return this.#read(type, getU32);
  }

  /** A NUL-terminated string (the package's reader). */
  string(type: AttributeType): string | undefined {
    return this.#read(type, (data) => getString(data));
  }

  /** An IPv4 address (exactly 4 bytes), dotted. */
  ipv4(type: AttributeType): string | undefined {
    return this.#read(type, ipv4Text);
  }

  /**
   * A struct rtvia: its family (u16, host order), then an address of that family: an IPv6 one
   * (16 bytes) as RFC 5952 text, an IPv4 one (4 bytes) dotted; any other family, or length, is
   * malformed (the kernel takes no other next hop for an IPv4 route).
   */
  via(type: AttributeType): string | undefined {
    return this.#read(type, (data) => {
      if (data.length < 2) throw new Error(`Unexpected length (got ${data.length}, expected 6 or 18)`);
      const family = endianness() === 'LE' ? data.readUInt16LE(0) : data.readUInt16BE(0);
      const address = data.subarray(2);
      if (family === AF_INET6) return ipv6Text(address);
      if (family === AF_INET) return ipv4Text(address);
      throw new Error(`Unexpected family ${family} (expected ${AF_INET6} or ${AF_INET})`);
    });
  }

  #read<T>(type: AttributeType, get: (data: Buffer) => T): T | undefined {
    const data = this.bytes(type);
    if (data === undefined) return undefined;
    try {
      return get(data);
    } catch (error) {
      throw undecodable(`${type.name}: ${briefly(error)}`);
    }
  }
}

/**
 * A link's RTM_NEWLINK or RTM_DELLINK payload; null for one without a name, and for a bridge's
 * message about one of its ports or itself (ifi_family AF_BRIDGE, sent to the same group): it has
 * no IFLA_GROUP, and its RTM_DELLINK says a port left the bridge, not that the link is gone.
 * Throws a NetdError ('undecodable').
 */
export function decodeLink(payload: Buffer): KernelLink | null {
  const { header, attributes } = splitMessage(payload, 'link', rt.__LENGTH_Link, rt.parseLink);
  if (header.family !== AF_UNSPEC) return null;
  const attrs = attributes();
  const name = attrs.string(IFLA_IFNAME);
  const { index } = header;
  if (index === undefined || name === undefined) return null;
  const lower = attrs.u32(IFLA_LINK);
  return {
    ifindex: index,
    name,
    mac: macText(attrs.bytes(IFLA_ADDRESS)),
    up: header.flags?.up === true,
    loopback: header.flags?.loopback === true || enumIs(header.type, 'LOOPBACK', 772),
    // Every link message of the kernel's own (AF_UNSPEC) carries IFLA_GROUP (since Linux 2.6.38).
    group: attrs.u32(IFLA_GROUP) ?? 0,
    // IFLA_LINK, where it names a device other than the link itself.
    ...(lower !== undefined && lower !== index && { lowerIfindex: lower }),
  };
}

/** An IPv4 address's RTM_NEWADDR or RTM_DELADDR payload; null for another family's. Throws a NetdError ('undecodable'). */
export function decodeAddress(payload: Buffer): KernelAddress | null {
  const { header, attributes } = splitMessage(payload, 'address', rt.__LENGTH_Address, rt.parseAddress);
  const { family, index, prefixlen } = header;
  if (family !== AF_INET || index === undefined || prefixlen === undefined) return null;
  const attrs = attributes();
  const ip = attrs.ipv4(IFA_LOCAL) ?? attrs.ipv4(IFA_ADDRESS);
  if (ip === undefined) return null;
  // None given, or a kernel before 6.3: 0.
  return { ifindex: index, ip, prefixLength: prefixlen, proto: attrs.u8(IFA_PROTO) ?? 0 };
}

/** rtm_protocol as a number: the `netlink` package gives the name of one it knows. */
function protocolNumber(protocol: rt.Route['protocol']): number {
  if (protocol === undefined) return 0;
  return typeof protocol === 'number' ? protocol : rt.RouteProtocol[protocol];
}

/**
 * A route's RTM_NEWROUTE or RTM_DELROUTE payload: main-table IPv4 unicast routes only, the others
 * are none of the agent's business (null). Throws a NetdError ('undecodable'). Its gateway is
 * RTA_GATEWAY's, or RTA_VIA's (an IPv6 next hop, RFC 5549: without it, such a route on a link
 * would read as the link route the agent gives a client). A route of several next hops carries
 * them in RTA_MULTIPATH alone, with no RTA_OIF: read as one of no device and no gateway, never a
 * route of the agent's (each of those has a device), so one in place of its own is replaced all
 * the same; which next hops it has is not read.
 */
export function decodeRoute(payload: Buffer): KernelRoute | null {
  const { header, attributes } = splitMessage(payload, 'route', rt.__LENGTH_Route, rt.parseRoute);
  if (header.family !== AF_INET || !enumIs(header.type, 'UNICAST', 1)) return null;
  const attrs = attributes();
  // rtm_table holds a table id below 256 itself; RTA_TABLE holds any.
  if ((attrs.u32(RTA_TABLE) ?? header.table) !== MAIN_TABLE) return null;
  return {
    dst: attrs.ipv4(RTA_DST) ?? '0.0.0.0',
    dstLength: header.dstLen ?? 0,
    oif: attrs.u32(RTA_OIF) ?? null,
    gateway: attrs.ipv4(RTA_GATEWAY) ?? attrs.via(RTA_VIA) ?? null,
    priority: attrs.u32(RTA_PRIORITY) ?? 0,
    protocol: protocolNumber(header.protocol),
  };
}

/** An IPv4 neighbour's RTM_NEWNEIGH or RTM_DELNEIGH payload; null for another family's. Throws a NetdError ('undecodable'). */
export function decodeNeighbour(payload: Buffer): KernelNeighbour | null {
  const { header, attributes } = splitMessage(payload, 'neighbour', rt.__LENGTH_Neighbor, rt.parseNeighbor);
  const { family, ifindex } = header;
  if (family !== AF_INET || ifindex === undefined) return null;
  const attrs = attributes();
  const ip = attrs.ipv4(NDA_DST);
  if (ip === undefined) return null;
  const lladdr = attrs.bytes(NDA_LLADDR);
  return { ifindex, ip, mac: lladdr === undefined ? null : macText(lladdr), permanent: header.state?.permanent === true };
}

/** An address request's body (ifaddrmsg, IFA_LOCAL, IFA_ADDRESS), with IFA_PROTO where the address has one. */
function addressMessage(address: KernelAddress, header: Partial<rt.Address> = {}): Uint8Array[] {
  const ip = ipBytes(address.ip);
  const body = new AttrStream();
  rt.formatAddressMessage({ kind: 'address', data: { family: AF_INET, prefixlen: address.prefixLength, index: address.ifindex, ...header }, attrs: { local: ip, address: ip } }, body);
  if (address.proto !== 0) body.push(IFA_PROTO.type, putU8(address.proto));
  return body.bufs;
}

/**
 * One notification (or dump entry) as a view update, or null for anything the view does not track.
 * Throws a NetdError ('undecodable') for a message the agent cannot read: one cut short, whose
 * attributes cannot be split, or one of whose attributes it reads is malformed.
 */
export function decodeNotification(type: number, payload: Buffer): KernelEvent | null {
  const T = rt.MessageType;
  switch (type) {
    case T.NEWLINK:
    case T.DELLINK: {
      const link = decodeLink(payload);
      return link === null ? null : { kind: 'link', op: type === T.NEWLINK ? 'new' : 'del', link };
    }
    case T.NEWADDR:
    case T.DELADDR: {
      const address = decodeAddress(payload);
      return address === null ? null : { kind: 'address', op: type === T.NEWADDR ? 'new' : 'del', address };
    }
    case T.NEWROUTE:
    case T.DELROUTE: {
      const route = decodeRoute(payload);
      return route === null ? null : { kind: 'route', op: type === T.NEWROUTE ? 'new' : 'del', route };
    }
    case T.NEWNEIGH:
    case T.DELNEIGH: {
      const neighbour = decodeNeighbour(payload);
      return neighbour === null ? null : { kind: 'neighbour', op: type === T.NEWNEIGH ? 'new' : 'del', neighbour };
    }
    default:
      return null;
  }
}

/**
 * Why what notifications said is lost: the socket's buffer overflowed, or one came that could
 * not be decoded (its type's name, and why in brief; a datagram that could not be
 * split into messages: 'unsplittable datagram').
 */
export type NotificationLoss =
  | { readonly kind: 'overflow' }
  | { readonly kind: 'undecodable'; readonly messageType: string; readonly error: string };

export interface KernelListener {
  events(events: readonly KernelEvent[]): void;
  /**
   * What notifications said was lost: the view must be rebuilt. Every event told after this was
   * sent after what was lost (after an overflow, what the socket still held is discarded).
   */
  lost(loss: NotificationLoss): void;
  /** The notification socket failed for good. */
  failed(error: Error): void;
}

/** An entry of a dump that could not be decoded (see decodeNotification): skipped, the rest of the dump read. */
export interface SkippedEntry {
  /** Its message type's name (NEWLINK, NEWADDR, NEWROUTE, NEWNEIGH). */
  readonly messageType: string;
  /** The link it concerns, as its fixed header says; null where that has none (a route's). */
  readonly ifindex: number | null;
  /** Why, in brief (the attribute's name, for one the agent reads that is malformed). */
  readonly error: string;
  /**
   * A route that its fixed header (rtmsg) says is an IPv4 unicast default route of the main
   * table: one the planner must know of, as it leaves every default route but its own alone.
   */
  readonly defaultRoute: boolean;
}

/** Entries of dumps, as events, and those that could not be decoded. */
export interface DecodedEntries {
  readonly events: KernelEvent[];
  readonly skipped: SkippedEntry[];
}

export type { DumpTable };

/** The kernel's links, addresses, routes and neighbours, as events, and the entries that could not be decoded. */
export interface KernelDump extends DecodedEntries {
  /**
   * The tables whose every dump the kernel marked inconsistent (NLM_F_DUMP_INTR: the table changed
   * while it was dumped), DUMP_TRIES of them in a row: the last is used, and may lack an entry that
   * was there throughout (no notification tells of one that did not change).
   */
  readonly inconsistent: readonly DumpTable[];
  /**
   * The tables whose every dump the kernel ended with an error (a negative errno in NLMSG_DONE),
   * DUMP_TRIES of them in a row: the last is used, and lacks whatever came after the error. (Or
   * refused, or the socket failed to receive while it ran: see FailedDump.)
   */
  readonly failed: readonly FailedDump[];
}

/** A table whose dumps the kernel ended with an error: its errno's name, as the last said it. */
export interface FailedDump {
  readonly table: DumpTable;
  readonly error: string;
  /**
   * The last was refused: the kernel answered the request with an NLMSG_ERROR, not entries ending
   * in NLMSG_DONE (a dump of the socket's still running: EBUSY), so none of the table was read.
   */
  readonly refused?: true;
  /**
   * The last ended whole as the kernel said it, but the socket failed to receive while it ran
   * (`error`: its errno, ENOBUFS or ENOMEM where the kernel could not make a part of it): taken as
   * cut short all the same, what the failure cost it unknown.
   */
  readonly receiveFailed?: true;
}

/** What the agent needs from the kernel; a fake implements it in unit tests. */
export interface NetdKernel {
  subscribe(listener: KernelListener): void;
  dump(): Promise<KernelDump>;
  apply(operation: Operation, view: KernelView): Promise<void>;
  readSysctl(path: string): string;
  close(): void;
}

function errnoOf(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') return error.code;
  return error instanceof Error ? error.message : String(error);
}

/** The errno name in a refusal from the netlink package ("Request rejected: ESRCH"). */
function rejectionCode(error: unknown): string | undefined {
  return /^Request rejected: (E[A-Z0-9]+)$/.exec(error instanceof Error ? error.message : '')?.[1];
}

// A deletion that finds nothing has reached what the plan wants: the kernel removes a link's
// routes with its last address, and everything of a link that has gone.
const ALREADY_GONE = new Set(['ESRCH', 'ENOENT', 'EADDRNOTAVAIL', 'ENODEV']);

async function deleted(request: Promise<unknown>): Promise<void> {
  try {
    await request;
  } catch (error) {
    if (!ALREADY_GONE.has(rejectionCode(error) ?? '')) throw error;
  }
}

/**
 * A link-up's request for the link (see #change), whose answer is not needed: done where the
 * kernel could not deliver its reply (EAGAIN: rtnl_getlink's unicast found the request socket's
 * buffer full; it handled the link's queued events before it made the reply), or where the link
 * is gone.
 */
async function linkAskedFor(request: Promise<unknown>): Promise<void> {
  try {
    await deleted(request);
  } catch (error) {
    if (rejectionCode(error) !== 'EAGAIN') throw error;
  }
}

/** How much of a decoding error a loss carries: its first line, this long at most. */
const ERROR_CHARS = 200;

function briefly(error: unknown): string {
  const text = (error instanceof Error ? error.message : String(error)).split('\n', 1)[0] ?? '';
  return text.length > ERROR_CHARS ? `${text.slice(0, ERROR_CHARS)}...` : text;
}

/** The loss of a datagram of notifications that could not be split into messages (the parser's error). */
export function unsplittableLoss(error: string): NotificationLoss {
  return { kind: 'undecodable', messageType: 'unsplittable datagram', error: briefly(error) };
}

const IFINDEX_AT_4 = new Set<number>([rt.MessageType.NEWLINK, rt.MessageType.DELLINK, rt.MessageType.NEWADDR, rt.MessageType.DELADDR, rt.MessageType.NEWNEIGH, rt.MessageType.DELNEIGH]);

/**
 * The link a message concerns, read from its fixed header alone (which a decoding error says
 * nothing of): bytes 4-7 in host order of a link's, address's and neighbour's (ifinfomsg,
 * ifaddrmsg, ndmsg). A route's (rtmsg) names none; null then, and for a header cut short.
 */
function headerIfindex(type: number, payload: Buffer): number | null {
  if (!IFINDEX_AT_4.has(type) || payload.length < 8) return null;
  return endianness() === 'LE' ? payload.readUInt32LE(4) : payload.readUInt32BE(4);
}

/**
 * Whether a route message is an IPv4 unicast default route of the main table, by its fixed header
 * alone (rtm_table holds a table id below 256 itself): what can be said of one whose attributes
 * cannot be read.
 */
function headerSaysDefaultRoute(type: number, payload: Buffer): boolean {
  if (type !== rt.MessageType.NEWROUTE || payload.length < rt.__LENGTH_Route) return false;
  const header = rt.parseRoute(payload.subarray(0, rt.__LENGTH_Route));
  return header.family === AF_INET && header.dstLen === 0 && header.table === MAIN_TABLE && enumIs(header.type, 'UNICAST', 1);
}

/**
 * The entries of a dump as events. One that cannot be decoded (see decodeNotification) is skipped
 * and named, not the whole dump failed: failing the dump for one link would stop the agent for all.
 */
export function decodeDumpEntries(messages: readonly NetlinkMessage[]): DecodedEntries {
  const events: KernelEvent[] = [];
  const skipped: SkippedEntry[] = [];
  for (const message of messages) {
    try {
      const event = decodeNotification(message.type, dumpHook?.(message.type, message.data) ?? message.data);
      if (event !== null) events.push(event);
    } catch (error) {
      skipped.push({
        messageType: rt.MessageType[message.type] ?? String(message.type),
        ifindex: headerIfindex(message.type, message.data),
        error: briefly(error),
        defaultRoute: headerSaysDefaultRoute(message.type, message.data),
      });
    }
  }
  return { events, skipped };
}

/**
 * Tests only: handed each notification's type and payload before it is decoded; what it returns
 * is decoded instead. A test truncates one, or gives it a malformed attribute the agent reads, so
 * that its real decoding fails: nothing outside makes the kernel send such a message.
 */
export type NotificationPayloadHook = (type: number, payload: Buffer) => Buffer;

let payloadHook: NotificationPayloadHook | undefined;

/** Tests only: see NotificationPayloadHook (undefined: none). */
export function alterNotificationsForTests(hook: NotificationPayloadHook | undefined): void {
  payloadHook = hook;
}

let dumpHook: NotificationPayloadHook | undefined;

/** Tests only: as alterNotificationsForTests, for each entry of a dump (undefined: none). */
export function alterDumpsForTests(hook: NotificationPayloadHook | undefined): void {
  dumpHook = hook;
}

/**
 * The `netlink` package's record of the requests awaiting an answer (NetlinkSocket's protected
 * `requests` and `dropRef`, netlink 0.3). It drops a request's entry only when an answer comes:
 * one whose answer never comes would stay for good after our timeout gave up on it.
 */
interface PendingRequests {
  readonly requests: ReadonlyMap<number, unknown>;
  dropRef(seq: number): void;
}

function pendingRequestsOf(socket: NetlinkSocket): PendingRequests | null {
  const candidate = socket as unknown as Partial<PendingRequests>;
  return candidate.requests instanceof Map && typeof candidate.dropRef === 'function' ? (candidate as PendingRequests) : null;
}

/**
 * How the kernel ended a dump: whether it marked a part NLM_F_DUMP_INTR, and the error its
 * NLMSG_DONE carried (an errno's name), if any; or the error it refused the request with.
 */
interface DumpEnd {
  interrupted: boolean;
  error: string | null;
  refused?: true;
  /** The socket failed to receive while it ran (the errno's name): see RtnetlinkKernel's #receiveFailed. */
  receiveError?: string;
}

/**
 * Errors that say a dump request itself is wrong, whenever it is sent: the kernel has no dump of
 * the kind (EOPNOTSUPP, which Node names ENOTSUP; EAFNOSUPPORT, EPROTONOSUPPORT: no IPv4), finds
 * the request malformed (EINVAL), or denies it (EPERM, EACCES: a security module). Any other
 * refusal (EBUSY, ENOBUFS, ENOMEM) may pass: the dump is taken again, as one that failed.
 */
const REFUSED_FOR_GOOD = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EAFNOSUPPORT', 'EPROTONOSUPPORT', 'EINVAL', 'EPERM', 'EACCES']);

/** What to check, for a refusal for good. */
function refusalHint(code: string): string {
  if (code === 'EPERM' || code === 'EACCES') return 'is a security module (SELinux, AppArmor, a seccomp filter) denying this process rtnetlink reads?';
  if (code === 'EINVAL') return 'does this kernel check dump requests in a way Linux 6.18 does not?';
  return 'is this kernel built with IPv4 (CONFIG_INET)?';
}

/**
 * The errno's name in the netlink package's rejection of a request the kernel answered with an
 * NLMSG_ERROR ("Request rejected: EBUSY"; "errno N" for one Node has no name for, which the package
 * says as "Unknown system error -N"); undefined for any other failure (a timeout, a send that
 * failed, an answer that could not be parsed).
 */
function refusalCode(error: unknown): string | undefined {
  const match = /^Request rejected: (?:(E[A-Z0-9]+)|(?:Unknown system error )?-(\d+))$/.exec(error instanceof Error ? error.message : '');
  if (match === null) return undefined;
  return match[1] ?? `errno ${match[2] ?? ''}`;
}

/**
 * The error an NLMSG_DONE carries: its payload begins with an int (host order), a negative errno
 * where the dump failed (Linux puts there what the table's dump returned), else 0. Null for none.
 */
function doneError(payload: Buffer): string | null {
  if (payload.length < 4) return null;
  const errno = endianness() === 'LE' ? payload.readInt32LE(0) : payload.readInt32BE(0);
  if (errno >= 0) return null;
  try {
    return getSystemErrorName(errno);
  } catch {
    return `errno ${-errno}`;
  }
}

/** Where a request's message gets its sequence number: each call gives the next one. */
type Sequenced = () => { readonly seq: number };

/** What every request gets once the kernel was closed under it (a stop). */
function closedError(): NetdError {
  return new NetdError('closed', 'the rtnetlink socket was closed (the agent is stopping)');
}

/** Where the request socket says what went wrong with it (a pino logger is one). */
export interface RtnetlinkLog {
  warn(details: object, message: string): void;
  debug(details: object, message: string): void;
}

export interface RtnetlinkOptions {
  /** The notification socket's receive buffer to ask for (default DEFAULT_EVENT_BUFFER_BYTES). */
  readonly eventBufferBytes?: number;
  /** Where answers the kernel dropped, and the request socket's receive errors, are said; none: not said. */
  readonly log?: RtnetlinkLog;
}

/** A request sent whose answer has not been read: awaited, or given up on (see #unanswered). */
interface Unanswered {
  /** A dump's: its answer's parts after the first may come after the answers to later requests. */
  readonly dump: boolean;
  /** Its answer will never come: reject it if still awaited, and give its room back. */
  readonly lost: () => void;
}

/** What a request whose answer the kernel dropped fails with. */
function droppedError(): NetdError {
  return new NetdError(
    'netlink',
    "no answer will come: the kernel dropped it, the rtnetlink socket's receive buffer full (it answered a later request); the change may have been made",
  );
}

/**
 * Two sockets: one only listens (its notifications never mix with replies), one only asks. The
 * listening one is ours (rtnl-events.ts): it survives an overflow of its buffer and says so.
 */
export class RtnetlinkKernel implements NetdKernel {
  readonly #requests: RtNetlinkSocket;
  readonly #eventBufferBytes: number;
  #events: RtnlEventSocket | undefined;
  /** The request socket's buffer promised to the answers of requests in flight, and all there is. */
  #promisedBytes = 0;
  readonly #bufferBytes: number;
  /** Requests waiting for their answers' room, oldest first (the kernel sees them in order). */
  readonly #waiting: { readonly bytes: number; readonly go: () => void; readonly stop: (error: NetdError) => void }[] = [];
  /** How to settle each request in flight at once, when the kernel is closed under it. */
  readonly #inFlight = new Set<(error: NetdError) => void>();
  /**
   * Requests sent whose answer has not been read (awaited, or timed out), by the sequence number
   * it will carry, in the order sent. The kernel answers a socket's requests in that order, each
   * while it is sent (the parts of a dump after its first aside): an answer read to one means that
   * every one sent before it whose answer is still unread, a dump aside, will never get one. The
   * kernel dropped it, the buffer full, and says so by no error (see ACK_BUDGET_BYTES): it fails
   * at once, and its room is given back.
   */
  readonly #unanswered = new Map<number, Unanswered>();
  /** When each kind of trouble of the request socket was last met (Date.now()): see #sayTrouble. */
  readonly #troubleMet = new Map<'dropped' | 'receive', number>();
  readonly #log: RtnetlinkLog | undefined;
  /**
   * Requests that timed out, by the sequence number their answer will carry: how to give back
   * their room once it is read. What the netlink package forgot (see #forget), kept here as one
   * closure each; bounded, as each holds its room: a kernel that never answers fills the buffer's
   * budget, and later requests then wait for room.
   */
  readonly #late = new Map<number, () => void>();
  /** The dumps in flight, by the sequence number of their answer: how the kernel ended it (see DumpEnd). */
  readonly #dumps = new Map<number, DumpEnd>();
  readonly #pending: PendingRequests;
  #closed = false;

  constructor(options: RtnetlinkOptions = {}) {
    this.#eventBufferBytes = options.eventBufferBytes ?? DEFAULT_EVENT_BUFFER_BYTES;
    this.#log = options.log;
    // Before anything is made: a build without the notification addon cannot run an agent.
    loadRtnlEventsAddon();
    try {
      this.#requests = createRtNetlink({ recvBufferSize: REQUEST_BUFFER_BYTES, sendBufferSize: 0 });
    } catch (error) {
      throw new NetdError('netlink', `cannot open an rtnetlink socket (${errnoOf(error)}): is this Linux?`);
    }
    const pending = pendingRequestsOf(this.#requests.socket);
    if (pending === null) {
      this.#requests.socket.close();
      throw new NetdError('netlink', 'the netlink package keeps no record of pending requests where 0.3 does (NetlinkSocket.requests, dropRef): is it another version? (package-lock.json pins it)');
    }
    this.#pending = pending;
    try {
      quietOverruns(this.#requests.socket.address().port);
    } catch (error) {
      this.#requests.socket.close();
      throw error;
    }
    // After the package's own listener: an answer it finds no request for is one that timed out.
    this.#requests.socket.socket.on('message', (datagram: Buffer) => this.#datagramRead(datagram));
    // The package re-emits its raw socket's: unheard, one would end the process.
    this.#requests.socket.on('error', (error: unknown) => this.#receiveFailed(error));
    // Room for one request at least, whatever the buffer.
    this.#bufferBytes = Math.max(LINK_REPLY_BUDGET_BYTES, this.#requests.socket.getRecvBufferSize());
  }

  /** The notification socket's receive buffer (null before subscribe). */
  notificationBuffer(): ReceiveBuffer | null {
    return this.#events?.receiveBuffer() ?? null;
  }

  subscribe(listener: KernelListener): void {
    const socket = RtnlEventSocket.open(['LINK', 'IPV4_IFADDR', 'IPV4_ROUTE', 'NEIGH'], this.#eventBufferBytes);
    this.#events = socket;
    socket.watch({
      messages: (messages) => {
        const events: KernelEvent[] = [];
        let loss: NotificationLoss | undefined;
        for (const message of messages) {
          try {
            const event = decodeNotification(message.type, payloadHook?.(message.type, message.data) ?? message.data);
            if (event !== null) events.push(event);
          } catch (error) {
            // Something that cannot be decoded: what it said (a link's new flags, say)
            // is lost, as in an overflow, and the view must be read again. The rest of this batch
            // was sent before that re-read is asked for, so the re-read has it: none of it is told.
            loss = { kind: 'undecodable', messageType: rt.MessageType[message.type] ?? String(message.type), error: briefly(error) };
            break;
          }
        }
        if (events.length > 0) listener.events(events);
        if (loss !== undefined) listener.lost(loss);
      },
      overflow: () => listener.lost({ kind: 'overflow' }),
      unsplittable: (error) => listener.lost(unsplittableLoss(error)),
      failed: (code) => listener.failed(new NetdError('netlink', `rtnetlink notifications failed: ${code}`)),
    });
  }

  /**
   * `send` once the request socket's buffer has `bytes` for its answers besides those in flight,
   * in the order asked; rejected with a 'closed' NetdError as soon as the kernel is closed (close).
   */
  async #request<T>(send: (sequenced: Sequenced) => Promise<T>, bytes = ACK_BUDGET_BYTES, dump = false): Promise<T> {
    if (this.#closed) throw closedError();
    if (this.#waiting.length === 0 && this.#promisedBytes + bytes <= this.#bufferBytes) this.#promisedBytes += bytes;
    else await this.#roomFor(bytes);
    // Let go in the same turn as a close (a microtask apart): nothing more is sent.
    if (this.#closed) throw closedError();
    // The sequence number of the message whose answer is awaited (of two in a row, the later).
    let seq: number | undefined;
    let abort: ((error: NetdError) => void) | undefined;
    const unanswered: Unanswered = {
      dump,
      lost: () => {
        abort?.(droppedError());
        if (seq !== undefined && this.#pending.requests.has(seq)) this.#pending.dropRef(seq);
        answerRead();
      },
    };
    const sequenced: Sequenced = () => {
      // (The first of two in a row was answered: the second is sent after that.)
      if (seq !== undefined) this.#unanswered.delete(seq);
      seq = this.#requests.socket.generateSeq();
      this.#unanswered.set(seq, unanswered);
      return { seq };
    };
    let read = false;
    const answerRead = (): void => {
      if (read) return;
      read = true;
      if (seq !== undefined) {
        this.#late.delete(seq);
        this.#unanswered.delete(seq);
      }
      this.#answerRead(bytes);
    };
    const answer = send(sequenced);
    // The room is the answer's until it is read, not until we stop waiting for it: one that
    // comes after the timeout (a kernel or an event loop stalled) still lands in the buffer.
    // After a close nothing more is read (nor let go).
    answer.then(answerRead, answerRead);
    const answered = this.#answered(answer, () => {
      if (!read && seq !== undefined) this.#forget(seq, answerRead);
    });
    abort = answered.abort;
    return answered.settled;
  }

  /**
   * Wait for the buffer to have `bytes` for an answer: those that finish make room for the oldest
   * waiting (see #release). Room comes only as answers are read, and a kernel that answers nothing,
   * not even late, would hold what waits for good: after REQUEST_TIMEOUT_MS of waiting, rejected
   * unsent. A bound of its own, before the answer's: a request's whole life is at most twice that.
   */
  #roomFor(bytes: number): Promise<void> {
    return new Promise<void>((go, stop) => {
      const waiting = {
        bytes,
        go: (): void => {
          clearTimeout(timer);
          go();
        },
        stop: (error: NetdError): void => {
          clearTimeout(timer);
          stop(error);
        },
      };
      const timer = setTimeout(() => {
        const at = this.#waiting.indexOf(waiting);
        if (at >= 0) this.#waiting.splice(at, 1);
        stop(
          new NetdError(
            'netlink',
            `request not sent: no room for its answer in the rtnetlink socket's receive buffer within ${REQUEST_TIMEOUT_MS / 1000} s ` +
              `(${this.#inFlight.size} requests in flight, ${this.#late.size} timed out and still unanswered): is the kernel stalled?`,
          ),
        );
        // It may have been the oldest, that those after it waited behind (a link's reply needs more room than an ack).
        this.#release();
      }, REQUEST_TIMEOUT_MS);
      this.#waiting.push(waiting);
    });
  }

  #answerRead(bytes: number): void {
    this.#promisedBytes -= bytes;
    this.#release();
  }

  /**
   * Have the netlink package forget request `seq`, which timed out, and give its room back when its
   * answer is read (#lateAnswersRead) instead. The package's promise of it then never settles: a
   * link-up's GETLINK, which its answer would let go, is never sent.
   */
  #forget(seq: number, answerRead: () => void): void {
    if (!this.#pending.requests.has(seq)) return;
    this.#pending.dropRef(seq);
    this.#late.set(seq, answerRead);
  }

  /**
   * The messages of a datagram the request socket read: the end of the answer of a request that
   * timed out gives its room back. The end as the package takes it: a message that is not part of a multipart
   * answer (an ack, a refusal, a single reply), or a multipart answer's DONE.
   */
  #lateAnswersRead(messages: readonly NetlinkMessage[]): void {
    for (const message of messages) {
      if ((message.flags & Flags.MULTI) !== 0 && message.type !== MessageType.DONE) continue;
      this.#late.get(message.seq)?.();
    }
  }

  /**
   * A datagram the request socket read, after the package read it (its answer's promise settles
   * only after this): see #lateAnswersRead, and mark a dump that the kernel says was interrupted
   * by a change, or ended with an error. Looked for here, not in the entries the package hands
   * over: the mark may be set on the answer's NLMSG_DONE alone (the part after the last change),
   * and the error is NLMSG_DONE's payload, which the package drops (it settles the dump as whole).
   */
  #datagramRead(datagram: Buffer): void {
    // Every request timed out, or dump in flight, is unanswered too.
    if (this.#unanswered.size === 0) return;
    let messages: NetlinkMessage[];
    try {
      messages = parseMessages(datagram);
    } catch {
      return; // the package drops it too (its 'invalid' event)
    }
    this.#droppedBefore(messages);
    if (this.#late.size > 0) this.#lateAnswersRead(messages);
    for (const message of messages) {
      const dump = this.#dumps.get(message.seq);
      if (dump === undefined) continue;
      if ((message.flags & Flags.DUMP_INTR) !== 0) dump.interrupted = true;
      if (message.type === MessageType.DONE) dump.error = doneError(message.data);
    }
  }

  /**
   * The requests whose answers the kernel dropped, as the answers in `messages` show (see
   * #unanswered): each fails at once, its room given back, and a warning says so.
   */
  #droppedBefore(messages: readonly NetlinkMessage[]): void {
    let dropped = 0;
    for (const message of messages) {
      if (!this.#unanswered.has(message.seq)) continue; // not a request of ours
      for (const [seq, request] of this.#unanswered) {
        if (seq === message.seq) break;
        if (request.dump) continue;
        request.lost(); // (out of #unanswered with it)
        dropped += 1;
      }
      // Its answer ends here: no later message of this datagram makes it one dropped.
      if ((message.flags & Flags.MULTI) === 0 || message.type === MessageType.DONE) this.#unanswered.delete(message.seq);
    }
    if (dropped === 0) return;
    this.#sayTrouble(
      'dropped',
      { requests: dropped },
      `the kernel dropped the answers to ${dropped} rtnetlink requests, the request socket's receive buffer full: each failed. ` +
        "Did an answer take more of the buffer than the agent allows for (2 KiB a change, 6 KiB a link it asks for), as a link's with many altnames may?",
    );
  }

  /**
   * The request socket failed to receive (the `netlink` package's 'error'). An overrun of its
   * buffer says nothing (see ACK_BUDGET_BYTES): what is left is the kernel's failing to make the
   * next part of a dump it is reading (ENOBUFS, ENOMEM), which it makes again later. A dump
   * running now is taken again all the same, not taken as whole: what the failure cost is unknown.
   */
  #receiveFailed(error: unknown): void {
    if (this.#closed) return;
    const code = errnoOf(error);
    for (const dump of this.#dumps.values()) dump.receiveError = code;
    this.#sayTrouble(
      'receive',
      { error: code, dumping: this.#dumps.size > 0 },
      `the rtnetlink request socket failed to receive (${code})${this.#dumps.size > 0 ? ': the dump it was reading is taken again' : ''}. ` +
        'Is memory short (ENOBUFS, ENOMEM: the kernel could not make the next part of a dump)?',
    );
  }

  /**
   * A warning for the first trouble of a kind; one less than TROUBLE_QUIET_MS after the last of
   * its kind is said at debug level: a run of them, one warning while it lasts.
   */
  #sayTrouble(kind: 'dropped' | 'receive', details: object, message: string): void {
    const now = Date.now();
    const last = this.#troubleMet.get(kind);
    this.#troubleMet.set(kind, now);
    if (last !== undefined && now - last < TROUBLE_QUIET_MS) this.#log?.debug(details, message);
    else this.#log?.warn(details, `${message} (said once while it lasts)`);
  }

  /**
   * `answer` (`settled`), or a rejection after REQUEST_TIMEOUT_MS (`timedOut` called then), at
   * close, or at `abort`. Our timer, not the netlink package's: its timers outlive a close (the
   * socket drops the answers), and a process whose start was cut short by a signal would wait
   * them out before it could exit.
   */
  #answered<T>(answer: Promise<T>, timedOut: () => void): { readonly settled: Promise<T>; readonly abort: (error: NetdError) => void } {
    let abort: (error: NetdError) => void = () => undefined;
    const settled = new Promise<T>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer);
        this.#inFlight.delete(abort);
      };
      abort = (error: NetdError): void => {
        settle();
        reject(error);
      };
      const timer = setTimeout(() => {
        abort(new NetdError('netlink', `request timed out: no answer from the kernel within ${REQUEST_TIMEOUT_MS / 1000} s`));
        timedOut();
      }, REQUEST_TIMEOUT_MS);
      this.#inFlight.add(abort);
      // An answer that comes after a timeout or a close is dropped (it may still come: the
      // handlers stay, so that a late rejection is never unhandled).
      answer.then(
        (value) => {
          settle();
          resolve(value);
        },
        (error: unknown) => {
          settle();
          reject(error);
        },
      );
    });
    return { settled, abort };
  }

  /** Let the oldest waiting requests go, as many in a row as now have room. */
  #release(): void {
    for (let next = this.#waiting[0]; next !== undefined && this.#promisedBytes + next.bytes <= this.#bufferBytes; next = this.#waiting[0]) {
      this.#waiting.shift();
      this.#promisedBytes += next.bytes;
      next.go();
    }
  }

  async dump(): Promise<KernelDump> {
    try {
      // One dump at a time: a socket's multipart replies must not interleave.
      const tables = [
        await this.#dumpTable('links', rt.MessageType.GETLINK, (out) => rt.formatLinkMessage({ kind: 'link', data: {}, attrs: {} }, out)),
        await this.#dumpTable('addresses', rt.MessageType.GETADDR, (out) => rt.formatAddressMessage({ kind: 'address', data: { family: AF_INET }, attrs: {} }, out)),
        await this.#dumpTable('routes', rt.MessageType.GETROUTE, (out) => rt.formatRouteMessage({ kind: 'route', data: { family: AF_INET }, attrs: {} }, out)),
        await this.#dumpTable('neighbours', rt.MessageType.GETNEIGH, (out) => rt.formatNeighborMessage({ kind: 'neighbor', data: { family: AF_INET }, attrs: {} }, out)),
      ];
      return {
        ...decodeDumpEntries(tables.flatMap(({ messages }) => messages)),
        inconsistent: tables.filter(({ end }) => end.interrupted).map(({ table }) => table),
        failed: tables.flatMap(({ table, end }): FailedDump[] => {
          if (end.error !== null) return [{ table, error: end.error, ...(end.refused && { refused: true as const }) }];
          return end.receiveError === undefined ? [] : [{ table, error: end.receiveError, receiveFailed: true }];
        }),
      };
    } catch (error) {
      if (error instanceof NetdError && (error.kind === 'closed' || error.kind === 'dump-refused')) throw error;
      throw new NetdError('netlink', `reading the kernel's links, addresses, routes and neighbours failed: ${errnoOf(error)}`);
    }
  }

  /**
   * One table's entries, asked for as the package's getLinks and the like ask, but taken unparsed:
   * those calls parse every entry and fail as a whole on one they cannot (see decodeDumpEntries).
   * Taken again while the kernel marks the dump interrupted by a change, or ends it with an error,
   * or refuses it (an NLMSG_ERROR, which the package rejects the request with), or the socket fails
   * to receive while it runs (see #receiveFailed), up to DUMP_TRIES dumps (`end`: how the last
   * ended): no notification would tell of an entry it missed. A refusal
   * that says the request itself is wrong (REFUSED_FOR_GOOD) is thrown at once, as 'dump-refused'.
   */
  async #dumpTable(
    table: DumpTable,
    type: rt.MessageType,
    format: (out: AttrStream) => void,
  ): Promise<{ readonly table: DumpTable; readonly messages: NetlinkMessage[]; readonly end: DumpEnd }> {
    const socket = this.#requests.socket;
    const body = new AttrStream();
    format(body);
    for (let tries = 1; ; tries++) {
      let seq: number | undefined;
      const dump: DumpEnd = { interrupted: false, error: null };
      try {
        let messages: NetlinkMessage[] = [];
        try {
          // No timeout of the netlink package's: #request has its own (see #answered).
          messages = await this.#request(async (sequenced) => {
            const numbered = sequenced();
            seq = numbered.seq;
            this.#dumps.set(seq, dump);
            return (await socket.request(type, body.bufs, { flags: FlagsGet.DUMP, ...numbered }))[0];
          }, ACK_BUDGET_BYTES, true);
        } catch (error) {
          const code = refusalCode(error);
          if (code === undefined) throw error;
          if (REFUSED_FOR_GOOD.has(code)) {
            throw new NetdError('dump-refused', `the kernel refused the agent's request to dump its ${table} (NLMSG_ERROR ${code}), as wrong in itself: ${refusalHint(code)}`);
          }
          dump.error = code;
          dump.refused = true;
        }
        if ((!dump.interrupted && dump.error === null && dump.receiveError === undefined) || tries === DUMP_TRIES) return { table, messages, end: dump };
      } finally {
        if (seq !== undefined) this.#dumps.delete(seq);
      }
    }
  }

  async apply(operation: Operation, view: KernelView): Promise<void> {
    if (this.#closed) throw closedError();
    // A route read from the kernel may have one (RTA_VIA); the planner never asks for one, and the request carries RTA_GATEWAY alone.
    if (operation.kind === 'route-set' && operation.route.gateway?.includes(':') === true) {
      throw new NetdError('apply', `route ${operation.route.dst}/${operation.route.dstLength} via ${operation.route.gateway}: the agent sets no route via an IPv6 next hop`);
    }
    if (operation.kind === 'link-up' && view.links.get(operation.ifindex)?.lowerIfindex !== undefined) {
      return this.#request((sequenced) => this.#change(operation, sequenced, { syncLinkwatch: true }), LINK_REPLY_BUDGET_BYTES);
    }
    if (operation.kind !== 'sysctl') return this.#request((sequenced) => this.#change(operation, sequenced));
    const { key } = operation;
    const link = key.ifindex === null ? null : view.links.get(key.ifindex);
    if (link === undefined) throw new NetdError('sysctl', `link ${String(key.ifindex)} is gone`);
    const path = `/proc/sys/${key.template.replace('{}', link?.name ?? '')}`;
    try {
      writeFileSync(path, `${operation.value}\n`);
    } catch (error) {
      throw new NetdError('sysctl', `cannot write ${path} (${errnoOf(error)}): is /proc/sys mounted writable?`);
    }
  }

  /** One rtnetlink request, answered (with a link-up's GETLINK, two in a row), each numbered by `sequenced`. */
  async #change(operation: Exclude<Operation, { kind: 'sysctl' }>, sequenced: Sequenced, { syncLinkwatch = false } = {}): Promise<void> {
    const creating = (): { flags: number; seq: number } => ({ flags: NLM_F_CREATE | NLM_F_REPLACE, ...sequenced() });
    const socket = this.#requests;
    switch (operation.kind) {
      case 'link-up':
      case 'link-down':
        // `change` names the flag to set; `flags` without it clears it. A group comes in the same
        // request: the kernel sets IFLA_GROUP before it changes the flags.
        await socket.setLink(
          { index: operation.ifindex, flags: operation.kind === 'link-up' ? { up: true } : {}, change: { up: true } },
          operation.kind === 'link-up' && operation.group !== undefined ? { group: operation.group } : undefined,
          sequenced(),
        );
        // Asking for the link makes the kernel handle now the link-state event still queued for
        // it (its creation's: a GETLINK syncs linkwatch, Linux 6.7 on), as `ip link set` does by
        // looking the name up. Left queued, the event of an up device that sits on another (a
        // veth: IFLA_LINK names its peer) counts as urgent; with a few hundred of them ahead,
        // every new link's carrier-on (in any namespace: the queue is the kernel's) waits for the
        // queue's 100 a second, its traffic dropped meanwhile. A device of its own (a provider
        // VM's virtio-net NIC) is activated as it comes up, its events not urgent: no request.
        // A link gone meanwhile has nothing to handle; a reply that found the buffer full (EAGAIN)
        // was made after the events were handled.
        if (syncLinkwatch) await linkAskedFor(socket.getLink({ index: operation.ifindex }, undefined, sequenced()));
        return;
      case 'link-group':
        await socket.setLink({ index: operation.ifindex }, { group: operation.group }, sequenced());
        return;
      case 'address-add':
        // With NLM_F_REPLACE, an address already there takes the given IFA_PROTO (or loses its own
        // without one): never sent for one the view has, which the plan counts as done.
        await socket.socket.request(rt.MessageType.NEWADDR, addressMessage(operation.address, { scope: 0 }), creating());
        return;
      case 'address-del':
        // By address and prefix alone: the kernel matches no IFA_PROTO in a deletion (Linux 6.18).
        await deleted(socket.socket.request(rt.MessageType.DELADDR, addressMessage({ ...operation.address, proto: 0 }), sequenced()));
        return;
      case 'route-set': {
        const { route } = operation;
        await socket.newRoute(
          {
            family: AF_INET,
            dstLen: route.dstLength,
            table: MAIN_TABLE,
            protocol: route.protocol,
            scope: route.gateway === null ? 'LINK' : 'UNIVERSE',
            type: 'UNICAST',
          },
          {
            ...(route.dstLength > 0 && { dst: ipBytes(route.dst) }),
            ...(route.oif !== null && { oif: route.oif }),
            ...(route.gateway !== null && { gateway: ipBytes(route.gateway) }),
            ...(route.priority !== 0 && { priority: route.priority }),
          },
          creating(),
        );
        return;
      }
      case 'route-del': {
        const { route } = operation;
        // Scope NOWHERE, type and protocol 0: match on prefix and metric, as `ip route del` does;
        // client mode's own only while they carry its mark (one someone else has replaced stays).
        const protocol: number = route.protocol === CLIENT_MARK ? CLIENT_MARK : 0;
        await deleted(
          socket.delRoute(
            { family: AF_INET, dstLen: route.dstLength, table: MAIN_TABLE, scope: 'NOWHERE', protocol },
            {
              ...(route.dstLength > 0 && { dst: ipBytes(route.dst) }),
              ...(route.oif !== null && { oif: route.oif }),
              ...(route.priority !== 0 && { priority: route.priority }),
            },
            sequenced(),
          ),
        );
        return;
      }
      case 'neighbour-set': {
        const { neighbour } = operation;
        await socket.newNeighbor(
          { family: AF_INET, ifindex: neighbour.ifindex, state: { permanent: true } },
          { dst: ipBytes(neighbour.ip), lladdr: macBytes(neighbour.mac) },
          creating(),
        );
        return;
      }
      case 'neighbour-del': {
        const { neighbour } = operation;
        await deleted(socket.delNeighbor({ family: AF_INET, ifindex: neighbour.ifindex }, { dst: ipBytes(neighbour.ip) }, sequenced()));
        return;
      }
      default: {
        const unknown: never = operation;
        throw new NetdError('apply', `unknown operation ${JSON.stringify(unknown)}`);
      }
    }
  }

  readSysctl(path: string): string {
    try {
      return readFileSync(path, 'utf8').trim();
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') return SYSCTL_ABSENT;
      throw new NetdError('sysctl', `cannot read ${path} (${errnoOf(error)})`);
    }
  }

  /**
   * Close both sockets. Every request in flight, and every one waiting for room, is rejected at
   * once with a 'closed' NetdError (the kernel may have made a change whose answer is dropped).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#requests.socket.close();
    this.#events?.close();
    this.#late.clear();
    this.#unanswered.clear();
    for (const waiting of this.#waiting.splice(0)) waiting.stop(closedError());
    for (const abort of [...this.#inFlight]) abort(closedError());
  }
}
