import { GATEWAY_IP } from '../../shared/scheme.js';
import { DhcpError } from './dhcp-error.js';
import { type DhcpRequest, type DhcpResponse, type LinkClient, readRequest, replyTo } from './dhcp-exchange.js';
import { type DhcpHandler, runChain } from './dhcp-handler.js';
import { BROADCAST_FLAG, DEFAULT_MAX_MESSAGE_LENGTH, type DhcpPacket, encodeDhcpPacket, parseDhcpPacket, plainMessageLength } from './dhcp-packet.js';
import { BROADCAST_IP, type Ipv4Text, ZERO_IP, ipv4Octets } from './ipv4.js';
import { type LeaseInfo, nextLease } from './lease-table.js';
import { MESSAGE_TYPE, OPTION } from './option-code.js';
import { readUint16Option } from './option-values.js';
import { CLIENT_PORT, SERVER_PORT, replyDestination } from './reply-destination.js';
import { IP_HEADER, buildUdpDatagram, parseUdpDatagram } from './udp-frame.js';

/** What one datagram read from a link comes to. Pure: the server counts, logs and sends it. */
export type ServedDatagram =
  /** Other UDP on the link (DNS, ...): not ours to count. */
  | { readonly kind: 'not-dhcp' }
  /** Not IPv4/UDP, not a DHCP request, or options the handlers cannot read. */
  | { readonly kind: 'malformed'; readonly error: DhcpError }
  /** giaddr set: nothing relays on a point-to-point link. */
  | { readonly kind: 'relayed' }
  | {
      readonly kind: 'answered';
      readonly request: DhcpRequest;
      readonly response: DhcpResponse;
      /** Message type of the reply; undefined when the response is dropped. */
      readonly replyType: number | undefined;
      /** The link's lease after this exchange (unchanged when the chain ignored the request). */
      readonly lease: LeaseInfo | undefined;
      /** The complete IP datagram and its destination, unless dropped or not encodable. */
      readonly reply?: { readonly frame: Uint8Array; readonly destination: Ipv4Text };
      /**
       * Why no reply could be encoded. With the drop 'oversized-client-id' the client's doing (its
       * identifier does not fit the reply that must echo it); without a drop, the server's (a bug,
       * or a configuration whose own options do not fit).
       */
      readonly replyError?: DhcpError;
    };

/** Where the server reads its link's MTU from (the kernel, for a served link), when a reply needs it. */
export interface LinkMtuSource {
  /** The link's MTU now; undefined when it cannot be read. */
  linkMtu(): number | undefined;
}

/** The longest reply a client may be sent (a DHCP message, the UDP payload), and what sets it. */
export interface ReplyLimit {
  readonly length: number;
  /**
   * default: the 576-byte datagram every client takes (RFC 2131 2), for a client that asked for no
   * more (option 57), the link carrying that much or its MTU unread; client: its option 57, the
   * link carrying that much; link: the link's MTU, lower than what the client takes (576 too:
   * spectrum-link's --mtu goes down to 68); unknown-mtu: 576 bytes, the client asked for more but
   * the link's MTU could not be read.
   */
  readonly by: 'default' | 'client' | 'link' | 'unknown-mtu';
  /** The link's MTU, where read. */
  readonly linkMtu?: number;
}

const UDP_HEADER = 8;
/** The datagram every client takes (IPv4's rule for hosts), which a link of a lower MTU does not carry. */
const DEFAULT_DATAGRAM = DEFAULT_MAX_MESSAGE_LENGTH + IP_HEADER + UDP_HEADER;
const DEFAULT_LIMIT: ReplyLimit = { length: DEFAULT_MAX_MESSAGE_LENGTH, by: 'default' };

