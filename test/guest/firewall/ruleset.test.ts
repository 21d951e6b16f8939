import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import {
  SET_NAMES,
  TABLE,
  desiredElements,
  elementCommands,
  emptyElements,
  parseTableListing,
  planFirewall,
  removeTableScript,
  replaceTableScript,
  staticTableText,
} from '../../../guest/firewall/ruleset.js';
import { PROVIDER_LINK_GROUP } from '../../../shared/scheme.js';
import { anyFirewallModel } from './arbitraries.js';
import { applyScript, elementsOf, renderListing, tableOf } from './simulated-table.js';

/** The rules of one chain of the static table, as lines. */
function chainRules(name: string): string[] {
  const match = new RegExp(`\\tchain ${name} \\{\\n([\\s\\S]*?)\\n\\t\\}\\n`).exec(staticTableText());
  return (match?.[1] ?? '').split('\n').map((line) => line.trim()).filter((line) => line !== '');
}

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
  it('gives back the structure and every element, however nft wraps the lists', () => {
    fc.assert(
      fc.property(anyValidModel, anyPerLine, (model, perLine) => {
        const listing = renderListing(tableOf(staticTableText(), desiredElements(model)), perLine);
        const parsed = parseTableListing(listing);
        expect(parsed.structure).toBe(staticTableText());
        expect(parsed.elements).toEqual(desiredElements(model));
        expect(parsed.unknownSets).toEqual([]);
      }),
    );
  });

  it('reads a listing exactly as nft 1.0.6 printed it', () => {
    const printed = staticTableText().replace(
      '\tset client_sources {\n\t\ttype ifname . ipv4_addr\n',
      '\tset client_sources {\n\t\ttype ifname . ipv4_addr\n\t\telements = { "snp1" . 100.64.0.1,\n\t\t\t     "eth0.10" . 100.64.1.2 }\n',
    );
    const parsed = parseTableListing(printed);
    expect(parsed.structure).toBe(staticTableText());
    expect(parsed.elements.client_sources).toEqual(['"eth0.10" . 100.64.1.2', '"snp1" . 100.64.0.1']);
  });
});

describe('planFirewall', () => {
  it('turns any table with the right structure into exactly the desired elements, touching only what differs', () => {
    fc.assert(
      fc.property(anyValidModel, anyValidModel, anyPerLine, (before, after, perLine) => {
        const current = tableOf(staticTableText(), desiredElements(before));
        const plan = planFirewall(renderListing(current, perLine), after);
        const result = plan.kind === 'unchanged' ? current : applyScript(current, plan.script);
        expect(result?.structure).toBe(staticTableText());
        expect(result && elementsOf(result)).toEqual(desiredElements(after));
        if (plan.kind !== 'unchanged') expect(plan.kind).toBe('update-elements');
      }),
    );
  });

  it('does nothing when the table already matches the model', () => {
    fc.assert(
      fc.property(anyValidModel, anyPerLine, (model, perLine) => {
        const listing = renderListing(tableOf(staticTableText(), desiredElements(model)), perLine);
        expect(planFirewall(listing, model)).toEqual({ kind: 'unchanged' });
      }),
    );
  });

  it('creates the whole table when there is none', () => {
    fc.assert(
      fc.property(anyValidModel, (model) => {
        const plan = planFirewall(undefined, model);
        expect(plan).toMatchObject({ kind: 'replace-table', reason: 'missing' });
        const result = applyScript(undefined, plan.kind === 'unchanged' ? '' : plan.script);
        expect(result?.structure).toBe(staticTableText());
        expect(result && elementsOf(result)).toEqual(desiredElements(model));
      }),
    );
  });

  it('replaces the table in one script when any line of its structure differs', () => {
    const lines = staticTableText().split('\n');
    const editable = lines.map((_line, index) => index).filter((index) => index > 0 && lines[index] !== '' && lines[index] !== '}');
    fc.assert(
      fc.property(anyValidModel, anyValidModel, fc.constantFrom(...editable), fc.boolean(), (before, after, lineIndex, remove) => {
        const edited = lines.flatMap((line, index) => (index !== lineIndex ? [line] : remove ? [] : [`${line} `]));
        const current = tableOf(edited.join('\n'), desiredElements(before));
        const plan = planFirewall(renderListing(current), after);
        expect(plan).toMatchObject({ kind: 'replace-table', reason: 'structure' });
        const result = applyScript(current, plan.kind === 'unchanged' ? '' : plan.script);
        expect(result?.structure).toBe(staticTableText());
        expect(result && elementsOf(result)).toEqual(desiredElements(after));
      }),
    );
  });

  it('replaces a table that has elements in a set this version does not know', () => {
    const extra = staticTableText().replace('\tchain prerouting {', '\tset legacy {\n\t\ttype ipv4_addr\n\t\telements = { 100.64.0.1 }\n\t}\n\n\tchain prerouting {');
    expect(planFirewall(extra, validateFirewallModel({ providerLinks: [], uplinks: [], allowedPairs: [] })).kind).toBe('replace-table');
  });
});

