// The demo's two outputs carry the same facts: what the table shows, the JSON has too.
import { describe, expect, it } from 'vitest';
import { type DemoOutcome, demoJson, demoText } from './demo-report.js';

const outcome: DemoOutcome = {
  vms: [
    { name: 'appvm-lynx', interface: 'snc64838', mac: '0A:B3:EC:00:FD:46', ip: '100.64.253.70/32', method: 'DHCP (udhcpc)', lease: 'bound', internet: true, dns: true },
    { name: 'appvm-catgirl', interface: 'snc38997', mac: '0A:B3:EC:00:98:55', ip: '100.64.152.85/32', method: 'DHCP (udhcpc)', lease: '-', internet: true, dns: false },
  ],
  reach: [
    { from: 'appvm-lynx', to: 'internet', allowed: true },
    { from: 'appvm-lynx', to: 'appvm-catgirl', allowed: false },
    { from: 'appvm-catgirl', to: 'internet', allowed: true },
    { from: 'appvm-catgirl', to: 'appvm-lynx', allowed: false },
  ],
  drops: { isolationDrops: 2, antispoofDrops: 3, inputDrops: 0, arpDrops: 5, flowLimitDrops: 1, flowRateDrops: 4, fragmentDrops: 6, leakDrops: 7 },
};

describe('demo output', () => {
  it('prints the tables and the drop counters as the README shows them', () => {
    expect(demoText(outcome, ['appvm-lynx', 'appvm-catgirl'], 'www.test.example')).toBe(
      [
        '',
        'VM             INTERFACE  MAC                IP                HOW            LEASE  DNS',
        'appvm-lynx     snc64838   0A:B3:EC:00:FD:46  100.64.253.70/32  DHCP (udhcpc)  bound  www.test.example ok',
        'appvm-catgirl  snc38997   0A:B3:EC:00:98:55  100.64.152.85/32  DHCP (udhcpc)  -      failed',
        '',
        'FROM \\ TO      internet  appvm-lynx  appvm-catgirl',
        'appvm-lynx     reached   -           blocked',
        'appvm-catgirl  reached   blocked     -',
        '',
        "netvm (spectrum-netd) dropped 2 packets between clients, 3 by anti-spoofing (a wrong source address, or IPv6), 5 ARP with a wrong sender, 0 to closed ports of the gateway, 1 new flows past a client's flow limit, 4 past its new-flow rate, 6 fragments past its fragment rate, 7 toward clients gone (out of an uplink).",
        '',
      ].join('\n'),
    );
  });

  it('says where the ARP guard is not in force rather than a count of nothing, and --json gives its null', () => {
    const noGuard: DemoOutcome = { ...outcome, drops: { ...outcome.drops, arpDrops: null } };
    expect(demoText(noGuard, ['appvm-lynx', 'appvm-catgirl'], 'www.test.example')).toContain(', no ARP guard (ARP not counted), ');
    expect((JSON.parse(demoJson(noGuard)) as { firewall: { arpDrops: unknown } }).firewall.arpDrops).toBeNull();
  });

  it('gives --json the lease, the DNS result and every drop counter of `spectrum-netd status` too, in one line', () => {
    const text = demoJson(outcome);
    expect(text.endsWith('}\n')).toBe(true);
    expect(text.trimEnd()).not.toContain('\n');
    const parsed = JSON.parse(text) as { vms: Record<string, unknown>[]; reach: unknown[]; firewall: unknown };
    expect(Object.keys(parsed)).toEqual(['vms', 'reach', 'firewall']);
    expect(parsed.vms.map((vm) => Object.keys(vm))).toEqual([
      ['name', 'interface', 'mac', 'ip', 'method', 'lease', 'internet', 'dns'],
      ['name', 'interface', 'mac', 'ip', 'method', 'lease', 'internet', 'dns'],
    ]);
    expect(parsed.vms[1]).toMatchObject({ lease: '-', dns: false });
    expect(parsed.reach).toEqual(outcome.reach);
    expect(parsed.firewall).toEqual({ antispoofDrops: 3, isolationDrops: 2, inputDrops: 0, arpDrops: 5, flowLimitDrops: 1, flowRateDrops: 4, fragmentDrops: 6, leakDrops: 7 });
  });
});