/** Run one datagram from `client`'s link through the chain: request, response, lease, reply. */
export function serveDatagram(
  chain: readonly DhcpHandler[],
  client: LinkClient,
  ifname: string,
  bytes: Uint8Array,
  previous: LeaseInfo | undefined,
  now: number,
  link: LinkMtuSource,
): ServedDatagram {
  let request: DhcpRequest;
  try {
    const datagram = parseUdpDatagram(bytes);
    if (datagram.destinationPort !== SERVER_PORT) return { kind: 'not-dhcp' };
    request = readRequest(parseDhcpPacket(datagram.payload), client);
  } catch (error) {
    if (error instanceof DhcpError) return { kind: 'malformed', error };
    throw error;
  }
  if (request.packet.giaddr !== ZERO_IP) return { kind: 'relayed' };
  let response: DhcpResponse;
  try {
    response = runChain(chain, request, replyTo(request));
  } catch (error) {
    // Malformed options the handlers read (a 3-byte server id, ...).
    if (error instanceof DhcpError) return { kind: 'malformed', error };
    throw error;
  }
  if (response.drop !== undefined) return { kind: 'answered', request, response, replyType: undefined, lease: nextLease(previous, ifname, request, response, now) };
  // Every client takes a reply of 548 bytes: only a longer one needs the client's and the link's
  // bounds (a link of MTU below 576 is told by EMSGSIZE for a shorter one, see sendFailureHint).
  const limit = plainMessageLength(response.packet) <= DEFAULT_MAX_MESSAGE_LENGTH ? DEFAULT_LIMIT : replyLimit(request, link);
  const replyType = response.packet.options.get(OPTION.messageType)?.[0];
  let payload: Uint8Array;
  try {
    payload = encodeDhcpPacket(response.packet, limit.length);
  } catch (error) {
    if (!(error instanceof DhcpError)) throw error;
    const refused = oversizedClientId(response, limit, error);
    if (refused !== undefined) {
      const dropped: DhcpResponse = { ...response, drop: 'oversized-client-id' };
      return { kind: 'answered', request, response: dropped, replyType: undefined, lease: nextLease(previous, ifname, request, dropped, now), replyError: refused };
    }
    return { kind: 'answered', request, response, replyType, lease: nextLease(previous, ifname, request, response, now), replyError: error };
  }
  const lease = nextLease(previous, ifname, request, response, now);
  const destination = replyDestination(request, response);
  try {
    const frame = buildUdpDatagram({ source: GATEWAY_IP, destination, sourcePort: SERVER_PORT, destinationPort: CLIENT_PORT, payload });
    return { kind: 'answered', request, response, replyType, lease, reply: { frame, destination } };
  } catch (error) {
    if (error instanceof DhcpError) return { kind: 'answered', request, response, replyType, lease, replyError: error };
    throw error;
  }
}

/**
 * The longest reply `request`'s client may be sent: what its option 57 allows (a whole IP
 * datagram, at least 576; 576 without it), but never more than the link's MTU. A larger datagram
 * cannot go out whole: the server sends with DF set, and a client reading a packet socket (udhcpc)
 * reassembles no fragments. Asked only for a reply longer than 548 bytes, which only a client's
 * long identifier makes: the MTU is read for it whether or not the client sent option 57, as a
 * link's may be below 576.
 */
export function replyLimit(request: DhcpRequest, link: LinkMtuSource): ReplyLimit {
  let asked: number | undefined;
  try {
    asked = readUint16Option(request.packet.options, OPTION.maxMessageSize);
  } catch {
    asked = undefined;
  }
  const client = asked !== undefined && asked > DEFAULT_DATAGRAM ? asked : undefined;
  const linkMtu = link.linkMtu();
  const headers = IP_HEADER + UDP_HEADER;
  if (linkMtu === undefined) return client === undefined ? DEFAULT_LIMIT : { length: DEFAULT_MAX_MESSAGE_LENGTH, by: 'unknown-mtu' };
  if (linkMtu < (client ?? DEFAULT_DATAGRAM)) return { length: linkMtu - headers, by: 'link', linkMtu };
  return client === undefined ? DEFAULT_LIMIT : { length: client - headers, by: 'client', linkMtu };
}

/**
 * Why a reply that did not fit `limit` is the client's doing, if it is: the client identifier it
 * sent, which a reply must echo unaltered (RFC 6842: MUST, and a reply without it is none the
 * client may take as its own), is too long for the reply to fit, which it would without it. No
 * conforming reply exists then: the request is dropped, as a server may drop any.
 */
