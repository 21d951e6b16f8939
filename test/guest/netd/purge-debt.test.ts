import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { filterMatches } from '../../../guest/conntrack/conntrack-filter.js';
import { type KernelView, emptyView, routeKey } from '../../../guest/netd/kernel-view.js';
import { type Plan, plan } from '../../../guest/netd/plan.js';
import {
  NO_PURGE_DEBT,
  type PurgeDebt,
  heldForPurge,
  isSettled,
  owes,
  purgeFilter,
  purgedAlone,
  releasedClientIps,
  servingLinks,
  startPurgeDebt,
  withReleased,
} from '../../../guest/netd/purge-debt.js';
import { anyView, providerOptions } from './view-arbitraries.js';

const clientIps: fc.Arbitrary<string> = fc.constantFrom('100.64.0.1', '100.64.0.2', '100.64.0.3', '100.64.1.4', '100.64.255.254');
const anyIp = fc.oneof(clientIps, fc.constantFrom('169.254.0.1', '192.0.2.7', '100.65.0.1', '100.6.4.1', '0.0.0.0'));
const servingMap = fc.array(fc.tuple(clientIps, fc.integer({ min: 2, max: 6 })), { maxLength: 6 }).map((pairs) => new Map(pairs));
const anyDebt: fc.Arbitrary<PurgeDebt> = fc.record({
  released: fc.array(clientIps, { maxLength: 4 }).map((ips) => new Set(ips)),
  sweep: fc.option(fc.array(clientIps, { maxLength: 4 }).map((keep) => ({ keep: new Set(keep) }))),
});

describe('releasedClientIps', () => {
  it('names exactly the IPs no longer served by the link that served them, sorted, each once', () => {
    fc.assert(
      fc.property(servingMap, servingMap, (before, after) => {
        const released = releasedClientIps(before, after);
        expect(released).toEqual([...new Set(released)].sort());
        for (const [ip, ifindex] of before) expect(released.includes(ip)).toBe(after.get(ip) !== ifindex);
        for (const ip of released) expect(before.has(ip)).toBe(true);
      }),
    );
  });

  it('between two plans, never names a client its link serves in both, and names every one that lost or changed its link', () => {
    fc.assert(
      fc.property(anyView, anyView, (first, second) => {
        const one = plan(first, providerOptions);
        const two = plan(second, providerOptions, new Set(), one.served);
        const released = new Set(releasedClientIps(servingLinks(one.providerLinks), servingLinks(two.providerLinks)));
        for (const link of one.providerLinks) {
          const stays = two.providerLinks.some((next) => next.ifindex === link.ifindex && next.clientIp === link.clientIp);
          expect(released.has(link.clientIp)).toBe(!stays);
        }
      }),
    );
  });
});

describe('purgeFilter', () => {
  it('matches exactly the addresses the debt owes, and is null when nothing is owed', () => {
    fc.assert(
      fc.property(anyDebt, anyIp, (debt, ip) => {
        const filter = purgeFilter(debt);
        if (filter === null) {
          expect(isSettled(debt)).toBe(true);
          expect(owes(debt, ip)).toBe(false);
        } else expect(filterMatches(filter, ip)).toBe(owes(debt, ip));
      }),
    );
  });

  it('sweeps the client network at start but for the routes a previous agent left to the same links, and its own addresses', () => {
    const view = emptyView();
    const route = (dst: string, oif: number): void => void view.routes.set(routeKey({ dst, dstLength: 32, priority: 0 }), { dst, dstLength: 32, oif, gateway: null, priority: 0, protocol: 3 });
    route('100.64.0.1', 2); // served on link 2 before and now: kept
    route('100.64.0.2', 9); // its route leads out of another link: not what link 3 served
    view.addresses.set('5/100.64.0.13/32', { ifindex: 5, ip: '100.64.0.13', prefixLength: 32, proto: 0 });
    view.addresses.set('2/169.254.0.1/32', { ifindex: 2, ip: '169.254.0.1', prefixLength: 32, proto: 0 });
    const debt = startPurgeDebt(view, [
      { clientIp: '100.64.0.1', ifindex: 2 },
      { clientIp: '100.64.0.2', ifindex: 3 },
      { clientIp: '100.64.0.3', ifindex: 4 },
    ]);
    expect(purgeFilter(debt)).toEqual({ addresses: [], sweep: { network: '100.64.0.0', prefixLength: 16, keep: ['100.64.0.1', '100.64.0.13'] } });
    expect(heldForPurge(debt, [{ clientIp: '100.64.0.1', ifindex: 2 }, { clientIp: '100.64.0.2', ifindex: 3 }])).toEqual(new Set([3]));
    expect(owes(debt, '192.0.2.7')).toBe(false);
  });
});

