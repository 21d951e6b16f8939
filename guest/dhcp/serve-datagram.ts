import { GATEWAY_IP } from '../../shared/scheme.js';
import { DhcpError } from './dhcp-error.js';
import { type DhcpRequest, type DhcpResponse, type LinkClient, readRequest, replyTo } from './dhcp-exchange.js';
import { type DhcpHandler, runChain } from './dhcp-handler.js';
import { BROADCAST_FLAG, DEFAULT_MAX_MESSAGE_LENGTH, type DhcpPacket, encodeDhcpPacket, parseDhcpPacket } from './dhcp-packet.js';
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
      /** The reply could not be encoded (e.g. larger than the client accepts). */
      readonly replyError?: DhcpError;
    };

/** Run one datagram from `client`'s link through the chain: request, response, lease, reply. */
export function serveDatagram(
  chain: readonly DhcpHandler[],
  client: LinkClient,
  ifname: string,
  bytes: Uint8Array,
  previous: LeaseInfo | undefined,
  now: number,
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
  const replyType = response.drop === undefined ? response.packet.options.get(OPTION.messageType)?.[0] : undefined;
  const lease = nextLease(previous, ifname, request, response, now);
  if (response.drop !== undefined) return { kind: 'answered', request, response, replyType, lease };
  const destination = replyDestination(request, response);
  try {
    const frame = buildUdpDatagram({
      source: GATEWAY_IP,
      destination,
      sourcePort: SERVER_PORT,
      destinationPort: CLIENT_PORT,
      payload: encodeDhcpPacket(response.packet, maxReplyLength(request)),
    });
    return { kind: 'answered', request, response, replyType, lease, reply: { frame, destination } };
  } catch (error) {
    if (error instanceof DhcpError) return { kind: 'answered', request, response, replyType, lease, replyError: error };
    throw error;
  }
}

/** The client's option 57 (whole IP datagram, at least 576) less IP and UDP headers, else 548. */
function maxReplyLength(request: DhcpRequest): number {
  let asked: number | undefined;
  try {
    asked = readUint16Option(request.packet.options, OPTION.maxMessageSize);
  } catch {
    asked = undefined;
  }
  if (asked === undefined || asked < 576) return DEFAULT_MAX_MESSAGE_LENGTH;
  return asked - IP_HEADER - 8;
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
