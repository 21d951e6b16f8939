import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import {
  ARP_COUNTER,
  ARP_SET_NAMES,
  ARP_TABLE,
  CLIENT_TCP_TIMEOUT,
  COUNTERS,
  FLOW_RATE_SET,
  FRAGMENT_RATE_SET,
  CLIENT_FRAGMENT_BURST,
  CLIENT_FRAGMENT_RATE,
  FLOW_SET,
  SET_NAMES,
  TABLE,
  arpElementsOf,
  desiredElements,
  elementCommands,
  emptyElements,
  parseTableListing,
  planFirewall,
  removeTableScript,
  replaceTableScript,
  staticArpTableText,
  staticTableText,
  strayFlowKeys,
  strayFragmentKeys,
  strayRateKeys,
} from '../../../guest/firewall/ruleset.js';
import { DEFAULT_CLIENT_TCP_TIMEOUTS, KERNEL_TCP_TIMEOUTS, clientTcpTimeouts } from '../../../guest/firewall/client-tcp-timeouts.js';
import type { TableSettings } from '../../../guest/firewall/table-settings.js';
import { PROVIDER_LINK_GROUP } from '../../../shared/scheme.js';
import { anyClientIp, anyFirewallModel, anyFlowElements, anyRateElements, anyTableSettings } from './arbitraries.js';
import { type SimulatedFirewall, applyScript, arpGuardMatches, arpTableOf, elementsOf, flowElementsOf, fragmentElementsOf, listingsOf, rateElementsOf, renderListing, tableOf } from './simulated-table.js';

/** A cap as the agent derives it for a 2 GB VM (nf_conntrack_max 65536), and a rate given. */
const SETTINGS: TableSettings = { clientFlowLimit: 4096, clientNewFlowRate: 500 };
const NO_CAP: TableSettings = { clientFlowLimit: 0, clientNewFlowRate: 500 };
const NO_RATE: TableSettings = { clientFlowLimit: 4096, clientNewFlowRate: 0 };
const TCP_TIMEOUT_RULE = 'meta l4proto 6 ct timeout set "client_tcp"';
/** The forward chain's drop of what would leave by an uplink toward the client range (a client gone). */
const LEAK_DROP = 'ip daddr 100.64.0.0/16 oifname @uplinks rt ip nexthop != 169.254.0.1 counter name "leak_drops" drop';
const RATE_SET_DECLARED = '\tset client_new_flows {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 5s\n\t}\n\n';

/** The rules of one chain of the static table, as lines. */
function chainRules(name: string, settings: TableSettings = SETTINGS): string[] {
  const match = new RegExp(`\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}\\n`).exec(staticTableText(settings));
  return (match?.[1] ?? '').split('\n').map((line) => line.trim()).filter((line) => line !== '');
}

/** Settings and what traffic left in the flow set and the rate set of a table made with them. */
const anySettingsAndFlows = anyTableSettings.chain((settings) => fc.tuple(fc.constant(settings), anyFlowElements(settings), anyRateElements(settings)));

const anyValidModel = anyFirewallModel.map(validateFirewallModel);
const anyPerLine = fc.integer({ min: 1, max: 5 });

describe('desiredElements', () => {
  it('has one client_sources entry per link, no repeats anywhere, everything sorted', () => {
    fc.assert(
      fc.property(anyValidModel, (model) => {
        const elements = desiredElements(model);
        expect(elements.client_sources).toHaveLength(model.providerLinks.length);
        expect(elements.client_links).toHaveLength(model.providerLinks.length);
        for (const name of SET_NAMES) {
          expect(new Set(elements[name]).size).toBe(elements[name].length);
          expect([...elements[name]].sort()).toEqual(elements[name]);
        }
        for (const link of model.providerLinks) expect(elements.client_sources).toContain(`"${link.ifname}" . ${link.clientIp}`);
      }),
    );
  });

  it('puts an isolated link among the client links and nowhere else: no source address passes from it', () => {
    const model = validateFirewallModel({
      providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }],
      uplinks: ['eth0'],
      allowedPairs: [],
      isolatedLinks: ['snp9'],
    });
    expect(desiredElements(model)).toEqual({
      client_links: ['"snp1"', '"snp9"'],
      client_sources: ['"snp1" . 100.64.0.1'],
      client_ips: ['100.64.0.1'],
      uplinks: ['"eth0"'],
      allowed_pairs: [],
    });
  });
});

describe('parseTableListing', () => {
  it('gives back the structure and every element, however nft wraps the lists, the flow set apart', () => {
    fc.assert(
      fc.property(anyValidModel, anySettingsAndFlows, anyPerLine, (model, [settings, flows, rates], perLine) => {
        const listing = renderListing(tableOf(staticTableText(settings), desiredElements(model), flows, rates).inet ?? { structure: '', elements: {} }, perLine);
        const parsed = parseTableListing(listing);
        expect(parsed.structure).toBe(staticTableText(settings));
        expect(parsed.elements).toEqual(desiredElements(model));
        expect(parsed.flowElements).toEqual(flows);
        expect(parsed.rateElements).toEqual(rates);
        expect(parsed.unknownSets).toEqual([]);
      }),
    );
  });

  it('reads a listing exactly as nft 1.0.6 printed it', () => {
    const printed = staticTableText(SETTINGS)
      .replace(
        '\tset client_sources {\n\t\ttype ifname . ipv4_addr\n',
        '\tset client_sources {\n\t\ttype ifname . ipv4_addr\n\t\telements = { "snp1" . 100.64.0.1,\n\t\t\t     "eth0.10" . 100.64.1.2 }\n',
      )
      .replace(
        '\t\tflags dynamic\n',
        '\t\tflags dynamic\n\t\telements = { 100.64.1.1 ct count over 4096,\n\t\t\t     100.64.1.2 ct count over 4096 }\n',
      )
      .replace(
        RATE_SET_DECLARED,
        RATE_SET_DECLARED.replace(
          '\t\ttimeout 5s\n',
          '\t\ttimeout 5s\n\t\telements = { 100.64.1.1 limit rate over 500/second burst 1000 packets,\n\t\t\t     100.64.1.2 limit rate over 500/second burst 1000 packets }\n',
        ),
      );
    const parsed = parseTableListing(printed);
    expect(parsed.structure).toBe(staticTableText(SETTINGS));
    expect(parsed.elements.client_sources).toEqual(['"eth0.10" . 100.64.1.2', '"snp1" . 100.64.0.1']);
    expect(parsed.flowElements).toEqual(['100.64.1.1 ct count over 4096', '100.64.1.2 ct count over 4096']);
    expect(parsed.rateElements).toEqual(['100.64.1.1 limit rate over 500/second burst 1000 packets', '100.64.1.2 limit rate over 500/second burst 1000 packets']);
  });
});

