import fc from 'fast-check';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import type { FirewallModel } from '../../../guest/firewall/model.js';
import { KERNEL_TCP_TIMEOUTS, TCP_TIMEOUT_STATES, type TcpTimeouts, clientTcpTimeouts } from '../../../guest/firewall/client-tcp-timeouts.js';
import { MAX_CLIENT_FLOW_LIMIT, MAX_CLIENT_NEW_FLOW_RATE, type TableSettings, clientNewFlowBurst } from '../../../guest/firewall/table-settings.js';
import { anyClientId } from '../../shared/arbitraries.js';

const nameHead = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789');
const nameTail = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789_.-'), maxLength: 14 });

/** Interface names in the accepted alphabet, up to 15 bytes. */
export const anyInterfaceName: fc.Arbitrary<string> = fc.tuple(nameHead, nameTail).map(([head, tail]) => head + tail);

export const anyClientIp: fc.Arbitrary<string> = anyClientId.map(clientIpTextOf);

/** Valid, canonical models: unique link names and client addresses, uplinks apart from links. */
export const anyFirewallModel: fc.Arbitrary<FirewallModel> = fc
  .record({
    links: fc.uniqueArray(fc.tuple(anyInterfaceName, anyClientId), {
      maxLength: 12,
      selector: ([name]) => name,
    }),
    uplinks: fc.array(anyInterfaceName, { maxLength: 3 }),
    pairs: fc.array(fc.tuple(anyClientIp, anyClientIp), { maxLength: 5 }),
  })
  .map(({ links, uplinks, pairs }) => {
    const seenIds = new Set<number>();
    const providerLinks = links
      .filter(([, id]) => !seenIds.has(id) && (seenIds.add(id), true))
      .map(([ifname, id]) => ({ ifname, clientIp: clientIpTextOf(id) }));
    const names = new Set(providerLinks.map((link) => link.ifname));
    return {
      providerLinks,
      uplinks: [...new Set(uplinks.filter((name) => !names.has(name)))],
      allowedPairs: [...new Map(pairs.map(([from, to]) => [`${from} ${to}`, { from, to }])).values()],
    };
  });

/** A provider's TCP timeouts (its sysctls): mostly the kernel's defaults, some states changed, to anything a sysctl holds. */
export const anyProviderTcpTimeouts: fc.Arbitrary<TcpTimeouts> = fc
  .dictionary(fc.constantFrom(...TCP_TIMEOUT_STATES), fc.oneof(fc.integer({ min: 0, max: 600 }), fc.integer({ min: 0, max: 2 ** 31 - 1 })), { maxKeys: 4 })
  .map((changed) => ({ ...KERNEL_TCP_TIMEOUTS, ...changed }));

/** Table settings: no cap or rate, the caps small and large VMs get by default, the default rate, anything nft holds; clients' TCP timeouts given or not. */
export const anyTableSettings: fc.Arbitrary<TableSettings> = fc.record(
  {
    clientFlowLimit: fc.oneof(fc.constantFrom(0, 1, 128, 4096), fc.integer({ min: 0, max: MAX_CLIENT_FLOW_LIMIT })),
    clientNewFlowRate: fc.oneof(fc.constantFrom(0, 1, 46, 100, 500), fc.integer({ min: 0, max: MAX_CLIENT_NEW_FLOW_RATE })),
    clientTcpTimeouts: anyProviderTcpTimeouts.map(clientTcpTimeouts),
  },
  { requiredKeys: ['clientFlowLimit', 'clientNewFlowRate'] },
);

/**
 * What traffic leaves in the flow set of a table made with `settings`: some client addresses
 * (0.0.0.0 among them: a DHCP client's first packets), each with the rule's expression.
 */
export const anyFlowElements = (settings: TableSettings): fc.Arbitrary<string[]> =>
  settings.clientFlowLimit === 0
    ? fc.constant([])
    : fc
        .uniqueArray(fc.oneof({ weight: 9, arbitrary: anyClientIp }, { weight: 1, arbitrary: fc.constant('0.0.0.0') }), { maxLength: 8 })
        .map((ips) => ips.map((ip) => `${ip} ct count over ${settings.clientFlowLimit}`).sort());

/** What traffic leaves in the new-flow rate set of a table made with `settings`, likewise. */
export const anyRateElements = (settings: TableSettings): fc.Arbitrary<string[]> =>
  settings.clientNewFlowRate === 0
    ? fc.constant([])
    : fc
        .uniqueArray(anyClientIp, { maxLength: 8 })
        .map((ips) => ips.map((ip) => `${ip} limit rate over ${settings.clientNewFlowRate}/second burst ${clientNewFlowBurst(settings)} packets`).sort());
