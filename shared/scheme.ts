// The constants of Spectrum's inter-VM link addressing scheme, in one place.
// Spec: creating-vms.adoc "Networking"; networking-facts.md section 1 (a).

/** Organisationally unique identifier carried by every inter-VM link MAC. */
export const LINK_OUI: readonly [number, number, number] = [0x0a, 0xb3, 0xec];

/** Octet 4 of a link MAC: the top bit marks the provider (router) end; other bits are reserved. */
export const ROLE_OCTET = {
  provider: 0x80,
  client: 0x00,
} as const;

/** Client addresses live in 100.64.0.0/16; the id is the last two octets. */
export const CLIENT_NETWORK = '100.64.0.0/16';
export const CLIENT_NETWORK_BASE = (100 << 24) | (64 << 16); // 100.64.0.0 as an unsigned 32-bit value

/**
 * Valid client ids. 0 and 65535 are excluded: they would give 100.64.0.0 (the network address)
 * and 100.64.255.255 (the broadcast address of the /16).
 */
export const CLIENT_ID_MIN = 1;
export const CLIENT_ID_MAX = 65534;

/** Spectrum puts this gateway address, as a /32, on every provider-side link. */
export const GATEWAY_IP = '169.254.0.1';