describe('a listing captured from nft 1.0.6 with traffic in both dynamic sets', () => {
  // `nft -n -s list table inet spectrum_netd` after two clients opened flows (flow-rate-netns).
  const capturedInet = readFileSync(fileURLToPath(new URL('fixtures/listing-with-traffic.txt', import.meta.url)), 'utf8');
  const settings: TableSettings = { clientFlowLimit: 4096, clientNewFlowRate: 20 };
  const model = validateFirewallModel({
    providerLinks: [
      { ifname: 'snp311', clientIp: '100.64.1.55' },
      { ifname: 'snp312', clientIp: '100.64.1.56' },
    ],
    uplinks: ['up0'],
    allowedPairs: [],
  });
  // With the ARP guard made for the same links.
  const arpListed = renderListing(arpTableOf(desiredElements(model)));
  const captured = (edit: (text: string) => string = (text) => text) => ({ inet: edit(capturedInet), arp: arpListed });

  it('is the table text with traffic\'s elements, which are no drift: nothing to change', () => {
    const parsed = parseTableListing(capturedInet);
    expect(parsed.structure).toBe(staticTableText(settings));
    expect(parsed.elements).toEqual(desiredElements(model));
    expect(parsed.flowElements).toEqual(['100.64.1.55 ct count over 4096', '100.64.1.56 ct count over 4096']);
    expect(parsed.rateElements).toEqual(['100.64.1.55 limit rate over 20/second burst 40 packets', '100.64.1.56 limit rate over 20/second burst 40 packets']);
    expect(parsed.fragmentElements).toEqual(['100.64.1.55 limit rate over 10/second burst 100 packets']);
    expect(planFirewall(captured(), model, settings)).toEqual({ kind: 'unchanged' });
  });

  it('is replaced once the rate differs (another --client-new-flow-rate at a restart)', () => {
    expect(planFirewall(captured(), model, { ...settings, clientNewFlowRate: 21 })).toMatchObject({ kind: 'replace-table', reason: 'structure' });
  });

  it("is the same table whatever /etc/protocols calls TCP, or without it: nft names a policy's protocol so even with -n", () => {
    for (const spelling of ['6', 'TCP', 'tcpx']) {
      const listed = captured((text) => text.replace('\t\tprotocol tcp\n', `\t\tprotocol ${spelling}\n`));
      expect(listed.inet).not.toBe(capturedInet);
      expect(planFirewall(listed, model, settings)).toEqual({ kind: 'unchanged' });
    }
    for (const spelling of ['udp', '17']) {
      expect(planFirewall(captured((text) => text.replace('\t\tprotocol tcp\n', `\t\tprotocol ${spelling}\n`)), model, settings)).toMatchObject({ kind: 'replace-table', reason: 'structure' });
    }
    // Only a policy's: a rule naming a protocol is numeric (-n) anyway, and anything else is kept as listed.
    expect(parseTableListing('table inet x {\n\tchain c {\n\t\tprotocol 6\n\t}\n}\n').structure).toContain('\t\tprotocol 6\n');
  });

  it("is replaced once clients' TCP timeouts differ (the provider's sysctls changed before a restart), or without the policy", () => {
    const tuned = clientTcpTimeouts({ ...KERNEL_TCP_TIMEOUTS, established: 3600 });
    expect(planFirewall(captured(), model, { ...settings, clientTcpTimeouts: tuned })).toMatchObject({ kind: 'replace-table', reason: 'structure' });
    expect(planFirewall(captured((text) => text.replace('\t\tmeta l4proto 6 ct timeout set "client_tcp"\n', '')), model, settings)).toMatchObject({ kind: 'replace-table', reason: 'structure' });
    expect(planFirewall(captured((text) => text.replace('time_wait : 10', 'time_wait : 30')), model, settings)).toMatchObject({ kind: 'replace-table', reason: 'structure' });
  });
});