function oversizedClientId(response: DhcpResponse, limit: ReplyLimit, error: DhcpError): DhcpError | undefined {
  const id = response.packet.options.get(OPTION.clientIdentifier);
  if (error.kind !== 'too-long' || id === undefined) return undefined;
  const options = new Map(response.packet.options);
  options.delete(OPTION.clientIdentifier);
  try {
    encodeDhcpPacket({ ...response.packet, options }, limit.length);
  } catch {
    return undefined;
  }
  return new DhcpError('too-long', `request dropped: its ${id.length}-byte client identifier (option 61), which a reply must echo (RFC 6842), does not fit ${limitText(limit)}`);
}

function limitText(limit: ReplyLimit): string {
  const bytes = `the ${limit.length}-byte reply`;
  if (limit.by === 'default') return `${bytes} every client takes (it allowed no more with option 57)`;
  if (limit.by === 'unknown-mtu') return `${bytes} every client takes (the link's MTU could not be read)`;
  if (limit.by === 'client') return `${bytes} its option 57 allows`;
  return `${bytes} the link's MTU of ${limit.linkMtu ?? '?'} allows`;
}

/**
 * DISCOVERs and REQUESTs as stock clients send them, to run the request path on at start-up. Two
 * kinds, so that every branch a real client takes has been taken: one asks for broadcast replies
 * and names its host; the other, like busybox udhcpc, takes unicast replies, sends no hostname, and
 * has a transaction id above 2^31. Clients pick xids at random, and V8 keeps a number that does not
 * fit a small integer differently: warmed up on small ids only, the first real storm deoptimised
 * the whole path and recompiled it (megabytes at peak).
 */
export function warmUpFrames(client: LinkClient): Uint8Array[] {
  return WARM_UP_CLIENTS.flatMap((kind) => [MESSAGE_TYPE.discover, MESSAGE_TYPE.request].map((type) => requestFrame(client, type, kind)));
}

interface WarmUpClient {
  readonly xid: number;
  readonly flags: number;
  readonly hostname: string | undefined;
}

const WARM_UP_CLIENTS: readonly WarmUpClient[] = [
  { xid: 0x5eed, flags: BROADCAST_FLAG, hostname: 'warm-up' },
  { xid: 0xdeadbeef, flags: 0, hostname: undefined },
];

function requestFrame(client: LinkClient, type: number, kind: WarmUpClient): Uint8Array {
  const chaddr = new Uint8Array(16);
  chaddr.set(client.clientMac);
  const options = new Map<number, Uint8Array>([
    [OPTION.messageType, Uint8Array.of(type)],
    [OPTION.clientIdentifier, Uint8Array.of(1, ...client.clientMac)],
    [OPTION.parameterRequestList, Uint8Array.of(1, 3, 6, 12, 15, 28, 42, 121)],
    [OPTION.maxMessageSize, Uint8Array.of(0x05, 0xdc)],
  ]);
  if (kind.hostname !== undefined) options.set(OPTION.hostname, new TextEncoder().encode(kind.hostname));
  if (type === MESSAGE_TYPE.request) {
    options.set(OPTION.requestedIp, Uint8Array.from(ipv4Octets(client.clientIp)));
    options.set(OPTION.serverId, Uint8Array.from(ipv4Octets(GATEWAY_IP)));
  }
  const packet: DhcpPacket = {
    op: 1,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: kind.xid,
    secs: 0,
    flags: kind.flags,
    ciaddr: ZERO_IP,
    yiaddr: ZERO_IP,
    siaddr: ZERO_IP,
    giaddr: ZERO_IP,
    chaddr,
    sname: new Uint8Array(64),
    file: new Uint8Array(128),
    options,
  };
  return buildUdpDatagram({ source: ZERO_IP, destination: BROADCAST_IP, sourcePort: CLIENT_PORT, destinationPort: SERVER_PORT, payload: encodeDhcpPacket(packet) });
}
