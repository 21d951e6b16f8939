import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CLIENT_MARK, type KernelEvent, RTPROT_BOOT, applyEvent, emptyView, sysctlKeyId } from '../../../guest/netd/kernel-view.js';
import {
  IP_FORWARD,
  type Operation,
  acceptLocalOf,
  applyOperation,
  arpFilterOf,
  arpIgnoreOf,
  dirtyLinks,
  disableIpv6Of,
  isRemoval,
  operationIfindex,
  plan,
} from '../../../guest/netd/plan.js';
import { PROVIDER_LINK_GROUP } from '../../../shared/scheme.js';
import { classifyLink } from '../../../guest/netd/link-class.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import { anyView, clientOptions, cloneView, providerOptions } from './view-arbitraries.js';

const converge = (view: ReturnType<typeof emptyView>, options = providerOptions): ReturnType<typeof plan> => {
  const first = plan(view, options);
  for (const operation of first.operations) applyOperation(view, operation);
  return plan(view, options);
};

describe('planner', () => {
  it('configures a provider link exactly as Spectrum does, plus the permanent neighbour and sysctls', () => {
    const view = emptyView();
    view.links.set(1, { ifindex: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, group: 0 });
    view.links.set(7, { ifindex: 7, name: 'vm5', mac: '0a:b3:ec:80:a5:46', up: false, loopback: false, group: 0 });
    view.sysctls.set(sysctlKeyId(IP_FORWARD), '0');
    view.sysctls.set(sysctlKeyId(disableIpv6Of(7)), '0');
    view.sysctls.set(sysctlKeyId(arpFilterOf(7)), '0');
    view.sysctls.set(sysctlKeyId(arpIgnoreOf(7)), '0');
    const result = plan(view, providerOptions);
    expect(result.unknownSysctls).toEqual([]);
    expect(result.operations).toEqual<Operation[]>([
      { kind: 'sysctl', key: IP_FORWARD, value: '1' },
      { kind: 'sysctl', key: disableIpv6Of(7), value: '1' },
      // ARP answered only for the link's own client: see arpFilterOf.
      { kind: 'sysctl', key: arpFilterOf(7), value: '1' },
      // ARP answered for the gateway only, not the provider's other addresses: see arpIgnoreOf.
      { kind: 'sysctl', key: arpIgnoreOf(7), value: '1' },
      // Into the firewall's guarded group in the same request that brings it up.
      { kind: 'link-up', ifindex: 7, group: PROVIDER_LINK_GROUP },
      { kind: 'address-add', address: { ifindex: 7, ip: '169.254.0.1', prefixLength: 32, proto: 0 } },
      { kind: 'route-set', route: { dst: '100.64.165.70', dstLength: 32, oif: 7, gateway: null, priority: 0, protocol: 3 } },
      { kind: 'neighbour-set', neighbour: { ifindex: 7, ip: '100.64.165.70', mac: '0a:b3:ec:00:a5:46', permanent: true } },
    ]);
    expect(result.firewall).toEqual({ providerLinks: [{ ifname: 'vm5', clientIp: '100.64.165.70' }], uplinks: [], allowedPairs: [] });
    expect(result.providerLinks).toEqual([{ ifname: 'vm5', ifindex: 7, id: 42310, clientIp: '100.64.165.70', clientMac: '0A:B3:EC:00:A5:46' }]);
  });

  it('configures a client link as the app VM script does: address, gateway route, default route', () => {
    const view = emptyView();
    view.links.set(3, { ifindex: 3, name: 'up0', mac: '0a:b3:ec:00:00:05', up: false, loopback: false, group: 0 });
    const result = plan(view, clientOptions);
    expect(result.operations).toEqual<Operation[]>([
      { kind: 'link-up', ifindex: 3 },
      { kind: 'address-add', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 236 } },
      { kind: 'route-set', route: { dst: '169.254.0.1', dstLength: 32, oif: 3, gateway: null, priority: 0, protocol: 236 } },
      { kind: 'route-set', route: { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: '169.254.0.1', priority: 0, protocol: 236 } },
    ]);
    expect(result.upstreamLink).toBeNull();
    // The same link in a provider VM: configured the same way, and it is an uplink.
    view.sysctls.set(sysctlKeyId(IP_FORWARD), '1');
    expect(plan(view, providerOptions).firewall.uplinks).toEqual(['up0']);
  });

  it('takes the address of its old client id off a client link whose MAC changed, after adding the new one', () => {
    const view = emptyView();
    view.links.set(3, { ifindex: 3, name: 'eth0', mac: '0a:b3:ec:00:00:05', up: false, loopback: false, group: 0 });
    converge(view, clientOptions);
    applyEvent(view, { kind: 'link', op: 'new', link: { ifindex: 3, name: 'eth0', mac: '0a:b3:ec:00:00:07', up: true, loopback: false, group: 0 } });
    const result = plan(view, clientOptions);
    expect(result.operations).toEqual<Operation[]>([
      { kind: 'address-add', address: { ifindex: 3, ip: '100.64.0.7', prefixLength: 32, proto: 236 } },
      // Deleted after the add: a link left without an IPv4 address loses its routes.
      { kind: 'address-del', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 236 } },
    ]);
    expect(result.links.find((link) => link.ifindex === 3)?.state).toBe('pending');
    for (const operation of result.operations) applyOperation(view, operation);
    expect([...view.addresses.values()].filter((a) => a.ifindex === 3).map((a) => a.ip)).toEqual(['100.64.0.7']);
    // An address given by hand stays: without client mode's mark, a /32 of 100.64.0.0/16 too.
    view.addresses.set('3/100.64.9.9/24', { ifindex: 3, ip: '100.64.9.9', prefixLength: 24, proto: 0 });
    view.addresses.set('3/192.0.2.9/32', { ifindex: 3, ip: '192.0.2.9', prefixLength: 32, proto: 0 });
    view.addresses.set('3/100.64.0.9/32', { ifindex: 3, ip: '100.64.0.9', prefixLength: 32, proto: 0 });
    expect(plan(view, clientOptions).operations).toEqual([]);
  });

  it("takes any other /32 of the client network off a chained provider's client link, marked or not, as before client mode's mark", () => {
    const view = emptyView();
    view.links.set(3, { ifindex: 3, name: 'up0', mac: '0a:b3:ec:00:00:07', up: true, loopback: false, group: 0 });
    view.sysctls.set(sysctlKeyId(IP_FORWARD), '1');
    view.sysctls.set(sysctlKeyId(acceptLocalOf(3)), '1');
    view.addresses.set('3/100.64.0.5/32', { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 0 });
    view.addresses.set('3/192.0.2.9/32', { ifindex: 3, ip: '192.0.2.9', prefixLength: 32, proto: 0 });
    expect(plan(view, providerOptions).operations).toEqual<Operation[]>([
      { kind: 'address-add', address: { ifindex: 3, ip: '100.64.0.7', prefixLength: 32, proto: 0 } },
      { kind: 'address-del', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 0 } },
      { kind: 'route-set', route: { dst: '169.254.0.1', dstLength: 32, oif: 3, gateway: null, priority: 0, protocol: RTPROT_BOOT } },
      { kind: 'route-set', route: { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: '169.254.0.1', priority: 0, protocol: RTPROT_BOOT } },
    ]);
  });

  it("never replaces another interface's default route, even when ours exists with a higher metric", () => {
    const view = emptyView();
    view.links.set(2, { ifindex: 2, name: 'ens3', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 });
    view.links.set(3, { ifindex: 3, name: 'eth0', mac: '0a:b3:ec:00:00:05', up: false, loopback: false, group: 0 });
    // The physical NIC is preferred: Spectrum's default was given metric 100 by hand.
    view.routes.set('0.0.0.0/0@0', { dst: '0.0.0.0', dstLength: 0, oif: 2, gateway: '192.0.2.1', priority: 0, protocol: 3 });
    view.routes.set('0.0.0.0/0@100', { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: '169.254.0.1', priority: 100, protocol: 3 });
    const result = plan(view, clientOptions);
    expect(result.operations.filter((operation) => operation.kind === 'route-set' && operation.route.dstLength === 0)).toEqual([]);
    expect(result.links.find((link) => link.ifindex === 3)?.note).toBe('a default route through another interface exists; left alone');
    // Ours alone, at metric 0: configured, nothing to change.
    view.routes.delete('0.0.0.0/0@0');
    view.routes.delete('0.0.0.0/0@100');
    expect(converge(view, clientOptions).operations).toEqual([]);
    expect(view.routes.get('0.0.0.0/0@0')).toMatchObject({ oif: 3, gateway: '169.254.0.1' });
  });

  describe('a route of ours replaced by one via an IPv6 next hop on the same link (RFC 5549: RTA_VIA)', () => {
    const VIA_IPV6 = 'fe80::1';

    it("repairs a provider link's client route: a route through the link via a gateway is not its link route", () => {
      const view = emptyView();
      view.links.set(7, { ifindex: 7, name: 'vm5', mac: '0a:b3:ec:80:a5:46', up: false, loopback: false, group: 0 });
      converge(view);
      const ours = view.routes.get('100.64.165.70/32@0');
      expect(ours).toEqual({ dst: '100.64.165.70', dstLength: 32, oif: 7, gateway: null, priority: 0, protocol: RTPROT_BOOT });
      // `ip route replace 100.64.165.70/32 via inet6 fe80::1 dev vm5` (on a link whose IPv6 someone turned back on).
      applyEvent(view, { kind: 'route', op: 'new', route: { ...ours!, gateway: VIA_IPV6 } });
      const result = plan(view, providerOptions);
      expect(result.operations).toEqual<Operation[]>([{ kind: 'route-set', route: ours! }]);
      expect(result.links.find((link) => link.ifindex === 7)?.state).toBe('pending');
    });

    it("repairs a client link's gateway /32, and its own default route, in client mode", () => {
      const view = emptyView();
      view.links.set(3, { ifindex: 3, name: 'eth0', mac: '0a:b3:ec:00:00:05', up: false, loopback: false, group: 0 });
      converge(view, clientOptions);
      const gatewayRoute = view.routes.get('169.254.0.1/32@0');
      const defaultRoute = view.routes.get('0.0.0.0/0@0');
      applyEvent(view, { kind: 'route', op: 'new', route: { ...gatewayRoute!, gateway: VIA_IPV6 } });
      expect(plan(view, clientOptions).operations).toEqual<Operation[]>([{ kind: 'route-set', route: gatewayRoute! }]);
      // Its own default (its mark) via the IPv6 next hop: set back, not taken for someone else's.
      applyEvent(view, { kind: 'route', op: 'new', route: gatewayRoute! });
      applyEvent(view, { kind: 'route', op: 'new', route: { ...defaultRoute!, gateway: VIA_IPV6 } });
      expect(plan(view, clientOptions).operations).toEqual<Operation[]>([{ kind: 'route-set', route: defaultRoute! }]);
    });

    it("leaves an operator's default route via an IPv6 next hop on the client link alone, and says it is on that link", () => {
      const view = emptyView();
      view.links.set(3, { ifindex: 3, name: 'eth0', mac: '0a:b3:ec:00:00:05', up: true, loopback: false, group: 0 });
      // `ip route add default via inet6 fe80::1 dev eth0` (boot, 3: not client mode's mark).
      view.routes.set('0.0.0.0/0@0', { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: VIA_IPV6, priority: 0, protocol: RTPROT_BOOT });
      const result = plan(view, clientOptions);
      expect(result.operations.filter((operation) => (operation.kind === 'route-set' || operation.kind === 'route-del') && operation.route.dstLength === 0)).toEqual([]);
      expect(result.links.find((link) => link.ifindex === 3)?.note).toBe('a default route not ours through this link via fe80::1 exists; left alone');
      // The same while the routes' dump fails: one it read is through this link, not another.
      expect(plan({ ...view, unreadableDefaultRoute: true, cutShort: new Set(['routes'] as const) }, clientOptions).links.find((link) => link.ifindex === 3)?.note).toBe(
        'a default route not ours through this link via fe80::1 exists; left alone',
      );
      // Through another interface as well: said as before.
      view.links.set(2, { ifindex: 2, name: 'ens3', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 });
      view.routes.set('0.0.0.0/0@100', { dst: '0.0.0.0', dstLength: 0, oif: 2, gateway: '192.0.2.1', priority: 100, protocol: RTPROT_BOOT });
      expect(plan(view, clientOptions).links.find((link) => link.ifindex === 3)?.note).toBe('a default route through another interface exists; left alone');
    });
  });

  it("gives a chained provider's first client link accept_local and names it as the way to the upstream provider", () => {
    const view = emptyView();
    view.links.set(3, { ifindex: 3, name: 'up0', mac: '0a:b3:ec:00:00:05', up: false, loopback: false, group: 0 });
    view.links.set(4, { ifindex: 4, name: 'up1', mac: '0a:b3:ec:00:00:06', up: false, loopback: false, group: 0 });
    view.sysctls.set(sysctlKeyId(IP_FORWARD), '1');
    view.sysctls.set(sysctlKeyId(acceptLocalOf(3)), '0');
    const first = plan(view, providerOptions);
    expect(first.operations).toContainEqual({ kind: 'sysctl', key: acceptLocalOf(3), value: '1' });
    // Only the first client link leads to the upstream provider (it has the gateway route).
    expect(first.operations.some((operation) => operation.kind === 'sysctl' && operation.key.ifindex === 4)).toBe(false);
    expect(first.upstreamLink).toBeNull(); // not configured yet
    expect(converge(view).upstreamLink).toEqual({ ifname: 'up0', ifindex: 3, ownIp: '100.64.0.5' });
    // An app VM (client mode) has no forwarder and no local gateway address: nothing of the kind.
    const app = emptyView();
    app.links.set(3, { ifindex: 3, name: 'up0', mac: '0a:b3:ec:00:00:05', up: false, loopback: false, group: 0 });
    const appResult = converge(app, clientOptions);
    expect(appResult.upstreamLink).toBeNull();
    expect([...app.sysctls.keys()]).not.toContain(sysctlKeyId(acceptLocalOf(3)));
  });

  it('converges: after applying a plan, planning again changes nothing', () => {
    fc.assert(
      fc.property(anyView, fc.boolean(), (view, client) => {
        const again = converge(view, client ? clientOptions : providerOptions);
        expect(again.operations).toEqual([]);
        expect(again.unknownSysctls).toEqual([]);
      }),
    );
  });

  it("never touches uplinks, ignored links or loopback, but to take them out of the guarded group in a provider, or to remove client mode's own from them in a client VM", () => {
    fc.assert(
      fc.property(anyView, fc.boolean(), (view, client) => {
        const untouchable = new Set(
          [...view.links.values()].filter((link) => ['uplink', 'ignored'].includes(classifyLink(link, new Set()).role)).map((l) => l.ifindex),
        );
        for (const operation of plan(view, client ? clientOptions : providerOptions).operations) {
          const ifindex = operationIfindex(operation);
          const untouched = ifindex === null || !untouchable.has(ifindex);
          const leavesGroup = !client && operation.kind === 'link-group' && operation.group === 0 && view.links.get(operation.ifindex)?.group === PROVIDER_LINK_GROUP;
          const ownRemoved =
            client &&
            ((operation.kind === 'address-del' && operation.address.proto === CLIENT_MARK) || (operation.kind === 'route-del' && operation.route.protocol === CLIENT_MARK));
          expect(untouched || leavesGroup || ownRemoved).toBe(true);
        }
      }),
    );
  });

  describe("the firewall's guard (a device group: it survives a rename)", () => {
    const role = (link: { readonly name: string; readonly mac: string; readonly loopback: boolean; readonly ifindex: number; readonly up: boolean; readonly group: number }): string =>
      classifyLink(link, new Set()).role;

    it('puts every provider link in the group and takes every other link out of it, in a provider; in a client VM it leaves groups alone', () => {
      fc.assert(
        fc.property(anyView, fc.boolean(), (view, client) => {
          const before = new Map([...view.links.values()].map((link) => [link.ifindex, link.group]));
          converge(view, client ? clientOptions : providerOptions);
          for (const link of view.links.values()) {
            if (client) expect(link.group).toBe(before.get(link.ifindex));
            else if (role(link) === 'provider') expect(link.group).toBe(PROVIDER_LINK_GROUP);
            else expect(link.group).toBe(before.get(link.ifindex) === PROVIDER_LINK_GROUP ? 0 : before.get(link.ifindex));
          }
        }),
      );
    });

    it('never has a provider link up outside the group, not even between two operations', () => {
      fc.assert(
        fc.property(anyView, (view) => {
          const upBefore = new Set([...view.links.values()].filter((link) => link.up).map((link) => link.ifindex));
          for (const operation of plan(view, providerOptions).operations) {
            applyOperation(view, operation);
            for (const link of view.links.values()) {
              if (link.up && !upBefore.has(link.ifindex) && role(link) === 'provider') expect(link.group).toBe(PROVIDER_LINK_GROUP);
            }
          }
        }),
      );
    });

    it('has a link join the group before the firewall changes (it only takes away) and leave it after', () => {
      fc.assert(
        fc.property(anyView, (view) => {
          for (const operation of plan(view, providerOptions).operations) {
            if (operation.kind === 'link-group') expect(isRemoval(operation)).toBe(operation.group === PROVIDER_LINK_GROUP);
            if (operation.kind === 'link-up') expect(isRemoval(operation)).toBe(false);
          }
        }),
      );
    });
  });

  it('serves each client id on one link only, and lists every served link in the firewall model', () => {
    fc.assert(
      fc.property(anyView, (view) => {
        const result = plan(view, providerOptions);
        const ips = result.firewall.providerLinks.map((link) => link.clientIp);
        expect(new Set(ips).size).toBe(ips.length);
        const providers = [...view.links.values()].filter((link) => classifyLink(link, new Set()).role === 'provider');
        expect(result.firewall.providerLinks.length).toBe(new Set(providers.map((l) => l.mac)).size);
      }),
    );
  });

  it("deletes the neighbour entries a served link's client made for any address but its own, never the kernel's broadcast ones or another link's", () => {
    const view = emptyView();
    view.links.set(1, { ifindex: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, group: 0 });
    view.links.set(5, { ifindex: 5, name: 'vm1', mac: '0a:b3:ec:80:00:01', up: true, loopback: false, group: PROVIDER_LINK_GROUP });
    view.links.set(6, { ifindex: 6, name: 'eth0', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 });
    for (const key of [IP_FORWARD, disableIpv6Of(5), arpFilterOf(5)]) view.sysctls.set(sysctlKeyId(key), '1');
    converge(view);
    const client = { ifindex: 5, ip: '100.64.0.1', mac: '0a:b3:ec:00:00:01', permanent: true };
    // Learnt from the client's ARP before the guard (another client's address, the gateway's, one
    // outside the client network), resolved or not; and what is no one's to delete.
    const taught = [
      { ifindex: 5, ip: '100.64.0.2', mac: '0a:b3:ec:00:00:01', permanent: false },
      { ifindex: 5, ip: '169.254.0.1', mac: '0a:b3:ec:00:00:01', permanent: false },
      { ifindex: 5, ip: '203.0.113.9', mac: null, permanent: false },
    ];
    const kept = [
      { ifindex: 5, ip: '255.255.255.255', mac: 'ff:ff:ff:ff:ff:ff', permanent: false },
      { ifindex: 5, ip: '224.0.0.251', mac: '01:00:5e:00:00:fb', permanent: false },
      // An operator's static entry for an address outside the client network.
      { ifindex: 5, ip: '192.0.2.7', mac: '0a:b3:ec:00:00:07', permanent: true },
      { ifindex: 6, ip: '198.51.100.1', mac: '52:54:00:00:00:01', permanent: false },
    ];
    for (const neighbour of [...taught, ...kept]) applyEvent(view, { kind: 'neighbour', op: 'new', neighbour });
    const result = plan(view, providerOptions);
    expect(result.operations).toEqual(taught.map((neighbour) => ({ kind: 'neighbour-del', neighbour })));
    // Before the firewall, with what only takes away.
    expect(result.operations.every(isRemoval)).toBe(true);
    for (const operation of result.operations) applyOperation(view, operation);
    expect([...view.neighbours.values()]).toEqual(expect.arrayContaining([client, ...kept]));
    expect(view.neighbours.size).toBe(1 + kept.length);
    expect(plan(view, providerOptions).operations).toEqual([]);
  });

  it("leaves on a served link, once converged, no neighbour entry for a unicast address but its client's, and no permanent one in the client network", () => {
    fc.assert(
      fc.property(anyView, (view) => {
        const converged = converge(view);
        const clientOf = new Map(converged.providerLinks.map((link) => [link.ifindex, link.clientIp]));
        for (const neighbour of view.neighbours.values()) {
          const clientIp = clientOf.get(neighbour.ifindex);
          if (clientIp === undefined || neighbour.ip === clientIp) continue;
          if (neighbour.permanent) expect(neighbour.ip.startsWith('100.64.')).toBe(false);
          else expect(['255.255.255.255', '224.0.0.251', '0.0.0.0']).toContain(neighbour.ip);
        }
      }),
    );
  });

  it('drops every trace of a link once it is gone: firewall entries, services, reports', () => {
    fc.assert(
      fc.property(anyView, fc.nat(), (view, pick) => {
        converge(view);
        const links = [...view.links.values()];
        const gone = links[pick % links.length];
        if (gone === undefined) return;
        applyEvent(view, { kind: 'link', op: 'del', link: gone });
        const result = plan(view, providerOptions);
        expect(result.firewall.providerLinks.some((link) => link.ifname === gone.name)).toBe(false);
        expect(result.firewall.uplinks).not.toContain(gone.name);
        expect(result.providerLinks.some((link) => link.ifindex === gone.ifindex)).toBe(false);
        expect(result.links.some((link) => link.ifindex === gone.ifindex)).toBe(false);
        for (const operation of result.operations) expect(operationIfindex(operation)).not.toBe(gone.ifindex);
      }),
    );
  });

  it('keeps a link configured across a rename: only the firewall model changes', () => {
    fc.assert(
      fc.property(anyView, (view) => {
        converge(view);
        const renamed = cloneView(view);
        for (const link of renamed.links.values()) renamed.links.set(link.ifindex, { ...link, name: `r${link.name}` });
        expect(plan(renamed, providerOptions).operations).toEqual([]);
      }),
    );
  });

  it('turns forwarding on in provider mode only', () => {
    fc.assert(
      fc.property(anyView, (view) => {
        const isForward = (operation: Operation): boolean => operation.kind === 'sysctl' && operation.key.template === IP_FORWARD.template;
        expect(plan(view, clientOptions).operations.some(isForward)).toBe(false);
        const forwarding = view.sysctls.get(sysctlKeyId(IP_FORWARD));
        expect(plan(view, providerOptions).operations.some(isForward)).toBe(forwarding === '0');
      }),
    );
  });

  it('puts the allowed pairs into the firewall model as given', () => {
    const pairs = [{ from: '100.64.0.1', to: '100.64.0.2' }];
    expect(plan(emptyView(), { ...providerOptions, allowedPairs: pairs }).firewall.allowedPairs).toEqual(pairs);
  });
});