describe('withReleased and heldForPurge', () => {
  it('holds back exactly the links serving an IP the debt owes', () => {
    fc.assert(
      fc.property(anyDebt, fc.array(clientIps, { maxLength: 3 }), fc.array(fc.tuple(clientIps, fc.integer({ min: 2, max: 9 }))), (debt, released, links) => {
        const grown = withReleased(debt, released);
        for (const ip of released) expect(owes(grown, ip)).toBe(true);
        const list = links.map(([clientIp, ifindex]) => ({ clientIp, ifindex }));
        const held = heldForPurge(grown, list);
        for (const link of list) if (owes(grown, link.clientIp)) expect(held.has(link.ifindex)).toBe(true);
        for (const ifindex of held) expect(list.some((link) => link.ifindex === ifindex && owes(grown, link.clientIp))).toBe(true);
      }),
    );
  });
});

/**
 * The agent's bookkeeping over a run of views (each planned in turn, as the agent does), with
 * purges that succeed or fail by coin, against a model of the conntrack table: which links' VMs
 * may have entries under each client IP. No link is ever configured for an IP under which another
 * link's VM may still have entries, and a client its link keeps serving is never purged.
 */
describe('the purge bookkeeping over a run of plans', () => {
  it('never configures a link for an IP another link may still have entries under, and never purges a client that stays served', () => {
    fc.assert(
      fc.property(
        fc.array(anyView, { minLength: 1, maxLength: 6 }),
        fc.infiniteStream(fc.boolean()),
        fc.array(clientIps, { maxLength: 3 }),
        (views, coin, ghosts) => {
          const first = views[0] as KernelView;
          // Before the agent started: a previous agent's routes (metric 0, as it makes them) name
          // the link whose VM made entries; some IPs without one have entries of a VM long gone
          // (-1), but not the provider's own addresses (their entries are its own flows).
          const entries = new Map<string, Set<number>>();
          for (const route of first.routes.values()) {
            if (route.dstLength === 32 && route.priority === 0 && route.dst.startsWith('100.64.') && route.oif !== null) entries.set(route.dst, new Set([route.oif]));
          }
          const own = new Set([...first.addresses.values()].map((address) => address.ip));
          for (const ip of ghosts) if (!entries.has(ip) && !own.has(ip)) entries.set(ip, new Set([-1]));

          let debt: PurgeDebt | null = null;
          let previous: Plan | null = null;
          for (const view of views) {
            const current: Plan = plan(view, providerOptions, new Set(), previous?.served ?? new Map());
            const before = servingLinks(previous?.providerLinks ?? []);
            const now = servingLinks(current.providerLinks);
            const settledBefore = debt !== null && isSettled(debt);
            debt = withReleased(debt ?? startPurgeDebt(view, current.providerLinks), releasedClientIps(before, now));
            const filter = purgeFilter(debt);
            if (filter !== null && coin.next().value === true) {
              for (const ip of entries.keys()) if (filterMatches(filter, ip)) entries.delete(ip);
              // A client served by the same link since a settled debt is never purged.
              if (settledBefore) for (const [ip, ifindex] of now) if (before.get(ip) === ifindex) expect(filterMatches(filter, ip)).toBe(false);
              debt = NO_PURGE_DEBT;
            }
            const held = heldForPurge(debt, current.providerLinks);
            for (const link of current.providerLinks) {
              if (held.has(link.ifindex)) continue;
              const others = [...(entries.get(link.clientIp) ?? [])].filter((ifindex) => ifindex !== link.ifindex);
              expect(others, `${link.clientIp} configured on link ${link.ifindex}`).toEqual([]);
              entries.set(link.clientIp, new Set([link.ifindex]));
            }
            previous = current;
          }
        },
      ),
    );
  });
});

describe('purgedAlone', () => {
  it('owes none of the IPs purged on their own, and everything else as before; a settled sweep stays settled', () => {
    fc.assert(
      fc.property(anyDebt, fc.array(clientIps, { maxLength: 3 }), anyIp, (debt, purged, ip) => {
        const after = purgedAlone(debt, purged);
        expect(owes(after, ip)).toBe(purged.includes(ip) ? false : owes(debt, ip));
        expect(after.sweep === null).toBe(debt.sweep === null);
      }),
    );
  });

  it('is what the sweep keeps when reckoned again at start', () => {
    const debt = startPurgeDebt(emptyView(), [{ clientIp: '100.64.0.2', ifindex: 3 }], ['100.64.0.2']);
    expect(purgeFilter(debt)).toEqual({ addresses: [], sweep: { network: '100.64.0.0', prefixLength: 16, keep: ['100.64.0.2'] } });
    expect(heldForPurge(debt, [{ clientIp: '100.64.0.2', ifindex: 3 }])).toEqual(new Set());
  });
});
