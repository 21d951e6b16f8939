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

/**
 * The device group (IFLA_GROUP, `ip link set dev X group N`) spectrum-netd puts every provider
 * link in before bringing it up: the link MAC prefix 0A:B3:EC:80 read as a 32-bit number
 * (0x0ab3ec80 = 179563648), unlikely to collide with a group anyone picks by hand (the kernel's
 * default is 0). A group survives a rename, so the firewall drops traffic of a provider link whose
 * name it does not know (renamed while up), as Qubes does with `iifgroup 2`.
 */
export const PROVIDER_LINK_GROUP = ((LINK_OUI[0] << 24) | (LINK_OUI[1] << 16) | (LINK_OUI[2] << 8) | ROLE_OCTET.provider) >>> 0;