describe('links that stop serving, or claim a client already served', () => {
  /** A provider with links (ifindex, name, mac), every sysctl read, planned and applied until nothing is left. */
  function provider(links: readonly [number, string, string][]): ReturnType<typeof emptyView> {
    const view = emptyView();
    for (const [ifindex, name, mac] of links) view.links.set(ifindex, { ifindex, name, mac, up: false, loopback: false, group: 0 });
    view.sysctls.set(sysctlKeyId(IP_FORWARD), '1');
    for (const [ifindex] of links) {
      view.sysctls.set(sysctlKeyId(disableIpv6Of(ifindex)), '1');
      view.sysctls.set(sysctlKeyId(arpFilterOf(ifindex)), '1');
    }
    return view;
  }
  /** Plan, apply, repeat with the plan's `served` (as the agent does) until the plan is empty. */
  function settle(view: ReturnType<typeof emptyView>, served: ReadonlyMap<number, string>): ReturnType<typeof plan> {
    for (let round = 0; ; round++) {
      const result = plan(view, providerOptions, new Set(), served);
      if (result.operations.length === 0 || round > 5) return result;
      for (const operation of result.operations) applyOperation(view, operation);
      served = result.served;
    }
  }
  const changeMac = (view: ReturnType<typeof emptyView>, ifindex: number, mac: string): void => {
    const link = view.links.get(ifindex);
    if (link !== undefined) applyEvent(view, { kind: 'link', op: 'new', link: { ...link, mac, name: link.name } });
  };
  const rename = (view: ReturnType<typeof emptyView>, ifindex: number, name: string): void => {
    const link = view.links.get(ifindex);
    if (link !== undefined) applyEvent(view, { kind: 'link', op: 'new', link: { ...link, name } });
  };

  it.each([
    ['a physical NIC', '52:54:00:12:34:56'],
    ["a chained provider's client link", '0a:b3:ec:00:00:07'],
    ['an undecodable inter-VM MAC', '0a:b3:ec:41:00:01'],
  ])('takes the gateway address, client route and neighbour off a provider link whose MAC becomes %s', (_, mac) => {
    const view = provider([[5, 'vm1', '0a:b3:ec:80:00:01']]);
    const before = settle(view, new Map());
    expect(before.served).toEqual(new Map([[5, '100.64.0.1']]));
    changeMac(view, 5, mac);
    const after = settle(view, before.served);
    expect([...view.addresses.values()].filter((a) => a.ip === '169.254.0.1')).toEqual([]);
    expect([...view.routes.values()].filter((r) => r.dst === '100.64.0.1')).toEqual([]);
    expect([...view.neighbours.values()].filter((n) => n.ip === '100.64.0.1')).toEqual([]);
    expect(after.served).toEqual(new Map());
    expect(after.firewall.providerLinks).toEqual([]);
    // Out of the guarded group, or the firewall would drop all its traffic: no longer named among
    // the client links, the group is all that marks it as a provider link.
    expect(view.links.get(5)?.group).toBe(0);
  });

  it('takes a served link that becomes an uplink out of the group after the firewall lets go of it, and a client link as it brings it up', () => {
    const view = provider([
      [5, 'vm1', '0a:b3:ec:80:00:01'],
      [6, 'vm2', '0a:b3:ec:80:00:02'],
    ]);
    const before = settle(view, new Map());
    expect([view.links.get(5)?.group, view.links.get(6)?.group]).toEqual([PROVIDER_LINK_GROUP, PROVIDER_LINK_GROUP]);
    changeMac(view, 5, '52:54:00:12:34:56');
    const uplink = plan(view, providerOptions, new Set(), before.served);
    const leave = uplink.operations.find((operation) => operation.kind === 'link-group');
    expect(leave).toEqual({ kind: 'link-group', ifindex: 5, group: 0 });
    expect(isRemoval(leave as Operation)).toBe(false);
    // A client link that is down comes up and leaves the group in one request.
    const link6 = view.links.get(6);
    if (link6 !== undefined) applyEvent(view, { kind: 'link', op: 'new', link: { ...link6, mac: '0a:b3:ec:00:00:07', up: false } });
    expect(plan(view, providerOptions).operations.filter((operation) => operationIfindex(operation) === 6 && operation.kind.startsWith('link'))).toEqual([
      { kind: 'link-up', ifindex: 6, group: 0 },
    ]);
  });

  it('puts an isolated link and one whose name nftables cannot hold in the group, ahead of the firewall', () => {
    const view = provider([
      [3, 'vm1', '0a:b3:ec:80:00:01'],
      [4, 'vm2', '0a:b3:ec:80:00:01'],
      [5, 'v"3', '0a:b3:ec:80:00:03'],
    ]);
    const result = plan(view, providerOptions);
    expect(result.firewall.isolatedLinks).toEqual(['vm2']);
    const grouping = result.operations.filter((operation) => operation.kind === 'link-group');
    expect(grouping).toEqual([
      { kind: 'link-group', ifindex: 4, group: PROVIDER_LINK_GROUP },
      { kind: 'link-group', ifindex: 5, group: PROVIDER_LINK_GROUP },
    ]);
    expect(grouping.every(isRemoval)).toBe(true);
    // Someone else took an isolated link out of the group: put back.
    settle(view, result.served);
    const link4 = view.links.get(4);
    if (link4 !== undefined) applyEvent(view, { kind: 'link', op: 'new', link: { ...link4, up: true, group: 0 } });
    expect(plan(view, providerOptions).operations).toContainEqual({ kind: 'link-group', ifindex: 4, group: PROVIDER_LINK_GROUP });
  });

  it('keeps a client on the link that serves it when an older link takes the same id: the newcomer is isolated', () => {
    const view = provider([
      [3, 'vm1', '0a:b3:ec:80:00:01'],
      [4, 'vm2', '0a:b3:ec:80:00:02'],
    ]);
    const before = settle(view, new Map());
    changeMac(view, 3, '0a:b3:ec:80:00:02'); // vm1 (lower ifindex) now claims client 2 too
    const after = settle(view, before.served);
    expect(view.routes.get('100.64.0.2/32@0')?.oif).toBe(4);
    expect([...view.neighbours.values()].filter((n) => n.ip === '100.64.0.2').map((n) => n.ifindex)).toEqual([4]);
    expect([...view.addresses.values()].filter((a) => a.ip === '169.254.0.1').map((a) => a.ifindex)).toEqual([4]);
    expect(after.firewall).toMatchObject({ providerLinks: [{ ifname: 'vm2', clientIp: '100.64.0.2' }], isolatedLinks: ['vm1'] });
    expect(after.links.find((link) => link.name === 'vm1')?.state).toBe('conflict');
    // Restarted (nothing remembered), the agent still leaves the client where its route goes.
    expect(plan(view, providerOptions).firewall.providerLinks).toEqual([{ ifname: 'vm2', clientIp: '100.64.0.2' }]);
  });

  it('serves no link, and masquerades out of no uplink, whose name nftables cannot hold; the rest of the firewall goes on', () => {
    const view = provider([
      [3, 'vm1', '0a:b3:ec:80:00:01'],
      [4, 'wan', '52:54:00:12:34:56'],
      [5, 'vm3', '0a:b3:ec:80:00:03'],
    ]);
    const before = settle(view, new Map());
    rename(view, 3, 'v"1');
    rename(view, 4, 'w*n');
    const after = settle(view, before.served);
    expect(() => validateFirewallModel(after.firewall)).not.toThrow();
    expect(after.firewall).toMatchObject({ providerLinks: [{ ifname: 'vm3', clientIp: '100.64.0.3' }], uplinks: [] });
    expect([...view.addresses.values()].filter((a) => a.ip === '169.254.0.1').map((a) => a.ifindex)).toEqual([5]);
    expect(after.links.find((link) => link.name === 'v"1')).toMatchObject({ state: 'conflict', note: expect.stringMatching(/kept down: .*rename it/) });
    // Renamed while up (Linux allows it since 6.2), it was taken down: the firewall cannot name
    // it, and its chains pass what comes from links they do not name.
    expect(view.links.get(3)?.up).toBe(false);
    // Renamed back, it serves again.
    rename(view, 3, 'vm1');
    expect(settle(view, after.served).firewall.providerLinks.map((link) => link.ifname)).toEqual(['vm1', 'vm3']);
  });

  it('always hands the firewall a model it accepts, whatever the links are called', () => {
    const oddName = fc.constantFrom('a"b', 'x*', 'é', 'a b', '-x', 'vm1');
    fc.assert(
      fc.property(anyView, fc.array(oddName, { minLength: 8, maxLength: 8 }), (view, names) => {
        for (const link of [...view.links.values()].filter((l) => !l.loopback)) {
          view.links.set(link.ifindex, { ...link, name: `${names[link.ifindex % 8] ?? 'x'}${link.ifindex}` });
        }
        expect(() => validateFirewallModel(converge(view).firewall)).not.toThrow();
      }),
    );
  });
});

