import fc from 'fast-check';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import { clientId } from '../../../shared/client-id.js';
import { CLIENT_MARK, type KernelView, type KernelLink, RTPROT_BOOT, addressKey, emptyView, neighbourKey, routeKey, sysctlKeyId } from '../../../guest/netd/kernel-view.js';
import { SYSCTL_ABSENT, plan, type PlanOptions } from '../../../guest/netd/plan.js';
import { PROVIDER_LINK_GROUP } from '../../../shared/scheme.js';
import { hexPair } from '../../shared/arbitraries.js';

// Few ids so that duplicates (two links for one client) and leftovers for other ids show up.
const smallId = fc.integer({ min: 1, max: 6 });
const macOf = (octets: readonly number[]): string => octets.map(hexPair).join(':');

const anyMac = fc.oneof(
  smallId.map((id) => macOf([0x0a, 0xb3, 0xec, 0x80, id >> 8, id & 0xff])),
  smallId.map((id) => macOf([0x0a, 0xb3, 0xec, 0x00, id >> 8, id & 0xff])),
  fc.constant('0a:b3:ec:41:00:01'), // reserved role bits
  fc.constant('0a:b3:ec:80:00:00'), // reserved id
  fc.constant('52:54:00:12:34:56'), // a physical NIC
  fc.constant(''),
);

export const anyLinks: fc.Arbitrary<KernelLink[]> = fc
  .array(
    fc.record({
      mac: anyMac,
      up: fc.boolean(),
      name: fc.constantFrom('eth0', 'wan', 'vm1', 'vm2', 'vm3', 'x'),
      // The default, the agent's guarded group (left on a link that is no provider link any more), another.
      group: fc.constantFrom(0, PROVIDER_LINK_GROUP, 5),
    }),
    { maxLength: 7 },
  )
  .map((specs) => [
    { ifindex: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, group: 0 },
    ...specs.map((spec, index) => ({ ifindex: index + 2, name: `${spec.name}${index}`, mac: spec.mac, up: spec.up, loopback: false, group: spec.group })),
  ]);

const anyIp = fc.oneof(smallId.map((id) => clientIpTextOf(clientId(id))), fc.constantFrom('169.254.0.1', '192.0.2.7', '0.0.0.0'));

/**
 * A view with links and whatever addresses, routes and neighbours (some ours, some not): some
 * carry client mode's mark (an earlier run's, whatever links were then), others are the
 * provider's (RTPROT_BOOT), the kernel's (2) or an operator's (0, 4 static).
 */
export const anyView: fc.Arbitrary<KernelView> = anyLinks.chain((links) => {
  const ifindex = fc.constantFrom(...links.map((link) => link.ifindex));
  return fc
    .record({
      addresses: fc.array(fc.record({ ifindex, ip: anyIp, prefixLength: fc.constantFrom(32, 24), proto: fc.constantFrom(0, CLIENT_MARK) }), { maxLength: 6 }),
      routes: fc.array(
        fc.record({
          dst: anyIp,
          dstLength: fc.constantFrom(32, 0),
          oif: fc.option(ifindex),
          // An IPv6 one too (RTA_VIA, RFC 5549: an IPv4 route via an IPv6 next hop).
          gateway: fc.option(fc.constantFrom('169.254.0.1', '192.0.2.1', 'fe80::1')),
          priority: fc.constantFrom(0, 100),
          protocol: fc.constantFrom(RTPROT_BOOT, CLIENT_MARK, 2, 4),
        }),
        { maxLength: 6 },
      ),
      neighbours: fc.array(
        // Broadcast and multicast too: the kernel's NOARP entries for where it sent such packets.
        fc.record({ ifindex, ip: fc.oneof(anyIp, fc.constantFrom('255.255.255.255', '224.0.0.251')), mac: fc.option(fc.constantFrom('0a:b3:ec:00:00:01', '0a:b3:ec:00:00:02')), permanent: fc.boolean() }),
        { maxLength: 6 },
      ),
      sysctlSeed: fc.array(fc.constantFrom('0', '1', SYSCTL_ABSENT), { minLength: 16, maxLength: 16 }),
    })
    .map(({ addresses, routes, neighbours, sysctlSeed }) => {
      const view = emptyView();
      for (const link of links) view.links.set(link.ifindex, link);
      for (const a of addresses) view.addresses.set(addressKey(a), a);
      for (const r of routes) {
        const route = { ...r, dst: r.dstLength === 0 ? '0.0.0.0' : r.dst };
        view.routes.set(routeKey(route), route);
      }
      for (const n of neighbours) view.neighbours.set(neighbourKey(n), n);
      // Whatever the sysctls currently say, as the adapter would read them.
      let seed = 0;
      for (const key of plan(view, providerOptions).unknownSysctls) view.sysctls.set(sysctlKeyId(key), sysctlSeed[seed++ % 16] ?? '0');
      return view;
    });
});

export const providerOptions: PlanOptions = { mode: 'provider', ignored: new Set(), allowedPairs: [] };
export const clientOptions: PlanOptions = { mode: 'client', ignored: new Set(), allowedPairs: [] };

export function cloneView(view: KernelView): KernelView {
  return {
    links: new Map(view.links),
    addresses: new Map(view.addresses),
    routes: new Map(view.routes),
    neighbours: new Map(view.neighbours),
    sysctls: new Map(view.sysctls),
  };
}
