// What `status` accepts from the control socket: every real status, and nothing formatStatus
// cannot show (whatever answers on that path: another service, a test double).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ReaperStatus } from '../../../guest/conntrack/conntrack-reaper.js';
import type { DnsForwarderCounters } from '../../../guest/dns/forwarder.js';
import type { AgentStatus } from '../../../guest/netd/agent.js';
import { formatStatus } from '../../../guest/netd/commands.js';
import type { ServicesStatus } from '../../../guest/netd/provider-ports.js';
import { readStatusReply } from '../../../guest/netd/status-shape.js';
import type { ClientId } from '../../../shared/client-id.js';

const dns: DnsForwarderCounters = {
  listening: false,
  bindAttempts: 2,
  bindFailures: 1,
  lastBindError: 'bind 169.254.0.1:53: EADDRNOTAVAIL',
  upstreams: ['192.0.2.53:53'],
  unreachableUpstreams: ['192.0.2.54:53 (ENETUNREACH)'],
  failingUpstreams: ['192.0.2.53:53 (3 of 64 sockets failed)'],
  resolvConfReloads: 1,
  queries: 9,
  tcpQueries: 1,
  answered: 8,
  lateAnswers: 1,
  truncated: 1,
  malformed: 0,
  formErr: 0,
  notImp: 0,
  refused: 0,
  rateLimited: 0,
  overloaded: 0,
  evicted: 0,
  noUpstream: 0,
  upstreamTimeouts: 1,
  upstreamClosed: 1,
  upstreamErrors: 1,
  retransmits: 1,
  failed: 0,
  upstreamRejected: 0,
  sendErrors: 0,
  tcpConnections: 1,
  tcpRejected: 0,
  tcpEvicted: 0,
  tcpIdleClosed: 0,
  pending: 0,
};

/** A status with every part the agent may send, typed as the agent's own: as `run` makes its answer. */
const full: AgentStatus & { reaper: ReaperStatus; services: ServicesStatus } = {
  links: [
    { ifindex: 3, name: 'snp7', role: 'provider', id: 7, ip: '100.64.0.7', state: 'configured', note: null, error: null },
    { ifindex: 4, name: 'snp8', role: 'provider', id: 7, ip: '100.64.0.7', state: 'conflict', note: 'client id 7 is already served on snp7; all its traffic is dropped', error: 'link set snp8 down: EPERM' },
    { ifindex: 5, name: 'eth0', role: 'uplink', id: null, ip: null, state: 'unmanaged', note: 'addressing is left to the network manager', error: null },
  ],
  counters: { reconciles: 5, changesApplied: 9, initialChanges: null, failedChanges: 1, fullSyncs: 1, lastReconcileMs: 0.4498, firewallRepairs: 0, conntrackPurged: 3, conntrackPurgeFailures: 0, lastPurgeMs: 1.5 },
  firewallEnabled: true,
  firewall: { antispoofDrops: 2, isolationDrops: 2, inputDrops: 0, arpDrops: 1, fragmentDrops: 0, flowLimitDrops: 5, flowRateDrops: 3, leakDrops: 4 },
  arpGuard: 'in-force',
  flowLimits: { clientFlowLimit: 4096, clientNewFlowRate: 100 },
  firewallError: 'nft -f - failed (exit 1): Error: Could not process rule: Operation not permitted',
  model: { providerLinks: [{ ifname: 'snp7', clientIp: '100.64.0.7' }], uplinks: ['eth0'], allowedPairs: [], isolatedLinks: ['snp8'] },
  conntrack: { owed: ['100.64.0.9'], sweepOwed: true, lastError: 'EPERM' },
  reaper: { threshold: null, thresholdOption: 'auto', count: 5000, reaps: 3, reaped: 1200, lastReap: { deleted: 800, countBefore: 5000, countAfter: 4200, ms: 12 }, failures: 1, lastError: 'ENOMEM' },
  services: {
    leases: [
      {
        ifname: 'snp7',
        id: 7 as ClientId,
        clientIp: '100.64.0.7' as ServicesStatus['leases'][number]['clientIp'],
        clientMac: '0a:b3:ec:00:00:07',
        state: 'bound',
        firstSeen: 1_700_000_000_000,
        lastRenewed: undefined,
        expires: 1_700_000_360_000,
        clientIdentifier: undefined,
        hostname: 'appvm',
      },
    ],
    dhcp: { received: 12, offers: 3, acks: 3, socketErrors: 1, socketRetries: 2, rateLimited: 40 },
    dns: { ...dns },
  },
};

/** What `status` reads: the agent's answer after JSON (undefined fields gone). */
const overTheWire = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

