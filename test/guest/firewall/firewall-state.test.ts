import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FirewallError } from '../../../guest/firewall/firewall-error.js';
import { advanceFirewallState, firewallStateOf } from '../../../guest/firewall/firewall-state.js';
import { type FirewallModel, sameFirewallModel, validateFirewallModel } from '../../../guest/firewall/model.js';
import { FLOW_SET, desiredElements, diffElements, elementCommands } from '../../../guest/firewall/ruleset.js';
import { anyClientIp, anyFirewallModel, anyInterfaceName } from './arbitraries.js';

/** A valid previous model, some with isolated links. */
const anyPrevious: fc.Arbitrary<FirewallModel> = fc.tuple(anyFirewallModel, fc.array(anyInterfaceName, { maxLength: 3 })).map(([model, isolated]) => {
  const taken = new Set([...model.providerLinks.map((link) => link.ifname), ...model.uplinks]);
  const isolatedLinks = [...new Set(isolated.filter((name) => !taken.has(name)))];
  return { ...model, ...(isolatedLinks.length > 0 && { isolatedLinks }) };
});

/** Addresses as a next model may give them: mostly canonical, some spelled otherwise, some wrong. */
const anyAddressText = (known: readonly string[]): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 6, arbitrary: anyClientIp },
    { weight: 3, arbitrary: known.length > 0 ? fc.constantFrom(...known) : anyClientIp },
    { weight: 1, arbitrary: anyClientIp.map((ip) => ip.replace(/\.(\d)$/, '.0$1')) },
    { weight: 1, arbitrary: fc.constantFrom('100.64.0.0', '10.0.0.1', 'not-an-ip', '100.64.255.255', ' 100.64.0.1') },
  );

const anyLinkName = (known: readonly string[]): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 6, arbitrary: anyInterfaceName },
    { weight: 3, arbitrary: known.length > 0 ? fc.constantFrom(...known) : anyInterfaceName },
    { weight: 1, arbitrary: fc.constantFrom('a*b', 'a"b', '', 'abcdefghijklmnop', '-x') },
  );

/** A next model derived from the previous one: links kept, moved, renumbered, added; sometimes other uplinks, pairs or isolated links. */
const anyNext = (previous: FirewallModel): fc.Arbitrary<FirewallModel> => {
  const names = [...previous.providerLinks.map((link) => link.ifname), ...previous.uplinks, ...(previous.isolatedLinks ?? [])];
  const ips = previous.providerLinks.map((link) => link.clientIp);
  return fc
    .record({
      kept: fc.array(fc.record({ keep: fc.integer({ min: 0, max: 5 }).map((draw) => draw > 0), renumber: fc.integer({ min: 0, max: 9 }), ip: anyAddressText(ips) }), {
        minLength: previous.providerLinks.length,
        maxLength: previous.providerLinks.length,
      }),
      added: fc.array(fc.record({ ifname: anyLinkName(names), clientIp: anyAddressText(ips) }), { maxLength: 4 }),
      order: fc.array(fc.nat(), { minLength: 20, maxLength: 20 }),
      uplinks: fc.option(fc.array(anyLinkName(names), { maxLength: 3 }), { freq: 4 }),
      isolatedLinks: fc.option(fc.option(fc.array(anyLinkName(names), { maxLength: 3 })), { freq: 4 }),
      allowedPairs: fc.option(fc.array(fc.record({ from: anyAddressText(ips), to: anyAddressText(ips) }), { maxLength: 3 }), { freq: 4 }),
    })
    .map(({ kept, added, order, uplinks, isolatedLinks, allowedPairs }) => {
      const links = previous.providerLinks.flatMap((link, index) => {
        const change = kept[index];
        if (change === undefined) return [link];
        if (!change.keep) return [];
        return [change.renumber === 0 ? { ifname: link.ifname, clientIp: change.ip } : { ...link }];
      });
      for (const [index, link] of added.entries()) links.splice((order[index] ?? 0) % (links.length + 1), 0, link);
      // Sometimes the links come in another order.
      if ((order[19] ?? 0) % 4 === 0) links.reverse();
      const isolated = isolatedLinks === null ? previous.isolatedLinks : (isolatedLinks ?? undefined);
      return {
        providerLinks: links,
        uplinks: uplinks ?? [...previous.uplinks],
        allowedPairs: allowedPairs ?? previous.allowedPairs.map((pair) => ({ ...pair })),
        ...(isolated !== undefined && { isolatedLinks: [...isolated] }),
      };
    });
};

type Outcome = { model: FirewallModel; commands: string; diff: unknown } | { error: string };

function full(previous: FirewallModel, next: FirewallModel): Outcome {
  try {
    const model = validateFirewallModel(next);
    const diff = diffElements(desiredElements(validateFirewallModel(previous)), desiredElements(model));
    return { model, diff, commands: elementCommands(diff) };
  } catch (error) {
    if (error instanceof FirewallError) return { error: error.kind };
    throw error;
  }
}

function incremental(previous: FirewallModel, next: FirewallModel): Outcome {
  try {
    const step = advanceFirewallState(firewallStateOf(validateFirewallModel(previous)), next);
    // The state's index describes its model, so the next step starts from the truth.
    expect(step.state).toEqual(firewallStateOf(step.state.model));
    return { model: step.state.model, diff: step.diff, commands: elementCommands(step.diff) };
  } catch (error) {
    if (error instanceof FirewallError) return { error: error.kind };
    throw error;
  }
}

