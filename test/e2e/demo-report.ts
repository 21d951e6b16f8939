// What the demo prints: the same facts as a table for people and as one JSON object for scripts.
// Pure, so that both forms are tested without bringing the system up.
import type { FirewallCounters } from '../../guest/firewall-port.js';

export interface VmReport {
  name: string;
  interface: string;
  mac: string;
  ip: string;
  method: string;
  /** The lease's state in spectrum-netd's table ('bound'), or '-' without one. */
  lease: string;
  internet: boolean;
  /** Whether the test name resolved through the gateway's DNS forwarder. */
  dns: boolean;
}

export interface Reach {
  from: string;
  to: string;
  allowed: boolean;
}

/** netvm's firewall counters, as `spectrum-netd status` gives them. */
export type Drops = FirewallCounters;

export interface DemoOutcome {
  vms: readonly VmReport[];
  reach: readonly Reach[];
  drops: Drops;
}

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** The tables and the drop counters, for a terminal. `vmNames` orders the reach matrix. */
export function demoText(outcome: DemoOutcome, vmNames: readonly string[], testName: string): string {
  const targets = ['internet', ...vmNames];
  const cell = (from: string, to: string): string => {
    if (from === to) return '-';
    const found = outcome.reach.find((entry) => entry.from === from && entry.to === to);
    return found === undefined ? '?' : found.allowed ? 'reached' : 'blocked';
  };
  const vms = table([
    ['VM', 'INTERFACE', 'MAC', 'IP', 'HOW', 'LEASE', 'DNS'],
    ...outcome.vms.map((vm) => [vm.name, vm.interface, vm.mac, vm.ip, vm.method, vm.lease, vm.dns ? `${testName} ok` : 'failed']),
  ]);
  const reach = table([['FROM \\ TO', ...targets], ...vmNames.map((from) => [from, ...targets.map((to) => cell(from, to))])]);
  const { isolationDrops, antispoofDrops, inputDrops, arpDrops, flowLimitDrops, flowRateDrops, fragmentDrops, leakDrops } = outcome.drops;
  return (
    `\n${vms}\n\n${reach}\n\n` +
    `netvm (spectrum-netd) dropped ${isolationDrops} packets between clients, ` +
    `${antispoofDrops} by anti-spoofing (a wrong source address, or IPv6), ${arpDrops === null ? 'no ARP guard (ARP not counted)' : `${arpDrops} ARP with a wrong sender`}, ` +
    `${inputDrops} to closed ports of the gateway, ` +
    `${flowLimitDrops} new flows past a client's flow limit, ${flowRateDrops} past its new-flow rate, ` +
    `${fragmentDrops} fragments past its fragment rate, ${leakDrops} toward clients gone (out of an uplink).\n`
  );
}

/** One JSON object with everything the text shows: each VM (lease and DNS too), who reaches whom, netvm's drop counters. */
export function demoJson(outcome: DemoOutcome): string {
  const vms = outcome.vms.map(({ name, interface: ifname, mac, ip, method, lease, internet, dns }) => ({ name, interface: ifname, mac, ip, method, lease, internet, dns }));
  // The counters under the names `spectrum-netd status --json` gives them.
  const { antispoofDrops, isolationDrops, inputDrops, arpDrops, flowLimitDrops, flowRateDrops, fragmentDrops, leakDrops } = outcome.drops;
  const firewall = { antispoofDrops, isolationDrops, inputDrops, arpDrops, flowLimitDrops, flowRateDrops, fragmentDrops, leakDrops };
  return `${JSON.stringify({ vms, reach: outcome.reach, firewall })}\n`;
}