describe('planFirewall', () => {
  it('turns any table with the right structure into exactly the desired elements, touching only what differs and never the flow set', () => {
    fc.assert(
      fc.property(anyValidModel, anyValidModel, anySettingsAndFlows, anyPerLine, (before, after, [settings, flows, rates], perLine) => {
        const current = tableOf(staticTableText(settings), desiredElements(before), flows, rates);
        const plan = planFirewall(listingsOf(current, perLine), after, settings);
        const result = plan.kind === 'unchanged' ? current : applyScript(current, plan.script);
        expect(result?.inet?.structure).toBe(staticTableText(settings));
        expect(result && elementsOf(result)).toEqual(desiredElements(after));
        expect(result && arpGuardMatches(result)).toBe(true);
        // Traffic's counts: dropping one would let its client open as many flows again.
        expect(result && flowElementsOf(result)).toEqual(flows);
        expect(result && rateElementsOf(result)).toEqual(rates);
        if (plan.kind !== 'unchanged') expect(plan).toMatchObject({ kind: 'update-elements', strayFlowKeys: [], strayRateKeys: [] });
        if (plan.kind !== 'unchanged') expect(plan.script).not.toContain(FLOW_SET);
        if (plan.kind !== 'unchanged') expect(plan.script).not.toContain(FLOW_RATE_SET);
      }),
    );
  });

  it('does nothing when the table already matches the model, whatever traffic left in the flow set', () => {
    fc.assert(
      fc.property(anyValidModel, anySettingsAndFlows, anyPerLine, (model, [settings, flows, rates], perLine) => {
        const listing = listingsOf(tableOf(staticTableText(settings), desiredElements(model), flows, rates), perLine);
        expect(planFirewall(listing, model, settings)).toEqual({ kind: 'unchanged' });
      }),
    );
  });

  it('deletes from the flow set only elements whose expression is not the rule\'s (a hand edit), keeping traffic\'s', () => {
    fc.assert(
      fc.property(
        anyValidModel,
        anyTableSettings.filter((settings) => settings.clientFlowLimit > 0),
        fc.uniqueArray(anyClientIp, { minLength: 1, maxLength: 8 }),
        fc.array(fc.constantFrom('', ' ct count over 99999', ' ct count 1'), { minLength: 8, maxLength: 8 }),
        fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
        (model, settings, ips, wrongExpressions, stray) => {
          const listed = ips.map((ip, index) => (stray[index] === true ? `${ip}${wrongExpressions[index] ?? ''}` : `${ip} ct count over ${settings.clientFlowLimit}`));
          // Another limit's text could spell the same expression: then it is not stray.
          const isStray = (element: string): boolean => element !== `${element.split(' ')[0] ?? ''} ct count over ${settings.clientFlowLimit}`;
          const expectedStray = listed.filter(isStray).map((element) => element.split(' ')[0] ?? '');
          expect(strayFlowKeys(listed, settings)).toEqual(expectedStray);
          const current = tableOf(staticTableText(settings), desiredElements(model), listed);
          const plan = planFirewall(listingsOf(current), model, settings);
          if (expectedStray.length === 0) {
            expect(plan).toEqual({ kind: 'unchanged' });
            return;
          }
          expect(plan).toMatchObject({ kind: 'update-elements', strayFlowKeys: [...expectedStray].sort() });
          const result = applyScript(current, plan.kind === 'unchanged' ? '' : plan.script);
          expect(result && flowElementsOf(result)).toEqual(listed.filter((element) => !isStray(element)).sort());
          expect(result && elementsOf(result)).toEqual(desiredElements(model));
        },
      ),
    );
  });

  it('deletes from the rate set only elements whose limit is not the rule\'s, keeping traffic\'s', () => {
    const model = validateFirewallModel({ providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] });
    const limit = 'limit rate over 500/second burst 1000 packets';
    const listed = [`100.64.0.1 ${limit}`, '100.64.0.2', '100.64.0.3 limit rate over 500/second burst 5 packets', `100.64.0.4 ${limit.replace('over ', '')}`];
    expect(strayRateKeys(listed, SETTINGS)).toEqual(['100.64.0.2', '100.64.0.3', '100.64.0.4']);
    const current = tableOf(staticTableText(SETTINGS), desiredElements(model), [], listed);
    const plan = planFirewall(listingsOf(current), model, SETTINGS);
    expect(plan).toMatchObject({ kind: 'update-elements', strayFlowKeys: [], strayRateKeys: ['100.64.0.2', '100.64.0.3', '100.64.0.4'] });
    const result = applyScript(current, plan.kind === 'unchanged' ? '' : plan.script);
    expect(result && rateElementsOf(result)).toEqual([`100.64.0.1 ${limit}`]);
  });

  it("deletes from the fragment rate set only elements whose limit is not the rule's, keeping traffic's, whatever the settings", () => {
    const model = validateFirewallModel({ providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] });
    const limit = `limit rate over ${CLIENT_FRAGMENT_RATE}/second burst ${CLIENT_FRAGMENT_BURST} packets`;
    const listed = [`100.64.0.1 ${limit}`, '100.64.0.2', `100.64.0.3 ${limit.replace('burst', 'burst 1')}`];
    expect(strayFragmentKeys(listed)).toEqual(['100.64.0.2', '100.64.0.3']);
    for (const settings of [SETTINGS, NO_RATE]) {
      const current = tableOf(staticTableText(settings), desiredElements(model), [], [], listed);
      const plan = planFirewall(listingsOf(current), model, settings);
      expect(plan).toMatchObject({ kind: 'update-elements' });
      const result = applyScript(current, plan.kind === 'unchanged' ? '' : plan.script);
      expect(result && fragmentElementsOf(result)).toEqual([`100.64.0.1 ${limit}`]);
      // Traffic's elements alone are no change.
      expect(planFirewall(listingsOf(tableOf(staticTableText(settings), desiredElements(model), [], [], [`100.64.0.1 ${limit}`])), model, settings)).toEqual({ kind: 'unchanged' });
    }
  });

  it('creates the whole table when there is none', () => {
    fc.assert(
      fc.property(anyValidModel, anyTableSettings, (model, settings) => {
        const plan = planFirewall({ inet: undefined, arp: undefined }, model, settings);
        expect(plan).toMatchObject({ kind: 'replace-table', reason: 'missing', tables: ['inet', 'arp'] });
        const result = applyScript(undefined, plan.kind === 'unchanged' ? '' : plan.script);
        expect(result?.inet?.structure).toBe(staticTableText(settings));
        expect(result && elementsOf(result)).toEqual(desiredElements(model));
        expect(result && arpGuardMatches(result)).toBe(true);
      }),
    );
  });

  it('replaces the table in one script when any line of its structure differs (the flow set\'s type, size and flags among them)', () => {
    fc.assert(
      fc.property(anyValidModel, anyValidModel, anySettingsAndFlows, fc.nat(), fc.boolean(), (before, after, [settings, flows, rates], lineDraw, remove) => {
        const lines = staticTableText(settings).split('\n');
        const editable = lines.map((_line, index) => index).filter((index) => index > 0 && lines[index] !== '' && lines[index] !== '}');
        const lineIndex = editable[lineDraw % editable.length] ?? 1;
        const edited = lines.flatMap((line, index) => (index !== lineIndex ? [line] : remove ? [] : [`${line} `]));
        const current = tableOf(edited.join('\n'), desiredElements(before), flows, rates);
        const plan = planFirewall(listingsOf(current), after, settings);
        expect(plan).toMatchObject({ kind: 'replace-table', reason: 'structure', tables: ['inet'] });
        const result = applyScript(current, plan.kind === 'unchanged' ? '' : plan.script);
        expect(result?.inet?.structure).toBe(staticTableText(settings));
        expect(result && elementsOf(result)).toEqual(desiredElements(after));
        // The ARP guard stood: its elements follow in the same transaction.
        expect(result && arpGuardMatches(result)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('replaces a table whose flow set is declared otherwise, or made with another cap, or none', () => {
    const model = validateFirewallModel({ providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] });
    const declared = '\tset client_flows {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic\n\t}\n';
    expect(staticTableText(SETTINGS)).toContain(declared);
    for (const other of [
      declared.replace('size 65535', 'size 1024'),
      declared.replace('\t\tsize 65535\n', ''),
      declared.replace('\t\tflags dynamic\n', ''),
      declared.replace('flags dynamic', 'flags dynamic,timeout'),
      declared.replace('type ipv4_addr', 'type ipv4_addr . ifname'),
    ]) {
      const listing = listingsOf(tableOf(staticTableText(SETTINGS).replace(declared, other), desiredElements(model)));
      expect(planFirewall(listing, model, SETTINGS)).toMatchObject({ kind: 'replace-table', reason: 'structure' });
    }
    for (const [made, wanted] of [
      [{ ...SETTINGS, clientFlowLimit: 8192 }, SETTINGS],
      [{ ...SETTINGS, clientNewFlowRate: 1000 }, SETTINGS],
      [NO_CAP, SETTINGS],
      [SETTINGS, NO_CAP],
      [NO_RATE, SETTINGS],
      [SETTINGS, NO_RATE],
    ] as const) {
      const listing = listingsOf(tableOf(staticTableText(made), desiredElements(model)));
      expect(planFirewall(listing, model, wanted)).toMatchObject({ kind: 'replace-table', reason: 'structure' });
    }
  });

  it('replaces a table that has elements in a set this version does not know', () => {
    const extra = staticTableText(SETTINGS).replace('\tchain prerouting {', '\tset legacy {\n\t\ttype ipv4_addr\n\t\telements = { 100.64.0.1 }\n\t}\n\n\tchain prerouting {');
    expect(planFirewall({ inet: extra, arp: staticArpTableText() }, validateFirewallModel({ providerLinks: [], uplinks: [], allowedPairs: [] }), SETTINGS).kind).toBe('replace-table');
  });
});

describe('the ARP guard', () => {
  /** The rules of one chain of the ARP guard, as lines. */
  const arpChainRules = (name: string): string[] => {
    const match = new RegExp(`\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}\\n`).exec(staticArpTableText());
    return (match?.[1] ?? '').split('\n').map((line) => line.trim()).filter((line) => line !== '');
  };

  it("hooks ARP input, before the kernel answers or learns a neighbour: from a provider link only its client's sender address or a probe's 0.0.0.0, the rest counted", () => {
    expect(ARP_TABLE).toBe('arp spectrum_netd');
    expect(staticArpTableText().startsWith(`table ${ARP_TABLE} {\n`)).toBe(true);
    expect(arpChainRules('input')).toEqual([
      'type filter hook input priority 0; policy accept;',
      // As in the inet table: a provider-group link the sets do not name (renamed while up, a
      // name they cannot hold) has all its ARP dropped.
      `iifgroup ${PROVIDER_LINK_GROUP} iifname != @client_links counter name "${ARP_COUNTER}" drop`,
      'iifname @client_links jump from_client_link',
    ]);
    expect(arpChainRules('from_client_link')).toEqual([
      'iifname . arp saddr ip @client_sources accept',
      'arp saddr ip 0.0.0.0 accept',
      `counter name "${ARP_COUNTER}" drop`,
    ]);
    // One base chain for every device: a hot-plugged link is set elements, never a chain or a device hook.
    expect(staticArpTableText().match(/type filter hook/g)).toHaveLength(1);
    expect(staticArpTableText()).not.toContain('devices');
    // Its sets are the inet table's, declared alike.
    for (const name of ARP_SET_NAMES) expect(staticArpTableText()).toContain(`\tset ${name} {\n\t\ttype ${name === 'client_links' ? 'ifname' : 'ifname . ipv4_addr'}\n\t}\n`);
    expect(staticTableText(SETTINGS)).toContain('\tset client_sources {\n\t\ttype ifname . ipv4_addr\n\t}\n');
  });

  it('holds every provider link (isolated ones too) and only the served ones with a source: an isolated link passes probes only', () => {
    fc.assert(
      fc.property(anyValidModel, fc.uniqueArray(fc.constantFrom('dup1', 'dup2', 'dup3'), { maxLength: 3 }), (model, isolated) => {
        const names = new Set(model.providerLinks.map((link) => link.ifname));
        const withIsolated = validateFirewallModel({ ...model, isolatedLinks: isolated.filter((name) => !names.has(name) && !model.uplinks.includes(name)) });
        const arp = arpElementsOf(desiredElements(withIsolated));
        expect(arp.client_links).toEqual(desiredElements(withIsolated).client_links);
        expect(arp.client_sources).toEqual(withIsolated.providerLinks.map((link) => `"${link.ifname}" . ${link.clientIp}`).sort());
        for (const name of withIsolated.isolatedLinks ?? []) {
          expect(arp.client_links).toContain(`"${name}"`);
          expect(arp.client_sources.some((source) => source.startsWith(`"${name}" . `))).toBe(false);
        }
        // Nothing else: no uplink, no client address on its own, no pair.
        expect(arp.client_ips).toEqual([]);
        expect(arp.uplinks).toEqual([]);
        expect(arp.allowed_pairs).toEqual([]);
      }),
    );
  });

  it('reads a listing exactly as nft 1.0.6 printed it', () => {
    // `nft -n -s list table arp spectrum_netd` with three links, one of them isolated.
    const printed = readFileSync(fileURLToPath(new URL('fixtures/arp-listing.txt', import.meta.url)), 'utf8');
    const model = validateFirewallModel({
      providerLinks: [
        { ifname: 'snp1', clientIp: '100.64.0.1' },
        { ifname: 'eth0.10', clientIp: '100.64.1.2' },
      ],
      uplinks: ['up0'],
      allowedPairs: [],
      isolatedLinks: ['snp9'],
    });
    const parsed = parseTableListing(printed);
    expect(parsed.structure).toBe(staticArpTableText());
    expect(parsed.elements).toEqual(arpElementsOf(desiredElements(model)));
    const inet = renderListing(tableOf(staticTableText(SETTINGS), desiredElements(model)).inet ?? { structure: '', elements: {} });
    expect(planFirewall({ inet, arp: printed }, model, SETTINGS)).toEqual({ kind: 'unchanged' });
  });

  it('is made again alone when missing or changed in any line, its elements changed alone otherwise: the inet table and its traffic are left as they are', () => {
    const anyArpState = fc.oneof(
      fc.constant({ kind: 'missing' as const }),
      fc.record({ kind: fc.constant('line' as const), lineDraw: fc.nat(), remove: fc.boolean() }),
      fc.record({ kind: fc.constant('elements' as const), model: anyValidModel }),
    );
    fc.assert(
      fc.property(anyValidModel, anySettingsAndFlows, anyArpState, (model, [settings, flows, rates], arpState) => {
        const sound = tableOf(staticTableText(settings), desiredElements(model), flows, rates);
        let current: SimulatedFirewall;
        if (arpState.kind === 'missing') current = { ...(sound.inet !== undefined && { inet: sound.inet }) };
        else if (arpState.kind === 'elements') current = { ...sound, arp: arpTableOf(desiredElements(arpState.model)) };
        else {
          const lines = staticArpTableText().split('\n');
          const editable = lines.map((_line, index) => index).filter((index) => index > 0 && lines[index] !== '' && lines[index] !== '}');
          const lineIndex = editable[arpState.lineDraw % editable.length] ?? 1;
          const edited = lines.flatMap((line, index) => (index !== lineIndex ? [line] : arpState.remove ? [] : [`${line} `]));
          current = { ...sound, arp: arpTableOf(desiredElements(model), edited.join('\n')) };
        }
        const plan = planFirewall(listingsOf(current), model, settings);
        if (arpState.kind === 'elements') {
          const same = JSON.stringify(arpElementsOf(desiredElements(arpState.model))) === JSON.stringify(arpElementsOf(desiredElements(model)));
          expect(plan.kind).toBe(same ? 'unchanged' : 'update-elements');
          if (plan.kind !== 'unchanged') expect(plan.script).not.toContain(` ${TABLE} `);
        } else {
          expect(plan).toMatchObject({ kind: 'replace-table', reason: arpState.kind === 'missing' ? 'missing' : 'structure', tables: ['arp'] });
        }
        const result = plan.kind === 'unchanged' ? current : applyScript(current, plan.script);
        expect(result && arpGuardMatches(result)).toBe(true);
        // The very same inet table: structure, elements, traffic's counts.
        expect(result?.inet).toEqual(sound.inet);
      }),
      { numRuns: 300 },
    );
  });

  it('is removed with the inet table, whichever of them exists; or either alone', () => {
    const both = tableOf(staticTableText(SETTINGS), emptyElements());
    for (const current of [both, { ...(both.inet !== undefined && { inet: both.inet }) }, { ...(both.arp !== undefined && { arp: both.arp }) }]) {
      expect(applyScript(current, removeTableScript())).toBeUndefined();
    }
    expect(applyScript(both, removeTableScript(['arp']))).toEqual({ inet: both.inet });
    expect(applyScript(both, removeTableScript(['inet']))).toEqual({ arp: both.arp });
  });

  it('is left out where the kernel has no arp family: the inet table is planned alone, whatever is listed of the ARP guard', () => {
    const noGuard = { arpGuard: false };
    fc.assert(
      fc.property(anyValidModel, anyValidModel, anySettingsAndFlows, fc.boolean(), (model, before, [settings, flows, rates], sound) => {
        const inet = tableOf(sound ? staticTableText(settings) : `${staticTableText(settings)} `, desiredElements(before), flows, rates).inet;
        const current: SimulatedFirewall = { ...(inet !== undefined && { inet }) };
        const plan = planFirewall(listingsOf(current), model, settings, noGuard);
        if (plan.kind !== 'unchanged') expect(plan.script).not.toContain(ARP_TABLE);
        if (plan.kind === 'replace-table') expect(plan.tables).toEqual(['inet']);
        const result = plan.kind === 'unchanged' ? current : applyScript(current, plan.script);
        expect(result?.arp).toBeUndefined();
        expect(result && elementsOf(result)).toEqual(desiredElements(model));
        expect(result?.inet?.structure).toBe(staticTableText(settings));
        // A listing of an ARP guard is not looked at: the same plan.
        expect(planFirewall({ ...listingsOf(current), arp: 'table arp spectrum_netd {\n}\n' }, model, settings, noGuard)).toEqual(plan);
      }),
      { numRuns: 200 },
    );
    const diff = { add: desiredElements(validateFirewallModel({ providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }], uplinks: [], allowedPairs: [] })), delete: emptyElements() };
    expect(elementCommands(diff, noGuard)).not.toContain(ARP_TABLE);
    expect(elementCommands(diff, noGuard)).toContain(`add element ${TABLE} client_links { "snp1" }`);
    expect(elementCommands(diff)).toContain(`add element ${ARP_TABLE} client_links { "snp1" }`);
  });
});

describe('the static part', () => {
  it('never depends on the model: the scripts differ only in element commands', () => {
    fc.assert(
      fc.property(anyValidModel, anyTableSettings, (model, settings) => {
        const script = replaceTableScript(desiredElements(model), settings);
        const withoutElements = script
          .split('\n')
          .filter((line) => !line.startsWith('add element '))
          .join('\n');
        expect(withoutElements).toBe(`add table ${TABLE}\ndelete table ${TABLE}\n${staticTableText(settings)}add table ${ARP_TABLE}\ndelete table ${ARP_TABLE}\n${staticArpTableText()}`);
      }),
    );
  });

  it('names no interface or client address', () => {
    for (const text of [staticTableText(SETTINGS), staticTableText(NO_CAP), staticArpTableText()]) {
      expect(text).not.toMatch(/100\.64\.\d+\.\d+(?!\/16)/);
      expect(text).not.toMatch(/"(eth|snp|wlan)/);
    }
  });

  it('emits one add command per non-empty set of each table, each element once', () => {
    fc.assert(
      fc.property(anyValidModel, (model) => {
        const desired = desiredElements(model);
        const script = elementCommands({ add: desired, delete: emptyElements() });
        const nonEmpty = SET_NAMES.filter((name) => desired[name].length > 0);
        const arpNonEmpty = ARP_SET_NAMES.filter((name) => desired[name].length > 0);
        const lines = script.split('\n').filter((line) => line !== '');
        expect(lines).toHaveLength(nonEmpty.length + arpNonEmpty.length);
        // The ARP guard's commands are the inet table's for the same sets, word for word.
        expect(lines.filter((line) => line.includes(` ${ARP_TABLE} `)).map((line) => line.replace(ARP_TABLE, TABLE))).toEqual(
          lines.filter((line) => ARP_SET_NAMES.some((name) => line.startsWith(`add element ${TABLE} ${name} `))),
        );
      }),
    );
  });

  it("passes a related packet from a client link only when its flow is that link's client's, counting the others", () => {
    const ownFlow = ['iifname . ct original ip saddr @client_sources accept', 'iifname . ct original ip daddr @client_sources accept'];
    // Established right after the guard, the leak drop and the MSS clamp: the hot path stays four rules long.
    expect(chainRules('forward').slice(4, 6)).toEqual(['ct state 0x2 accept', 'ct state 0x4 jump forward_related']);
    expect(chainRules('forward_related')).toEqual(['iifname != @client_links accept', ...ownFlow, 'counter name "isolation_drops" drop']);
    expect(chainRules('input_from_client_link').slice(0, 3)).toEqual(['ct state 0x2 accept', ...ownFlow.map((rule) => `ct state 0x4 ${rule}`)]);
    expect(chainRules('input_from_client_link').at(-1)).toBe('counter name "input_drops" drop');
    expect(staticTableText(SETTINGS)).not.toContain('ct state 0x2,0x4');
  });

  it('drops traffic to the gateway address from anywhere but client links and the provider itself', () => {
    expect(chainRules('input')).toEqual([
      'type filter hook input priority 0; policy accept;',
      'iifname @client_links jump input_from_client_link',
      'ip daddr 169.254.0.1 iif != "lo" counter name "input_drops" drop',
    ]);
  });

  it('drops, first thing in prerouting and forward, traffic from or to a provider-group link it does not name (renamed while up)', () => {
    // The group is the provider link MAC prefix 0A:B3:EC:80 as a number; nft prints it in decimal.
    expect(PROVIDER_LINK_GROUP).toBe(0x0ab3ec80);
    expect(chainRules('prerouting').slice(0, 2)).toEqual([
      'type filter hook prerouting priority -450; policy accept;',
      'iifgroup 179563648 iifname != @client_links counter name "antispoof_drops" drop',
    ]);
    // Before replies are let through: nothing reaches a link the sets do not name.
    expect(chainRules('forward').slice(0, 2)).toEqual([
      'type filter hook forward priority 0; policy accept;',
      'oifgroup 179563648 oifname != @client_links counter name "isolation_drops" drop',
    ]);
  });

  it('checks sources in prerouting before the kernel defragments (conntrack defrag is at -400), so a forged fragment takes no reassembly memory', () => {
    const priority = Number(/^type filter hook prerouting priority (-?\d+); policy accept;$/.exec(chainRules('prerouting')[0] ?? '')?.[1]);
    expect(priority).toBeLessThan(-400);
    // Every rule there holds for a fragment as for a whole datagram: addresses, which every fragment carries.
    expect(chainRules('from_client_link')[1]).toBe('iifname . ip saddr @client_sources accept');
  });

  it("holds each client's own fragments to its fragment rate before they are accepted, counted, so one client takes at most a quarter of the reassembly pool", () => {
    const limit = `limit rate over ${CLIENT_FRAGMENT_RATE}/second burst ${CLIENT_FRAGMENT_BURST} packets`;
    for (const settings of [SETTINGS, NO_CAP, NO_RATE, { clientFlowLimit: 0, clientNewFlowRate: 0 }]) {
      // Fragments only (offset or more-fragments set, 0x3fff), from the link's own client: a forged one is left to the antispoof drop.
      expect(chainRules('from_client_link', settings)).toEqual([
        `ip frag-off & 16383 != 0 iifname . ip saddr @client_sources update @${FRAGMENT_RATE_SET} { ip saddr ${limit} } counter name "fragment_drops" drop`,
        'iifname . ip saddr @client_sources accept',
        'ip saddr 0.0.0.0 ip daddr 255.255.255.255 ip frag-off & 16383 == 0 udp sport 68 udp dport 67 accept',
        'counter name "antispoof_drops" drop',
      ]);
      expect(staticTableText(settings)).toContain(`\tset ${FRAGMENT_RATE_SET} {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 15s\n\t}\n`);
      expect(staticTableText(settings)).toContain('\tcounter fragment_drops {\n');
    }
    // The pool: 4 MiB; a full-size fragment takes about 2.5 KB of it (measured on a veth); an
    // incomplete datagram's stay ipfrag_time, 30 s by default.
    const heldFragments = CLIENT_FRAGMENT_BURST + CLIENT_FRAGMENT_RATE * 30;
    expect(heldFragments * 2504).toBeLessThanOrEqual((4 * 1024 * 1024) / 4);
    // The odd large datagram passes: a `ping -s 3000` a second (3 fragments), 30 of them at once.
    expect(CLIENT_FRAGMENT_RATE).toBeGreaterThanOrEqual(3);
    expect(CLIENT_FRAGMENT_BURST).toBeGreaterThanOrEqual(90);
  });

  it('drops, ahead of the established accept, whatever would leave by an uplink toward the client range, and in output whatever would leave one from the gateway address, counted', () => {
    fc.assert(
      fc.property(anyTableSettings, (settings) => {
        const forward = chainRules('forward', settings);
        // Before replies are let through: a departed client's replies are established.
        expect(forward.indexOf(LEAK_DROP)).toBe(2);
        expect(forward.indexOf(LEAK_DROP)).toBeLessThan(forward.indexOf('ct state 0x2 accept'));
        // Only the provider's own packets enter this chain, and whatever the settings, the same rule.
        expect(chainRules('output', settings)).toEqual([
          'type filter hook output priority 0; policy accept;',
          'ip saddr 169.254.0.1 oifname @uplinks counter name "leak_drops" drop',
        ]);
        const text = staticTableText(settings);
        expect(text.split('\n').filter((line) => line.includes('"leak_drops"'))).toHaveLength(2);
        expect(text).toContain(`\tcounter ${COUNTERS.leakDrops} {\n\t}\n`);
      }),
    );
  });

  it('clamps the MSS of forwarded SYNs to the route, both ways, before replies are accepted and after the guard', () => {
    const clamp = 'tcp flags 0x2 / 0x2,0x4 tcp option maxseg size set rt mtu';
    // A SYN-ACK is established to conntrack: the clamp must see it before the established accept.
    expect(chainRules('forward').slice(1, 5)).toEqual([
      'oifgroup 179563648 oifname != @client_links counter name "isolation_drops" drop',
      LEAK_DROP,
      clamp,
      'ct state 0x2 accept',
    ]);
    // Forwarded traffic only, once: nothing for the provider's own connections.
    expect(staticTableText(SETTINGS).split('\n').filter((line) => line.includes('maxseg'))).toEqual([`\t\t${clamp}`]);
  });

  it('caps the conntrack entries of each client on the first packet of a flow only, forwarded and to the gateway, after the established and related accepts', () => {
    // Only the packet about to add an entry (not confirmed yet); a UDP flow's later packets are new too, until a reply.
    const cap = 'ct status ! 0x8 add @client_flows { ip saddr ct count over 4096 } counter name "flow_limit_drops" drop';
    const rate = 'ct status ! 0x8 update @client_new_flows { ip saddr limit rate over 500/second burst 1000 packets } counter name "flow_rate_drops" drop';
    // Forward: after replies and related packets are settled, before either way a new flow is
    // let through (to a client of an allowed pair, or out of an uplink).
    expect(chainRules('forward').slice(4)).toEqual([
      'ct state 0x2 accept',
      'ct state 0x4 jump forward_related',
      `iifname @client_links ${rate}`,
      `iifname @client_links ${cap}`,
      `iifname @client_links ${TCP_TIMEOUT_RULE}`,
      'oifname @client_links jump forward_to_client_link',
      'iifname @client_links jump forward_from_client_link',
    ]);
    // Input from a client link: before any service accepts a new flow.
    const input = chainRules('input_from_client_link');
    expect(input.slice(1, 6)).toEqual([
      'ct state 0x4 iifname . ct original ip saddr @client_sources accept',
      'ct state 0x4 iifname . ct original ip daddr @client_sources accept',
      'ip daddr { 169.254.0.1, 255.255.255.255 } udp sport 68 udp dport 67 accept',
      rate,
      cap,
    ]);
    expect(input.slice(6).every((rule) => !rule.includes('ct count') && !rule.includes('limit'))).toBe(true);
    expect(staticTableText(SETTINGS).split('\n').filter((line) => line.includes('ct count'))).toHaveLength(2);
    expect(staticTableText(SETTINGS)).toContain('\tset client_flows {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic\n\t}\n');
    expect(staticTableText({ clientFlowLimit: 1, clientNewFlowRate: 7 })).toContain('ip saddr ct count over 1 }');
  });

  it('limits the new flows of each client per second before the cap walks its entries: a packet past the rate never reaches `ct count`', () => {
    for (const chain of ['forward', 'input_from_client_link']) {
      const rules = chainRules(chain);
      const rateAt = rules.findIndex((rule) => rule.includes('@client_new_flows'));
      const capAt = rules.findIndex((rule) => rule.includes('ct count'));
      expect(rateAt).toBeGreaterThan(0);
      expect(capAt).toBe(rateAt + 1);
      // The same packets: only those about to add a conntrack entry.
      expect(rules[rateAt]).toMatch(/^(iifname @client_links )?ct status ! 0x8 update @client_new_flows \{ ip saddr limit rate over 500\/second burst 1000 packets \} counter name "flow_rate_drops" drop$/);
    }
    expect(staticTableText(SETTINGS)).toContain(RATE_SET_DECLARED);
    expect(staticTableText({ clientFlowLimit: 1, clientNewFlowRate: 7 })).toContain('ip saddr limit rate over 7/second burst 14 packets }');
  });

  it("accepts a client's DHCP renewals (port 68 to 67, gateway or broadcast) above both limits; other traffic to port 67 only below them", () => {
    const renew = 'ip daddr { 169.254.0.1, 255.255.255.255 } udp sport 68 udp dport 67 accept';
    const other = 'ip daddr { 169.254.0.1, 255.255.255.255 } udp dport 67 accept';
    for (const settings of [SETTINGS, NO_CAP, NO_RATE, { clientFlowLimit: 0, clientNewFlowRate: 0 }]) {
      const input = chainRules('input_from_client_link', settings);
      const limits = input.map((rule, index) => (rule.includes('@client_new_flows') || rule.includes('@client_flows') ? index : -1)).filter((index) => index >= 0);
      expect(input.filter((rule) => rule === renew)).toHaveLength(1);
      expect(limits.every((index) => index > input.indexOf(renew) && index < input.indexOf(other))).toBe(true);
      // Only after the established and related accepts, like every service's.
      expect(input.indexOf(renew)).toBe(3);
    }
    expect(chainRules('forward').some((rule) => rule.includes('dport 67'))).toBe(false);
  });

  it("gives a client's new TCP flows the client policy after both limits, forwarded and to the gateway, never replies or the provider's own flows", () => {
    for (const settings of [SETTINGS, NO_CAP, NO_RATE, { clientFlowLimit: 0, clientNewFlowRate: 0 }]) {
      const forward = chainRules('forward', settings);
      const at = forward.indexOf(`iifname @client_links ${TCP_TIMEOUT_RULE}`);
      // After the established and related accepts (the forwarding path of established flows never
      // meets it) and the limits (a flow they drop needs none), before the chains that accept.
      expect(at).toBeGreaterThan(forward.indexOf('ct state 0x2 accept'));
      expect(at).toBeGreaterThan(forward.indexOf('ct state 0x4 jump forward_related'));
      expect(forward.slice(at + 1)).toEqual(['oifname @client_links jump forward_to_client_link', 'iifname @client_links jump forward_from_client_link']);
      const input = chainRules('input_from_client_link', settings);
      const inputAt = input.indexOf(TCP_TIMEOUT_RULE);
      expect(input.slice(inputAt + 1, inputAt + 2)).toEqual(['ip daddr { 169.254.0.1, 255.255.255.255 } udp dport 67 accept']);
      expect(input.slice(0, inputAt).every((rule) => !rule.includes('accept') || rule.startsWith('ct state') || rule.includes('sport 68'))).toBe(true);
      // Only there: the provider's own flows keep its timeouts.
      expect(staticTableText(settings).split('\n').filter((line) => line.includes('ct timeout set'))).toHaveLength(2);
    }
    expect(CLIENT_TCP_TIMEOUT).toBe('client_tcp');
  });

  it('declares the policy as nft lists it: only the states that differ from the kernel default', () => {
    const declared = (policy: string): string => `\tct timeout client_tcp {\n\t\tprotocol tcp\n\t\tl3proto ip\n\t\tpolicy = { ${policy} }\n\t}\n\n`;
    expect(staticTableText(SETTINGS)).toContain(`\tcounter fragment_drops {\n\t}\n\n\tcounter leak_drops {\n\t}\n\n${declared('time_wait : 10')}\tset client_links {`);
    expect(staticTableText({ ...SETTINGS, clientTcpTimeouts: DEFAULT_CLIENT_TCP_TIMEOUTS })).toBe(staticTableText(SETTINGS));
    const tuned = clientTcpTimeouts({ ...KERNEL_TCP_TIMEOUTS, established: 3600, close: 5, time_wait: 60 });
    expect(staticTableText({ ...SETTINGS, clientTcpTimeouts: tuned })).toContain(declared('established : 3600, time_wait : 10, close : 5'));
  });

  it('with no rate limit (0), has neither the rate set nor its rules, but keeps its counter', () => {
    const text = staticTableText(NO_RATE);
    expect(text).not.toContain(FLOW_RATE_SET);
    expect(text).not.toContain('@client_new_flows');
    expect(text).toContain(`\tcounter ${COUNTERS.flowRateDrops} {\n`);
    const rated = staticTableText(SETTINGS).replace(RATE_SET_DECLARED, '');
    expect(rated.split('\n').filter((line) => !line.includes('@client_new_flows')).join('\n')).toBe(text);
  });

  it('with no cap (0), has neither the set nor its rules, but keeps the counter that status reads', () => {
    const text = staticTableText(NO_CAP);
    expect(text).not.toContain(`${FLOW_SET} `);
    expect(text).not.toContain('ct count');
    expect(text.split('\n').filter((line) => line.includes('ct status')).every((line) => line.includes('@client_new_flows'))).toBe(true);
    expect(text).toContain(`\tcounter ${COUNTERS.flowLimitDrops} {\n`);
    // Otherwise the same table.
    const capped = staticTableText(SETTINGS).replace('\tset client_flows {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic\n\t}\n\n', '');
    expect(capped.split('\n').filter((line) => !line.includes('ct count')).join('\n')).toBe(text);
  });

  it('removes the table whether or not it exists', () => {
    expect(applyScript(undefined, removeTableScript())).toBeUndefined();
    expect(applyScript(tableOf(staticTableText(SETTINGS), emptyElements()), removeTableScript())).toBeUndefined();
  });
});
