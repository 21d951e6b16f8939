// The agent's loop against a scripted kernel: what status reports about failed operations.
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConntrackError } from '../../../guest/conntrack/conntrack-error.js';
import { DhcpError } from '../../../guest/dhcp/dhcp-error.js';
import type { ConntrackFilter, ConntrackPort, ConntrackPurgeResult } from '../../../guest/conntrack-port.js';
import { type FirewallModel, type FirewallPort, type FirewallReading, type FlowLimits, NoopFirewall } from '../../../guest/firewall-port.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import { NetdAgent } from '../../../guest/netd/agent.js';
import { KernelRefusal, NetdError } from '../../../guest/netd/netd-error.js';
import { PROVIDER_LINK_GROUP } from '../../../shared/scheme.js';
import { CLIENT_MARK, type KernelEvent, type KernelView } from '../../../guest/netd/kernel-view.js';
import { type Operation, SYSCTL_ABSENT, arpFilterOf, disableIpv6Of, expectedEvent, operationIfindex } from '../../../guest/netd/plan.js';
import type { DumpTable, FailedDump, KernelDump, KernelListener, NetdKernel, SkippedEntry } from '../../../guest/netd/rtnetlink.js';
import type { ServicesPort, UpstreamLinkInfo } from '../../../guest/services-port.js';

/** A kernel that refuses the operations `refuse` names and otherwise does as asked. */
class ScriptedKernel implements NetdKernel {
  listener: KernelListener | undefined;
  refuse: (operation: Operation) => boolean = () => false;
  /** What a refused operation fails with. */
  refusal: Error = new KernelRefusal('EPERM', '');

  /** `state`: what a dump reads. */
  constructor(public state: KernelEvent[]) {}

  subscribe(listener: KernelListener): void {
    this.listener = listener;
  }

  /** Called as each dump is asked for, before it answers (what the kernel sends meanwhile). */
  onDump: () => void = () => undefined;

  /** The entries a dump skips, as undecodable. */
  skipped: SkippedEntry[] = [];
  /** The tables a dump says the kernel marked inconsistent in each of its tries. */
  inconsistent: DumpTable[] = [];
  /** The tables a dump says the kernel ended with an error in each of its tries. */
  failed: FailedDump[] = [];
  /** How long a dump takes to answer (0: at once). */
  dumpMs = 0;

  dump(): Promise<KernelDump> {
    // Read as the dump is asked for: what onDump changes, the next dump reads.
    const answer = { events: this.state, skipped: this.skipped, inconsistent: this.inconsistent, failed: this.failed };
    this.onDump();
    return this.dumpMs === 0 ? Promise.resolve(answer) : new Promise((resolve) => setTimeout(() => resolve(answer), this.dumpMs));
  }

  /** What was applied, in order (refused operations included). */
  readonly applied: Operation[] = [];
  /** Called with each operation as it is applied. */
  onApply: (operation: Operation) => void = () => undefined;

  /** Announces each change as the kernel would, before answering (what its echo says). */
  echo: ((operation: Operation, view: KernelView) => KernelEvent | null) | undefined;

  apply(operation: Operation, view: KernelView): Promise<void> {
    // As RtnetlinkKernel: nothing goes to a closed kernel.
    if (this.closed) return Promise.reject(new NetdError('closed', 'the rtnetlink socket was closed (the agent is stopping)'));
    const echo = this.echo?.(operation, view) ?? null;
    if (echo !== null) this.listener?.events([echo]);
    this.applied.push(operation);
    this.onApply(operation);
    return this.refuse(operation) ? Promise.reject(this.refusal) : Promise.resolve();
  }

  readSysctl(_path: string): string {
    return '1';
  }

  closed = false;

  close(): void {
    this.closed = true;
  }
}

/** What a dump of a kernel in the state `view` has reads. */
const dumpOf = (view: KernelView): KernelEvent[] => [
  ...[...view.links.values()].map((link) => ({ kind: 'link', op: 'new', link }) as const),
  ...[...view.addresses.values()].map((address) => ({ kind: 'address', op: 'new', address }) as const),
  ...[...view.routes.values()].map((route) => ({ kind: 'route', op: 'new', route }) as const),
  ...[...view.neighbours.values()].map((neighbour) => ({ kind: 'neighbour', op: 'new', neighbour }) as const),
];

const CLIENT_1 = { ifindex: 2, name: 'vm1', mac: '0a:b3:ec:80:00:01', up: false, loopback: false, group: 0 };

/** A firewall that records the models it took and refuses while `failing`. */
class RecordingFirewall implements FirewallPort {
  failing = false;
  readonly models: FirewallModel[] = [];
  onReconcile: (model: FirewallModel) => void = () => undefined;

  reconcile(model: FirewallModel): Promise<void> {
    this.onReconcile(model);
    if (this.failing) return Promise.reject(new Error('nft -f - failed (exit 1): Error: Could not process rule'));
    this.models.push(model);
    return Promise.resolve();
  }

  verify(model: FirewallModel): Promise<boolean> {
    return this.reconcile(model).then(() => false);
  }

  counters(): Promise<FirewallReading> {
    return Promise.resolve({ counters: { antispoofDrops: 0, isolationDrops: 0, inputDrops: 0, arpDrops: 0, fragmentDrops: 0, flowLimitDrops: 0, flowRateDrops: 0, leakDrops: 0 }, inetGone: false, arpGuard: 'in-force' });
  }

  flowLimits(): FlowLimits | null {
    return null;
  }
}

const PROVIDER_OPTIONS = { mode: 'provider', ignored: new Set<string>(), allowedPairs: [] } as const;

/** A conntrack port that records the filters it was given, and refuses while `failing`. */
class RecordingConntrack implements ConntrackPort {
  failing = false;
  readonly filters: ConntrackFilter[] = [];
  onPurge: (filter: ConntrackFilter) => void = () => undefined;

  purge(filter: ConntrackFilter): Promise<ConntrackPurgeResult> {
    this.onPurge(filter);
    if (this.failing) return Promise.reject(new ConntrackError('dump', 'reading the conntrack table failed (ENOMEM; 0 entries read, 0 matched, 0 deleted): is the system short of memory? retrying'));
    this.filters.push(filter);
    return Promise.resolve({ scanned: 10, deleted: 1 });
  }
}

