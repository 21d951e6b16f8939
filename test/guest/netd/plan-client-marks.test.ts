// Client mode's mark (CLIENT_MARK): what `spectrum-netd client` configures carries it in the
// kernel, and every plan removes what carries it and is no longer wanted, never anything else.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CLIENT_MARK, type KernelView, RTPROT_BOOT, addressKey, applyEvent, emptyView, routeKey } from '../../../guest/netd/kernel-view.js';
import { classifyLink } from '../../../guest/netd/link-class.js';
import { type Operation, type Plan, type PlanOptions, applyOperation, plan } from '../../../guest/netd/plan.js';
import { anyView, clientOptions, cloneView, providerOptions } from './view-arbitraries.js';

const RTPROT_KERNEL = 2;

/** Plan and apply until nothing is left to do (two rounds are enough: the plan converges). */
function converge(view: KernelView, options: PlanOptions): Plan {
  for (const operation of plan(view, options).operations) applyOperation(view, operation);
  return plan(view, options);
}

/** A view and client-mode options that --ignore some of its links (names it has, and one it lacks). */
const anyViewAndIgnored: fc.Arbitrary<[KernelView, PlanOptions]> = anyView.chain((view) =>
  fc
    .subarray([...[...view.links.values()].map((link) => link.name), 'absent0'])
    .map((ignored): [KernelView, PlanOptions] => [view, { ...clientOptions, ignored: new Set(ignored) }]),
);

const isOwnRemoval = (operation: Operation): boolean =>
  (operation.kind === 'address-del' && operation.address.proto === CLIENT_MARK) || (operation.kind === 'route-del' && operation.route.protocol === CLIENT_MARK);

/** The first client link, by ifindex: the one given the gateway and default routes. */
function primaryOf(view: KernelView, options: PlanOptions): number | null {
  const links = [...view.links.values()].sort((a, b) => a.ifindex - b.ifindex);
  return links.find((link) => classifyLink(link, options.ignored).role === 'client')?.ifindex ?? null;
}

/**
 * What carries the mark in a converged view is wanted: a client link's own /32, the primary's
 * gateway /32 and default route; or, for an address, kept as the last of its link while routes
 * not ours go out of it (and said so in the link's report).
 */
function expectOnlyWantedMarks(view: KernelView, options: PlanOptions, result: Plan): void {
  const primary = primaryOf(view, options);
  for (const address of view.addresses.values()) {
    if (address.proto !== CLIENT_MARK) continue;
    const link = view.links.get(address.ifindex);
    const linkClass = link === undefined ? null : classifyLink(link, options.ignored);
    if (linkClass?.role === 'client' && linkClass.ownIp === address.ip && address.prefixLength === 32) continue;
    const others = [...view.addresses.values()].filter((other) => other.ifindex === address.ifindex && other.proto !== CLIENT_MARK);
    const theirRoutes = [...view.routes.values()].filter((route) => route.oif === address.ifindex && route.protocol !== CLIENT_MARK && route.protocol !== RTPROT_KERNEL);
    expect(others).toEqual([]);
    expect(theirRoutes.length).toBeGreaterThan(0);
    const report = result.links.find((link) => link.ifindex === address.ifindex);
    expect(report?.kept).toContain(`${address.ip}/${address.prefixLength}`);
    expect(report?.note).toContain(`keeps ${report?.kept?.join(', ') ?? ''} of client mode's`);
  }
  for (const route of view.routes.values()) {
    if (route.protocol !== CLIENT_MARK) continue;
    expect(route.oif).toBe(primary);
    expect(route.priority).toBe(0);
    expect(route.dstLength === 0 ? route.gateway === '169.254.0.1' : route.dst === '169.254.0.1' && route.dstLength === 32 && route.gateway === null).toBe(true);
  }
}

