import { AddressError, quoteInput } from '../../shared/address-error.js';
import { clientIpTextOf, parseClientIp } from '../../shared/client-ip.js';
import { CLIENT_NETWORK } from '../../shared/scheme.js';
import { FirewallError } from './firewall-error.js';

/** What the provider firewall must enforce: the agent's view of its links. */
export interface FirewallModel {
  /** Provider-side links (MAC 0A:B3:EC:80:hi:lo) and the one client address behind each. */
  readonly providerLinks: readonly { readonly ifname: string; readonly clientIp: string }[];
  /** Interface names to masquerade client traffic out of. */
  readonly uplinks: readonly string[];
  /** Client IPs; `from` may open connections to `to` (not the other way round). */
  readonly allowedPairs: readonly { readonly from: string; readonly to: string }[];
  /**
   * Client-facing links that serve nobody (a second link for a client id already served): their
   * traffic is client traffic that no source address passes, so it is all dropped.
   */
  readonly isolatedLinks?: readonly string[];
}

/** A model that passed validateFirewallModel: canonical addresses, no repeats. */
export type ValidFirewallModel = FirewallModel & { readonly __valid: 'ValidFirewallModel' };

/** Linux's IFNAMSIZ is 16 including the terminating NUL. */
export const MAX_INTERFACE_NAME_BYTES = 15;

/**
 * Interface names go into nft scripts as quoted strings and come back in listings: only
 * characters that need no escaping in either direction, and no nft wildcard (`*`). Every name
 * Linux, udev, Spectrum (snp1, eth0, enp1s0, wlan0) or VLANs (eth0.10) use fits.
 */
const INTERFACE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Whether a name can go into the ruleset (Linux allows more: `a"b`, `a*`). */
export function isUsableInterfaceName(name: string): boolean {
  // The pattern is ASCII only, so characters are bytes (the planner asks this of every link, every plan).
  return name.length <= MAX_INTERFACE_NAME_BYTES && INTERFACE_NAME.test(name);
}

export function assertInterfaceName(name: string, role: string): void {
  if (!isUsableInterfaceName(name)) {
    throw new FirewallError(
      'interface-name',
      `${role} interface name ${quoteInput(name)} is not usable: it must be 1 to ${MAX_INTERFACE_NAME_BYTES} bytes of letters, digits, '_', '.' or '-', starting with a letter or digit`,
    );
  }
}

/** A client address in canonical dotted form, or a FirewallError saying why not. */
export function canonicalClientIp(text: string, role: string): string {
  try {
    return clientIpTextOf(parseClientIp(text));
  } catch (error) {
    if (error instanceof AddressError) {
      throw new FirewallError('client-ip', `${role} ${quoteInput(text)} is not a client address in ${CLIENT_NETWORK}: ${error.message}`, {
        cause: error,
      });
    }
    throw error;
  }
}

/**
 * Check a model once and return it in canonical form: addresses as the codecs print them,
 * uplinks and pairs without repeats. Two links may share neither a name nor a client address,
 * and no interface may be both a provider link and an uplink.
 */
export function validateFirewallModel(model: FirewallModel): ValidFirewallModel {
  const links: { ifname: string; clientIp: string }[] = [];
  const names = new Set<string>();
  const ips = new Set<string>();
  for (const link of model.providerLinks) {
    assertInterfaceName(link.ifname, 'provider link');
    const clientIp = canonicalClientIp(link.clientIp, `client address of ${link.ifname}`);
    if (names.has(link.ifname)) {
      throw new FirewallError('duplicate-link', `provider link ${link.ifname} is listed twice: each link appears once, with its one client`);
    }
    if (ips.has(clientIp)) {
      throw new FirewallError(
        'duplicate-client-ip',
        `client address ${clientIp} is given to two provider links: each client address belongs to exactly one link`,
      );
    }
    names.add(link.ifname);
    ips.add(clientIp);
    links.push({ ifname: link.ifname, clientIp });
  }
  const uplinks = new Set<string>();
  for (const uplink of model.uplinks) {
    assertInterfaceName(uplink, 'uplink');
    if (names.has(uplink)) {
      throw new FirewallError(
        'interface-role',
        `${uplink} is both a provider link and an uplink: client links are never masqueraded into, check the agent's link classification`,
      );
    }
    uplinks.add(uplink);
  }
  const isolated = new Set<string>();
  for (const name of model.isolatedLinks ?? []) {
    assertInterfaceName(name, 'isolated link');
    if (names.has(name) || uplinks.has(name)) {
      throw new FirewallError(
        'interface-role',
        `${name} is both isolated and a provider link or uplink: an isolated link serves nobody, check the agent's link classification`,
      );
    }
    isolated.add(name);
  }
  const pairs = new Map<string, { from: string; to: string }>();
  for (const pair of model.allowedPairs) {
    const from = canonicalClientIp(pair.from, 'allowed pair source');
    const to = canonicalClientIp(pair.to, 'allowed pair destination');
    pairs.set(`${from} ${to}`, { from, to });
  }
  const valid: FirewallModel = {
    providerLinks: links,
    uplinks: [...uplinks],
    allowedPairs: [...pairs.values()],
    ...(isolated.size > 0 && { isolatedLinks: [...isolated] }),
  };
  return valid as ValidFirewallModel;
}

/**
 * Whether two models say the same thing field by field (links in the same order): what
 * JSON.stringify equality said of the planner's models, without building two strings of every link.
 */
export function sameFirewallModel(a: FirewallModel, b: FirewallModel): boolean {
  if (a === b) return true;
  const linksA = a.providerLinks;
  const linksB = b.providerLinks;
  if (linksA.length !== linksB.length) return false;
  for (let index = 0; index < linksA.length; index++) {
    const linkA = linksA[index];
    const linkB = linksB[index];
    if (linkA?.ifname !== linkB?.ifname || linkA?.clientIp !== linkB?.clientIp) return false;
  }
  const pairsA = a.allowedPairs;
  const pairsB = b.allowedPairs;
  if (pairsA.length !== pairsB.length) return false;
  for (let index = 0; index < pairsA.length; index++) {
    if (pairsA[index]?.from !== pairsB[index]?.from || pairsA[index]?.to !== pairsB[index]?.to) return false;
  }
  return sameStrings(a.uplinks, b.uplinks) && (a.isolatedLinks === undefined) === (b.isolatedLinks === undefined) && sameStrings(a.isolatedLinks ?? [], b.isolatedLinks ?? []);
}

export function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((item, index) => item === b[index]);
}