/** Services that record the names of the links they are told of, each time. */
function recordingServices(): { told: string[][]; services: ServicesPort } {
  const told: string[][] = [];
  const services: ServicesPort = {
    linksChanged: (links) => {
      told.push(links.map((link) => link.ifname));
      return Promise.resolve();
    },
  };
  return { told, services };
}
describe('NetdAgent', () => {
  let agent: NetdAgent | undefined;
  afterEach(() => {
    agent?.stop();
    vi.useRealTimers();
  });

  it("says once, in client mode, that a link keeps an address of ours while another's route needs it, and removes it once that route goes", async () => {
    const ETH0 = { ifindex: 3, name: 'eth0', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 };
    const OPERATOR_ROUTE = { dst: '203.0.113.0', dstLength: 24, oif: 3, gateway: null, priority: 0, protocol: 4 };
    const OURS = { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: CLIENT_MARK };
    const kernel = new ScriptedKernel([
      { kind: 'link', op: 'new', link: ETH0 },
      { kind: 'address', op: 'new', address: OURS },
      { kind: 'route', op: 'new', route: OPERATOR_ROUTE },
    ]);
    const lines: { msg: string; link?: string; kept?: string[] }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
    agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, log, null, null);
    await agent.start({ watch: true });
    const said = (): typeof lines => lines.filter((line) => line.kept !== undefined);
    expect(said()).toEqual([
      expect.objectContaining({
        link: 'eth0',
        kept: ['100.64.0.5/32'],
        msg: "addressing is left to the network manager; keeps 100.64.0.5/32 of client mode's: deleting its last IPv4 address would take routes not ours with it (203.0.113.0/24)",
      }),
    ]);
    expect(kernel.applied).toEqual([]);
    // Another change plans again: not said again.
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...CLIENT_1, mac: '52:54:00:00:00:01' } }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(said()).toHaveLength(1);
    kernel.listener?.events([{ kind: 'route', op: 'del', route: OPERATOR_ROUTE }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(kernel.applied).toEqual([{ kind: 'address-del', address: OURS }]);
    expect(said()).toHaveLength(1);
  });

  it("reports a link's failed operation until the plan asks nothing more of that link", async () => {
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    kernel.refuse = (operation) => operation.kind === 'neighbour-set';
    agent = new NetdAgent(kernel, { mode: 'provider', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
    await agent.start({ watch: true });
    const vm1 = async (): Promise<{ state: string; error: string | null } | undefined> => (await agent!.status()).links.find((link) => link.name === 'vm1');
    expect((await vm1())?.error).toMatch(/^neigh replace 100\.64\.0\.1 .*EPERM/);
    // Someone else makes the neighbour entry: the plan now asks nothing of vm1, whose error is history.
    kernel.listener?.events([{ kind: 'neighbour', op: 'new', neighbour: { ifindex: 2, ip: '100.64.0.1', mac: '0a:b3:ec:00:00:01', permanent: true } }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(await vm1()).toMatchObject({ state: 'configured', error: null });
  });

  it.each([
    ['the kernel refuses it for want of the device (ENODEV: a VM shutting down takes its link down, then deletes it)', new KernelRefusal('ENODEV', '')],
    ["its sysctl file is not there by the link's name (renamed as it came, as udev does)", new NetdError('link-gone', 'cannot write /proc/sys/net/ipv6/conf/vm1/disable_ipv6 (ENOENT): no link is named vm1 any more (renamed or deleted meanwhile)')],
  ])('takes a change to a link gone or renamed under it for no failure, when %s: said at debug level alone, counted neither made nor failed', async (_, refusal) => {
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    kernel.readSysctl = (path: string): string => (path.includes('disable_ipv6') ? '0' : '1');
    kernel.refuse = (operation) => operationIfindex(operation) === CLIENT_1.ifindex;
    kernel.refusal = refusal;
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, null, null);
    await agent.start({ watch: true });
    const refused = kernel.applied.filter((operation) => kernel.refuse(operation));
    expect(refused.map((operation) => operation.kind)).toEqual(['sysctl', 'link-up', 'address-add', 'route-set', 'neighbour-set']);
    const status = await agent.status();
    expect(status.counters).toMatchObject({ failedChanges: 0, changesApplied: 0, initialChanges: 0 });
    expect(status.links.find((link) => link.name === 'vm1')?.error).toBeNull();
    expect(lines.filter((line) => line.level >= 40)).toEqual([]);
    expect(lines.filter((line) => line.msg.endsWith(': the link is gone or renamed meanwhile, not a failure'))).toHaveLength(refused.length);
    // Its deletion heard: nothing more is asked of it.
    const applied = kernel.applied.length;
    kernel.listener?.events([{ kind: 'link', op: 'del', link: CLIENT_1 }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(kernel.applied.slice(applied)).toEqual([]);
    expect((await agent.status()).counters.failedChanges).toBe(0);
  });

  it('says a conflict once as it comes, and as it ends that the link serves its client now (not that it is "pending")', async () => {
    const DUP_1 = { ...CLIENT_1, ifindex: 5, name: 'dup1' };
    const kernel = new ScriptedKernel([
      { kind: 'link', op: 'new', link: CLIENT_1 },
      { kind: 'link', op: 'new', link: DUP_1 },
    ]);
    const lines: { level: number; msg: string; link?: string }[] = [];
    const log = pino({ level: 'info' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, null, null);
    await agent.start({ watch: true });
    // Another reconcile meanwhile: the conflict is not said again.
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...CLIENT_1, up: false, group: 7 } }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    kernel.listener?.events([{ kind: 'link', op: 'del', link: CLIENT_1 }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(lines.filter((line) => line.link === 'dup1').map((line) => [line.level, line.msg])).toEqual([
      [40, 'dup1 is in conflict: client id 1 is already served on vm1; all its traffic is dropped (said once while it lasts)'],
      [30, 'dup1 is no longer in conflict: client id 1 is served on it now'],
    ]);
    expect((await agent.status()).links.find((link) => link.name === 'dup1')?.state).toBe('configured');
  });

  it('puts its table (and the group guard in it) in place before bringing any link up at start', async () => {
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    const firewall = new RecordingFirewall();
    const order: string[] = [];
    firewall.onReconcile = (model) => order.push(`firewall ${model.providerLinks.map((link) => link.ifname).join(',')}`);
    kernel.onApply = (operation) => order.push(operation.kind);
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
    await agent.start({ watch: true });
    expect(order).toContain('link-up');
    expect(order.indexOf('firewall vm1')).toBeGreaterThanOrEqual(0);
    expect(order.indexOf('firewall vm1')).toBeLessThan(order.indexOf('link-up'));
  });

  it('brings a link hot-plugged later up in the guarded group without waiting for the firewall, which names it right after', async () => {
    const kernel = new ScriptedKernel([]);
    const firewall = new RecordingFirewall();
    const order: string[] = [];
    firewall.onReconcile = (model) => order.push(`firewall ${model.providerLinks.map((link) => link.ifname).join(',')}`);
    kernel.onApply = (operation) => order.push(operation.kind === 'link-up' ? `link-up group ${String(operation.group)}` : operation.kind);
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
    await agent.start({ watch: true });
    order.length = 0;
    kernel.listener?.events([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    // Up in the group the table guards (everything of it whose name the table does not hold is dropped)...
    const up = order.indexOf(`link-up group ${PROVIDER_LINK_GROUP}`);
    expect(up).toBeGreaterThanOrEqual(0);
    // ...and named by the firewall in the same reconcile, after the link's own changes.
    expect(order.indexOf('firewall vm1')).toBeGreaterThan(up);
  });

  it('says a hot-plugged link is cut off (guarded, not named) while the firewall cannot take it', async () => {
    const kernel = new ScriptedKernel([]);
    const firewall = new RecordingFirewall();
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
    await agent.start({ watch: true });
    firewall.failing = true;
    kernel.listener?.events([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(kernel.applied).toContainEqual({ kind: 'link-up', ifindex: CLIENT_1.ifindex, group: PROVIDER_LINK_GROUP });
    const vm1 = (await agent.status()).links.find((link) => link.name === 'vm1');
    expect(vm1?.error).toMatch(/^all its traffic is dropped until the firewall names this link/);
  });

  it("puts a new link in the firewall's guarded group in the request that brings it up, and an isolated one before the firewall names it", async () => {
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    const firewall = new RecordingFirewall();
    const order: string[] = [];
    firewall.onReconcile = (model) => order.push(`firewall ${(model.isolatedLinks ?? []).join(',')}`);
    kernel.onApply = (operation) => order.push(operation.kind === 'link-group' ? `link-group ${operation.ifindex} ${operation.group}` : operation.kind);
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
    await agent.start({ watch: true });
    expect(kernel.applied.filter((operation) => operation.kind === 'link-up')).toEqual([{ kind: 'link-up', ifindex: 2, group: PROVIDER_LINK_GROUP }]);
    // A second link for client 1, up already (brought up by someone else): grouped first.
    order.length = 0;
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...CLIENT_1, ifindex: 3, name: 'vm2', up: true } }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(order).toEqual([`link-group 3 ${PROVIDER_LINK_GROUP}`, 'firewall vm2']);
  });

  it('holds a new link back while the firewall cannot take it, says so, and brings it up once it can', async () => {
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    const firewall = new RecordingFirewall();
    firewall.failing = true;
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
    await agent.start({ watch: true });
    const vm1 = async (): Promise<{ state: string; error: string | null } | undefined> => (await agent!.status()).links.find((link) => link.name === 'vm1');
    // Nothing of vm1's is applied: not up, no address, route or neighbour.
    expect(kernel.applied.filter((operation) => operationIfindex(operation) === CLIENT_1.ifindex)).toEqual([]);
    expect(await vm1()).toMatchObject({ state: 'pending', error: expect.stringMatching(/^held back until the firewall filters this link/) });
    // The firewall recovers: the retry (500 ms) filters the link, then configures it.
    firewall.failing = false;
    for (let waited = 0; waited < 5000 && !kernel.applied.some((operation) => operation.kind === 'neighbour-set'); waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await agent.idle();
    expect(firewall.models.at(-1)?.providerLinks.map((link) => link.ifname)).toEqual(['vm1']);
    expect(kernel.applied.map((operation) => operation.kind)).toContain('link-up');
    expect(await vm1()).toMatchObject({ state: 'configured', error: null });
  });

  it("says why the firewall is not in force while its updates fail, and forgets it once one succeeds", async () => {
    const firewall = new RecordingFirewall();
    firewall.failing = true;
    agent = new NetdAgent(new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]), PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
    await agent.start({ watch: true });
    expect((await agent.status()).firewallError).toBe('nft -f - failed (exit 1): Error: Could not process rule');
    firewall.failing = false;
    for (let waited = 0; waited < 5000 && firewall.models.length === 0; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    await agent.idle();
    expect((await agent.status()).firewallError).toBeNull();
  });

  it('says its firewall is off where there is none (run with --no-firewall), not zero drops; counts them where there is one', async () => {
    // --no-firewall's status showed every drop counter as 0: a firewall in force that dropped nothing.
    const off = new NetdAgent(new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]), PROVIDER_OPTIONS, pino({ level: 'silent' }), new NoopFirewall(), null);
    agent = off;
    await off.start({ watch: true });
    expect(await off.status()).toMatchObject({ firewallEnabled: false, firewall: null, arpGuard: null, flowLimits: null, firewallError: null });
    off.stop();
    const on = new NetdAgent(new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]), PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null);
    agent = on;
    await on.start({ watch: true });
    expect(await on.status()).toMatchObject({ firewallEnabled: true, firewall: { antispoofDrops: 0, arpDrops: 0 }, arpGuard: 'in-force' });
  });

  it("reads a new link's sysctls again once it is renamed: read under a name it had just lost, they were missing", async () => {
    // udev renames a hot-plugged link a moment after the kernel makes it. Read under the old name,
    // arp_filter and disable_ipv6 are missing (ENOENT, as with IPv6 compiled out), which the
    // planner takes as nothing to set: the link served with neither, ARP answered for any sender.
    const kernel = new ScriptedKernel([]);
    kernel.readSysctl = (path: string): string => (path.includes('/eth1/') ? SYSCTL_ABSENT : '0');
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), null, null);
    await agent.start({ watch: true });
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...CLIENT_1, name: 'eth1' } }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(kernel.applied).toContainEqual({ kind: 'link-up', ifindex: CLIENT_1.ifindex, group: PROVIDER_LINK_GROUP });
    // The rename's notification, the link up as the agent left it.
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP } }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    expect(kernel.applied).toContainEqual({ kind: 'sysctl', key: arpFilterOf(CLIENT_1.ifindex), value: '1' });
    expect(kernel.applied).toContainEqual({ kind: 'sysctl', key: disableIpv6Of(CLIENT_1.ifindex), value: '1' });
  });

  it("reads a link's sysctls once more, a moment later, where they were missing after its MTU changed: the kernel says the MTU is back at 1280 before it makes the link's IPv6 afresh", async () => {
    // rtnetlink's notifier runs before addrconf's: a read between the two finds disable_ipv6
    // missing ('absent', nothing to set), and the kernel then makes it at 0, IPv6 on for good.
    const kernel = new ScriptedKernel([]);
    let ipv6 = true;
    kernel.readSysctl = (path: string): string => (path.includes('disable_ipv6') && !ipv6 ? SYSCTL_ABSENT : '0');
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), null, null);
    await agent.start({ watch: true });
    const settled = async (): Promise<void> => {
      await new Promise((resolve) => setImmediate(resolve));
      await agent?.idle();
    };
    const PROVIDER_1 = { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP };
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...PROVIDER_1, mtu: 1500 } }]);
    await settled();
    const turnedOff = (): Operation[] => kernel.applied.filter((operation) => operation.kind === 'sysctl' && operation.key.template === disableIpv6Of(CLIENT_1.ifindex).template);
    expect(turnedOff()).toEqual([{ kind: 'sysctl', key: disableIpv6Of(CLIENT_1.ifindex), value: '1' }]);
    // Below 1280: IPv6 taken off the link, its files with it.
    ipv6 = false;
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...PROVIDER_1, mtu: 1000 } }]);
    await settled();
    // Back at 1500: read before the kernel made IPv6 again, which it does right after.
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...PROVIDER_1, mtu: 1500 } }]);
    await settled();
    ipv6 = true;
    for (let waited = 0; waited < 3000 && turnedOff().length < 2; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    await agent.idle();
    expect(turnedOff()).toHaveLength(2);
    // Once: a file that stays missing (IPv6 off in the whole system) is not read again and again.
    ipv6 = false;
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...PROVIDER_1, mtu: 1400 } }]);
    await settled();
    let reads = 0;
    kernel.readSysctl = (path: string): string => ((reads += 1), path.includes('disable_ipv6') ? SYSCTL_ABSENT : '0');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await agent.idle();
    expect(reads).toBeLessThanOrEqual(2);
  });

  it("reads a link's sysctls once more, a moment later, where they were missing after a rename: the kernel says the new name before it makes the link's sysctl files again under it", async () => {
    // A link renamed as it came (udev), read in that window: disable_ipv6 'absent', nothing to
    // set; the files then come back with the value they had, 0, and IPv6 stayed on for good.
    const kernel = new ScriptedKernel([]);
    let renaming = true;
    kernel.readSysctl = (): string => (renaming ? SYSCTL_ABSENT : '0');
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), null, null);
    await agent.start({ watch: true });
    const settled = async (): Promise<void> => {
      await new Promise((resolve) => setImmediate(resolve));
      await agent?.idle();
    };
    const PROVIDER_1 = { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP, mtu: 1500 };
    const turnedOff = (): Operation[] => kernel.applied.filter((operation) => operation.kind === 'sysctl' && operation.key.template === disableIpv6Of(CLIENT_1.ifindex).template);
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...PROVIDER_1, name: 'eth9' } }]);
    await settled();
    kernel.listener?.events([{ kind: 'link', op: 'new', link: PROVIDER_1 }]);
    await settled();
    expect(turnedOff()).toEqual([]);
    renaming = false;
    for (let waited = 0; waited < 3000 && turnedOff().length < 1; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    await agent.idle();
    expect(turnedOff()).toEqual([{ kind: 'sysctl', key: disableIpv6Of(CLIENT_1.ifindex), value: '1' }]);
  });

  it('tells the services of every change of links, addresses or routes (the uplink going down), not of neighbours: where a DNS upstream may have lost its route', async () => {
    // The uplink going down changed no provider link, so the services heard nothing: the DNS
    // forwarder kept the upstream "in use" until a client's query waited its whole time for it.
    const UPLINK = { ifindex: 4, name: 'eth0', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 };
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: UPLINK }]);
    let checks = 0;
    const services: ServicesPort = { linksChanged: () => Promise.resolve(), routesChanged: () => void (checks += 1) };
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), services);
    await agent.start({ watch: true });
    await agent.idle();
    const before = checks;
    kernel.listener?.events([
      { kind: 'link', op: 'new', link: { ...UPLINK, up: false } },
      { kind: 'neighbour', op: 'del', neighbour: { ifindex: 4, ip: '192.0.2.10', mac: '52:54:00:00:00:10', permanent: false } },
    ]);
    for (let waited = 0; waited < 5000 && checks === before; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    await agent.idle();
    expect(checks - before).toBe(1);
  });

  it('tells the services of a new device that took the name of the link to the upstream provider, by its index', async () => {
    const UP0 = { ifindex: 5, name: 'up0', mac: '0a:b3:ec:00:00:07', up: false, loopback: false, group: 0 };
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: UP0 }]);
    const told: (UpstreamLinkInfo | null)[] = [];
    const services: ServicesPort = {
      linksChanged: (_links, upstreamLink) => {
        told.push(upstreamLink);
        return Promise.resolve();
      },
    };
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), services);
    await agent.start({ watch: true });
    for (let waited = 0; waited < 5000 && told.at(-1) === null; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    await agent.idle();
    expect(told.at(-1)).toEqual({ ifname: 'up0', ifindex: 5, ownIp: '100.64.0.7' });
    const before = told.length;
    // Gone, and a device of the same name and MAC (so the same address) in its place, already
    // configured as the agent would (the same plan's output but for the index).
    kernel.listener?.events([
      { kind: 'link', op: 'del', link: UP0 },
      { kind: 'link', op: 'new', link: { ...UP0, ifindex: 9, up: true } },
      { kind: 'address', op: 'new', address: { ifindex: 9, ip: '100.64.0.7', prefixLength: 32, proto: 0 } },
      { kind: 'route', op: 'new', route: { dst: '169.254.0.1', dstLength: 32, oif: 9, gateway: null, priority: 0, protocol: 3 } },
      { kind: 'route', op: 'new', route: { dst: '0.0.0.0', dstLength: 0, oif: 9, gateway: '169.254.0.1', priority: 0, protocol: 3 } },
    ]);
    for (let waited = 0; waited < 5000 && told.at(-1)?.ifindex !== 9; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    await agent.idle();
    // Told once, with no moment without the link between.
    expect(told.slice(before)).toEqual([{ ifname: 'up0', ifindex: 9, ownIp: '100.64.0.7' }]);
  });

  it('tries the services again with backoff while they keep failing (DHCP without CAP_NET_RAW), saying the failure once', async () => {
    vi.useFakeTimers();
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    kernel.echo = (operation, view) => expectedEvent(view, operation);
    let calls = 0;
    const services: ServicesPort = {
      linksChanged: () => {
        calls += 1;
        return Promise.reject(new DhcpError('socket', '1 link(s) not served yet (tried again on their own while the link exists): cannot open a DHCP socket on vm1: Operation not permitted'));
      },
    };
    const lines: { level: number; msg: string; err?: unknown }[] = [];
    const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), services);
    const started = agent.start({ watch: true });
    await vi.advanceTimersByTimeAsync(0);
    await started;
    expect(calls).toBe(1);
    // Retries after 0.5, 1, 2, 4, 8 s (RETRY), the next 16 s on: five in 16 s, not one every 0.5 s.
    await vi.advanceTimersByTimeAsync(16_000);
    await agent.idle();
    expect(calls).toBe(6);
    // Said once at error; the same failure again is no news.
    expect(lines.filter((line) => line.level >= 40).map((line) => line.msg)).toEqual(['services update failed; will retry']);
    // Its one line, without a JS stack: an expected failure, not a bug.
    expect(lines.filter((line) => line.level >= 40).map((line) => line.err)).toEqual([expect.stringMatching(/^1 link\(s\) not served yet .*: Operation not permitted$/)]);
  });

  it('tells the services again after a failed update, though the links come back to those told before it: the failed update was partly made', async () => {
    // vm1 told; vm2 comes, and the update fails (DHCP could not open vm2's socket: DNS was told
    // all the same, DHCP holds vm2 to retry on its own); vm2 goes. The links are those told
    // before the failure, but the services last heard of vm2: they are told again.
    const CLIENT_2 = { ...CLIENT_1, ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02' };
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    kernel.echo = (operation, view) => expectedEvent(view, operation);
    const told: string[][] = [];
    let failing = false;
    const services: ServicesPort = {
      linksChanged: (links) => {
        told.push(links.map((link) => link.ifname));
        return failing ? Promise.reject(new Error('1 link(s) not served yet (tried again on their own while the link exists): cannot open a DHCP socket on vm2: Operation not permitted')) : Promise.resolve();
      },
    };
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), services);
    await agent.start({ watch: true });
    await agent.idle();
    expect(told.at(-1)).toEqual(['vm1']);
    failing = true;
    kernel.listener?.events([{ kind: 'link', op: 'new', link: CLIENT_2 }]);
    for (let waited = 0; waited < 5000 && told.at(-1)?.length !== 2; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    await agent.idle();
    expect(told.at(-1)).toEqual(['vm1', 'vm2']);
    failing = false;
    const before = told.length;
    kernel.listener?.events([{ kind: 'link', op: 'del', link: CLIENT_2 }]);
    await new Promise((resolve) => setImmediate(resolve));
    await agent.idle();
    // Past the retry the failure had set (0.5 s): nothing more to tell by then either way.
    await new Promise((resolve) => setTimeout(resolve, 700));
    await agent.idle();
    expect(told.slice(before)).toEqual([['vm1']]);
  });

  describe('a served link whose MAC changes while a duplicate waits for its client', () => {
    // vm1 serves client 1; vm2, a second link for client 1, is isolated. Then vm1's MAC becomes
    // client 5's: client 1 goes to vm2, in the same plan.
    const VM2 = { ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:01', up: false, loopback: false, group: 0 };
    const VM1_AS_5 = { ...CLIENT_1, mac: '0a:b3:ec:80:00:05', up: true };
    const isRoute = (operation: Operation, dst: string, oif: number): boolean =>
      (operation.kind === 'route-set' || operation.kind === 'route-del') && operation.route.dst === dst && operation.route.oif === oif;

    async function servingWithDuplicate(firewall: RecordingFirewall, kernel: ScriptedKernel): Promise<NetdAgent> {
      const started = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
      await started.start({ watch: true });
      kernel.listener?.events([{ kind: 'link', op: 'new', link: VM2 }]);
      await new Promise((resolve) => setImmediate(resolve));
      await started.idle();
      expect(firewall.models.at(-1)).toMatchObject({ providerLinks: [{ ifname: 'vm1', clientIp: '100.64.0.1' }], isolatedLinks: ['vm2'] });
      return started;
    }

    it("stops routing client 1 to vm1 before the firewall gives client 1 to vm2 (vm1's client is 5 now)", async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const firewall = new RecordingFirewall();
      agent = await servingWithDuplicate(firewall, kernel);
      const order: string[] = [];
      firewall.onReconcile = (model) => order.push(`firewall ${model.providerLinks.map((link) => `${link.ifname}=${link.clientIp}`).join(',')}`);
      kernel.onApply = (operation) => order.push(isRoute(operation, '100.64.0.1', CLIENT_1.ifindex) ? `${operation.kind} 100.64.0.1 vm1` : operation.kind);
      kernel.listener?.events([{ kind: 'link', op: 'new', link: VM1_AS_5 }]);
      await new Promise((resolve) => setImmediate(resolve));
      await agent.idle();
      const handover = order.indexOf('firewall vm1=100.64.0.5,vm2=100.64.0.1');
      expect(handover).toBeGreaterThanOrEqual(0);
      expect(order.indexOf('route-del 100.64.0.1 vm1')).toBeGreaterThanOrEqual(0);
      expect(order.indexOf('route-del 100.64.0.1 vm1')).toBeLessThan(handover);
      expect(order.indexOf('link-up')).toBeGreaterThan(handover);
    });

    it('while the firewall cannot take the change, configures neither link for its new client', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const firewall = new RecordingFirewall();
      agent = await servingWithDuplicate(firewall, kernel);
      firewall.failing = true;
      kernel.applied.length = 0;
      kernel.listener?.events([{ kind: 'link', op: 'new', link: VM1_AS_5 }]);
      await new Promise((resolve) => setImmediate(resolve));
      await agent.idle();
      // The firewall still accepts client 1 from vm1 and drops all of vm2's traffic: vm1 routed to
      // client 5, or vm2 up and routed to client 1, would not match it.
      expect(kernel.applied.filter((operation) => operation.kind === 'route-set' || operation.kind === 'neighbour-set' || operation.kind === 'link-up')).toEqual([]);
      // vm1 is up, and the firewall still accepts client 1's address from it, whoever is behind it now: down.
      expect(kernel.applied).toContainEqual({ kind: 'link-down', ifindex: CLIENT_1.ifindex });
      const links = (await agent.status()).links;
      for (const name of ['vm1', 'vm2']) {
        expect(links.find((link) => link.name === name)?.error).toMatch(/^held back until the firewall filters this link/);
      }
      firewall.failing = false;
      for (let waited = 0; waited < 5000 && !kernel.applied.some((operation) => operation.kind === 'link-up'); waited += 20) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await agent.idle();
      expect(kernel.applied.some((operation) => isRoute(operation, '100.64.0.1', VM2.ifindex))).toBe(true);
      expect(kernel.applied.some((operation) => isRoute(operation, '100.64.0.5', CLIENT_1.ifindex))).toBe(true);
    });
  });

  describe('a full re-read after notifications overflowed', () => {
    /** The kernel as the agent's view has it: what a dump reads. */
    const VM2 = { ...CLIENT_1, ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02' };

    it('drops what was read before the dump was asked for (older than it), and replays what arrives while it runs', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null);
      await agent.start({ watch: true });
      const address = [...agent.view.addresses.values()].find((entry) => entry.ifindex === CLIENT_1.ifindex);
      expect(address).toBeDefined();
      // Someone deletes vm1's address; its deletion is among the notifications lost. Read after
      // the overflow: the notification of the address's making, sent before.
      kernel.state = dumpOf(agent.view).filter((event) => event.kind !== 'address' || event.address !== address);
      kernel.applied.length = 0;
      // While the dump runs, vm2 is plugged in: its notification comes after the dump's links.
      kernel.onDump = () => kernel.listener?.events([{ kind: 'link', op: 'new', link: VM2 }]);
      kernel.listener?.lost({ kind: 'overflow' });
      kernel.listener?.events([{ kind: 'address', op: 'new', address: address! }]);
      await new Promise((resolve) => setImmediate(resolve));
      await agent.idle();
      expect((await agent.status()).counters.fullSyncs).toBe(2);
      // Replayed over the dump, the old notification would have the planner take it as there.
      expect(kernel.applied).toContainEqual({ kind: 'address-add', address });
      expect(kernel.applied).toContainEqual({ kind: 'link-up', ifindex: VM2.ifindex, group: PROVIDER_LINK_GROUP });
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([
        ['vm1', 'configured'],
        ['vm2', 'configured'],
      ]);
    });

    it('dumps again, before planning, when notifications overflow again while the dump runs (its view is already stale)', async () => {
      // vm1 is unplugged while the first dump runs, its notification among those lost; the
      // agent planned on that dump and brought vm1 up (a link since gone) before it read again.
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      let dumps = 0;
      const dumpsAtApply: number[] = [];
      kernel.onApply = () => dumpsAtApply.push(dumps);
      kernel.onDump = () => {
        dumps += 1;
        if (dumps !== 1) return;
        kernel.state = [{ kind: 'link', op: 'new', link: VM2 }];
        kernel.listener?.lost({ kind: 'overflow' });
      };
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null);
      await agent.start({ watch: true });
      expect(dumps).toBe(2);
      expect(kernel.applied.map(operationIfindex)).not.toContain(CLIENT_1.ifindex);
      expect(kernel.applied).toContainEqual({ kind: 'link-up', ifindex: VM2.ifindex, group: PROVIDER_LINK_GROUP });
      expect(new Set(dumpsAtApply)).toEqual(new Set([2]));
      expect((await agent.status()).counters.fullSyncs).toBe(2);
    });

    it('plans anyway after 3 dumps in a row that overflowed, saying so once, rather than starve while the storm lasts', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      let dumps = 0;
      const dumpsAtApply: number[] = [];
      kernel.onApply = () => dumpsAtApply.push(dumps);
      // A storm through the first 5 dumps: the 6th reads a quiet kernel.
      kernel.onDump = () => {
        dumps += 1;
        if (dumps <= 5) kernel.listener?.lost({ kind: 'overflow' });
      };
      const lines: string[] = [];
      const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      await agent.start({ watch: true });
      expect(dumps).toBe(6);
      // Planned on the 3rd dump (the view it had), then read again (3 more dumps).
      expect(dumpsAtApply[0]).toBe(3);
      const stale = lines.map((line) => (JSON.parse(line) as { msg: string }).msg).filter((msg) => msg.includes('planning on the last'));
      expect(stale).toHaveLength(1);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([['vm1', 'configured']]);
    });

    it('says why it plans on a stale re-read: notifications that could not be decoded, not an overflow, where none overflowed', async () => {
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      // Each dump takes longer than the gap an undecodable notification waits out after a re-read
      // begins: the re-read it then asks for finds the dump running, and stale.
      kernel.dumpMs = 1_500;
      let dumps = 0;
      kernel.onDump = () => {
        dumps += 1;
        if (dumps <= 5) kernel.listener?.lost({ kind: 'undecodable', messageType: 'NEWLINK', error: 'Unexpected Link message length (4)' });
      };
      const lines: string[] = [];
      const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      const started = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(20_000);
      await started;
      expect(dumps).toBe(6);
      const stale = lines.map((line) => (JSON.parse(line) as { msg: string }).msg).filter((msg) => msg.includes('planning on the last'));
      expect(stale).toEqual(['rtnetlink notifications could not be decoded during every re-read in a row: planning on the last one, reading again after']);
    });

    it('reads the whole state again after each notification that could not be decoded, warning once per agent', async () => {
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const lines: { msg: string; messageType?: string }[] = [];
      const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      const started = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await started;
      const lose = async (): Promise<number> => {
        kernel.listener?.lost({ kind: 'undecodable', messageType: 'NEWLINK', error: 'Unexpected Link message length (4)' });
        // Within a second of the last re-read's start: read again when that second is up.
        await vi.advanceTimersByTimeAsync(1_001);
        await agent!.idle();
        return (await agent!.status()).counters.fullSyncs;
      };
      expect(await lose()).toBe(2);
      // vm2 plugged in, told only by a notification that could not be decoded: the re-read finds it.
      kernel.state = [...dumpOf(agent.view), { kind: 'link', op: 'new', link: VM2 }];
      expect(await lose()).toBe(3);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([
        ['vm1', 'configured'],
        ['vm2', 'configured'],
      ]);
      expect(lines.filter((line) => line.msg.includes('could not be decoded')).map((line) => line.messageType)).toEqual(['NEWLINK']);
    });

    it('re-reads at most once a second for notifications that could not be decoded, however many keep coming, and still converges', async () => {
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      kernel.dumpMs = 5;
      const lose = (): void => kernel.listener?.lost({ kind: 'undecodable', messageType: 'NEWLINK', error: 'Unexpected Link message length (4)' });
      // A link whose every notification is undecodable, and busy: one comes with every re-read, and every 10 ms besides.
      kernel.onDump = lose;
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null);
      // Not waited for: re-reading in a loop, it would never be idle.
      void agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(10);
      const busy = setInterval(lose, 10);
      await vi.advanceTimersByTimeAsync(4_500);
      // vm2 plugged in, told only by one more of them: a re-read within the second finds it.
      kernel.state = [...dumpOf(agent.view), { kind: 'link', op: 'new', link: VM2 }];
      await vi.advanceTimersByTimeAsync(5_500);
      clearInterval(busy);
      // Ten seconds: the start's re-read, and one a second since.
      expect((await agent.status()).counters.fullSyncs).toBeLessThanOrEqual(11);
      expect((await agent.status()).counters.fullSyncs).toBeGreaterThanOrEqual(10);
      expect(agent.view.links.has(VM2.ifindex)).toBe(true);
    });

    it('warns of a dump entry that could not be decoded once while it lasts, naming it, and serves the rest', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const badLink = { messageType: 'NEWLINK', ifindex: 7, error: 'IFLA_GROUP: Unexpected length (got 2, expected 4)' };
      const badRoute = { messageType: 'NEWROUTE', ifindex: null, error: 'a route message of 8 bytes, shorter than its fixed header (12)' };
      const entry = (said: typeof badLink | typeof badRoute): SkippedEntry => ({ ...said, defaultRoute: false });
      kernel.skipped = [entry(badLink), entry(badRoute), entry(badRoute)];
      const lines: { msg: string; messageType?: string; ifindex?: number | null; error?: string; entries?: number }[] = [];
      const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      await agent.start({ watch: true });
      const reread = async (): Promise<void> => {
        kernel.listener?.lost({ kind: 'overflow' });
        await new Promise((resolve) => setImmediate(resolve));
        await agent!.idle();
      };
      const skippedSaid = (): unknown[] =>
        lines.filter((line) => line.msg.includes('skipped')).map(({ messageType, ifindex, error, entries }) => ({ messageType, ifindex, error, entries }));
      expect(skippedSaid()).toEqual([
        { ...badLink, entries: 1 },
        { ...badRoute, entries: 2 },
      ]);
      await reread();
      await reread();
      expect((await agent.status()).counters.fullSyncs).toBe(3);
      expect(skippedSaid()).toHaveLength(2);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([['vm1', 'configured']]);
      // The link decodes again, then fails again: said again.
      kernel.skipped = [entry(badRoute), entry(badRoute)];
      await reread();
      kernel.skipped = [entry(badLink), entry(badRoute), entry(badRoute)];
      await reread();
      expect(skippedSaid()).toEqual([
        { ...badLink, entries: 1 },
        { ...badRoute, entries: 2 },
        { ...badLink, entries: 1 },
      ]);
    });

    it('at start, drops what was read between subscribing and the first dump (the dump has it), and replays what arrives during it', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      // Read before the dump is asked for: vm1 under its old name, since renamed (the dump has the new one).
      const starting = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), null, null);
      agent = starting;
      kernel.onDump = () => kernel.listener?.events([{ kind: 'link', op: 'new', link: VM2 }]);
      const started = starting.start({ watch: true });
      kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...CLIENT_1, name: 'old1' } }]);
      await started;
      expect([...starting.view.links.values()].map((link) => link.name).sort()).toEqual(['vm1', 'vm2']);
    });
  });

  it('does a link-up that failed again once its link is up all the same (its answer was late): the GETLINK after it may not have been sent', async () => {
    vi.useFakeTimers();
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    // The kernel makes every change and says so, but the first link-up's answer comes too late.
    kernel.echo = (operation, view) => expectedEvent(view, operation);
    kernel.refusal = new NetdError('netlink', 'request timed out: no answer from the kernel within 5 s');
    let linkUps = 0;
    kernel.refuse = (operation) => operation.kind === 'link-up' && ++linkUps === 1;
    agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), null, null);
    const started = agent.start({ watch: true });
    await vi.advanceTimersByTimeAsync(0);
    await started;
    const vm1LinkUps = (): Operation[] => kernel.applied.filter((operation) => operation.kind === 'link-up' && operation.ifindex === CLIENT_1.ifindex);
    expect(vm1LinkUps()).toHaveLength(1);
    expect(agent.view.links.get(CLIENT_1.ifindex)?.up).toBe(true);
    // The retry finds vm1 up, and asks for it up again: its request is answered this time.
    await vi.advanceTimersByTimeAsync(600);
    await agent.idle();
    expect(vm1LinkUps()).toEqual([
      { kind: 'link-up', ifindex: CLIENT_1.ifindex, group: PROVIDER_LINK_GROUP },
      { kind: 'link-up', ifindex: CLIENT_1.ifindex },
    ]);
    expect((await agent.status()).links.map((link) => [link.name, link.state, link.error])).toEqual([['vm1', 'configured', null]]);
    // Done: a later reconcile owes vm1 nothing.
    kernel.state = dumpOf(agent.view);
    kernel.listener?.lost({ kind: 'overflow' });
    await vi.advanceTimersByTimeAsync(10);
    await agent.idle();
    expect((await agent.status()).counters.fullSyncs).toBe(2);
    expect(vm1LinkUps()).toHaveLength(2);
  });

  it('does not redo a failed link-up on a link no longer its own to bring up (renamed to a name --ignore gives), up though it is', async () => {
    vi.useFakeTimers();
    const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
    // The kernel brings vm1 up and says so, but every link-up's answer comes too late.
    kernel.echo = (operation, view) => expectedEvent(view, operation);
    kernel.refusal = new NetdError('netlink', 'request timed out: no answer from the kernel within 5 s');
    kernel.refuse = (operation) => operation.kind === 'link-up';
    agent = new NetdAgent(kernel, { ...PROVIDER_OPTIONS, ignored: new Set(['keep1']) }, pino({ level: 'silent' }), null, null);
    const started = agent.start({ watch: true });
    await vi.advanceTimersByTimeAsync(0);
    await started;
    expect(agent.view.links.get(CLIENT_1.ifindex)?.up).toBe(true);
    // Renamed before the retry: --ignore names it now, and the agent leaves it alone.
    kernel.listener?.events([{ kind: 'link', op: 'new', link: { ...CLIENT_1, name: 'keep1', up: true, group: PROVIDER_LINK_GROUP } }]);
    await vi.advanceTimersByTimeAsync(5_000);
    await agent.idle();
    expect(kernel.applied.filter((operation) => operation.kind === 'link-up')).toHaveLength(1);
  });

  describe('a re-read with an entry it cannot decode', () => {
    it('keeps a served provider link the dump lists but cannot read as last read: its firewall sets, services and conntrack entries stay, and the duplicate stays isolated', async () => {
      const DUPLICATE = { ifindex: 3, name: 'vm2', mac: CLIENT_1.mac, up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([
        { kind: 'link', op: 'new', link: CLIENT_1 },
        { kind: 'link', op: 'new', link: DUPLICATE },
      ]);
      kernel.echo = (operation, view) => expectedEvent(view, operation);
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      const { told, services } = recordingServices();
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, services, {}, conntrack);
      await agent.start({ watch: true });
      expect(firewall.models.at(-1)).toMatchObject({ providerLinks: [{ ifname: 'vm1', clientIp: '100.64.0.1' }], isolatedLinks: ['vm2'] });
      const purges = conntrack.filters.length;
      const applied = kernel.applied.length;
      // vm1 now carries a malformed attribute the agent reads: the dump lists it, skipped.
      kernel.state = dumpOf(agent.view).filter((event) => !(event.kind === 'link' && event.link.ifindex === CLIENT_1.ifindex));
      kernel.skipped = [{ messageType: 'NEWLINK', ifindex: CLIENT_1.ifindex, error: 'IFLA_GROUP: Unexpected length (got 2, expected 4)', defaultRoute: false }];
      kernel.listener?.lost({ kind: 'overflow' });
      await new Promise((resolve) => setImmediate(resolve));
      await agent.idle();
      expect((await agent.status()).counters.fullSyncs).toBe(2);
      expect(firewall.models.at(-1)).toMatchObject({ providerLinks: [{ ifname: 'vm1', clientIp: '100.64.0.1' }], isolatedLinks: ['vm2'] });
      expect(told.at(-1)).toEqual(['vm1']);
      expect(conntrack.filters.slice(purges)).toEqual([]);
      expect(kernel.applied.slice(applied)).toEqual([]);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([
        ['vm1', 'configured'],
        ['vm2', 'conflict'],
      ]);
    });

    it('leaves default routes alone where the dump lists one it cannot read (a malformed RTA_OIF)', async () => {
      const NIC = { ifindex: 3, name: 'eth0', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 };
      const APP = { ifindex: 4, name: 'eth1', mac: '0a:b3:ec:00:00:07', up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([
        { kind: 'link', op: 'new', link: NIC },
        { kind: 'link', op: 'new', link: APP },
      ]);
      // eth0's default route: the dump lists it, skipped.
      kernel.skipped = [{ messageType: 'NEWROUTE', ifindex: null, error: 'RTA_OIF: Unexpected length (got 2, expected 4)', defaultRoute: true }];
      agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      await agent.start({ watch: true });
      expect(kernel.applied.some((operation) => operation.kind === 'route-set' && operation.route.dst === '169.254.0.1')).toBe(true);
      expect(kernel.applied.filter((operation) => operation.kind === 'route-set' && operation.route.dstLength === 0)).toEqual([]);
      expect((await agent.status()).links.find((link) => link.name === 'eth1')).toMatchObject({ note: 'a default route through another interface exists; left alone' });
    });

    it('leaves default routes alone where the dump decodes one via an IPv6 next hop (RFC 5549: an oif, an IPv6 gateway)', async () => {
      const NIC = { ifindex: 3, name: 'eth0', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 };
      const APP = { ifindex: 4, name: 'eth1', mac: '0a:b3:ec:00:00:07', up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([
        { kind: 'link', op: 'new', link: NIC },
        { kind: 'link', op: 'new', link: APP },
        // What decodeRoute makes of `default via inet6 fe80::1 dev eth0` (RTA_VIA; `ip route add` marks it boot, 3).
        { kind: 'route', op: 'new', route: { dst: '0.0.0.0', dstLength: 0, oif: NIC.ifindex, gateway: 'fe80::1', priority: 0, protocol: 3 } },
      ]);
      agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      await agent.start({ watch: true });
      expect(kernel.applied.filter((operation) => (operation.kind === 'route-set' || operation.kind === 'route-del') && operation.route.dstLength === 0)).toEqual([]);
      expect((await agent.status()).links.find((link) => link.name === 'eth1')).toMatchObject({ note: 'a default route through another interface exists; left alone' });
    });

    it('warns once while it lasts of a re-read whose tables the kernel marked inconsistent in every try, and plans on it', async () => {
      // No time passes: none of the re-reads each inconsistent one asks for a second on comes.
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      kernel.inconsistent = ['links', 'addresses'];
      const lines: { msg: string; tables?: string[] }[] = [];
      const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      const started = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await started;
      const reread = async (): Promise<void> => {
        kernel.listener?.lost({ kind: 'overflow' });
        await vi.advanceTimersByTimeAsync(0);
        await agent!.idle();
      };
      const said = (): unknown[] => lines.filter((line) => line.msg.includes('NLM_F_DUMP_INTR')).map((line) => line.tables);
      expect(said()).toEqual([['links', 'addresses']]);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([['vm1', 'configured']]);
      await reread();
      expect(said()).toHaveLength(1);
      // Another table's: said. A consistent re-read, then the same again: said again.
      kernel.inconsistent = ['links'];
      await reread();
      kernel.inconsistent = [];
      await reread();
      kernel.inconsistent = ['links'];
      await reread();
      expect(said()).toEqual([['links', 'addresses'], ['links'], ['links']]);
      expect((await agent.status()).counters.fullSyncs).toBe(5);
    });

    it('reads again a second after a re-read whose tables the kernel marked inconsistent in every try, while it lasts: an entry that re-read missed is found', async () => {
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      kernel.inconsistent = ['links'];
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null);
      const started = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await started;
      const fullSyncs = async (): Promise<number> => (await agent!.status()).counters.fullSyncs;
      expect(await fullSyncs()).toBe(1);
      // vm2 was there throughout, and missed by that dump: no notification tells of it.
      kernel.state = [...dumpOf(agent.view), { kind: 'link', op: 'new', link: { ...CLIENT_1, ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02' } }];
      await vi.advanceTimersByTimeAsync(1_001);
      await agent.idle();
      expect(await fullSyncs()).toBe(2);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([
        ['vm1', 'configured'],
        ['vm2', 'configured'],
      ]);
      // That re-read was marked too: another a second on, consistent, after which nothing more is owed.
      kernel.inconsistent = [];
      await vi.advanceTimersByTimeAsync(1_001);
      await agent.idle();
      expect(await fullSyncs()).toBe(3);
      await vi.advanceTimersByTimeAsync(10_000);
      await agent.idle();
      expect(await fullSyncs()).toBe(3);
    });

    it('reads again a second after an inconsistent re-read ends, where that re-read took longer than a second', async () => {
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      kernel.dumpMs = 1_500;
      kernel.inconsistent = ['addresses'];
      let dumps = 0;
      // The first dump is marked; those after it are not.
      kernel.onDump = () => {
        dumps += 1;
        kernel.inconsistent = [];
      };
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null);
      const started = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(1_500);
      await started;
      expect(dumps).toBe(1);
      await vi.advanceTimersByTimeAsync(900);
      expect(dumps).toBe(1);
      await vi.advanceTimersByTimeAsync(200);
      expect(dumps).toBe(2);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(dumps).toBe(2);
    });
  });

  describe('a re-read whose dumps the kernel ended with an error (a negative errno in NLMSG_DONE), or refused (NLMSG_ERROR)', () => {
    it('warns once while it lasts, naming the tables and errors, plans on it, and reads again a second on while it lasts', async () => {
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      kernel.failed = [{ table: 'links', error: 'EINVAL' }];
      const lines: { msg: string; failed?: unknown }[] = [];
      const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      const started = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await started;
      const said = (): unknown[] => lines.filter((line) => line.msg.startsWith('the kernel ended every dump')).map((line) => [line.msg, line.failed]);
      expect(said()).toEqual([
        [
          'the kernel ended every dump in a row of its links with an error (links EINVAL in NLMSG_DONE): using the last, which lacks what came after the error (said once while it lasts)',
          [{ table: 'links', error: 'EINVAL' }],
        ],
      ]);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([['vm1', 'configured']]);
      const fullSyncs = async (): Promise<number> => (await agent!.status()).counters.fullSyncs;
      expect(await fullSyncs()).toBe(1);
      // vm2 was there throughout, after where the dump failed: no notification tells of it.
      const VM2 = { ...CLIENT_1, ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02' };
      kernel.state = [...dumpOf(agent.view), { kind: 'link', op: 'new', link: VM2 }];
      await vi.advanceTimersByTimeAsync(1_001);
      await agent.idle();
      expect(await fullSyncs()).toBe(2);
      expect(agent.view.links.has(VM2.ifindex)).toBe(true);
      // Still failing the same way: not said again. Another table too, refused: said, and how.
      expect(said()).toHaveLength(1);
      kernel.failed = [
        { table: 'links', error: 'EINVAL' },
        { table: 'routes', error: 'EBUSY', refused: true },
      ];
      await vi.advanceTimersByTimeAsync(1_001);
      await agent.idle();
      expect(await fullSyncs()).toBe(3);
      expect(said()).toHaveLength(2);
      expect(said()[1]).toEqual([
        "the kernel ended every dump in a row of its links, routes with an error (links EINVAL in NLMSG_DONE, routes EBUSY in NLMSG_ERROR): using the last, which lacks what came after the error, leaving every default route alone (one it did not come to is still someone's) (said once while it lasts)",
        [
          { table: 'links', error: 'EINVAL' },
          { table: 'routes', error: 'EBUSY', refused: true },
        ],
      ]);
      // Refused still, and still the same: not said again, and read again a second on.
      await vi.advanceTimersByTimeAsync(1_001);
      await agent.idle();
      expect(await fullSyncs()).toBe(4);
      expect(said()).toHaveLength(2);
      // Whole again: one more re-read a second on, then none owed.
      kernel.failed = [];
      await vi.advanceTimersByTimeAsync(1_001);
      await agent.idle();
      expect(await fullSyncs()).toBe(5);
      await vi.advanceTimersByTimeAsync(10_000);
      await agent.idle();
      expect(await fullSyncs()).toBe(5);
    });

    it('says a table during each of whose dumps the socket failed to receive as such (ENOBUFS on receiving), and takes it as cut short', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      kernel.failed = [{ table: 'links', error: 'ENOBUFS', receiveFailed: true }];
      const lines: { msg: string }[] = [];
      const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      await agent.start({ watch: false });
      expect(lines.filter((line) => line.msg.startsWith('the kernel ended every dump')).map((line) => line.msg)).toEqual([
        'the kernel ended every dump in a row of its links with an error (links ENOBUFS on receiving): using the last, which lacks what came after the error (said once while it lasts)',
      ]);
      expect(agent.view.cutShort).toEqual(new Set(['links']));
    });

    it('leaves default routes alone while its dump of the routes fails: a default it did not come to is still someone\'s', async () => {
      const APP = { ifindex: 4, name: 'eth1', mac: '0a:b3:ec:00:00:07', up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: APP }]);
      kernel.failed = [{ table: 'routes', error: 'EMSGSIZE' }];
      agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      await agent.start({ watch: false });
      expect(kernel.applied.some((operation) => operation.kind === 'route-set' && operation.route.dst === '169.254.0.1')).toBe(true);
      expect(kernel.applied.filter((operation) => operation.kind === 'route-set' && operation.route.dstLength === 0)).toEqual([]);
      // None was read: the note does not say one exists.
      const note = 'the routes could not be read whole (their dump failed, or was refused: see the log): a default route the dump did not come to would be left alone, so ours is not added yet';
      expect((await agent.status()).links.find((link) => link.name === 'eth1')?.note).toBe(note);
      // Refused (an NLMSG_ERROR: none of the table read), the same, and said as true of it.
      const refused = new ScriptedKernel([{ kind: 'link', op: 'new', link: APP }]);
      refused.failed = [{ table: 'routes', error: 'EBUSY', refused: true }];
      const third = new NetdAgent(refused, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      await third.start({ watch: false });
      third.stop();
      expect(refused.applied.filter((operation) => operation.kind === 'route-set' && operation.route.dstLength === 0)).toEqual([]);
      expect((await third.status()).links.find((link) => link.name === 'eth1')?.note).toBe(note);
      // Another table's failure is no matter to default routes.
      const other = new ScriptedKernel([{ kind: 'link', op: 'new', link: APP }]);
      other.failed = [{ table: 'neighbours', error: 'EMSGSIZE' }];
      const second = new NetdAgent(other, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      await second.start({ watch: false });
      second.stop();
      expect(other.applied.filter((operation) => operation.kind === 'route-set' && operation.route.dstLength === 0)).toHaveLength(1);
    });

    it('keeps as last known the links its dump of the links did not come to: their firewall sets, services and conntrack entries stay; not one deleted meanwhile', async () => {
      // No time passes: the re-read owed a second on does not come (fullSyncs stays 2 however slow the run).
      vi.useFakeTimers();
      const VM2 = { ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02', up: false, loopback: false, group: 0 };
      const VM3 = { ifindex: 4, name: 'vm3', mac: '0a:b3:ec:80:00:03', up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([CLIENT_1, VM2, VM3].map((link) => ({ kind: 'link', op: 'new', link }) as const));
      kernel.echo = (operation, view) => expectedEvent(view, operation);
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      const { told, services } = recordingServices();
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, services, {}, conntrack);
      const starting = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await starting;
      expect(told.at(-1)).toEqual(['vm1', 'vm2', 'vm3']);
      const purges = conntrack.filters.length;
      const applied = kernel.applied.length;
      // The links' dump fails before vm2 and vm3; vm3 was deleted, as a notification read before the dump said.
      const linkOf = (event: KernelEvent): number | null =>
        event.kind === 'link' ? event.link.ifindex : event.kind === 'address' ? event.address.ifindex : event.kind === 'route' ? event.route.oif : event.neighbour.ifindex;
      kernel.state = dumpOf(agent.view).filter((event) => linkOf(event) !== VM3.ifindex && !(event.kind === 'link' && event.link.ifindex === VM2.ifindex));
      kernel.failed = [{ table: 'links', error: 'EMSGSIZE' }];
      kernel.listener?.lost({ kind: 'overflow' });
      kernel.listener?.events([{ kind: 'link', op: 'del', link: { ...VM3, up: true, group: PROVIDER_LINK_GROUP } }]);
      await vi.advanceTimersByTimeAsync(0);
      await agent.idle();
      expect((await agent.status()).counters.fullSyncs).toBe(2);
      expect([...agent.view.links.keys()]).toEqual([CLIENT_1.ifindex, VM2.ifindex]);
      expect(firewall.models.at(-1)?.providerLinks.map((link) => link.ifname)).toEqual(['vm1', 'vm2']);
      expect(told.at(-1)).toEqual(['vm1', 'vm2']);
      // Only vm3's client IP is released.
      expect(conntrack.filters.slice(purges)).toEqual([{ addresses: ['100.64.0.3'], sweep: null }]);
      expect(kernel.applied.slice(applied)).toEqual([]);
    });

    it('forgets a link kept as last known once another link is known by its name (deleted, its notification lost, the name taken again): the firewall is not told two links of one name', async () => {
      const VM2 = { ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02', up: false, loopback: false, group: 0 };
      // A new vm2, for client 5 (a NIC plugged where vm2's was, given its name).
      const NEW_VM2 = { ifindex: 7, name: 'vm2', mac: '0a:b3:ec:80:00:05', up: false, loopback: false, group: 0 };
      const arrivals = ['read before the dump', 'listed by the dump', 'read after the dump'] as const;
      for (const arrival of arrivals) {
        const kernel = new ScriptedKernel([CLIENT_1, VM2].map((link) => ({ kind: 'link', op: 'new', link }) as const));
        kernel.echo = (operation, view) => expectedEvent(view, operation);
        const firewall = new RecordingFirewall();
        const conntrack = new RecordingConntrack();
        const provider = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null, {}, conntrack);
        await provider.start({ watch: true });
        const purges = conntrack.filters.length;
        // vm2 was deleted, its notification lost in the overflow; the links' dump fails before where it was.
        const gone = (event: KernelEvent): boolean =>
          (event.kind === 'link' && event.link.ifindex === VM2.ifindex) ||
          (event.kind === 'address' && event.address.ifindex === VM2.ifindex) ||
          (event.kind === 'route' && event.route.oif === VM2.ifindex) ||
          (event.kind === 'neighbour' && event.neighbour.ifindex === VM2.ifindex);
        kernel.state = dumpOf(provider.view).filter((event) => !gone(event));
        if (arrival === 'listed by the dump') kernel.state = [...kernel.state, { kind: 'link', op: 'new', link: NEW_VM2 }];
        kernel.failed = [{ table: 'links', error: 'EMSGSIZE' }];
        kernel.listener?.lost({ kind: 'overflow' });
        if (arrival === 'read before the dump') kernel.listener?.events([{ kind: 'link', op: 'new', link: NEW_VM2 }]);
        await new Promise((resolve) => setImmediate(resolve));
        await provider.idle();
        if (arrival === 'read after the dump') {
          kernel.listener?.events([{ kind: 'link', op: 'new', link: NEW_VM2 }]);
          await new Promise((resolve) => setImmediate(resolve));
          await provider.idle();
        }
        provider.stop();
        expect([arrival, [...provider.view.links.keys()].sort((a, b) => a - b)]).toEqual([arrival, [CLIENT_1.ifindex, NEW_VM2.ifindex]]);
        const model = firewall.models.at(-1);
        expect([arrival, model?.providerLinks]).toEqual([
          arrival,
          [
            { ifname: 'vm1', clientIp: '100.64.0.1' },
            { ifname: 'vm2', clientIp: '100.64.0.5' },
          ],
        ]);
        expect(() => validateFirewallModel(model as FirewallModel)).not.toThrow();
        // The old vm2's client IP is released.
        expect([arrival, conntrack.filters.slice(purges)]).toEqual([arrival, [{ addresses: ['100.64.0.2'], sweep: null }]]);
      }
    });

    it('forgets a link kept as last known once the kernel answers a change to it with ENODEV (deleted, its notification lost): its client is released, and it is asked nothing more', async () => {
      vi.useFakeTimers();
      const VM2 = { ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02', up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([CLIENT_1, VM2].map((link) => ({ kind: 'link', op: 'new', link }) as const));
      kernel.echo = (operation, view) => (operationIfindex(operation) === VM2.ifindex && kernel.refuse(operation) ? null : expectedEvent(view, operation));
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null, {}, conntrack);
      const starting = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await starting;
      const purges = conntrack.filters.length;
      // vm2 was deleted, its notification lost in the overflow; the links' dump fails before where it was, re-read after re-read.
      kernel.state = dumpOf(agent.view).filter(
        (event) =>
          !(event.kind === 'link' && event.link.ifindex === VM2.ifindex) &&
          !(event.kind === 'address' && event.address.ifindex === VM2.ifindex) &&
          !(event.kind === 'route' && event.route.oif === VM2.ifindex) &&
          !(event.kind === 'neighbour' && event.neighbour.ifindex === VM2.ifindex),
      );
      kernel.failed = [{ table: 'links', error: 'EMSGSIZE' }];
      kernel.refuse = (operation) => operationIfindex(operation) === VM2.ifindex;
      kernel.refusal = new KernelRefusal('ENODEV', '');
      const applied = kernel.applied.length;
      kernel.listener?.lost({ kind: 'overflow' });
      await vi.advanceTimersByTimeAsync(5_000);
      await agent.idle();
      expect((await agent.status()).counters.fullSyncs).toBeGreaterThanOrEqual(5);
      expect([...agent.view.links.keys()]).toEqual([CLIENT_1.ifindex]);
      expect(firewall.models.at(-1)?.providerLinks.map((link) => link.ifname)).toEqual(['vm1']);
      expect(conntrack.filters.slice(purges)).toEqual([{ addresses: ['100.64.0.2'], sweep: null }]);
      // One plan's changes to it, refused; none after.
      const refused = kernel.applied.slice(applied).filter((operation) => operationIfindex(operation) === VM2.ifindex);
      expect(refused.map((operation) => operation.kind)).toEqual(['address-add', 'route-set', 'neighbour-set']);
      expect((await agent.status()).links.map((link) => [link.name, link.error])).toEqual([['vm1', null]]);
    });

    it("keeps a link kept as last known whose change failed for another reason, though the failure's text names it and its name reads ENODEV", async () => {
      vi.useFakeTimers();
      // A link of that name is served like any other ('.' and '-' bound a word as well: vm-ENODEV).
      const NAMED = { ifindex: 3, name: 'ENODEV', mac: '0a:b3:ec:80:00:02', up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([CLIENT_1, NAMED].map((link) => ({ kind: 'link', op: 'new', link }) as const));
      kernel.echo = (operation, view) => expectedEvent(view, operation);
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null, {}, conntrack);
      const starting = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await starting;
      const purges = conntrack.filters.length;
      // It is there still; the links' dump fails before it. Its sysctls read 0, and writing them fails as RtnetlinkKernel says so.
      kernel.state = dumpOf(agent.view).filter((event) => !(event.kind === 'link' && event.link.ifindex === NAMED.ifindex));
      kernel.failed = [{ table: 'links', error: 'EMSGSIZE' }];
      kernel.readSysctl = (path: string): string => (path.includes('/ENODEV/') ? '0' : '1');
      kernel.refuse = (operation) => operation.kind === 'sysctl' && operation.key.ifindex === NAMED.ifindex;
      kernel.refusal = new NetdError('sysctl', 'cannot write /proc/sys/net/ipv6/conf/ENODEV/disable_ipv6 (EROFS): is /proc/sys mounted writable?');
      const applied = kernel.applied.length;
      kernel.listener?.lost({ kind: 'overflow' });
      await vi.advanceTimersByTimeAsync(3_000);
      await agent.idle();
      expect(kernel.applied.slice(applied).some((operation) => kernel.refuse(operation))).toBe(true);
      expect([...agent.view.links.keys()]).toEqual([CLIENT_1.ifindex, NAMED.ifindex]);
      expect(firewall.models.at(-1)?.providerLinks).toEqual([
        { ifname: 'vm1', clientIp: '100.64.0.1' },
        { ifname: 'ENODEV', clientIp: '100.64.0.2' },
      ]);
      expect(conntrack.filters.slice(purges)).toEqual([]);
    });

    it('in client mode, keeps the primary link its dump of the links did not come to: its marked address and routes stay', async () => {
      // No time passes: the re-read owed a second on does not come (fullSyncs stays 2 however slow the run).
      vi.useFakeTimers();
      const APP = { ifindex: 4, name: 'eth1', mac: '0a:b3:ec:00:00:07', up: false, loopback: false, group: 0 };
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: APP }]);
      kernel.echo = (operation, view) => expectedEvent(view, operation);
      agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      const starting = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await starting;
      expect(kernel.applied.map((operation) => operation.kind)).toEqual(['link-up', 'address-add', 'route-set', 'route-set']);
      const applied = kernel.applied.length;
      kernel.state = dumpOf(agent.view).filter((event) => event.kind !== 'link');
      kernel.failed = [{ table: 'links', error: 'EMSGSIZE' }];
      kernel.listener?.lost({ kind: 'overflow' });
      await vi.advanceTimersByTimeAsync(0);
      await agent.idle();
      expect((await agent.status()).counters.fullSyncs).toBe(2);
      expect(kernel.applied.slice(applied)).toEqual([]);
      expect((await agent.status()).links.map((link) => [link.name, link.state])).toEqual([['eth1', 'configured']]);
    });

    it('in client mode, removes nothing of its own on a link its dump of the links did not come to, at start too (no link last known)', async () => {
      const APP = { ifindex: 4, name: 'eth1', mac: '0a:b3:ec:00:00:07', up: true, loopback: false, group: 0 };
      // eth1 as an earlier run left it; the links' dump fails before it.
      const kernel = new ScriptedKernel([
        { kind: 'address', op: 'new', address: { ifindex: APP.ifindex, ip: '100.64.0.7', prefixLength: 32, proto: CLIENT_MARK } },
        { kind: 'route', op: 'new', route: { dst: '169.254.0.1', dstLength: 32, oif: APP.ifindex, gateway: null, priority: 0, protocol: CLIENT_MARK } },
        { kind: 'route', op: 'new', route: { dst: '0.0.0.0', dstLength: 0, oif: APP.ifindex, gateway: '169.254.0.1', priority: 0, protocol: CLIENT_MARK } },
      ]);
      kernel.failed = [{ table: 'links', error: 'EMSGSIZE' }];
      agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      await agent.start({ watch: false });
      expect(kernel.applied).toEqual([]);
    });

    it("in client mode, keeps a link's last address of its own it no longer wants while its dump of the routes or neighbours fails: one not listed may need it", async () => {
      const ETH0 = { ifindex: 3, name: 'eth0', mac: '52:54:00:12:34:56', up: true, loopback: false, group: 0 };
      const OURS = { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: CLIENT_MARK };
      for (const table of ['routes', 'neighbours'] as const) {
        const kernel = new ScriptedKernel([
          { kind: 'link', op: 'new', link: ETH0 },
          { kind: 'address', op: 'new', address: OURS },
        ]);
        kernel.failed = [{ table, error: 'EMSGSIZE' }];
        const client = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
        await client.start({ watch: false });
        client.stop();
        expect(kernel.applied).toEqual([]);
        expect((await client.status()).links.find((link) => link.name === 'eth0')).toMatchObject({
          kept: ['100.64.0.5/32'],
          note: `addressing is left to the network manager; keeps 100.64.0.5/32 of client mode's: deleting its last IPv4 address would take any route or neighbour entry not ours with it, and the ${table} could not be read whole (a dump failed, or was refused: see the log)`,
        });
      }
      // Another table's failure is no matter: it goes.
      const kernel = new ScriptedKernel([
        { kind: 'link', op: 'new', link: ETH0 },
        { kind: 'address', op: 'new', address: OURS },
      ]);
      kernel.failed = [{ table: 'addresses', error: 'EMSGSIZE' }];
      agent = new NetdAgent(kernel, { mode: 'client', ignored: new Set(), allowedPairs: [] }, pino({ level: 'silent' }), null, null);
      await agent.start({ watch: false });
      expect(kernel.applied).toEqual([{ kind: 'address-del', address: OURS }]);
    });
  });

  describe('a re-read owed (asked for when a second has passed since the last began)', () => {
    /** The debug lines saying why an owed re-read is taken. */
    const owedLines = (lines: readonly { msg: string; why?: unknown }[]): unknown[] =>
      lines.filter((line) => line.msg.startsWith('reading the whole state again, as owed')).map((line) => [line.why, line.msg]);

    it('says what it is owed for: an inconsistent dump, a failed one, a notification that could not be decoded, never one for another', async () => {
      vi.useFakeTimers();
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      kernel.inconsistent = ['addresses'];
      const lines: { msg: string; why?: unknown }[] = [];
      const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as (typeof lines)[number]), done()) }));
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, log, new RecordingFirewall(), null);
      const started = agent.start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await started;
      const secondOn = async (): Promise<void> => {
        await vi.advanceTimersByTimeAsync(1_001);
        await agent!.idle();
      };
      kernel.inconsistent = [];
      kernel.failed = [{ table: 'routes', error: 'EMSGSIZE' }];
      await secondOn();
      kernel.failed = [];
      await secondOn();
      // A notification that could not be decoded, within the second after that re-read began.
      kernel.listener?.lost({ kind: 'undecodable', messageType: 'NEWLINK', error: 'Unexpected Link message length (4)' });
      await secondOn();
      expect(owedLines(lines)).toEqual([
        [['inconsistent dump'], 'reading the whole state again, as owed: the kernel marked a dump inconsistent (NLM_F_DUMP_INTR) in each try'],
        [
          ['failed dump'],
          'reading the whole state again, as owed: the kernel ended a dump with an error (NLMSG_DONE), or refused it (NLMSG_ERROR), or the socket failed to receive during it, in each try',
        ],
        [['undecodable'], 'reading the whole state again, as owed: rtnetlink notifications could not be decoded'],
      ]);
      expect((await agent.status()).counters.fullSyncs).toBe(4);
      await secondOn();
      expect(owedLines(lines)).toHaveLength(3);
    });
  });

  describe('notifications of its own changes', () => {
    const hotPlug = async (kernel: ScriptedKernel): Promise<number> => {
      const before = (await agent!.status()).counters.reconciles;
      kernel.listener?.events([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      await new Promise((resolve) => setImmediate(resolve));
      await agent!.idle();
      return (await agent!.status()).counters.reconciles - before;
    };

    it('plans a hot-plug once: the echoes of its changes, arriving before they are recorded, start no second plan', async () => {
      const kernel = new ScriptedKernel([]);
      kernel.echo = (operation, view) => expectedEvent(view, operation);
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null);
      await agent.start({ watch: true });
      expect(await hotPlug(kernel)).toBe(1);
      expect((await agent.status()).links.find((link) => link.name === 'vm1')).toMatchObject({ state: 'configured', error: null });
    });

    it('plans again when a notification about an object it changed says more (renamed meanwhile)', async () => {
      const kernel = new ScriptedKernel([]);
      const firewall = new RecordingFirewall();
      kernel.echo = (operation, view) => {
        const echo = expectedEvent(view, operation);
        return echo?.kind === 'link' ? { ...echo, link: { ...echo.link, name: 'vm1b' } } : echo;
      };
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null);
      await agent.start({ watch: true });
      expect(await hotPlug(kernel)).toBe(2);
      expect(firewall.models.at(-1)?.providerLinks.map((link) => link.ifname)).toEqual(['vm1b']);
    });
  });
  describe('conntrack entries of client IPs no longer served', () => {
    const VM2 = { ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02', up: false, loopback: false, group: 0 };
    /** A new link for client 1, after vm1 is gone. */
    const VM3 = { ifindex: 4, name: 'vm3', mac: '0a:b3:ec:80:00:01', up: false, loopback: false, group: 0 };
    const SWEEP = { network: '100.64.0.0', prefixLength: 16 };
    const isRouteTo = (operation: Operation, dst: string, oif: number): boolean => operation.kind === 'route-set' && operation.route.dst === dst && operation.route.oif === oif;

    async function settle(kernel: ScriptedKernel, events: KernelEvent[]): Promise<void> {
      kernel.listener?.events(events);
      await new Promise((resolve) => setImmediate(resolve));
      await agent!.idle();
    }

    async function until(what: () => boolean): Promise<void> {
      for (let waited = 0; waited < 5000 && !what(); waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
      await agent!.idle();
    }

    function started(kernel: ScriptedKernel, firewall: RecordingFirewall, conntrack: RecordingConntrack): NetdAgent {
      agent = new NetdAgent(kernel, PROVIDER_OPTIONS, pino({ level: 'silent' }), firewall, null, {}, conntrack);
      return agent;
    }

    it('once stopped while the firewall takes a reconcile\'s model, sends nothing more: no conntrack purge, no kernel change', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      // The start sweep is owed: after the firewall, it would run before any link is configured.
      let letFirewallEnd = (): void => undefined;
      const firewallEnds = new Promise<void>((resolve) => (letFirewallEnd = resolve));
      const reconcile = firewall.reconcile.bind(firewall);
      let reconciling = (): void => undefined;
      const firewallStarted = new Promise<void>((resolve) => (reconciling = resolve));
      firewall.reconcile = (model) => {
        reconciling();
        return firewallEnds.then(() => reconcile(model));
      };
      const starting = started(kernel, firewall, conntrack).start({ watch: true });
      await firewallStarted;
      const appliedBeforeStop = kernel.applied.length;
      agent!.stop();
      letFirewallEnd();
      await starting;
      expect(conntrack.filters).toEqual([]);
      expect(kernel.applied).toHaveLength(appliedBeforeStop);
    });

    it('sweeps at start every client IP but those served as a previous agent left them and its own, after the firewall and before any link is configured', async () => {
      const kernel = new ScriptedKernel([
        { kind: 'link', op: 'new', link: { ...CLIENT_1, up: true } },
        { kind: 'route', op: 'new', route: { dst: '100.64.0.1', dstLength: 32, oif: 2, gateway: null, priority: 0, protocol: 3 } },
        { kind: 'link', op: 'new', link: VM2 },
        { kind: 'link', op: 'new', link: { ifindex: 5, name: 'up0', mac: '0a:b3:ec:00:00:07', up: true, loopback: false, group: 0 } },
        { kind: 'address', op: 'new', address: { ifindex: 5, ip: '100.64.0.7', prefixLength: 32, proto: 0 } },
      ]);
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      const order: string[] = [];
      firewall.onReconcile = () => order.push('firewall');
      conntrack.onPurge = () => order.push('purge');
      kernel.onApply = (operation) => order.push(operation.kind);
      await started(kernel, firewall, conntrack).start({ watch: true });
      expect(conntrack.filters).toEqual([{ addresses: [], sweep: { ...SWEEP, keep: ['100.64.0.1', '100.64.0.7'] } }]);
      expect(order.indexOf('firewall')).toBeLessThan(order.indexOf('purge'));
      expect(order.indexOf('purge')).toBeLessThan(order.indexOf('link-up'));
      expect(order.indexOf('purge')).toBeLessThan(order.indexOf('route-set'));
      expect((await agent!.status()).conntrack).toEqual({ owed: [], sweepOwed: false, lastError: null });
    });

    it("purges a removed link's client IP, and only it, before a new link given that IP is routed to", async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }, { kind: 'link', op: 'new', link: VM2 }]);
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      await started(kernel, firewall, conntrack).start({ watch: true });
      // A hot-plug that releases nothing purges nothing.
      await settle(kernel, [{ kind: 'link', op: 'new', link: { ...VM2, ifindex: 6, name: 'vm6', mac: '0a:b3:ec:80:00:06' } }]);
      expect(conntrack.filters).toHaveLength(1);
      const order: string[] = [];
      conntrack.onPurge = (filter) => order.push(`purge ${filter.addresses.join(',')}`);
      firewall.onReconcile = (model) => order.push(`firewall ${model.providerLinks.map((link) => link.ifname).join(',')}`);
      kernel.onApply = (operation) => order.push(isRouteTo(operation, '100.64.0.1', VM3.ifindex) ? 'route 100.64.0.1 vm3' : operation.kind);
      await settle(kernel, [{ kind: 'link', op: 'del', link: CLIENT_1 }, { kind: 'link', op: 'new', link: VM3 }]);
      expect(conntrack.filters.slice(1)).toEqual([{ addresses: ['100.64.0.1'], sweep: null }]);
      // The firewall no longer accepts client 1 from vm1 when the purge runs, and vm3 is routed client 1 only after it.
      expect(order.indexOf('firewall vm2,vm3,vm6')).toBeLessThan(order.indexOf('purge 100.64.0.1'));
      expect(order.indexOf('purge 100.64.0.1')).toBeLessThan(order.indexOf('route 100.64.0.1 vm3'));
      expect((await agent!.status()).counters).toMatchObject({ conntrackPurged: 2, conntrackPurgeFailures: 0 });
    });

    it("purges the former client IP of a link whose MAC changed, and the link's new client's IP is not purged", async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const conntrack = new RecordingConntrack();
      await started(kernel, new RecordingFirewall(), conntrack).start({ watch: true });
      await settle(kernel, [{ kind: 'link', op: 'new', link: { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP, mac: '0a:b3:ec:80:00:05' } }]);
      expect(conntrack.filters.slice(1)).toEqual([{ addresses: ['100.64.0.1'], sweep: null }]);
    });

    it('holds back the link of a released IP while the purge fails, says so, configures the others, and serves it once a retry succeeds', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const conntrack = new RecordingConntrack();
      await started(kernel, new RecordingFirewall(), conntrack).start({ watch: true });
      conntrack.failing = true;
      kernel.applied.length = 0;
      await settle(kernel, [{ kind: 'link', op: 'del', link: CLIENT_1 }, { kind: 'link', op: 'new', link: VM3 }, { kind: 'link', op: 'new', link: VM2 }]);
      expect(kernel.applied.filter((operation) => operationIfindex(operation) === VM3.ifindex)).toEqual([]);
      expect(kernel.applied.some((operation) => isRouteTo(operation, '100.64.0.2', VM2.ifindex))).toBe(true);
      const status = await agent!.status();
      expect(status.links.find((link) => link.name === 'vm3')).toMatchObject({
        state: 'pending',
        error: expect.stringMatching(/^held back until the conntrack entries of its client IP's former VM are deleted/),
      });
      expect(status.conntrack).toEqual({ owed: ['100.64.0.1'], sweepOwed: false, lastError: expect.stringMatching(/^reading the conntrack table failed/) });
      expect(status.counters.conntrackPurgeFailures).toBe(1);
      conntrack.failing = false;
      await until(() => kernel.applied.some((operation) => isRouteTo(operation, '100.64.0.1', VM3.ifindex)));
      expect(conntrack.filters.at(-1)).toEqual({ addresses: ['100.64.0.1'], sweep: null });
      const after = await agent!.status();
      expect(after.links.find((link) => link.name === 'vm3')).toMatchObject({ state: 'configured', error: null });
      expect(after.conntrack).toEqual({ owed: [], sweepOwed: false, lastError: null });
    });

    it('takes down a link held back for a purge that is up already (the firewall accepts its client IP)', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const conntrack = new RecordingConntrack();
      await started(kernel, new RecordingFirewall(), conntrack).start({ watch: true });
      conntrack.failing = true;
      kernel.applied.length = 0;
      await settle(kernel, [{ kind: 'link', op: 'del', link: CLIENT_1 }, { kind: 'link', op: 'new', link: { ...VM3, up: true, group: PROVIDER_LINK_GROUP } }]);
      expect(kernel.applied.filter((operation) => operationIfindex(operation) === VM3.ifindex)).toEqual([{ kind: 'link-down', ifindex: VM3.ifindex }]);
      conntrack.failing = false;
      await until(() => kernel.applied.some((operation) => isRouteTo(operation, '100.64.0.1', VM3.ifindex)));
      expect(kernel.applied).toContainEqual({ kind: 'link-up', ifindex: VM3.ifindex });
    });

    it("takes down a link already up whose client changed to a released IP before purging that IP, and brings it up for it after", async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }, { kind: 'link', op: 'new', link: VM2 }]);
      const conntrack = new RecordingConntrack();
      await started(kernel, new RecordingFirewall(), conntrack).start({ watch: true });
      const order: string[] = [];
      conntrack.onPurge = (filter) => order.push(`purge ${filter.addresses.join(',')}`);
      kernel.onApply = (operation) => order.push(operationIfindex(operation) === VM2.ifindex ? `${operation.kind} vm2` : operation.kind);
      // vm1 goes; vm2, up and serving client 2, is given client 1's MAC (another VM behind it).
      await settle(kernel, [{ kind: 'link', op: 'del', link: CLIENT_1 }, { kind: 'link', op: 'new', link: { ...VM2, up: true, group: PROVIDER_LINK_GROUP, mac: CLIENT_1.mac } }]);
      await until(() => kernel.applied.some((operation) => isRouteTo(operation, '100.64.0.1', VM2.ifindex)));
      expect(conntrack.filters.at(-1)).toEqual({ addresses: ['100.64.0.1', '100.64.0.2'], sweep: null });
      // Down before the purge: the firewall accepts client 1 from vm2 already, and whatever sent it would join the old VM's flows.
      expect(order.indexOf('link-down vm2')).toBeGreaterThanOrEqual(0);
      expect(order.indexOf('link-down vm2')).toBeLessThan(order.indexOf('purge 100.64.0.1,100.64.0.2'));
      expect(order.indexOf('link-up vm2')).toBeGreaterThan(order.indexOf('purge 100.64.0.1,100.64.0.2'));
      expect((await agent!.status()).links.find((link) => link.name === 'vm2')).toMatchObject({ state: 'configured', error: null });
    });

    it('blames the firewall, not the purge, for a held link when the purge succeeded but the firewall update failed', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const firewall = new RecordingFirewall();
      await started(kernel, firewall, new RecordingConntrack()).start({ watch: true });
      firewall.failing = true;
      await settle(kernel, [{ kind: 'link', op: 'del', link: CLIENT_1 }, { kind: 'link', op: 'new', link: VM3 }]);
      const status = await agent!.status();
      expect(status.conntrack).toEqual({ owed: ['100.64.0.1'], sweepOwed: false, lastError: null });
      expect(status.links.find((link) => link.name === 'vm3')?.error).toMatch(/^held back until the firewall filters this link: updating the firewall failed/);
    });

    it('while the start sweep fails, serves the links a previous agent configured and holds back the others', async () => {
      const kernel = new ScriptedKernel([
        { kind: 'link', op: 'new', link: { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP } },
        { kind: 'route', op: 'new', route: { dst: '100.64.0.1', dstLength: 32, oif: 2, gateway: null, priority: 0, protocol: 3 } },
        { kind: 'link', op: 'new', link: VM2 },
      ]);
      const conntrack = new RecordingConntrack();
      conntrack.failing = true;
      await started(kernel, new RecordingFirewall(), conntrack).start({ watch: true });
      expect(kernel.applied.some((operation) => operation.kind === 'neighbour-set' && operation.neighbour.ifindex === CLIENT_1.ifindex)).toBe(true);
      expect(kernel.applied.filter((operation) => operationIfindex(operation) === VM2.ifindex)).toEqual([]);
      expect((await agent!.status()).conntrack).toMatchObject({ owed: [], sweepOwed: true });
      conntrack.failing = false;
      await until(() => kernel.applied.some((operation) => isRouteTo(operation, '100.64.0.2', VM2.ifindex)));
      expect((await agent!.status()).conntrack).toEqual({ owed: [], sweepOwed: false, lastError: null });
    });

    it('at start, while its dump of the links, addresses or routes fails, neither sweeps nor takes down a link a previous agent configured; sweeps once a re-read is whole', async () => {
      vi.useFakeTimers();
      const VM1_UP = { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP };
      const VM1_ROUTE = { dst: '100.64.0.1', dstLength: 32, oif: 2, gateway: null, priority: 0, protocol: 3 };
      // vm1 as a previous agent left it; its route is after where the dump of the routes failed.
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: VM1_UP }]);
      kernel.failed = [{ table: 'routes', error: 'EMSGSIZE' }];
      const conntrack = new RecordingConntrack();
      const starting = started(kernel, new RecordingFirewall(), conntrack).start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await starting;
      expect(conntrack.filters).toEqual([]);
      expect(kernel.applied).toEqual([]);
      const status = await agent!.status();
      expect(status.conntrack).toEqual({ owed: [], sweepOwed: true, lastError: null });
      expect(status.links).toMatchObject([
        {
          name: 'vm1',
          error:
            "held back until the conntrack entries of its client IP's former VM are deleted: the routes could not be read whole (a dump failed, or was refused: see the log), and which client IPs are served as a previous agent left them is read from them; retrying",
        },
      ]);
      // Whole a second on: vm1's route is read, and its entries kept.
      kernel.state = [{ kind: 'link', op: 'new', link: VM1_UP }, { kind: 'route', op: 'new', route: VM1_ROUTE }];
      kernel.failed = [];
      await vi.advanceTimersByTimeAsync(1_001);
      await agent!.idle();
      expect((await agent!.status()).counters.fullSyncs).toBe(2);
      expect(conntrack.filters).toEqual([{ addresses: [], sweep: { ...SWEEP, keep: ['100.64.0.1'] } }]);
      expect(kernel.applied.filter((operation) => operation.kind === 'link-down')).toEqual([]);
      expect((await agent!.status()).conntrack).toEqual({ owed: [], sweepOwed: false, lastError: null });
      // The links' or addresses' dump failing holds the sweep as well (what a previous agent served, or its own address, may be missing).
      for (const table of ['links', 'addresses'] as const) {
        const other = new ScriptedKernel([{ kind: 'link', op: 'new', link: VM1_UP }, { kind: 'route', op: 'new', route: VM1_ROUTE }]);
        other.failed = [{ table, error: 'EMSGSIZE' }];
        const otherConntrack = new RecordingConntrack();
        const otherAgent = new NetdAgent(other, PROVIDER_OPTIONS, pino({ level: 'silent' }), new RecordingFirewall(), null, {}, otherConntrack);
        const otherStarting = otherAgent.start({ watch: true });
        await vi.advanceTimersByTimeAsync(0);
        await otherStarting;
        otherAgent.stop();
        expect([table, otherConntrack.filters]).toEqual([table, []]);
        expect((await otherAgent.status()).conntrack).toMatchObject({ sweepOwed: true });
      }
    });

    it('while its dump of the routes keeps failing, serves a link that is down once its client IP alone is purged (the sweep would purge it all the same); one up still waits, not taken down', async () => {
      vi.useFakeTimers();
      const VM1_UP = { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP };
      const VM1_ROUTE = { dst: '100.64.0.1', dstLength: 32, oif: 2, gateway: null, priority: 0, protocol: 3 };
      const VM2 = { ifindex: 3, name: 'vm2', mac: '0a:b3:ec:80:00:02', up: false, loopback: false, group: 0 };
      // vm1 as a previous agent left it; the routes' dump fails before any route, in every re-read.
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: VM1_UP }]);
      kernel.echo = (operation, view) => expectedEvent(view, operation);
      kernel.failed = [{ table: 'routes', error: 'EMSGSIZE' }];
      const conntrack = new RecordingConntrack();
      const starting = started(kernel, new RecordingFirewall(), conntrack).start({ watch: true });
      await vi.advanceTimersByTimeAsync(0);
      await starting;
      expect(conntrack.filters).toEqual([]);
      // From now on a dump reads what the agent made (its view, with every change's echo), but no route.
      const dump = kernel.dump.bind(kernel);
      kernel.dump = () => {
        kernel.state = dumpOf(agent!.view).filter((event) => event.kind !== 'route');
        return dump();
      };
      // vm2 is plugged (down: no previous agent served it), and re-read after re-read the routes' dump fails.
      // Its purge fails at first: held back, and says why.
      conntrack.failing = true;
      kernel.listener?.events([{ kind: 'link', op: 'new', link: VM2 }]);
      await vi.advanceTimersByTimeAsync(0);
      await agent!.idle();
      expect((await agent!.status()).links.find((link) => link.name === 'vm2')?.error).toBe(
        "held back until the conntrack entries of its client IP's former VM are deleted: deleting them failed (see the log and status); retrying",
      );
      expect(kernel.applied.filter((operation) => operationIfindex(operation) === VM2.ifindex)).toEqual([]);
      conntrack.failing = false;
      await vi.advanceTimersByTimeAsync(5_000);
      await agent!.idle();
      expect((await agent!.status()).counters.fullSyncs).toBeGreaterThanOrEqual(5);
      // Its IP alone, once: the re-reads after it purge nothing more.
      expect(conntrack.filters).toEqual([{ addresses: ['100.64.0.2'], sweep: null }]);
      expect(kernel.applied.filter((operation) => operation.kind === 'link-up').map((operation) => operation.ifindex)).toEqual([VM2.ifindex]);
      expect(kernel.applied.some((operation) => isRouteTo(operation, '100.64.0.2', VM2.ifindex))).toBe(true);
      expect(kernel.applied.filter((operation) => operation.kind === 'link-down')).toEqual([]);
      const status = await agent!.status();
      expect(status.conntrack).toEqual({ owed: [], sweepOwed: true, lastError: null });
      expect(status.links.map((link) => [link.name, link.error === null ? null : link.error.slice(0, 40)])).toEqual([
        ['vm1', "held back until the conntrack entries of"],
        ['vm2', null],
      ]);
      // Whole: the sweep keeps vm1's IP (its route is read) and vm2's (purged already: what it has now is its VM's).
      kernel.dump = dump;
      kernel.state = [...dumpOf(agent!.view).filter((event) => !(event.kind === 'route' && event.route.oif === VM2.ifindex)), { kind: 'route', op: 'new', route: VM1_ROUTE }];
      kernel.failed = [];
      await vi.advanceTimersByTimeAsync(1_001);
      await agent!.idle();
      expect(conntrack.filters.slice(1)).toEqual([{ addresses: [], sweep: { ...SWEEP, keep: ['100.64.0.1', '100.64.0.2'] } }]);
      expect(kernel.applied.filter((operation) => operation.kind === 'link-down')).toEqual([]);
      expect((await agent!.status()).conntrack).toEqual({ owed: [], sweepOwed: false, lastError: null });
    });

    it('keeps the debt while the firewall cannot take the change (a released client may still be accepted), and purges again once it can', async () => {
      const kernel = new ScriptedKernel([{ kind: 'link', op: 'new', link: CLIENT_1 }]);
      const firewall = new RecordingFirewall();
      const conntrack = new RecordingConntrack();
      await started(kernel, firewall, conntrack).start({ watch: true });
      firewall.failing = true;
      await settle(kernel, [{ kind: 'link', op: 'new', link: { ...CLIENT_1, up: true, group: PROVIDER_LINK_GROUP, mac: '0a:b3:ec:80:00:05' } }]);
      const whileFailing = conntrack.filters.length;
      expect(conntrack.filters.slice(1)).toEqual([{ addresses: ['100.64.0.1'], sweep: null }]);
      expect((await agent!.status()).conntrack?.owed).toEqual(['100.64.0.1']);
      firewall.failing = false;
      await until(() => conntrack.filters.length > whileFailing);
      expect(conntrack.filters.slice(whileFailing)).toEqual([{ addresses: ['100.64.0.1'], sweep: null }]);
      expect((await agent!.status()).conntrack?.owed).toEqual([]);
    });
  });
});
