import { AddressError, MAX_ADDRESS_INPUT, quoteInput } from './address-error.js';
import { type ClientId, parseClientId } from './client-id.js';
import { clientIpTextOf, parseClientIp } from './client-ip.js';
import { type LinkRole, clientMacOf, parseLinkMac, providerMacOf } from './link-mac.js';
import { GATEWAY_IP } from './scheme.js';

/** Everything the scheme derives from one client id. */
export interface LinkAddresses {
  readonly id: ClientId;
  readonly clientIp: string;
  readonly clientMac: string;
  readonly providerMac: string;
  readonly gateway: string;
}

export function linkAddressesOf(id: ClientId): LinkAddresses {
  return {
    id,
    clientIp: clientIpTextOf(id),
    clientMac: clientMacOf(id),
    providerMac: providerMacOf(id),
    gateway: GATEWAY_IP,
  };
}

/** The form an address was written in. */
export type AddressForm = { readonly form: 'mac'; readonly role: LinkRole } | { readonly form: 'ip' } | { readonly form: 'id' };

export interface ParsedAddress {
  readonly id: ClientId;
  readonly given: AddressForm;
}

/**
 * Parse any of the three forms of a client address: a link MAC (either end), a client IPv4
 * address in 100.64.0.0/16, or a decimal client id. The form is told by its separators.
 */
export function parseAddress(text: string): ParsedAddress {
  if (text.length === 0) throw new AddressError('empty', 'no address given: expected a link MAC, a client IPv4 address or a client id');
  if (text.length > MAX_ADDRESS_INPUT) {
    throw new AddressError('too-long', `${quoteInput(text)} is too long to be a link MAC, a client IPv4 address or a client id`);
  }
  // A sign in front of digits is a mistaken id, not a MAC with '-' separators.
  if (/^[+-]?[0-9]+$/.test(text)) return { id: parseClientId(text), given: { form: 'id' } };
  if (text.includes(':') || text.includes('-')) {
    const mac = parseLinkMac(text);
    return { id: mac.id, given: { form: 'mac', role: mac.role } };
  }
  if (text.includes('.')) return { id: parseClientIp(text), given: { form: 'ip' } };
  throw new AddressError(
    'unrecognised',
    `${quoteInput(text)} is not a link MAC (0A:B3:EC:00:A5:46), a client IPv4 address (100.64.165.70) or a client id (42310)`,
  );
}
