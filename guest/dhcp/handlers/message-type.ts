import { DhcpError } from '../dhcp-error.js';
import { type DhcpHandler, next, stop } from '../dhcp-handler.js';
import { type DhcpResponse, dropped, withOption, withPacket } from '../dhcp-exchange.js';
import { BROADCAST_FLAG } from '../dhcp-packet.js';
import { type Ipv4Text, ZERO_IP, isIpv4Text } from '../ipv4.js';
import { MESSAGE_TYPE, OPTION } from '../option-code.js';
import { readIpv4Option } from '../option-values.js';

export interface MessageTypeConfig {
  /** This server's identifier (option 54); requests naming another server are not for us. */
  readonly serverId: Ipv4Text;
}

function typed(response: DhcpResponse, type: number): DhcpResponse {
  return withOption(response, OPTION.messageType, Uint8Array.of(type));
}

/** NAK: no address, broadcast (RFC 2131 4.3.2: "If giaddr is 0, broadcast"); the why goes in option 56. */
function nak(response: DhcpResponse, why: string): DhcpResponse {
  const base = withPacket(typed(response, MESSAGE_TYPE.nak), { flags: response.packet.flags | BROADCAST_FLAG });
  return withOption(base, OPTION.message, new TextEncoder().encode(why));
}

/**
 * The protocol itself (RFC 2131 4.3): which reply a message gets. The address is never a choice:
 * the link's client has exactly one, derived from its MAC, so every check is "is it that one".
 */
export function setupMessageType(config: MessageTypeConfig): DhcpHandler {
  if (!isIpv4Text(config.serverId) || config.serverId === ZERO_IP) {
    throw new DhcpError('config', `server identifier ${JSON.stringify(config.serverId)} must be a unicast IPv4 address`);
  }
  const { serverId } = config;
  return (request, response) => {
    const { packet, link } = request;
    const { clientIp } = link;
    const serverIdOption = readIpv4Option(packet.options, OPTION.serverId);
    const requested = readIpv4Option(packet.options, OPTION.requestedIp);
    const ciaddr = packet.ciaddr;
    switch (request.messageType) {
      case MESSAGE_TYPE.discover:
        return next(withPacket(typed(response, MESSAGE_TYPE.offer), { yiaddr: clientIp }));
      case MESSAGE_TYPE.request: {
        if (serverIdOption !== undefined) {
          // SELECTING: answering an offer; one naming another server tells us it chose that one.
          if (serverIdOption !== serverId) return stop(dropped(response, 'other-server'));
          if (ciaddr !== ZERO_IP) return stop(dropped(response, 'invalid-request'));
          if (requested !== clientIp) return next(nak(response, `this link's address is ${clientIp}`));
          return next(withPacket(typed(response, MESSAGE_TYPE.ack), { yiaddr: clientIp }));
        }
        if (requested !== undefined) {
          // INIT-REBOOT: the client checks a remembered address (ciaddr must be 0).
          if (requested !== clientIp || (ciaddr !== ZERO_IP && ciaddr !== clientIp)) {
            return next(nak(response, `this link's address is ${clientIp}`));
          }
          return next(withPacket(typed(response, MESSAGE_TYPE.ack), { yiaddr: clientIp }));
        }
        if (ciaddr !== ZERO_IP) {
          // RENEWING (unicast) or REBINDING (broadcast): extend the lease on ciaddr. This server is
          // the only one that can know this link, so a wrong address is NAKed in both states.
          if (ciaddr !== clientIp) return next(nak(response, `this link's address is ${clientIp}`));
          return next(withPacket(typed(response, MESSAGE_TYPE.ack), { ciaddr, yiaddr: clientIp }));
        }
        return stop(dropped(response, 'invalid-request'));
      }
      case MESSAGE_TYPE.decline:
        if (serverIdOption !== undefined && serverIdOption !== serverId) return stop(dropped(response, 'other-server'));
        return stop(dropped(response, 'declined'));
      case MESSAGE_TYPE.release:
        if (serverIdOption !== undefined && serverIdOption !== serverId) return stop(dropped(response, 'other-server'));
        return stop(dropped(response, 'released'));
      case MESSAGE_TYPE.inform:
        // The client has its address already and wants the rest (RFC 2131 3.4); no lease.
        if (ciaddr !== ZERO_IP && ciaddr !== clientIp) return stop(dropped(response, 'invalid-request'));
        return next(withPacket(typed(response, MESSAGE_TYPE.ack), { ciaddr }));
      default:
        return stop(dropped(response, 'unexpected-type'));
    }
  };
}