describe('advanceFirewallState', () => {
  it('gives exactly what validating, listing and diffing the whole model gives, or the same FirewallError', () => {
    fc.assert(
      fc.property(
        anyPrevious.chain((previous) => fc.tuple(fc.constant(previous), anyNext(previous))),
        ([previous, next]) => {
          const outcome = incremental(previous, next);
          expect(outcome).toEqual(full(previous, next));
          // The flow set is traffic's: no model change ever touches it (it would forget counts).
          if ('commands' in outcome) expect(outcome.commands).not.toContain(FLOW_SET);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('chains: stepping through several models ends where validating the last one does', () => {
    fc.assert(
      fc.property(
        anyPrevious.chain((first) => fc.tuple(fc.constant(first), anyNext(first))).chain(([first, second]) => fc.tuple(fc.constant(first), fc.constant(second), anyNext(first))),
        ([first, second, third]) => {
          let state = firewallStateOf(validateFirewallModel(first));
          for (const next of [second, third]) {
            const expected = full(state.model, next);
            try {
              const step = advanceFirewallState(state, next);
              expect({ model: step.state.model, diff: step.diff, commands: elementCommands(step.diff) }).toEqual(expected);
              state = step.state;
            } catch (error) {
              if (!(error instanceof FirewallError)) throw error;
              expect({ error: error.kind }).toEqual(expected);
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a link plugged in among a thousand: one element per set it belongs to, in both tables', () => {
    const providerLinks = Array.from({ length: 1000 }, (_, index) => ({ ifname: `snp${index + 1}`, clientIp: `100.64.${(index + 1) >> 8}.${(index + 1) & 255}` }));
    const previous = validateFirewallModel({ providerLinks, uplinks: ['eth0'], allowedPairs: [] });
    const next = { providerLinks: [...providerLinks, { ifname: 'snp1001', clientIp: '100.64.3.233' }], uplinks: ['eth0'], allowedPairs: [] };
    const step = advanceFirewallState(firewallStateOf(previous), next);
    expect(elementCommands(step.diff)).toBe(
      [
        'add element inet spectrum_netd client_links { "snp1001" }',
        'add element inet spectrum_netd client_sources { "snp1001" . 100.64.3.233 }',
        'add element inet spectrum_netd client_ips { 100.64.3.233 }',
        // The ARP guard's sets, in the same transaction: elements too, never a rule or chain.
        'add element arp spectrum_netd client_links { "snp1001" }',
        'add element arp spectrum_netd client_sources { "snp1001" . 100.64.3.233 }',
        '',
      ].join('\n'),
    );
    expect(step.state.model).toEqual(validateFirewallModel(next));
  });

  it('an address handed from one link to another stays in client_ips; a repeat of it is refused as validateFirewallModel refuses it', () => {
    const previous = firewallStateOf(
      validateFirewallModel({
        providerLinks: [
          { ifname: 'snp1', clientIp: '100.64.0.1' },
          { ifname: 'snp2', clientIp: '100.64.0.2' },
        ],
        uplinks: ['eth0'],
        allowedPairs: [],
      }),
    );
    const moved = advanceFirewallState(previous, { providerLinks: [{ ifname: 'snp2', clientIp: '100.64.0.2' }, { ifname: 'snp3', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] });
    expect(elementCommands(moved.diff)).toBe(
      [
        'delete element inet spectrum_netd client_links { "snp1" }',
        'delete element inet spectrum_netd client_sources { "snp1" . 100.64.0.1 }',
        'add element inet spectrum_netd client_links { "snp3" }',
        'add element inet spectrum_netd client_sources { "snp3" . 100.64.0.1 }',
        'delete element arp spectrum_netd client_links { "snp1" }',
        'delete element arp spectrum_netd client_sources { "snp1" . 100.64.0.1 }',
        'add element arp spectrum_netd client_links { "snp3" }',
        'add element arp spectrum_netd client_sources { "snp3" . 100.64.0.1 }',
        '',
      ].join('\n'),
    );
    const repeat = { providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }, { ifname: 'snp2', clientIp: '100.64.0.2' }, { ifname: 'snp3', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] };
    expect(() => advanceFirewallState(previous, repeat)).toThrow(expect.objectContaining({ kind: 'duplicate-client-ip' }));
    const uplinkAsLink = { providerLinks: [{ ifname: 'eth0', clientIp: '100.64.0.3' }], uplinks: ['eth0'], allowedPairs: [] };
    expect(() => advanceFirewallState(previous, uplinkAsLink)).toThrow(expect.objectContaining({ kind: 'interface-role' }));
  });
});

describe('sameFirewallModel', () => {
  it('says what comparing the models as JSON says', () => {
    fc.assert(
      fc.property(
        anyPrevious.chain((previous) => fc.tuple(fc.constant(previous), fc.oneof(anyNext(previous), fc.constant(structuredClone(previous))))),
        ([a, b]) => {
          expect(sameFirewallModel(a, b)).toBe(JSON.stringify(a) === JSON.stringify(b));
        },
      ),
    );
  });
});
