import { describe, expect, it } from 'vitest';
import { parseCountersJson } from '../../../guest/firewall/counters.js';
import { FirewallError } from '../../../guest/firewall/firewall-error.js';

// As nft 1.0.6 printed it for `nft -j list counters table inet spectrum_netd`.
const printed = (antispoof: number): string =>
  JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
      { counter: { family: 'inet', name: 'antispoof_drops', table: 'spectrum_netd', handle: 9, packets: antispoof, bytes: 84 * antispoof } },
      { counter: { family: 'inet', name: 'isolation_drops', table: 'spectrum_netd', handle: 10, packets: 2, bytes: 0 } },
      { counter: { family: 'inet', name: 'input_drops', table: 'spectrum_netd', handle: 11, packets: 3, bytes: 0 } },
      { counter: { family: 'inet', name: 'flow_limit_drops', table: 'spectrum_netd', handle: 12, packets: 4, bytes: 232 } },
      { counter: { family: 'inet', name: 'flow_rate_drops', table: 'spectrum_netd', handle: 13, packets: 5, bytes: 290 } },
      { counter: { family: 'inet', name: 'fragment_drops', table: 'spectrum_netd', handle: 14, packets: 7, bytes: 8960 } },
      { counter: { family: 'inet', name: 'leak_drops', table: 'spectrum_netd', handle: 15, packets: 8, bytes: 476 } },
      { counter: { family: 'inet', name: 'input_drops', table: 'someone_else', handle: 1, packets: 99, bytes: 0 } },
    ],
  });

// And for `nft -j list counters table arp spectrum_netd`.
const printedArp = (arp: number): string =>
  JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
      { counter: { family: 'arp', name: 'arp_drops', table: 'spectrum_netd', handle: 3, packets: arp, bytes: 28 * arp } },
    ],
  });

describe('parseCountersJson', () => {
  it('reads packet counts of the eight drop counters of our tables only, each from its own family', () => {
    expect(parseCountersJson(printed(1), printedArp(6))).toEqual({ antispoofDrops: 1, isolationDrops: 2, inputDrops: 3, arpDrops: 6, flowLimitDrops: 4, flowRateDrops: 5, fragmentDrops: 7, leakDrops: 8 });
    // Both tables have our name: a counter of the other family is not the one asked for.
    expect(() => parseCountersJson(printed(1), printed(1))).toThrow(expect.objectContaining({ kind: 'table-changed', message: expect.stringMatching(/^counter arp_drops is missing from table arp spectrum_netd/) }));
    expect(() => parseCountersJson(printedArp(6), printedArp(6))).toThrow(expect.objectContaining({ kind: 'table-changed' }));
  });

  it('says a table whose counters are not ours is changed, not that the listing failed', () => {
    // `status` takes it as a table no longer ours: its flow limits not in force.
    const lacking = '{"nftables": [{"counter": {"family": "inet", "table": "spectrum_netd", "name": "input_drops", "packets": 1}}]}';
    expect(() => parseCountersJson(lacking, printedArp(0))).toThrow(expect.objectContaining({ kind: 'table-changed', message: expect.stringMatching(/^counter \S+ is missing from table inet spectrum_netd/) }));
    expect(() => parseCountersJson('{}', printedArp(0))).toThrow(expect.objectContaining({ kind: 'listing' }));
    expect(() => parseCountersJson(printed(1), '{}')).toThrow(expect.objectContaining({ kind: 'listing' }));
  });

  it('refuses output that is not JSON, has no nftables array, or lacks a counter', () => {
    for (const text of ['not json', '{}', '{"nftables": [{"counter": {"table": "spectrum_netd", "name": "input_drops", "packets": 1}}]}']) {
      expect(() => parseCountersJson(text, printedArp(0))).toThrow(FirewallError);
      expect(() => parseCountersJson(printed(0), text)).toThrow(FirewallError);
    }
  });
});