describe('the static part', () => {
  it('never depends on the model: the scripts differ only in element commands', () => {
    fc.assert(
      fc.property(anyValidModel, (model) => {
        const script = replaceTableScript(desiredElements(model));
        const withoutElements = script
          .split('\n')
          .filter((line) => !line.startsWith('add element '))
          .join('\n');
        expect(withoutElements).toBe(`add table ${TABLE}\ndelete table ${TABLE}\n${staticTableText()}`);
      }),
    );
  });

  it('names no interface or client address', () => {
    expect(staticTableText()).not.toMatch(/100\.64\.\d+\.\d+(?!\/16)/);
    expect(staticTableText()).not.toMatch(/"(eth|snp|wlan)/);
  });

  it('emits one add command per non-empty set, each element once', () => {
    fc.assert(
      fc.property(anyValidModel, (model) => {
        const desired = desiredElements(model);
        const script = elementCommands({ add: desired, delete: emptyElements() });
        const nonEmpty = SET_NAMES.filter((name) => desired[name].length > 0);
        expect(script.split('\n').filter((line) => line !== '')).toHaveLength(nonEmpty.length);
      }),
    );
  });

  it("passes a related packet from a client link only when its flow is that link's client's, counting the others", () => {
    const ownFlow = ['iifname . ct original ip saddr @client_sources accept', 'iifname . ct original ip daddr @client_sources accept'];
    // Established right after the guard and the MSS clamp: the hot path stays three rules long.
    expect(chainRules('forward').slice(3, 5)).toEqual(['ct state 0x2 accept', 'ct state 0x4 jump forward_related']);
    expect(chainRules('forward_related')).toEqual(['iifname != @client_links accept', ...ownFlow, 'counter name "isolation_drops" drop']);
    expect(chainRules('input_from_client_link').slice(0, 3)).toEqual(['ct state 0x2 accept', ...ownFlow.map((rule) => `ct state 0x4 ${rule}`)]);
    expect(chainRules('input_from_client_link').at(-1)).toBe('counter name "input_drops" drop');
    expect(staticTableText()).not.toContain('ct state 0x2,0x4');
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
      'type filter hook prerouting priority -300; policy accept;',
      'iifgroup 179563648 iifname != @client_links counter name "antispoof_drops" drop',
    ]);
    // Before replies are let through: nothing reaches a link the sets do not name.
    expect(chainRules('forward').slice(0, 2)).toEqual([
      'type filter hook forward priority 0; policy accept;',
      'oifgroup 179563648 oifname != @client_links counter name "isolation_drops" drop',
    ]);
  });

  it('clamps the MSS of forwarded SYNs to the route, both ways, before replies are accepted and after the guard', () => {
    const clamp = 'tcp flags 0x2 / 0x2,0x4 tcp option maxseg size set rt mtu';
    // A SYN-ACK is established to conntrack: the clamp must see it before the established accept.
    expect(chainRules('forward').slice(1, 4)).toEqual([
      'oifgroup 179563648 oifname != @client_links counter name "isolation_drops" drop',
      clamp,
      'ct state 0x2 accept',
    ]);
    // Forwarded traffic only, once: nothing for the provider's own connections.
    expect(staticTableText().split('\n').filter((line) => line.includes('maxseg'))).toEqual([`\t\t${clamp}`]);
  });

  it('removes the table whether or not it exists', () => {
    expect(applyScript(undefined, removeTableScript())).toBeUndefined();
    expect(applyScript(tableOf(staticTableText(), emptyElements()), removeTableScript())).toBeUndefined();
  });
});
