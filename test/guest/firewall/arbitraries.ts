import fc from 'fast-check';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import type { FirewallModel } from '../../../guest/firewall/model.js';
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
