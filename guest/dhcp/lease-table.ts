import type { ClientId } from '../../shared/client-id.js';
import { clientMacOf } from '../../shared/link-mac.js';
import type { DhcpRequest, DhcpResponse } from './dhcp-exchange.js';
import type { Ipv4Text } from './ipv4.js';
import { MESSAGE_TYPE, OPTION } from './option-code.js';
import { hexOf, readTextOption, readUint32Option } from './option-values.js';

export type LeaseState = 'offered' | 'bound' | 'released' | 'declined' | 'expired';

/**
 * What the server knows about one link's client. Times are milliseconds since the epoch; what is
 * not known is undefined (and absent from JSON). Every record has every field, made by leaseRecord
 * in one order: records of one shape keep the request path's optimised code valid, where records
 * that gain fields as a client goes along made V8 deoptimise and recompile it mid-storm.
 */
export interface LeaseInfo {
  readonly ifname: string;
  readonly id: ClientId;
  readonly clientIp: Ipv4Text;
  readonly clientMac: string;
  readonly state: LeaseState;
  readonly firstSeen: number;
  readonly lastRenewed: number | undefined;
  readonly expires: number | undefined;
  /** Option 61 as hex, at most MAX_CLIENT_IDENTIFIER_BYTES bytes of it. */
  readonly clientIdentifier: string | undefined;
  /** Option 12, printable ASCII, at most MAX_HOSTNAME_CHARS. */
  readonly hostname: string | undefined;
}

function leaseRecord(lease: LeaseInfo): LeaseInfo {
  return {
    ifname: lease.ifname,
    id: lease.id,
    clientIp: lease.clientIp,
    clientMac: lease.clientMac,
    state: lease.state,
    firstSeen: lease.firstSeen,
    lastRenewed: lease.lastRenewed,
    expires: lease.expires,
    clientIdentifier: lease.clientIdentifier,
    hostname: lease.hostname,
  };
}

export const MAX_CLIENT_IDENTIFIER_BYTES = 64;
export const MAX_HOSTNAME_CHARS = 63;

/**
 * The lease a request and its response leave behind, given the previous one. Pure: the server
 * applies it after the handler chain has decided. Only requests from the link's own client get
 * here, so there is at most one record per link and each is bounded in size.
 */
export function nextLease(
  previous: LeaseInfo | undefined,
  ifname: string,
  request: DhcpRequest,
  response: DhcpResponse,
  now: number,
): LeaseInfo | undefined {
  // Nothing was offered or acknowledged: a reply too long to send (oversized-client-id) went nowhere.
  if (response.drop === 'wrong-mac' || response.drop === 'other-server' || response.drop === 'relayed' || response.drop === 'oversized-client-id') return previous;
  const { link, packet } = request;
  const identifier = packet.options.get(OPTION.clientIdentifier);
  const hostname = readTextOption(packet.options, OPTION.hostname, MAX_HOSTNAME_CHARS);
  const base = leaseRecord({
    ifname,
    id: link.id,
    clientIp: link.clientIp,
    clientMac: previous?.clientMac ?? clientMacOf(link.id),
    state: previous?.state ?? 'offered',
    firstSeen: previous?.firstSeen ?? now,
    lastRenewed: previous?.lastRenewed,
    expires: previous?.expires,
    clientIdentifier: identifier !== undefined ? hexOf(identifier, MAX_CLIENT_IDENTIFIER_BYTES) : previous?.clientIdentifier,
    hostname: hostname ?? previous?.hostname,
  });
  const replyType = response.drop === undefined ? response.packet.options.get(OPTION.messageType)?.[0] : undefined;
  if (response.drop === 'released') return leaseRecord({ ...base, state: 'released', expires: now });
  if (response.drop === 'declined') return leaseRecord({ ...base, state: 'declined', expires: now });
  if (replyType === MESSAGE_TYPE.offer) return base.state === 'bound' && !isExpired(base, now) ? base : leaseRecord({ ...base, state: 'offered' });
  if (replyType === MESSAGE_TYPE.ack && request.messageType === MESSAGE_TYPE.request) {
    const seconds = readUint32Option(response.packet.options, OPTION.leaseTime) ?? 0;
    return leaseRecord({ ...base, state: 'bound', lastRenewed: now, expires: now + seconds * 1000 });
  }
  return base;
}

export function isExpired(lease: LeaseInfo, now: number): boolean {
  return lease.state === 'bound' && lease.expires !== undefined && lease.expires <= now;
}

/** The lease as seen at `now`: a bound lease past its end reads as expired. */
export function leaseAt(lease: LeaseInfo, now: number): LeaseInfo {
  return isExpired(lease, now) ? leaseRecord({ ...lease, state: 'expired' }) : lease;
}
