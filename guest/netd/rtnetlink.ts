// Adapter between the agent and the kernel: rtnetlink requests (dumps, changes) through the rtnl
// addon's socket (shared/rtnl-socket.ts), formatted and split by the `netlink` package's pure codecs
// (fixed headers and attributes; the few attributes the agent reads are decoded here),
// notifications through our own socket (rtnl-events.ts), and /proc/sys for sysctls. Decoders are
// pure; no decisions here.
// /proc/sys reads and writes take microseconds: synchronous calls beat a thread-pool round trip.
import { readFileSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { getSystemErrorName } from 'node:util';
import {
  AttrStream,
  Flags,
  FlagsGet,
  type NetlinkAttribute,
  type NetlinkMessage,
  formatMessage,
  getString,
  getU32,
  getU8,
  parseAttributes,
  parseMessages,
  putU8,
  rt,
} from 'netlink';
import { CLIENT_MARK, type DumpTable, type KernelAddress, type KernelEvent, type KernelLink, type KernelNeighbour, type KernelRoute, type KernelView, sysctlName } from './kernel-view.js';
import { KernelRefusal, NetdError } from './netd-error.js';
import { type Operation, SYSCTL_ABSENT } from './plan.js';
import { ipv6Text } from '../../shared/ipv6-text.js';
import { type MarkedOutcome, RtnlError, RtnlSocket, requestProgram } from '../../shared/rtnl-socket.js';
import { type ReceiveBuffer, RtnlEventSocket, loadRtnlEventsAddon } from './rtnl-events.js';

const AF_UNSPEC = 0;
const AF_INET = 2;
const AF_INET6 = 10;
const MAIN_TABLE = 254;
const NLM_F_REPLACE = 0x100;
const NLM_F_CREATE = 0x400;
/** How long rtnl.c waits for the kernel's answer to a request sent (its ANSWER_TIMEOUT_SECONDS). */
const REQUEST_TIMEOUT_MS = 5_000;
/**
 * A request still unsettled this long after it was asked fails: one queued behind a batch that the
 * kernel holds up (a send waits for RTNL, which rtnl.c's timeout does not bound). Longer than
 * rtnl.c's own wait, so that a request sent and not answered fails as rtnl.c tells it.
 */
const WAIT_BOUND_MS = REQUEST_TIMEOUT_MS + 2_000;
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
const ipBytes = (text: string): Buffer => Buffer.from(text.split('.').map(Number));

/** Exactly 4 bytes, dotted. */
function ipv4Text(bytes: Buffer): string {
  if (bytes.length !== 4) throw new Error(`Unexpected length (got ${bytes.length}, expected 4)`);
  return bytes.join('.');
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
const IFLA_MTU: AttributeType = { type: 4, name: 'IFLA_MTU' };
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

  /**
   * A u32 in host order where it is one (4 bytes, neither flag); undefined for any other, as where
   * absent: for what the agent can do without (IFLA_MTU), whose oddity must not cost the message.
   */
  u32IfWellFormed(type: AttributeType): number | undefined {
    const attribute = this.#byType.get(type.type);
    if (attribute === undefined || attribute.nested === true || attribute.no === true || attribute.data.length !== 4) return undefined;
    return getU32(attribute.data);
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
  // Only a hint (a change of it has the link's sysctls read again): an odd one reads as none.
  const mtu = attrs.u32IfWellFormed(IFLA_MTU);
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
    ...(mtu !== undefined && { mtu }),
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

/** The errno name of a refusal by the kernel (its NLMSG_ERROR), else undefined. */
function rejectionCode(error: unknown): string | undefined {
  return error instanceof KernelRefusal ? error.code : undefined;
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
 * How the kernel ended a dump: whether it marked a part NLM_F_DUMP_INTR, and the error its
 * NLMSG_DONE carried (an errno's name), if any; or the error it refused the request with.
 */
interface DumpEnd {
  interrupted: boolean;
  error: string | null;
  refused?: true;
  /** The socket failed to receive while it ran (the errno's name): the kernel could not make a part of it. */
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

/** An errno's name as Node gives it (ENOTSUP for 95), or "errno N" for one it has no name for. */
function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}

/** What every request gets once the kernel was closed under it (a stop). */
function closedError(): NetdError {
  return new NetdError('closed', 'the rtnetlink socket was closed (the agent is stopping)');
}

function timedOutError(): NetdError {
  return new NetdError('netlink', `request timed out: no answer from the kernel within ${REQUEST_TIMEOUT_MS / 1000} s`);
}

/** What a request fails with that rtnl.c never sent: one before it in its batch timed out (the kernel may yet make that one). */
function notSentError(): NetdError {
  return new NetdError(
    'netlink',
    `request timed out: not sent, the kernel having left a request before it in its batch unanswered for ${REQUEST_TIMEOUT_MS / 1000} s`,
  );
}

/**
 * What a request fails with that waited WAIT_BOUND_MS since it was asked: still queued (never
 * sent now), or in the batch that runs (whose requests before it took that long: it may yet be
 * sent, and made).
 */
function waitedTooLongError(queued: boolean): NetdError {
  const seconds = WAIT_BOUND_MS / 1000;
  return new NetdError(
    'netlink',
    queued
      ? `request timed out: not sent within ${seconds} s of asking (the kernel took that long over the requests before it); it will not be sent`
      : `request timed out: no answer within ${seconds} s of asking (its batch still runs: it may yet be made)`,
  );
}

/** How a failed request's outcome reads as an error. */
function failureError(outcome: Extract<MarkedOutcome, { state: 'failed' }>): Error {
  const code = errnoName(outcome.errno);
  if (outcome.marks.failure === 'refused') return new KernelRefusal(code, outcome.text);
  if (outcome.marks.failure === 'timed-out') return timedOutError();
  if (outcome.marks.failure === 'not-sent') return notSentError();
  return new NetdError('netlink', `rtnetlink request failed (${code}): ${outcome.text}`);
}

/** A request waiting in the queue, or in the program running: how to settle it. */
interface Queued {
  readonly message: Uint8Array;
  readonly answered: (outcome: MarkedOutcome) => void;
  readonly fail: (error: Error) => void;
}

/** A whole request message for the request socket (its seq is set as it is sent). */
function requestMessage(type: number, flags: number, body: Uint8Array[]): Uint8Array {
  return Buffer.concat(formatMessage({ type, flags: Flags.REQUEST | flags, seq: 0, port: 0, data: body }));
}

/** What the agent runs its requests on: rtnl-socket.ts's RtnlSocket (a scripted fake in unit tests). */
export type RequestSocket = Pick<RtnlSocket, 'runMarked' | 'close'>;

export interface RtnetlinkOptions {
  /** The notification socket's receive buffer to ask for (default DEFAULT_EVENT_BUFFER_BYTES). */
  readonly eventBufferBytes?: number;
  /** Tests only: the request socket to use instead of one opened in this namespace. */
  readonly requestSocket?: RequestSocket;
}

/**
 * Two sockets: one only listens (its notifications never mix with replies), one only asks. The
 * listening one is rtnl-events.ts; the asking one is rtnl-socket.ts's: requests queue here, and
 * what is queued while a program of them runs on its worker thread goes as the next program,
 * each request answered before the next is sent (so no answer is ever dropped for want of room).
 */
export class RtnetlinkKernel implements NetdKernel {
  readonly #requests: RequestSocket;
  readonly #eventBufferBytes: number;
  #events: RtnlEventSocket | undefined;
  /** Requests not yet in a program, oldest first. */
  #queue: Queued[] = [];
  /** Whether a program runs on the request socket (one at a time). */
  #running = false;
  /** Whether a run of what is queued is due at the end of this turn. */
  #due = false;
  /** Every request not yet settled, queued or in the program running: how to fail it at a close. */
  readonly #unsettled = new Set<Queued>();
  #closed = false;

  constructor(options: RtnetlinkOptions = {}) {
    this.#eventBufferBytes = options.eventBufferBytes ?? DEFAULT_EVENT_BUFFER_BYTES;
    // Before anything is made: a build without the notification addon cannot run an agent.
    loadRtnlEventsAddon();
    if (options.requestSocket !== undefined) {
      this.#requests = options.requestSocket;
      return;
    }
    try {
      this.#requests = RtnlSocket.open(null);
    } catch (error) {
      if (error instanceof RtnlError && (error.kind === 'addon-missing' || error.kind === 'addon-stale')) throw new NetdError('netlink', error.message);
      throw new NetdError('netlink', `cannot open an rtnetlink socket (${errnoOf(error)}): is this Linux?`);
    }
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
   * Ask the kernel `message`: its outcome, once its program has run. Rejected with a timeout when
   * the kernel did not answer it within REQUEST_TIMEOUT_MS of its sending (rtnl.c's), or when it is
   * still unsettled WAIT_BOUND_MS after asking (a request still queued then is never sent), and
   * with a 'closed' NetdError at once at a close.
   */
  #ask(message: Uint8Array): Promise<MarkedOutcome> {
    if (this.#closed) return Promise.reject(closedError());
    return new Promise<MarkedOutcome>((resolve, reject) => {
      const settle = (): boolean => {
        if (!this.#unsettled.delete(request)) return false;
        clearTimeout(timer);
        return true;
      };
      const request: Queued = {
        message,
        answered: (outcome) => settle() && resolve(outcome),
        fail: (error) => {
          if (!settle()) return;
          const at = this.#queue.indexOf(request);
          if (at >= 0) this.#queue.splice(at, 1);
          reject(error);
        },
      };
      const timer = setTimeout(() => request.fail(waitedTooLongError(this.#queue.includes(request))), WAIT_BOUND_MS);
      this.#unsettled.add(request);
      this.#queue.push(request);
      this.#runSoon();
    });
  }

  /** Run what is queued once this turn's requests are in: those asked together go as one program. */
  #runSoon(): void {
    if (this.#due) return;
    this.#due = true;
    queueMicrotask(() => {
      this.#due = false;
      this.#runQueued();
    });
  }

  /** Run what is queued as one program, unless one runs; keepGoing: one failure stops no other. */
  #runQueued(): void {
    if (this.#running || this.#closed || this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#running = true;
    this.#requests.runMarked(requestProgram(batch.map(({ message }) => message)), true).then(
      (outcomes) => {
        batch.forEach((request, index) => {
          const outcome = outcomes[index];
          if (outcome === undefined || outcome.state === 'not-run') request.fail(this.#closed ? closedError() : new NetdError('netlink', 'rtnetlink request not run'));
          else request.answered(outcome);
        });
      },
      (error: unknown) => {
        const failure = this.#closed ? closedError() : new NetdError('netlink', `rtnetlink requests failed (${errnoOf(error)}): ${error instanceof Error ? error.message : String(error)}`);
        for (const request of batch) request.fail(failure);
      },
    ).finally(() => {
      this.#running = false;
      this.#runQueued();
    });
  }

  /** Ask `message`, which is answered by an ack alone: resolved when done, else rejected (see failureError). */
  async #change(message: Uint8Array): Promise<void> {
    const outcome = await this.#ask(message);
    if (outcome.state === 'failed') throw failureError(outcome);
  }

  async dump(): Promise<KernelDump> {
    try {
      // One table after another: what a dump tells is read before the next is asked for.
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
      throw new NetdError('netlink', `reading the kernel's links, addresses, routes and neighbours failed: ${error instanceof NetdError ? error.message : errnoOf(error)}`);
    }
  }

  /**
   * One table's entries, taken unparsed (see decodeDumpEntries). Taken again while the kernel
   * marks the dump interrupted by a change, or ends it with an error, or refuses it (an
   * NLMSG_ERROR), or the socket fails to receive while it runs (the kernel could not make a part
   * of it: read whole all the same), up to DUMP_TRIES dumps (`end`: how the last ended): no
   * notification would tell of an entry it missed. A refusal that says the request itself is
   * wrong (REFUSED_FOR_GOOD) is thrown at once, as 'dump-refused'.
   */
  async #dumpTable(
    table: DumpTable,
    type: rt.MessageType,
    format: (out: AttrStream) => void,
  ): Promise<{ readonly table: DumpTable; readonly messages: NetlinkMessage[]; readonly end: DumpEnd }> {
    const body = new AttrStream();
    format(body);
    const message = requestMessage(type, FlagsGet.DUMP, body.bufs);
    for (let tries = 1; ; tries++) {
      const outcome = await this.#ask(message);
      const end: DumpEnd = { interrupted: outcome.marks.interrupted, error: null };
      let messages: NetlinkMessage[] = [];
      if (outcome.state === 'failed') {
        const code = errnoName(outcome.errno);
        const { failure } = outcome.marks;
        if (failure === 'refused' && REFUSED_FOR_GOOD.has(code)) {
          throw new NetdError('dump-refused', `the kernel refused the agent's request to dump its ${table} (NLMSG_ERROR ${code}), as wrong in itself: ${refusalHint(code)}`);
        }
        if (failure === 'refused') {
          end.error = code;
          end.refused = true;
        } else if (failure === 'dump-failed') {
          end.error = code;
        } else if (failure === 'receive') {
          end.receiveError = code;
        } else {
          throw failureError(outcome);
        }
      }
      if (outcome.marks.failure !== 'refused') messages = parseMessages(Buffer.from(outcome.reply));
      if ((!end.interrupted && end.error === null && end.receiveError === undefined) || tries === DUMP_TRIES) return { table, messages, end };
    }
  }

  async apply(operation: Operation, view: KernelView): Promise<void> {
    if (this.#closed) throw closedError();
    // A route read from the kernel may have one (RTA_VIA); the planner never asks for one, and the request carries RTA_GATEWAY alone.
    if (operation.kind === 'route-set' && operation.route.gateway?.includes(':') === true) {
      throw new NetdError('apply', `route ${operation.route.dst}/${operation.route.dstLength} via ${operation.route.gateway}: the agent sets no route via an IPv6 next hop`);
    }
    if (operation.kind !== 'sysctl') {
      const syncLinkwatch = operation.kind === 'link-up' && view.links.get(operation.ifindex)?.lowerIfindex !== undefined;
      return this.#changeFor(operation, syncLinkwatch);
    }
    const { key } = operation;
    const link = key.ifindex === null ? null : view.links.get(key.ifindex);
    if (link === undefined) throw new NetdError('link-gone', `link ${String(key.ifindex)} is gone`);
    const path = `/proc/sys/${sysctlName(key.template, link?.name ?? '')}`;
    try {
      writeFileSync(path, `${operation.value}\n`);
    } catch (error) {
      const code = errnoOf(error);
      // Read by this path before the plan asked for it: a link's file missing now is one renamed
      // or deleted meanwhile, whose notification is on its way (a global one is always there).
      if (link !== null && code === 'ENOENT') throw new NetdError('link-gone', `cannot write ${path} (ENOENT): no link is named ${link.name} any more (renamed or deleted meanwhile)`);
      throw new NetdError('sysctl', `cannot write ${path} (${code}): is /proc/sys mounted writable?`);
    }
  }

  /** One rtnetlink request, answered (with a link-up's GETLINK, two: the second asked once the first is answered). */
  async #changeFor(operation: Exclude<Operation, { kind: 'sysctl' }>, syncLinkwatch: boolean): Promise<void> {
    const T = rt.MessageType;
    const creating = NLM_F_CREATE | NLM_F_REPLACE;
    const link = (data: rt.Link, attrs: rt.LinkMessage['attrs'] = {}): Uint8Array[] => {
      const out = new AttrStream();
      rt.formatLinkMessage({ kind: 'link', data, attrs }, out);
      return out.bufs;
    };
    const route = (data: rt.Route, attrs: rt.RouteAttrs): Uint8Array[] => {
      const out = new AttrStream();
      rt.formatRouteMessage({ kind: 'route', data, attrs }, out);
      return out.bufs;
    };
    const neighbour = (data: rt.Neighbor, attrs: rt.NeighborAttrs): Uint8Array[] => {
      const out = new AttrStream();
      rt.formatNeighborMessage({ kind: 'neighbor', data, attrs }, out);
      return out.bufs;
    };
    switch (operation.kind) {
      case 'link-up':
      case 'link-down': {
        // `change` names the flag to set; `flags` without it clears it. A group comes in the same
        // request: the kernel sets IFLA_GROUP before it changes the flags.
        const up = this.#change(
          requestMessage(
            T.SETLINK,
            0,
            link(
              { index: operation.ifindex, flags: operation.kind === 'link-up' ? { up: true } : {}, change: { up: true } },
              operation.kind === 'link-up' && operation.group !== undefined ? { group: operation.group } : {},
            ),
          ),
        );
        // Asked at once, so that it goes in the same program, after the link-up is answered.
        // Asking for the link makes the kernel handle now the link-state event still queued for
        // it (its creation's: a GETLINK syncs linkwatch, Linux 6.7 on), as `ip link set` does by
        // looking the name up. Left queued, the event of an up device that sits on another (a
        // veth: IFLA_LINK names its peer) counts as urgent; with a few hundred of them ahead,
        // every new link's carrier-on (in any namespace: the queue is the kernel's) waits for the
        // queue's 100 a second, its traffic dropped meanwhile. A device of its own (a provider
        // VM's virtio-net NIC) is activated as it comes up, its events not urgent: no request.
        // A link gone meanwhile has nothing to handle; a reply refused for want of room (EAGAIN)
        // was made after the events were handled.
        const asked = syncLinkwatch ? linkAskedFor(this.#change(requestMessage(T.GETLINK, 0, link({ index: operation.ifindex })))) : Promise.resolve();
        await Promise.all([up, asked]);
        return;
      }
      case 'link-group':
        await this.#change(requestMessage(T.SETLINK, 0, link({ index: operation.ifindex }, { group: operation.group })));
        return;
      case 'address-add':
        // With NLM_F_REPLACE, an address already there takes the given IFA_PROTO (or loses its own
        // without one): never sent for one the view has, which the plan counts as done.
        await this.#change(requestMessage(T.NEWADDR, creating, addressMessage(operation.address, { scope: 0 })));
        return;
      case 'address-del':
        // By address and prefix alone: the kernel matches no IFA_PROTO in a deletion (Linux 6.18).
        await deleted(this.#change(requestMessage(T.DELADDR, 0, addressMessage({ ...operation.address, proto: 0 }))));
        return;
      case 'route-set': {
        const { route: wanted } = operation;
        const data: rt.Route = {
          family: AF_INET,
          dstLen: wanted.dstLength,
          table: MAIN_TABLE,
          protocol: wanted.protocol,
          scope: wanted.gateway === null ? 'LINK' : 'UNIVERSE',
          type: 'UNICAST',
        };
        const attrs: rt.RouteAttrs = {
          ...(wanted.dstLength > 0 && { dst: ipBytes(wanted.dst) }),
          ...(wanted.oif !== null && { oif: wanted.oif }),
          ...(wanted.gateway !== null && { gateway: ipBytes(wanted.gateway) }),
          ...(wanted.priority !== 0 && { priority: wanted.priority }),
        };
        await this.#change(requestMessage(T.NEWROUTE, creating, route(data, attrs)));
        return;
      }
      case 'route-del': {
        const { route: gone } = operation;
        // Scope NOWHERE, type and protocol 0: match on prefix and metric, as `ip route del` does;
        // client mode's own only while they carry its mark (one someone else has replaced stays).
        const protocol: number = gone.protocol === CLIENT_MARK ? CLIENT_MARK : 0;
        const data: rt.Route = { family: AF_INET, dstLen: gone.dstLength, table: MAIN_TABLE, scope: 'NOWHERE', protocol };
        const attrs: rt.RouteAttrs = {
          ...(gone.dstLength > 0 && { dst: ipBytes(gone.dst) }),
          ...(gone.oif !== null && { oif: gone.oif }),
          ...(gone.priority !== 0 && { priority: gone.priority }),
        };
        await deleted(this.#change(requestMessage(T.DELROUTE, 0, route(data, attrs))));
        return;
      }
      case 'neighbour-set': {
        const { neighbour: wanted } = operation;
        const body = neighbour({ family: AF_INET, ifindex: wanted.ifindex, state: { permanent: true } }, { dst: ipBytes(wanted.ip), lladdr: macBytes(wanted.mac) });
        await this.#change(requestMessage(T.NEWNEIGH, creating, body));
        return;
      }
      case 'neighbour-del': {
        const { neighbour: gone } = operation;
        await deleted(this.#change(requestMessage(T.DELNEIGH, 0, neighbour({ family: AF_INET, ifindex: gone.ifindex }, { dst: ipBytes(gone.ip) }))));
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
   * Close both sockets. Every request queued or in the program running is rejected at once with a
   * 'closed' NetdError (the kernel may have made a change whose answer is not read); the request
   * socket's descriptor is closed once the running program's worker is done with it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#requests.close();
    this.#events?.close();
    this.#queue = [];
    for (const request of [...this.#unsettled]) request.fail(closedError());
  }
}