/** Every place in a JSON value, as the keys leading to it ([] the whole). */
function pathsOf(value: unknown, at: readonly (string | number)[] = []): (readonly (string | number)[])[] {
  if (Array.isArray(value)) return [at, ...value.flatMap((item, index) => pathsOf(item, [...at, index]))];
  if (typeof value === 'object' && value !== null) return [at, ...Object.entries(value).flatMap(([key, item]) => pathsOf(item, [...at, key]))];
  return [at];
}

/** `value` with what is at `path` replaced (undefined: removed). */
function replaced(value: unknown, path: readonly (string | number)[], by: unknown): unknown {
  const [head, ...rest] = path;
  if (head === undefined) return by;
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<string | number, unknown>;
  if (rest.length === 0 && by === undefined) delete copy[head];
  else copy[head] = replaced(copy[head], rest, by);
  return copy;
}

describe('the answer status shows', () => {
  it('takes every status an agent sends, with each part there or not (null, or absent where the agent leaves it out)', () => {
    const read = (value: unknown): string | undefined => {
      const result = readStatusReply(overTheWire(value));
      return 'problem' in result ? result.problem : undefined;
    };
    expect(read(full)).toBeUndefined();
    expect(read({ ...full, flowLimits: null, firewallError: null, firewall: null, model: null, conntrack: null, reaper: null, services: null })).toBeUndefined();
    expect(read({ ...full, services: { leases: [], dhcp: null, dns: null } })).toBeUndefined();
    // `run` before this answer had them: a status without the reaper or the services (other ports).
    const { reaper: _reaper, services: _services, ...agentOnly } = full;
    expect(read(agentOnly)).toBeUndefined();
    // The ARP guard not in force: its counter null; and an agent from before the guard was told apart.
    expect(read({ ...full, arpGuard: 'unsupported', firewall: { ...full.firewall, arpDrops: null } })).toBeUndefined();
    const { arpGuard: _arpGuard, ...olderAgent } = full;
    expect(read(olderAgent)).toBeUndefined();
    // Run with --no-firewall; and an agent from before that was said.
    expect(read({ ...full, firewallEnabled: false, firewall: null, arpGuard: null, flowLimits: null, firewallError: null })).toBeUndefined();
    const { firewallEnabled: _firewallEnabled, ...beforeFirewallOff } = full;
    expect(read(beforeFirewallOff)).toBeUndefined();
  });

  it('names the first field of another type, and what it is', () => {
    const problem = (value: unknown): unknown => readStatusReply(value);
    // What an outside review met: "internal error: cell.padEnd is not a function".
    expect(problem({ links: [{ name: 'eth0', role: 5 }], counters: {} })).toEqual({ problem: 'status.links[0].role: Invalid input: expected string, received number' });
    expect(problem('OK')).toEqual({ problem: 'status: Invalid input: expected object, received string' });
    expect(problem([])).toEqual({ problem: 'status: Invalid input: expected object, received array' });
    expect(problem({ counters: {} })).toEqual({ problem: 'status.links: Invalid input: expected array, received undefined' });
    expect(problem(replaced(overTheWire(full), ['services', 'leases', 0, 'hostname'], { a: 1 }))).toEqual({ problem: 'status.services.leases[0].hostname: Invalid input: expected string, received object' });
    expect(problem({ ...(overTheWire(full) as object), firewallEnabled: 'off' })).toEqual({ problem: 'status.firewallEnabled: Invalid input: expected boolean, received string' });
    expect(problem(replaced(overTheWire(full), ['counters', 'reconciles'], 'x'.repeat(100)))).toEqual({ problem: 'status.counters.reconciles: Invalid input: expected number, received string' });
    // The DNS counts the text shows, TCP connections' among them.
    expect(problem(replaced(overTheWire(full), ['services', 'dns', 'tcpRejected'], { a: 1 }))).toEqual({ problem: 'status.services.dns.tcpRejected: Invalid input: expected number, received object' });
  });

  it('never lets through what formatStatus cannot show: any one part of a status replaced by any JSON value, or removed', () => {
    const wire = overTheWire(full);
    const paths = pathsOf(wire).filter((path) => path.length > 0);
    fc.assert(
      fc.property(fc.constantFrom(...paths), fc.option(fc.jsonValue(), { nil: undefined }), (path, by) => {
        const result = readStatusReply(replaced(wire, path, by));
        if ('problem' in result) return;
        const text = formatStatus(result.status);
        expect(text).not.toContain('[object Object]');
      }),
      { numRuns: 2000 },
    );
  });
});