describe('planning with links known to be configured', () => {
  const configuredProviderLinks = (result: ReturnType<typeof plan>): number[] =>
    result.links.filter((link) => link.role === 'provider' && link.state === 'configured').map((link) => link.ifindex);

  it('gives the same plan when some configured links are known to be so', () => {
    fc.assert(
      fc.property(anyView, fc.infiniteStream(fc.boolean()), (view, coin) => {
        const converged = converge(view);
        const known = new Set(configuredProviderLinks(converged).filter(() => coin.next().value));
        expect(plan(view, providerOptions, known)).toEqual(plan(view, providerOptions));
      }),
    );
  });

  it('stays the same after any kernel event, once the links the event touched are forgotten', () => {
    const anyEvent = (view: ReturnType<typeof emptyView>): fc.Arbitrary<KernelEvent> => {
      const links = [...view.links.values()];
      const routes = [...view.routes.values()];
      const neighbours = [...view.neighbours.values()];
      const addresses = [...view.addresses.values()];
      const choices: fc.Arbitrary<KernelEvent>[] = [];
      if (links.length > 0) {
        const link = fc.constantFrom(...links);
        choices.push(
          link.map((l) => ({ kind: 'link', op: 'del', link: l }) as const),
          link.map((l) => ({ kind: 'link', op: 'new', link: { ...l, up: !l.up } }) as const),
          link.map((l) => ({ kind: 'link', op: 'new', link: { ...l, mac: '0a:b3:ec:80:00:63' } }) as const),
          link.map((l) => ({ kind: 'link', op: 'new', link: { ...l, group: l.group === 0 ? PROVIDER_LINK_GROUP : 0 } }) as const),
        );
      }
      if (routes.length > 0 && links.length > 0) {
        choices.push(
          fc.constantFrom(...routes).map((r) => ({ kind: 'route', op: 'del', route: r }) as const),
          fc.tuple(fc.constantFrom(...routes), fc.constantFrom(...links)).map(([r, l]) => ({ kind: 'route', op: 'new', route: { ...r, oif: l.ifindex } }) as const),
        );
      }
      if (neighbours.length > 0) {
        choices.push(
          fc.constantFrom(...neighbours).map((n) => ({ kind: 'neighbour', op: 'del', neighbour: n }) as const),
          fc.constantFrom(...neighbours).map((n) => ({ kind: 'neighbour', op: 'new', neighbour: { ...n, permanent: false } }) as const),
        );
      }
      if (addresses.length > 0) choices.push(fc.constantFrom(...addresses).map((a) => ({ kind: 'address', op: 'del', address: a }) as const));
      return choices.length === 0 ? fc.constant({ kind: 'link', op: 'del', link: { ifindex: 999, name: 'x', mac: '', up: false, loopback: false, group: 0 } }) : fc.oneof(...choices);
    };
    fc.assert(
      fc.property(
        anyView.chain((view) => {
          const converged = converge(view);
          return anyEvent(view).map((event) => ({ view, converged, event }));
        }),
        ({ view, converged, event }) => {
          const servingIp = new Map(converged.providerLinks.map((link) => [link.clientIp, link.ifindex]));
          const dirty = new Set(dirtyLinks(event, servingIp));
          const known = new Set(configuredProviderLinks(converged).filter((ifindex) => !dirty.has(ifindex)));
          applyEvent(view, event);
          expect(plan(view, providerOptions, known)).toEqual(plan(view, providerOptions));
        },
      ),
    );
  });
});