describe('client mode marks what it configures, and removes only what carries its mark', () => {
  it('marks every address and route it adds; a provider marks none (its routes stay RTPROT_BOOT, as `ip route add` makes them)', () => {
    fc.assert(
      fc.property(anyViewAndIgnored, ([view, options]) => {
        for (const operation of plan(view, options).operations) {
          if (operation.kind === 'address-add') expect(operation.address.proto).toBe(CLIENT_MARK);
          if (operation.kind === 'route-set') expect(operation.route.protocol).toBe(CLIENT_MARK);
        }
        for (const operation of plan(view, providerOptions).operations) {
          if (operation.kind === 'address-add') expect(operation.address.proto).toBe(0);
          if (operation.kind === 'route-set') expect(operation.route.protocol).toBe(RTPROT_BOOT);
        }
      }),
    );
  });

  it('never removes an address or route without its mark', () => {
    fc.assert(
      fc.property(anyViewAndIgnored, ([view, options]) => {
        for (const operation of plan(view, options).operations) {
          if (operation.kind === 'address-del' || operation.kind === 'route-del') expect(isOwnRemoval(operation)).toBe(true);
        }
      }),
    );
  });

  it("never deletes a link's last IPv4 address while routes not its own go out of it (the kernel would drop them with it)", () => {
    fc.assert(
      fc.property(anyViewAndIgnored, ([view, options]) => {
        const operations = plan(view, options).operations;
        const after = cloneView(view);
        for (const operation of operations) applyOperation(after, operation);
        for (const operation of operations) {
          if (operation.kind !== 'address-del') continue;
          const { ifindex } = operation.address;
          const left = [...after.addresses.values()].some((address) => address.ifindex === ifindex);
          // Those still there once the plan is done (not replaced by its own).
          const theirs = [...after.routes.values()].some((route) => route.oif === ifindex && route.protocol !== CLIENT_MARK && route.protocol !== RTPROT_KERNEL);
          expect(left || !theirs).toBe(true);
        }
      }),
    );
  });

  it('converges, whatever links it is told to ignore', () => {
    fc.assert(
      fc.property(anyViewAndIgnored, ([view, options]) => {
        const again = converge(view, options);
        expect(again.operations).toEqual([]);
        expect(again.unknownSysctls).toEqual([]);
      }),
    );
  });

  it('leaves marked only what it wants, whatever earlier runs marked', () => {
    fc.assert(
      fc.property(anyViewAndIgnored, ([view, options]) => {
        const result = converge(view, options);
        expectOnlyWantedMarks(view, options, result);
      }),
    );
  });

  it('cleans up after a change between two runs (links ignored, MACs changed), and keeps all that is not its own', () => {
    const anyChange = fc.record({
      ignoredFirst: fc.array(fc.nat(), { maxLength: 3 }),
      ignoredThen: fc.array(fc.nat(), { maxLength: 3 }),
      newMacs: fc.array(fc.tuple(fc.nat(), fc.constantFrom('0a:b3:ec:00:00:01', '0a:b3:ec:00:00:04', '0a:b3:ec:80:00:04', '52:54:00:12:34:56')), { maxLength: 3 }),
    });
    fc.assert(
      fc.property(anyView, anyChange, (generated, change) => {
        const view = cloneView(generated);
        const links = [...view.links.values()];
        const names = (picks: readonly number[]): Set<string> => new Set(picks.map((pick) => links[pick % links.length]?.name ?? ''));
        converge(view, { ...clientOptions, ignored: names(change.ignoredFirst) });
        const addressesNotOurs = (current: KernelView): string[] => [...current.addresses.values()].filter((address) => address.proto !== CLIENT_MARK).map(addressKey);
        const routesNotOurs = (current: KernelView): Map<string, string> =>
          new Map([...current.routes.values()].filter((route) => route.protocol !== CLIENT_MARK).map((route) => [routeKey(route), `${route.oif} ${route.gateway}`]));
        const addressesBefore = addressesNotOurs(view);
        const routesBefore = routesNotOurs(view);
        for (const [pick, mac] of change.newMacs) {
          const link = view.links.get(links[pick % links.length]?.ifindex ?? -1);
          if (link !== undefined && !link.loopback) applyEvent(view, { kind: 'link', op: 'new', link: { ...link, mac } });
        }
        const options = { ...clientOptions, ignored: names(change.ignoredThen) };
        const result = converge(view, options);
        expectOnlyWantedMarks(view, options, result);
        // Nothing without the mark went, but what the second run replaced with its own (the same
        // prefix and metric: the gateway's /32, the default route).
        expect(addressesNotOurs(view)).toEqual(addressesBefore);
        const routesAfter = routesNotOurs(view);
        for (const [key, route] of routesBefore) {
          if (view.routes.get(key)?.protocol !== CLIENT_MARK) expect(routesAfter.get(key)).toBe(route);
        }
      }),
    );
  });

  it('plans the same in a provider whatever marks the kernel holds: the mark is client mode’s alone', () => {
    const unmarked = (view: KernelView): KernelView => {
      const copy = cloneView(view);
      for (const [key, address] of copy.addresses) copy.addresses.set(key, { ...address, proto: 0 });
      for (const [key, route] of copy.routes) copy.routes.set(key, { ...route, protocol: RTPROT_BOOT });
      return copy;
    };
    const withoutMarks = (operations: readonly Operation[]): unknown[] =>
      operations.map((operation) => {
        if (operation.kind === 'address-add' || operation.kind === 'address-del') return { ...operation, address: { ...operation.address, proto: 0 } };
        if (operation.kind === 'route-set' || operation.kind === 'route-del') return { ...operation, route: { ...operation.route, protocol: RTPROT_BOOT } };
        return operation;
      });
    fc.assert(
      fc.property(anyView, (view) => {
        expect(withoutMarks(plan(view, providerOptions).operations)).toEqual(withoutMarks(plan(unmarked(view), providerOptions).operations));
      }),
    );
  });
});

