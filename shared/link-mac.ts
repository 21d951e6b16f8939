import { AddressError, quoteInput } from './address-error.js';
import { type ClientId, clientId } from './client-id.js';
import { LINK_OUI, ROLE_OCTET } from './scheme.js';

/** Which end of a point-to-point link a MAC belongs to. */
export type LinkRole = keyof typeof ROLE_OCTET;

/** A decoded inter-VM link MAC. */
export interface LinkMac {
  readonly role: LinkRole;
  readonly id: ClientId;
}

// Six two-digit hex octets, all separated by ':' or all by '-' (the backreference keeps them alike).
const MAC_SYNTAX = /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i;

/** Parse six octets written as hex pairs with ':' or '-' separators, any case. */
export function parseMacOctets(text: string): number[] {
  const match = MAC_SYNTAX.exec(text);
  if (match === null) {
    throw new AddressError(
      'mac-syntax',
      `${quoteInput(text)} is not a MAC address: expected six hex pairs separated by ':' or '-', like 0A:B3:EC:00:A5:46`,
    );
  }
  return [match[1], match[3], match[4], match[5], match[6], match[7]].map((pair) => parseInt(pair ?? '', 16));
}

/** Decode a link MAC from its octets: OUI, role octet and client id are all checked. */
export function decodeLinkMac(octets: readonly number[]): LinkMac {
  const text = (): string => formatMacOctets(octets); // only errors need it
  if (octets[0] !== LINK_OUI[0] || octets[1] !== LINK_OUI[1] || octets[2] !== LINK_OUI[2]) {
    throw new AddressError('mac-oui', `${text()} is not an inter-VM link MAC: its OUI must be ${formatMacOctets(LINK_OUI)}`);
  }
  const roleOctet = octets[3];
  let role: LinkRole;
  if (roleOctet === ROLE_OCTET.provider) role = 'provider';
  else if (roleOctet === ROLE_OCTET.client) role = 'client';
  else {
    throw new AddressError(
      'mac-role',
      `${text()} has reserved bits set in octet 4: it must be 80 (provider side) or 00 (client side)`,
    );
  }
  const id = ((octets[4] ?? 0) << 8) | (octets[5] ?? 0);
  try {
    return { role, id: clientId(id) };
  } catch {
    throw new AddressError('id-range', `${text()} carries client id ${id}, which is reserved: ids run from 1 to 65534`);
  }
}

export function parseLinkMac(text: string): LinkMac {
  return decodeLinkMac(parseMacOctets(text));
}

/** The octets of the link MAC for one end of a client's link. */
export function linkMacOctets(mac: LinkMac): number[] {
  return [...LINK_OUI, ROLE_OCTET[mac.role], mac.id >> 8, mac.id & 0xff];
}

/** Canonical form, as in the spec: upper-case hex pairs separated by ':'. */
export function formatMacOctets(octets: readonly number[]): string {
  return octets.map((octet) => HEX_PAIRS[octet] ?? '??').join(':');
}

const HEX_PAIRS: readonly string[] = Array.from({ length: 256 }, (_, octet) => octet.toString(16).toUpperCase().padStart(2, '0'));

export function formatLinkMac(mac: LinkMac): string {
  return formatMacOctets(linkMacOctets(mac));
}

/** The MAC of the client end of a client's link. */
export function clientMacOf(id: ClientId): string {
  return formatLinkMac({ role: 'client', id });
}

/** The MAC of the provider end of a client's link. */
export function providerMacOf(id: ClientId): string {
  return formatLinkMac({ role: 'provider', id });
}

/** Whether two MAC texts (any accepted spelling) name the same address; false if either is not one. */
export function sameMac(a: string, b: string): boolean {
  try {
    const x = parseMacOctets(a);
    const y = parseMacOctets(b);
    return x.every((octet, i) => octet === y[i]);
  } catch {
    return false;
  }
}
