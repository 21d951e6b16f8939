// A provider VM in miniature, for the firewall tests and the forwarding benchmark: a provider
// namespace configured as spectrum-netd configures its links (gateway /32, /32 route to the
// client, permanent neighbour), client namespaces configured as Spectrum app VMs are, and an
// "internet" namespace behind the provider's uplink that has no route back to 100.64.0.0/16,
// so clients reach it only through masquerading.
import { clientId } from '../../../shared/client-id.js';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import { clientMacOf, providerMacOf } from '../../../shared/link-mac.js';
import { GATEWAY_IP } from '../../../shared/scheme.js';
import type { FirewallModel } from '../../../guest/firewall/model.js';
import { MAX_DEFAULT_CLIENT_NEW_FLOW_RATE } from '../../../guest/firewall/table-settings.js';
import type { Harness, Netns } from '../../harness/index.js';

export const UPLINK = 'up0';
export const PROVIDER_UPLINK_IP = '192.0.2.1';
export const INTERNET_IP = '192.0.2.10';
/** The client flow limit the namespace tests' tables get: one their few flows never reach. */
export const TEST_FLOW_LIMIT = 4096;
/** The new-flow rate the namespace tests' tables get: the default on a large VM, which their flows stay under. */
export const TEST_NEW_FLOW_RATE = MAX_DEFAULT_CLIENT_NEW_FLOW_RATE;

/**
 * An nft listing (of the table or the ruleset) less the elements traffic put in the flow set, the
 * new-flow rate set and the fragment rate set: they come and go with the clients' flows, so listings compared byte for
 * byte across a test's steps leave them out, as the audit does.
 */
export function withoutFlowElements(listing: string): string {
  return listing.replace(/^(\tset (?:client_flows|client_new_flows|client_fragments) \{\n(?:\t\t(?!elements = )[^\n]*\n)*)\t\telements = \{[^}]*\}\n/gm, '$1');
}

export interface WorldClient {
  readonly id: number;
  readonly ip: string;
  readonly ns: Netns;
  /** The provider-side interface of this client's link. */
  readonly providerIf: string;
}

export interface ProviderWorld {
  readonly provider: Netns;
  readonly internet: Netns;
  readonly clients: readonly WorldClient[];
  /** The model spectrum-netd would hand the firewall for these links. */
  model(extra?: Partial<FirewallModel>): FirewallModel;
}

export const providerIfOf = (id: number): string => `snp${id}`;

export async function makeProviderWorld(harness: Harness, ids: readonly number[]): Promise<ProviderWorld> {
  const provider = await harness.namespace('prov');
  const internet = await harness.namespace('inet');
  await provider.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await harness.veth(provider, UPLINK, internet, 'eth0');
  await harness.addAddress(provider, UPLINK, `${PROVIDER_UPLINK_IP}/24`);
  await harness.addAddress(internet, 'eth0', `${INTERNET_IP}/24`);
  await harness.up(provider, UPLINK);
  await harness.up(internet, 'eth0');

  const clients: WorldClient[] = [];
  for (const raw of ids) {
    const id = clientId(raw);
    const ip = clientIpTextOf(id);
    const ns = await harness.namespace(`c${id}`);
    // No IPv6 chatter (router solicitations, MLD) from clients unless a test turns it on: it
    // would move the anti-spoofing counter under tests that compare listings byte for byte.
    await ns.exec(['sysctl', '-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.all.disable_ipv6=1']);
    const providerIf = providerIfOf(id);
    await harness.veth(provider, providerIf, ns, 'eth0');
    await provider.ip(['link', 'set', 'dev', providerIf, 'address', providerMacOf(id)]);
    await provider.ip(['address', 'add', `${GATEWAY_IP}/32`, 'dev', providerIf]);
    await harness.up(provider, providerIf);
    await provider.ip(['route', 'add', `${ip}/32`, 'dev', providerIf]);
    await provider.ip(['neigh', 'replace', ip, 'lladdr', clientMacOf(id), 'dev', providerIf, 'nud', 'permanent']);
    await ns.ip(['link', 'set', 'dev', 'eth0', 'address', clientMacOf(id)]);
    await harness.addAddress(ns, 'eth0', `${ip}/32`);
    await harness.up(ns, 'eth0');
    await ns.ip(['route', 'add', GATEWAY_IP, 'dev', 'eth0']);
    await ns.ip(['route', 'add', 'default', 'via', GATEWAY_IP, 'dev', 'eth0']);
    clients.push({ id, ip, ns, providerIf });
  }
  // The end of each veth raised first gets its carrier when its peer comes up, but the kernel's
  // linkwatch activates it some time after (seconds on a loaded machine), dropping what it sends
  // meanwhile: the tests' first packets, and the replies to them.
  await Promise.all([
    provider.linkActive(UPLINK),
    internet.linkActive('eth0'),
    ...clients.flatMap((client) => [provider.linkActive(client.providerIf), client.ns.linkActive('eth0')]),
  ]);
  return {
    provider,
    internet,
    clients,
    model: (extra = {}) => ({
      providerLinks: clients.map((client) => ({ ifname: client.providerIf, clientIp: client.ip })),
      uplinks: [UPLINK],
      allowedPairs: [],
      ...extra,
    }),
  };
}
