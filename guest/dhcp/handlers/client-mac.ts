import { type DhcpHandler, next, stop } from '../dhcp-handler.js';
import { dropped } from '../dhcp-exchange.js';
import { ETHERNET_HLEN, HTYPE_ETHERNET } from '../dhcp-packet.js';

/**
 * A provider-side link serves exactly one client: the MAC its own MAC encodes (0A:B3:EC:00:hi:lo).
 * Anything else on the link (a spoofed or misconfigured NIC) gets no answer at all.
 */
export function setupClientMac(): DhcpHandler {
  return (request, response) => {
    const { packet, link } = request;
    const matches =
      packet.htype === HTYPE_ETHERNET &&
      packet.hlen === ETHERNET_HLEN &&
      link.clientMac.every((octet, index) => packet.chaddr[index] === octet);
    return matches ? next(response) : stop(dropped(response, 'wrong-mac'));
  };
}