describe('client mode across runs, by example', () => {
  const GW = '169.254.0.1';
  /** An app VM with two client links, eth0 (id 5) and eth1 (id 6), and an operator's address and route on eth0. */
  function appVm(): KernelView {
    const view = emptyView();
    view.links.set(1, { ifindex: 1, name: 'lo', mac: '00:00:00:00:00:00', up: true, loopback: true, group: 0 });
    view.links.set(3, { ifindex: 3, name: 'eth0', mac: '0a:b3:ec:00:00:05', up: false, loopback: false, group: 0 });
    view.links.set(4, { ifindex: 4, name: 'eth1', mac: '0a:b3:ec:00:00:06', up: false, loopback: false, group: 0 });
    view.addresses.set('3/192.0.2.9/24', { ifindex: 3, ip: '192.0.2.9', prefixLength: 24, proto: 0 });
    view.routes.set('198.51.100.0/24@0', { dst: '198.51.100.0', dstLength: 24, oif: 3, gateway: '192.0.2.1', priority: 0, protocol: 4 });
    return view;
  }

  it('moves the gateway and default routes to the next client link once the primary is ignored, and takes its address off', () => {
    const view = appVm();
    converge(view, clientOptions);
    expect(view.routes.get('0.0.0.0/0@0')).toEqual({ dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: GW, priority: 0, protocol: CLIENT_MARK });
    const ignoring = { ...clientOptions, ignored: new Set(['eth0']) };
    const result = plan(view, ignoring);
    expect(result.operations).toEqual<Operation[]>([
      // The routes are moved by replacing them (the same prefix and metric): nothing to delete.
      { kind: 'address-del', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: CLIENT_MARK } },
      { kind: 'route-set', route: { dst: GW, dstLength: 32, oif: 4, gateway: null, priority: 0, protocol: CLIENT_MARK } },
      { kind: 'route-set', route: { dst: '0.0.0.0', dstLength: 0, oif: 4, gateway: GW, priority: 0, protocol: CLIENT_MARK } },
    ]);
    for (const operation of result.operations) applyOperation(view, operation);
    expect(plan(view, ignoring).operations).toEqual([]);
    // The operator's address and route on eth0 stay.
    expect(view.addresses.has('3/192.0.2.9/24')).toBe(true);
    expect(view.routes.get('198.51.100.0/24@0')?.oif).toBe(3);
  });

  it('removes the routes of a primary that stops being a client link, and leaves the address of a link whose routes would go with it', () => {
    const view = appVm();
    view.links.delete(4);
    view.addresses.clear();
    view.routes.clear();
    // An operator's route through eth0, which has no address but ours.
    view.routes.set('203.0.113.0/24@0', { dst: '203.0.113.0', dstLength: 24, oif: 3, gateway: null, priority: 0, protocol: RTPROT_BOOT });
    converge(view, clientOptions);
    // Its MAC changed: eth0 is a physical NIC now.
    applyEvent(view, { kind: 'link', op: 'new', link: { ...(view.links.get(3) ?? { ifindex: 3, name: 'eth0', up: true, loopback: false, group: 0 }), mac: '52:54:00:12:34:56' } });
    const result = plan(view, clientOptions);
    expect(result.operations).toEqual<Operation[]>([
      { kind: 'route-del', route: { dst: GW, dstLength: 32, oif: 3, gateway: null, priority: 0, protocol: CLIENT_MARK } },
      { kind: 'route-del', route: { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: GW, priority: 0, protocol: CLIENT_MARK } },
    ]);
    expect(result.links.find((link) => link.ifindex === 3)).toMatchObject({ kept: ['100.64.0.5/32'] });
    expect(result.links.find((link) => link.ifindex === 3)?.note).toBe(
      "addressing is left to the network manager; keeps 100.64.0.5/32 of client mode's: deleting its last IPv4 address would take routes not ours with it (203.0.113.0/24)",
    );
    for (const operation of result.operations) applyOperation(view, operation);
    // Once the operator's route is gone (or the link has another address), ours goes.
    view.routes.delete('203.0.113.0/24@0');
    expect(plan(view, clientOptions).operations).toEqual<Operation[]>([{ kind: 'address-del', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: CLIENT_MARK } }]);
  });

  it("gives the new primary the default route though a former primary's default, its own, is there", () => {
    const view = appVm();
    converge(view, clientOptions);
    // eth0 gone from the client links by its MAC: eth1 is the primary.
    applyEvent(view, { kind: 'link', op: 'new', link: { ...(view.links.get(3) ?? { ifindex: 3, name: 'eth0', up: true, loopback: false, group: 0 }), mac: '0a:b3:ec:80:00:05' } });
    const result = converge(view, clientOptions);
    expect(result.links.find((link) => link.ifindex === 4)).toMatchObject({ state: 'configured', note: null });
    expect(view.routes.get('0.0.0.0/0@0')).toMatchObject({ oif: 4, gateway: GW, protocol: CLIENT_MARK });
  });

  it("leaves a default route not its own alone, its own on the primary too, and the same route made by hand unmarked", () => {
    const view = appVm();
    converge(view, clientOptions);
    // A physical NIC's default, given later at a higher metric: both stay, as before marks.
    view.routes.set('0.0.0.0/0@100', { dst: '0.0.0.0', dstLength: 0, oif: 9, gateway: '192.0.2.1', priority: 100, protocol: 16 });
    expect(plan(view, clientOptions).operations).toEqual([]);
    // Ours replaced by hand with the same route: it is the operator's now, and stays unmarked.
    view.routes.set('0.0.0.0/0@0', { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: GW, priority: 0, protocol: RTPROT_BOOT });
    view.addresses.set('3/100.64.0.5/32', { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 0 });
    expect(plan(view, clientOptions).operations).toEqual([]);
    const ignoring = plan(view, { ...clientOptions, ignored: new Set(['eth0', 'eth1']) }).operations;
    // Ignored, eth0 loses only what still carries the mark: its gateway /32 (eth1 loses its address).
    expect(ignoring).toEqual<Operation[]>([
      { kind: 'route-del', route: { dst: GW, dstLength: 32, oif: 3, gateway: null, priority: 0, protocol: CLIENT_MARK } },
      { kind: 'address-del', address: { ifindex: 4, ip: '100.64.0.6', prefixLength: 32, proto: CLIENT_MARK } },
    ]);
  });
});
