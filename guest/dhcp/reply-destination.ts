import type { DhcpRequest, DhcpResponse } from './dhcp-exchange.js';
import { BROADCAST_FLAG } from './dhcp-packet.js';
import { BROADCAST_IP, type Ipv4Text } from './ipv4.js';
import { MESSAGE_TYPE, OPTION } from './option-code.js';

export const SERVER_PORT = 67;
export const CLIENT_PORT = 68;

/**
 * Where a reply goes (RFC 2131 4.1, relays excluded: nothing relays on a point-to-point link).
 * Always out of the request's own link; the address only picks unicast or broadcast.
 * - NAK: broadcast (the client's address may be wrong).
 * - ciaddr set (renewing, rebinding, inform): unicast to ciaddr.
 * - BROADCAST flag: 255.255.255.255.
 * - else unicast to yiaddr at chaddr: possible before the client has an address because the agent
 *   keeps a permanent neighbour entry client IP -> client MAC and a /32 route on the link.
 * A unicast reply only ever goes to the link's client address: a ciaddr the client made up (a
 * DISCOVER may carry any) would otherwise have the kernel resolve that address on the link, one
 * neighbour entry per address a hostile client names.
 */
export function replyDestination(request: DhcpRequest, response: DhcpResponse): Ipv4Text {
  const type = response.packet.options.get(OPTION.messageType)?.[0];
  const { clientIp } = request.link;
  if (type === MESSAGE_TYPE.nak) return BROADCAST_IP;
  if (request.packet.ciaddr === clientIp) return clientIp;
  if ((request.packet.flags & BROADCAST_FLAG) !== 0) return BROADCAST_IP;
  if (response.packet.yiaddr === clientIp) return clientIp;
  return BROADCAST_IP;
}
