import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseCountersJson } from '../../../guest/firewall/counters.js';
import { parseTableListing } from '../../../guest/firewall/ruleset.js';
import { PROVIDER_LINK_GROUP } from '../../../shared/scheme.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, removeNamespaceSync } from '../../harness/index.js';
import { ARP_ANSWERS, ARP_PROBE, ARP_PROBE_PACKETS_PER_SENDER, ARP_SOCKET, arpAnswers } from '../firewall/arp-probe.js';
import { withoutFlowElements } from '../firewall/provider-world.js';
import { eventually, udhcpc } from '../provider-world.js';

const CLI = fileURLToPath(new URL('../../../dist/guest/cli.js', import.meta.url));
const mac = (role: 0x80 | 0x00, id: number): string =>
  `0a:b3:ec:${role.toString(16).padStart(2, '0')}:${(id >> 8).toString(16).padStart(2, '0')}:${(id & 0xff).toString(16).padStart(2, '0')}`;

interface StatusJson {
  links: { name: string; role: string; id: number | null; ip: string | null; state: string }[];
  counters: { initialChanges: number | null; changesApplied: number; reconciles: number; firewallRepairs: number; fullSyncs: number };
  firewall: { antispoofDrops: number; isolationDrops: number; inputDrops: number; flowLimitDrops: number; flowRateDrops: number; fragmentDrops: number; leakDrops: number; arpDrops: number };
  flowLimits: { clientFlowLimit: number; clientNewFlowRate: number } | null;
  model: { providerLinks: { ifname: string; clientIp: string }[]; uplinks: string[] } | null;
  reaper: { threshold: number | null; thresholdOption: string | number; count: number | null; reaps: number; reaped: number; failures: number; lastError: string | null } | null;
}

describeNetns('spectrum-netd run in a provider namespace', () => {
  let harness: Harness;
  let provider: Netns;
  let clients: Netns[];
  let internet: Netns;
  let agent: NetnsProcess;
  let dir: string;

  /** A provider-side link `name` in the provider, its far end eth0 (client MAC) in `client`. */
  async function clientLink(client: Netns, name: string, id: number): Promise<void> {
    await harness.veth(provider, name, client, 'eth0');
    await provider.ip(['link', 'set', 'dev', name, 'address', mac(0x80, id)]);
    await client.ip(['link', 'set', 'dev', 'eth0', 'address', mac(0x00, id)]);
  }

  async function startAgent(ns: Netns, socket: string, extra: readonly string[] = [], env: Readonly<Record<string, string>> = {}): Promise<NetnsProcess> {
    const child = ns.spawn(['node', CLI, 'run', '--control-socket', socket, '--notify-fd', '1', ...extra], {
      enter: 'nsenter',
      env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info', ...env },
    });
    await child.waitForOutput(/^\n/, 30_000); // the readiness newline
    return child;
  }

  /** `ip -batch` lines making provider links p<id> (client id `id`, far end q<id>) for ids first..first+count-1. */
  const providerLinkLines = (first: number, count: number): string[] =>
    Array.from({ length: count }, (_, index) => `link add p${first + index} address ${mac(0x80, first + index)} type veth peer name q${first + index}\n`);

  /** Stop `agent` and delete its namespace of many links at once, so the tests after do not share the kernel with them. */
  async function dropManyLinks(agent: NetnsProcess, ns: Netns): Promise<void> {
    await agent.kill('SIGTERM', 5000);
    removeNamespaceSync(ns.name);
  }

  async function statusIn(ns: Netns, socket: string): Promise<StatusJson> {
    const { stdout } = await ns.exec(['node', CLI, 'status', '--json', '--control-socket', socket], { enter: 'nsenter' });
    return JSON.parse(stdout) as StatusJson;
  }

  async function status(socket: string): Promise<StatusJson> {
    const { stdout } = await provider.exec(['node', CLI, 'status', '--json', '--control-socket', socket]);
    return JSON.parse(stdout) as StatusJson;
  }

  const snapshot = async (ns: Netns): Promise<string[]> =>
    Promise.all([ns.ip(['-d', 'addr']), ns.ip(['route']), ns.ip(['neigh', 'show', 'nud', 'permanent'])]).then((r) => r.map((x) => x.stdout));

  /**
   * Wait for the kernel to activate both ends of a client link (see Netns.linkActive): the two
   * veth ends get their carrier when the later of them comes up, and the end the other side
   * raised is activated by the kernel's linkwatch some time after; until then it drops traffic.
   */
  async function linkEndsActive(client: Netns, providerEnd: string, clientEnd = 'eth0'): Promise<void> {
    await Promise.all([provider.linkActive(providerEnd), client.linkActive(clientEnd)]);
  }

  async function pingGateway(client: Netns): Promise<void> {
    const result = await client.exec(['/bin/busybox', 'ping', '-c', '1', '-W', '2', '169.254.0.1'], { allowFailure: true });
    expect(result.stdout).toMatch(/1 packets received/);
  }

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
    dir = mkdtempSync(join(tmpdir(), 'netd-'));
    harness = createHarness('netd');
    provider = await harness.namespace('prov');
    clients = [await harness.namespace('c1'), await harness.namespace('c2')];
    internet = await harness.namespace('inet');
    await clientLink(clients[0]!, 'vm1', 1);
    await clientLink(clients[1]!, 'vm2', 2);
    await harness.veth(provider, 'wan', internet, 'wanp');
    agent = await startAgent(provider, join(dir, 'control.sock'));
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('gives every provider link the gateway /32, the client /32 route and a permanent neighbour', async () => {
    for (const [name, id] of [['vm1', 1], ['vm2', 2]] as const) {
      expect((await provider.ip(['-o', 'addr', 'show', 'dev', name])).stdout).toContain('inet 169.254.0.1/32');
      expect((await provider.ip(['route', 'show', `100.64.0.${id}`])).stdout).toMatch(new RegExp(`100\\.64\\.0\\.${id} dev ${name} `));
      expect((await provider.ip(['neigh', 'show', `100.64.0.${id}`])).stdout).toContain(`lladdr ${mac(0x00, id)} PERMANENT`);
    }
    expect((await provider.exec(['cat', '/proc/sys/net/ipv6/conf/vm1/disable_ipv6'])).stdout.trim()).toBe('1');
  });

  it('lets a client configured by `spectrum-netd client` ping the gateway; forwarding is on in the provider only', async () => {
    const { stdout } = await clients[0]!.exec(['node', CLI, 'client']);
    expect(stdout).toContain('eth0 100.64.0.1 configured');
    expect((await clients[0]!.ip(['route'])).stdout).toContain('default via 169.254.0.1 dev eth0');
    await linkEndsActive(clients[0]!, 'vm1');
    await pingGateway(clients[0]!);
    expect((await provider.exec(['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim()).toBe('1');
    expect((await clients[0]!.exec(['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout.trim()).toBe('0');
  });

  it('says so when `spectrum-netd client` finds no client-side link, and exits 0', async () => {
    const bare = await harness.namespace('bare');
    const result = await bare.exec(['node', CLI, 'client']);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe('spectrum-netd: no client-side link (MAC 0A:B3:EC:00:..:..) found: nothing configured\n');
  });

  it('reports links, the firewall model and counters in `status --json`', async () => {
    const report = await status(join(dir, 'control.sock'));
    const byName = new Map(report.links.map((link) => [link.name, link]));
    expect(byName.get('vm1')).toMatchObject({ role: 'provider', id: 1, ip: '100.64.0.1', state: 'configured' });
    expect(byName.get('wan')).toMatchObject({ role: 'uplink', state: 'unmanaged' });
    expect(byName.get('lo')?.role).toBe('ignored');
    expect(report.firewall).toEqual({ antispoofDrops: 0, isolationDrops: 0, inputDrops: 0, arpDrops: 0, fragmentDrops: 0, flowLimitDrops: 0, flowRateDrops: 0, leakDrops: 0 });
    // The cap the agent derived: an eighth of the kernel's conntrack table (nf_conntrack_max is machine-wide), at most 4096.
    const conntrackMax = Number((await provider.exec(['cat', '/proc/sys/net/netfilter/nf_conntrack_max'])).stdout);
    // The rules (the flow set's elements, which traffic adds, say it too).
    const rules = parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).structure;
    const cap = Math.min(4096, Math.floor(conntrackMax / 8));
    expect(rules.match(/ct count over (\d+) /g)).toEqual(Array(2).fill(`ct count over ${cap} `));
    // And the default new-flow rate before it: an eighth of the table per 22 s, at most 100 a second.
    const rate = Math.min(100, Math.max(1, Math.floor(conntrackMax / 176)));
    expect(rules.match(/(?<=@client_new_flows \{ ip saddr )limit rate over \S+ burst \d+ packets/g)).toEqual(Array(2).fill(`limit rate over ${rate}/second burst ${2 * rate} packets`));
    // Both in status, `auto` resolved, where the start-up log alone said them.
    expect(report.flowLimits).toEqual({ clientFlowLimit: cap, clientNewFlowRate: rate });
    // Clients' TCP flows: the namespace's timeouts (the kernel's defaults here), TIME_WAIT 10 s.
    expect(rules).toContain('\tct timeout client_tcp {\n\t\tprotocol tcp\n\t\tl3proto ip\n\t\tpolicy = { time_wait : 10 }\n\t}\n');
    expect(report.model?.uplinks).toEqual(['wan']);
    expect(report.model?.providerLinks).toEqual([
      { ifname: 'vm1', clientIp: '100.64.0.1' },
      { ifname: 'vm2', clientIp: '100.64.0.2' },
    ]);
    const text = await provider.exec(['node', CLI, 'status', '--control-socket', join(dir, 'control.sock')]);
    expect(text.stdout).toMatch(/vm2\s+provider\s+2\s+100\.64\.0\.2\s+configured/);
    // The DNS forwarder's state, where an operator looks first when names do not resolve.
    expect(text.stdout).toMatch(/^flowLimitDrops: 0$/m);
    expect(text.stdout).toMatch(/^flowRateDrops: 0$/m);
    expect(text.stdout).toMatch(/^fragmentDrops: 0$/m);
    expect(text.stdout).toContain(`\nflow limits per client: ${cap} conntrack entries, 100 new flows a second (200 at once)\n`);
    expect(text.stdout).toMatch(/^dns: listening; upstreams(?: in use)?: /m);
    // The counts of the forwarder's queries and client TCP connections, idle closes included (once in the JSON alone).
    expect(text.stdout).toMatch(
      /^dns: queries \d+, answered \d+, truncated \d+, lateAnswers \d+, retransmits \d+, upstreamTimeouts \d+, upstreamClosed \d+, upstreamErrors \d+, failed \d+, rateLimited \d+, overloaded \d+, evicted \d+, malformed \d+, tcpConnections \d+, tcpRejected \d+, tcpEvicted \d+, tcpIdleClosed \d+$/m,
    );
  });

  it('configures a hot-plugged link within a second, and removes nothing but it when it goes', async () => {
    const c3 = await harness.namespace('c3');
    const started = performance.now();
    await clientLink(c3, 'vm3', 3);
    let elapsed = Infinity;
    for (let tries = 0; tries < 200; tries++) {
      const { stdout } = await provider.ip(['neigh', 'show', '100.64.0.3']);
      const route = await provider.ip(['route', 'show', '100.64.0.3']);
      if (stdout.includes('PERMANENT') && route.stdout.includes('dev vm3')) {
        elapsed = performance.now() - started;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    console.log(`hot-plugged link configured ${elapsed.toFixed(1)} ms after \`ip link add\` began (includes three ip processes)`);
    expect(elapsed).toBeLessThan(1000);
    await provider.ip(['link', 'del', 'dev', 'vm3']);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await provider.ip(['route', 'show', '100.64.0.3'])).stdout).toBe('');
    expect((await provider.ip(['neigh', 'show', '100.64.0.3'])).stdout).toBe('');
    const report = await status(join(dir, 'control.sock'));
    expect(report.links.map((link) => link.name)).not.toContain('vm3');
    expect(report.model?.providerLinks.map((link) => link.ifname)).toEqual(['vm1', 'vm2']);
  });

  it('keeps a renamed link working (a rename needs the link down, which flushes its route and neighbour)', async () => {
    await provider.ip(['link', 'set', 'dev', 'vm2', 'down']);
    await provider.ip(['link', 'set', 'dev', 'vm2', 'name', 'client2']);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await provider.ip(['route', 'show', '100.64.0.2'])).stdout).toMatch(/dev client2/);
    expect((await provider.ip(['neigh', 'show', '100.64.0.2'])).stdout).toContain('PERMANENT');
    await clients[1]!.exec(['node', CLI, 'client']);
    await linkEndsActive(clients[1]!, 'client2');
    await pingGateway(clients[1]!);
    const report = await status(join(dir, 'control.sock'));
    expect(report.model?.providerLinks.map((link) => link.ifname)).toEqual(['vm1', 'client2']);
  });

  it('changes nothing when restarted after SIGKILL', async () => {
    // The snapshot shows the links' operational state, which the kernel, not the agent, sets
    // once it has handled their carrier-on: taken before that, it would differ for that alone.
    await Promise.all([provider.linkActive('vm1'), provider.linkActive('client2')]);
    const before = await snapshot(provider);
    await agent.kill('SIGKILL', 0);
    agent = await startAgent(provider, join(dir, 'control.sock'));
    const report = await status(join(dir, 'control.sock'));
    expect(report.counters.initialChanges).toBe(0);
    expect(report.counters.changesApplied).toBe(0);
    expect(await snapshot(provider)).toEqual(before);
    expect(report.links.find((link) => link.name === 'vm1')?.state).toBe('configured');
  });

  it('leaves its table in place when stopped (SIGTERM), so clients stay isolated until a restart takes it over unchanged', async () => {
    const ruleset = async (): Promise<string> => withoutFlowElements((await provider.exec(['nft', '-s', 'list', 'ruleset'])).stdout);
    const before = await ruleset();
    expect(before).toContain('table inet spectrum_netd');
    const exit = await agent.kill('SIGTERM', 3000);
    expect(exit.signal).not.toBe('SIGKILL'); // it stopped on SIGTERM, not on the grace period's SIGKILL
    expect(await ruleset()).toBe(before);
    // The /32 routes stay too: without the table, client 1 would reach client 2 through the provider.
    const crossing = await clients[0]!.exec(['/bin/busybox', 'ping', '-c', '1', '-W', '1', '100.64.0.2'], { allowFailure: true });
    expect(crossing.stdout).toMatch(/0 packets received/);
    await pingGateway(clients[0]!); // not for lack of a path: the gateway still answers (the kernel does)
    agent = await startAgent(provider, join(dir, 'control.sock'));
    expect((await status(join(dir, 'control.sock'))).counters.initialChanges).toBe(0);
    expect(await ruleset()).toBe(before);
  });

  it('status --wait holds a service manager until the agent has configured its links, and says when it does not come', async () => {
    const ns = await harness.namespace('waitready');
    const socket = join(dir, 'wait.sock');
    // Asked before the agent starts: it waits for the socket, then for the first reconcile.
    const waiting = ns.spawn(['node', CLI, 'status', '--wait', '30', '--json', '--control-socket', socket], { enter: 'nsenter' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(waiting.exit).toBeUndefined();
    const started = await startAgent(ns, socket);
    const exit = await waiting.wait();
    expect(exit.code, waiting.stderr).toBe(0);
    expect((JSON.parse(waiting.stdout) as StatusJson).counters.initialChanges).not.toBeNull();
    await started.kill('SIGTERM', 3000);
    const none = await ns.exec(['node', CLI, 'status', '--wait', '1', '--control-socket', join(dir, 'nobody.sock')], { enter: 'nsenter', allowFailure: true });
    expect(none.code).toBe(1);
    expect(none.stderr.trim().split('\n')).toHaveLength(1);
    expect(none.stderr).toMatch(/was not ready within 1 s: no spectrum-netd is running/);
    const bad = await ns.exec(['node', CLI, 'status', '--wait', '1s'], { enter: 'nsenter', allowFailure: true });
    expect(bad.code).toBe(2);
  });

  it('status --wait started before the agent waits out its first reconcile (the socket answering "still starting" meanwhile), instead of failing on it', async () => {
    const ns = await harness.namespace('slowfw');
    const socket = join(dir, 'slowfw.sock');
    // Enough provider links that the first reconcile (links, then the firewall's table) takes a
    // while after the control socket answers: status meanwhile says the agent is still starting.
    await ns.exec(['ip', '-batch', '-'], { input: providerLinkLines(1, 1500).join(''), timeoutMs: 120_000 });
    const waiting = ns.spawn(['node', CLI, 'status', '--wait', '60', '--json', '--control-socket', socket], { enter: 'nsenter' });
    const started = ns.spawn(['node', CLI, 'run', '--no-dhcp', '--no-dns', '--control-socket', socket], { enter: 'nsenter' });
    try {
      // The window the wait is for: the socket answers, the first reconcile is not done.
      let starting = false;
      await eventually(
        'an answer while starting',
        async () => {
          if (!existsSync(socket)) return false;
          const plain = await ns.exec(['node', CLI, 'status', '--json', '--control-socket', socket], { enter: 'nsenter', allowFailure: true });
          starting ||= plain.stderr.includes('still starting');
          return starting || plain.code === 0;
        },
        30_000,
      );
      expect(starting, 'no status answered while the agent was starting: the first reconcile was too quick to test the wait').toBe(true);
      const exit = await waiting.wait();
      expect(exit.code, waiting.stderr).toBe(0);
      expect((JSON.parse(waiting.stdout) as StatusJson).counters.initialChanges).not.toBeNull();
    } finally {
      await dropManyLinks(started, ns);
    }
  });

  it("stays up with 1500 provider links: its first reconcile's burst of notifications overflows no socket into an abort", async () => {
    const ns = await harness.namespace('many');
    const socket = join(dir, 'many.sock');
    await ns.exec(['ip', '-batch', '-'], { input: providerLinkLines(1, 1500).join(''), timeoutMs: 120_000 });
    // The `netlink` package's notification socket aborted the agent here (exit 134) when the burst overran its buffer.
    const started = await startAgent(ns, socket, ['--no-dhcp', '--no-dns']);
    try {
      const report = await statusIn(ns, socket);
      expect(report.links.filter((link) => link.role === 'provider' && link.state === 'configured')).toHaveLength(1500);
      // The burst is read after the reconcile that caused it: the agent is still there once it is.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      expect(started.exit, started.stderr).toBeUndefined();
      expect((await statusIn(ns, socket)).links).toHaveLength(report.links.length);
    } finally {
      await dropManyLinks(started, ns);
    }
  });

  it("leases a client hot-plugged right after it brought 1500 provider links up: no link's link-state event is left queued in the kernel ahead of the new link's", async () => {
    const ns = await harness.namespace('hotplug');
    const socket = join(dir, 'hotplug.sock');
    await ns.exec(['ip', '-batch', '-'], { input: providerLinkLines(1, 1500).join(''), timeoutMs: 120_000 });
    const started = await startAgent(ns, socket);
    try {
      // Up with its peer down, a provider link whose event the kernel's linkwatch has handled
      // says LOWERLAYERDOWN; UNKNOWN is the state it was made with, its event still queued.
      const links = (JSON.parse((await ns.ip(['-j', 'link', 'show'])).stdout) as { ifname: string; operstate: string }[]).filter((link) => /^p\d+$/.test(link.ifname));
      expect(links).toHaveLength(1500);
      expect(links.filter((link) => link.operstate !== 'LOWERLAYERDOWN').map((link) => `${link.ifname} ${link.operstate}`)).toEqual([]);
      // What queued events cost: a new link's carrier-on waits behind them, its traffic dropped
      // (the DHCP answers too) for seconds; udhcpc gives up after five tries a second apart.
      const client = await harness.namespace('hotc');
      await ns.ip(['link', 'add', 'p1501', 'address', mac(0x80, 1501), 'type', 'veth', 'peer', 'name', 'eth0', 'address', mac(0x00, 1501), 'netns', client.name]);
      const run = await udhcpc(client);
      expect(run.code, run.stderr).toBe(0);
      expect((await client.ip(['-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain('inet 100.64.5.221/32');
    } finally {
      await dropManyLinks(started, ns);
    }
  });

  it('reads the whole state again when its notification buffer overflows, says so once, and follows events after', async () => {
    const ns = await harness.namespace('storm');
    const socket = join(dir, 'storm.sock');
    await ns.exec(['ip', '-batch', '-'], { input: providerLinkLines(1, 2).join('') });
    // 128 KiB of buffer as the kernel counts it: a new veth pair takes some 4.6 KiB of it.
    const started = await startAgent(ns, socket, ['--no-dhcp', '--no-dns'], { SPECTRUM_NETD_EVENT_BUFFER_BYTES: '65536' });
    try {
      expect((await statusIn(ns, socket)).counters.fullSyncs).toBe(1);
      // While the agent reads nothing: 300 pairs of other links (about 1.4 MB of notifications),
      // then provider link p3, whose notifications the full buffer loses.
      const others = Array.from({ length: 300 }, (_, index) => `link add x${index} type veth peer name y${index}\n`);
      process.kill(started.pid, 'SIGSTOP');
      try {
        await ns.exec(['ip', '-batch', '-'], { input: [...others, ...providerLinkLines(3, 1)].join(''), timeoutMs: 60_000 });
      } finally {
        process.kill(started.pid, 'SIGCONT');
      }
      await eventually('p3 configured', async () => (await ns.ip(['route', 'show', '100.64.0.3'])).stdout.includes('dev p3'));
      const afterStorm = await statusIn(ns, socket);
      expect(afterStorm.counters.fullSyncs).toBeGreaterThanOrEqual(2);
      expect(afterStorm.links.find((link) => link.name === 'p3')?.state).toBe('configured');
      expect((started.stdout + started.stderr).match(/rtnetlink notifications overflowed: reading the whole state again/g)).toHaveLength(afterStorm.counters.fullSyncs - 1);
      // The socket is read on: a link added now is configured from its notifications alone.
      await ns.exec(['ip', '-batch', '-'], { input: providerLinkLines(4, 1).join('') });
      await eventually('p4 configured', async () => (await ns.ip(['route', 'show', '100.64.0.4'])).stdout.includes('dev p4'));
      expect((await statusIn(ns, socket)).counters.fullSyncs).toBe(afterStorm.counters.fullSyncs);
      expect(started.exit, started.stderr).toBeUndefined();
    } finally {
      await dropManyLinks(started, ns);
    }
  });

  it('runs a chained provider: its upstream client link gives it an address and default route, and is an uplink', async () => {
    const chained = await harness.namespace('chain');
    await harness.veth(provider, 'vm9', chained, 'up0');
    await provider.ip(['link', 'set', 'dev', 'vm9', 'address', mac(0x80, 9)]);
    await chained.ip(['link', 'set', 'dev', 'up0', 'address', mac(0x00, 9)]);
    const socket = join(dir, 'chain.sock');
    await startAgent(chained, socket);
    expect((await chained.ip(['-o', 'addr', 'show', 'dev', 'up0'])).stdout).toContain('inet 100.64.0.9/32');
    const routes = (await chained.ip(['route'])).stdout;
    expect(routes).toContain('default via 169.254.0.1 dev up0');
    expect(routes).toContain('169.254.0.1 dev up0 scope link');
    const { stdout } = await chained.exec(['node', CLI, 'status', '--json', '--control-socket', socket]);
    const report = JSON.parse(stdout) as StatusJson;
    expect(report.model?.uplinks).toEqual(['up0']);
    expect(report.links.find((link) => link.name === 'up0')).toMatchObject({ role: 'client', id: 9, ip: '100.64.0.9', state: 'configured' });
    await linkEndsActive(chained, 'vm9', 'up0');
    await pingGateway(chained);
  });

  it('refuses a second agent on the same control socket with one line', async () => {
    const result = await provider.exec(['node', CLI, 'run', '--control-socket', join(dir, 'control.sock')], {
      enter: 'nsenter',
      allowFailure: true,
    });
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/a process is listening on .*control\.sock \(another spectrum-netd\?\)/);
  });

  it('caps each client at --client-flow-limit conntrack entries and --client-new-flow-rate new flows a second, or not at all with 0, replacing the table made with another cap', async () => {
    const socket = join(dir, 'control.sock');
    const table = async (): Promise<string> => parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).structure;
    await agent.kill('SIGTERM', 3000);
    // The provider's own TCP timeouts, which its clients' flows follow but for the closed states.
    const sysctl = async (value: number): Promise<void> => void (await provider.exec(['sysctl', '-q', '-w', `net.netfilter.nf_conntrack_tcp_timeout_established=${value}`]));
    await sysctl(3600);
    try {
      agent = await startAgent(provider, socket, ['--client-flow-limit', '300', '--client-new-flow-rate', '40']);
    } finally {
      await sysctl(432_000);
    }
    expect(await table()).toContain('\t\tpolicy = { established : 3600, time_wait : 10 }\n');
    expect((await table()).match(/ct count over \d+ /g)).toEqual(['ct count over 300 ', 'ct count over 300 ']);
    expect((await table()).match(/(?<=@client_new_flows \{ ip saddr )limit rate over \S+ burst \d+ packets/g)).toEqual(['limit rate over 40/second burst 80 packets', 'limit rate over 40/second burst 80 packets']);
    expect((await status(socket)).flowLimits).toEqual({ clientFlowLimit: 300, clientNewFlowRate: 40 });
    await agent.kill('SIGTERM', 3000);
    agent = await startAgent(provider, socket, ['--client-flow-limit', '0', '--client-new-flow-rate', '0']);
    expect(await table()).not.toMatch(/ct count|client_flows|client_new_flows/);
    // The fragment rate alone is left: it is no flow limit.
    expect((await table()).match(/limit rate/g)).toHaveLength(1);
    expect((await status(socket)).firewall).toMatchObject({ flowLimitDrops: 0, flowRateDrops: 0, leakDrops: 0 });
    expect((await status(socket)).flowLimits).toEqual({ clientFlowLimit: 0, clientNewFlowRate: 0 });
  });

  it("deletes closed TCP entries, the provider's own too, once the table reaches --conntrack-reap-threshold (auto: half of nf_conntrack_max), and says so in status", async () => {
    const socket = join(dir, 'control.sock');
    const max = Number((await provider.exec(['cat', '/proc/sys/net/netfilter/nf_conntrack_max'])).stdout.trim());
    expect((await status(socket)).reaper).toMatchObject({ threshold: Math.floor(max / 2), thresholdOption: 'auto', failures: 0, lastError: null });
    await agent.kill('SIGTERM', 3000);
    agent = await startAgent(provider, socket, ['--conntrack-reap-threshold', '1']);
    // A served client's closed entry, the provider's own, and one of a client IP not served: all
    // go. An established TCP entry and a UDP one of each stay.
    const sources = ['100.64.0.1', '192.0.2.1', '100.64.0.77'];
    for (const [index, source] of sources.entries()) {
      await provider.exec(['conntrack', '-I', '-p', 'tcp', '--state', 'TIME_WAIT', '-s', source, '-d', '192.0.2.10', '--sport', `500${index}`, '--dport', '80', '-t', '100']);
      await provider.exec(['conntrack', '-I', '-p', 'tcp', '--state', 'ESTABLISHED', '-s', source, '-d', '192.0.2.10', '--sport', `501${index}`, '--dport', '80', '-t', '100']);
      await provider.exec(['conntrack', '-I', '-p', 'udp', '-s', source, '-d', '192.0.2.10', '--sport', `502${index}`, '--dport', '80', '-t', '100']);
    }
    const left = async (): Promise<string[]> =>
      [...(await provider.exec(['conntrack', '-L'])).stdout.matchAll(/^(tcp|udp)\s+\d+\s+\d+ (?:(\S+) )?src=(\S+) dst=192\.0\.2\.10 sport=50\d\d/gm)]
        .map((match) => `${match[1]} ${match[2] ?? '-'} ${match[3]}`)
        .sort();
    await eventually('the closed entries reaped', async () => !(await left()).some((line) => line.includes('TIME_WAIT')), 5000);
    expect(await left()).toEqual(sources.flatMap((source) => [`tcp ESTABLISHED ${source}`, `udp - ${source}`]).sort());
    const report = (await status(socket)).reaper;
    expect(report).toMatchObject({ threshold: 1, thresholdOption: 1, failures: 0, lastError: null });
    expect(report?.reaped).toBeGreaterThanOrEqual(1);
    expect(report?.count).toBeGreaterThanOrEqual(2);
    const text = (await provider.exec(['node', CLI, 'status', '--control-socket', socket])).stdout;
    expect(text).toMatch(/^conntrack reaper: threshold 1 entries; count \d+ at last check; [1-9]\d* closed TCP entries deleted; [1-9]\d* reaps done; last deleted /m);
    await provider.exec(['conntrack', '-D', '-p', 'tcp', '--dport', '80'], { allowFailure: true });
    await provider.exec(['conntrack', '-D', '-p', 'udp', '--dport', '80'], { allowFailure: true });
    await agent.kill('SIGTERM', 3000);
    agent = await startAgent(provider, socket);
  });

  it('reads the firewall back every --firewall-audit and restores what someone else changed', async () => {
    await agent.kill('SIGTERM', 3000);
    agent = await startAgent(provider, join(dir, 'control.sock'), ['--firewall-audit', '0.3']);
    // Less the flow set's elements, which come and go with the clients' conntrack entries; table
    // by table, as a table made again is listed after the others.
    const listing = async (family: string): Promise<string> => (await provider.exec(['nft', '-s', 'list', 'table', family, 'spectrum_netd'], { allowFailure: true })).stdout;
    const ruleset = async (): Promise<string> => withoutFlowElements(`${await listing('inet')}${await listing('arp')}`);
    const before = await ruleset();
    expect(before).toContain('table inet spectrum_netd');
    // An element removed: no transaction of the agent's fails, so only the audit can see it.
    await provider.exec(['nft', 'delete', 'element', 'inet', 'spectrum_netd', 'client_links', '{ "vm1" }']);
    expect(await ruleset()).not.toBe(before);
    await eventually('the element restored', async () => (await ruleset()) === before);
    expect((await status(join(dir, 'control.sock'))).counters.firewallRepairs).toBe(1);
    // The whole table flushed away.
    await provider.exec(['nft', 'delete', 'table', 'inet', 'spectrum_netd']);
    await eventually('the table restored', async () => (await ruleset()) === before);
    expect((await status(join(dir, 'control.sock'))).counters.firewallRepairs).toBe(2);
    // The ARP guard alone, as the inet table.
    await provider.exec(['nft', 'delete', 'table', 'arp', 'spectrum_netd']);
    await eventually('the ARP guard restored', async () => (await ruleset()) === before);
    expect((await status(join(dir, 'control.sock'))).counters.firewallRepairs).toBe(3);
    expect(agent.stdout + agent.stderr).toMatch(/changed by someone else: restored/);
  });

  it('unconfigures a link whose MAC stops being a provider one, keeps a client on its link against a duplicate, and names nft cannot hold stop nothing', async () => {
    const socket = join(dir, 'control.sock');
    const set = async (name: string): Promise<string> => (await provider.exec(['nft', '-s', 'list', 'set', 'inet', 'spectrum_netd', name])).stdout;
    const [c7, c8, c10] = [await harness.namespace('c7'), await harness.namespace('c8'), await harness.namespace('c10')];
    await clientLink(c7, 'vm7', 7);
    await clientLink(c8, 'vm8', 8);
    await eventually('vm7 and vm8 configured', async () => (await provider.ip(['route'])).stdout.includes('100.64.0.8 dev vm8'));
    // vm7's MAC becomes a physical NIC's: the gateway address and the client route go with it.
    await provider.ip(['link', 'set', 'dev', 'vm7', 'address', '52:54:00:00:00:07']);
    await eventually('vm7 unconfigured', async () => !(await provider.ip(['-o', 'addr', 'show', 'dev', 'vm7'])).stdout.includes('169.254.0.1'));
    expect((await provider.ip(['route', 'show', '100.64.0.7'])).stdout).toBe('');
    // Out of the guarded group (the firewall no longer names it among the client links).
    await eventually('vm7 out of the group', async () => /\bgroup default\b/.test((await provider.ip(['-o', 'link', 'show', 'dev', 'vm7'])).stdout));
    // vm7 (the older link) now claims client 8: vm8 keeps it, vm7 is isolated.
    await provider.ip(['link', 'set', 'dev', 'vm7', 'address', mac(0x80, 8)]);
    await eventually('vm7 isolated', async () => (await set('client_links')).includes('"vm7"'));
    expect((await provider.ip(['route', 'show', '100.64.0.8'])).stdout).toMatch(/dev vm8 /);
    expect((await provider.ip(['-o', 'addr', 'show', 'dev', 'vm7'])).stdout).not.toContain('169.254.0.1');
    expect(await set('client_sources')).not.toContain('"vm7"');
    expect((await provider.ip(['-o', 'link', 'show', 'dev', 'vm7'])).stdout).toMatch(new RegExp(`\\bgroup ${PROVIDER_LINK_GROUP}\\b`));
    expect((await status(socket)).links.find((link) => link.name === 'vm7')?.state).toBe('conflict');
    const text = await provider.exec(['node', CLI, 'status', '--control-socket', socket]);
    expect(text.stdout).toMatch(/^vm7\s+provider\s+8\s+100\.64\.0\.8\s+conflict\s+client id 8 is already served on vm8; all its traffic is dropped$/m);
    // vm8 renamed while up (Linux allows it since 6.2; 6.1 refuses) to a name nft cannot hold: it
    // stops serving and is taken down (the group guard drops its traffic meanwhile), and a new link is still firewalled.
    const renamed = await provider.ip(['link', 'set', 'dev', 'vm8', 'name', 'v"8'], { allowFailure: true });
    if (renamed.code !== 0) {
      await provider.ip(['link', 'set', 'dev', 'vm8', 'down']);
      await provider.ip(['link', 'set', 'dev', 'vm8', 'name', 'v"8']);
    }
    await eventually('v"8 down', async () => !/<[^>]*\bUP\b/.test((await provider.ip(['-o', 'link', 'show', 'dev', 'v"8'])).stdout));
    await clientLink(c10, 'vm10', 10);
    await eventually('vm10 firewalled', async () => (await set('client_sources')).includes('"vm10" . 100.64.0.10'));
    expect(await set('client_links')).not.toContain('vm8');
    expect((await status(socket)).links.find((link) => link.name === 'v"8')?.state).toBe('conflict');
    for (const name of ['vm7', 'v"8', 'vm10']) await provider.ip(['link', 'del', 'dev', name]);
  });

  it("drops a provider link's traffic both ways from the moment it is renamed while up, before the agent knows: the link's device group is guarded", async () => {
    const socket = join(dir, 'control.sock');
    const c11 = await harness.namespace('c11');
    await clientLink(c11, 'vm11', 11);
    await eventually('vm11 configured', async () => (await provider.ip(['neigh', 'show', '100.64.0.11'])).stdout.includes('PERMANENT'));
    expect((await provider.ip(['-d', 'link', 'show', 'dev', 'vm11'])).stdout).toMatch(new RegExp(`\\bgroup ${PROVIDER_LINK_GROUP}\\b`));
    await c11.exec(['node', CLI, 'client']);
    await linkEndsActive(c11, 'vm11');
    await pingGateway(c11);
    // The client also holds an address no client has (so the table's "a client address arriving
    // elsewhere" rule does not catch it); the internet routes 100.64.0.0/16 to the provider.
    await c11.ip(['addr', 'add', '100.64.0.99/32', 'dev', 'eth0']);
    await provider.ip(['addr', 'add', '192.0.2.2/24', 'dev', 'wan']);
    await provider.ip(['link', 'set', 'dev', 'wan', 'up']);
    await internet.ip(['addr', 'add', '192.0.2.1/24', 'dev', 'wanp']);
    await internet.ip(['link', 'set', 'dev', 'wanp', 'up']);
    await internet.ip(['route', 'add', '100.64.0.0/16', 'via', '192.0.2.2']);
    await Promise.all([provider.linkActive('wan'), internet.linkActive('wanp')]);
    const listen = (ns: Netns, port: number): NetnsProcess =>
      ns.spawn(['python3', '-u', '-c', `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(("0.0.0.0", ${port}))\nprint("ready")\nwhile True:\n    data, peer = s.recvfrom(64)\n    print("from", peer[0])`]);
    const send = (ns: Netns, from: string, to: string, port: number): Promise<unknown> =>
      ns.exec(['python3', '-c', `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(("${from}", 0))\nfor _ in range(3): s.sendto(b"x", ("${to}", ${port}))`]);
    const atProvider = listen(provider, 7011);
    const atClient = listen(c11, 7012);
    await atProvider.waitForOutput(/ready/);
    await atClient.waitForOutput(/ready/);
    const counters = async (): Promise<{ antispoofDrops: number; isolationDrops: number }> =>
      parseCountersJson(
        (await provider.exec(['nft', '-j', 'list', 'counters', 'table', 'inet', 'spectrum_netd'])).stdout,
        (await provider.exec(['nft', '-j', 'list', 'counters', 'table', 'arp', 'spectrum_netd'])).stdout,
      );
    const stat = (): string => (existsSync(`/proc/${agent.pid}/stat`) ? readFileSync(`/proc/${agent.pid}/stat`, 'utf8') : '');
    // The agent (the process this test started, by PID) cannot react: whatever is dropped now is
    // dropped by the table as it stood before the rename.
    process.kill(agent.pid, 'SIGSTOP');
    try {
      await eventually('the agent stopped', () => Promise.resolve(/^\d+ \(.*\) T /.test(stat())));
      const before = await counters();
      // Linux allows renaming an up link since 6.2.
      await provider.ip(['link', 'set', 'dev', 'vm11', 'name', 'ren11']);
      expect((await provider.ip(['-o', 'link', 'show', 'dev', 'ren11'])).stdout).toMatch(/<[^>]*\bUP\b/);
      // From it: a packet for the provider itself, from an address no client has. Unguarded, a
      // name not in the sets passes every chain and the provider takes it.
      await send(c11, '100.64.0.99', '169.254.0.1', 7011);
      // To it: the internet opening a flow toward its client. Unguarded, it is forwarded.
      await send(internet, '192.0.2.1', '100.64.0.11', 7012);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const after = await counters();
      expect(after.antispoofDrops - before.antispoofDrops).toBe(3);
      expect(after.isolationDrops - before.isolationDrops).toBe(3);
      expect(atProvider.stdout).not.toContain('from');
      expect(atClient.stdout).not.toContain('from');
    } finally {
      process.kill(agent.pid, 'SIGCONT');
    }
    // Woken, the agent serves the link under its new name; the guard lets its traffic through.
    await eventually('ren11 firewalled', async () => (await status(socket)).model?.providerLinks.some((link) => link.ifname === 'ren11') === true);
    await pingGateway(c11);
    await atProvider.kill('SIGTERM', 1000);
    await atClient.kill('SIGTERM', 1000);
    await internet.ip(['route', 'del', '100.64.0.0/16']);
    await provider.ip(['addr', 'del', '192.0.2.2/24', 'dev', 'wan']);
    await provider.ip(['link', 'set', 'dev', 'wan', 'down']);
    await provider.ip(['link', 'del', 'dev', 'ren11']);
  });

  it("answers a client's ARP for the gateway only from its own address, so that naming other senders fills no neighbour table", async () => {
    // Linux answers an ARP request for one of its addresses from any sender, making a neighbour
    // entry for that sender on the link first; the inet table never sees ARP. A client naming a new
    // sender in each request filled the provider's table (1024 entries, for the uplink's gateway
    // too) in a moment. Here a few such requests, then the entries they left are counted.
    const c12 = await harness.namespace('c12');
    await clientLink(c12, 'vm12', 12);
    await eventually('vm12 configured', async () => (await provider.ip(['neigh', 'show', '100.64.0.12'])).stdout.includes('PERMANENT'));
    await c12.exec(['node', CLI, 'client']);
    await linkEndsActive(c12, 'vm12');
    // Requests "who has 169.254.0.1" from eth0's MAC, one per sender address; prints the sender
    // addresses the replies that came within half a second were for.
    const arp = `
${ARP_SOCKET}for sender in sys.argv[1:]:
    request = struct.pack('>HHBBH', 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(sender) + bytes(6) + socket.inet_aton('169.254.0.1')
    s.send(b'\\xff' * 6 + mac + b'\\x08\\x06' + request)
${ARP_ANSWERS}`;
    // Its own address, another client's, addresses off the link (none routed, or behind no link).
    const others = ['100.64.0.1', '100.64.0.200', '203.0.113.1', '203.0.113.2', '203.0.113.3', '198.51.100.7', '169.254.0.9'];
    const { stdout } = await c12.exec(['python3', '-c', arp, '100.64.0.12', ...others]);
    expect(JSON.parse(stdout)).toEqual(['100.64.0.12']);
    // Nothing but the client's permanent entry on its link.
    const entries = (await provider.ip(['-4', 'neigh', 'show', 'dev', 'vm12'])).stdout.trim().split('\n');
    expect(entries).toEqual([`100.64.0.12 lladdr ${mac(0x00, 12)} PERMANENT`]);
    expect((await provider.exec(['cat', '/proc/sys/net/ipv4/conf/vm12/arp_filter'])).stdout.trim()).toBe('1');
    // The client itself, its neighbour entry gone, still finds the gateway.
    await c12.ip(['neigh', 'flush', 'dev', 'eth0']);
    await pingGateway(c12);
    await provider.ip(['link', 'del', 'dev', 'vm12']);
  });

  it("answers a client's ARP for the gateway only, not for the provider's other addresses (its uplink's, another link's)", async () => {
    // arp_ignore 0: Linux answered for every address of the provider, whatever link it is on, so a
    // client could map the uplink's address (and others) by ARP, which nothing else tells it.
    const c14 = await harness.namespace('c14');
    await provider.ip(['link', 'add', 'up14', 'type', 'veth', 'peer', 'name', 'up14p']);
    await provider.ip(['addr', 'add', '192.0.2.14/24', 'dev', 'up14']);
    await provider.ip(['addr', 'add', '198.51.100.14/32', 'dev', 'lo']);
    try {
      await clientLink(c14, 'vm14', 14);
      await eventually('vm14 configured', async () => (await provider.ip(['neigh', 'show', '100.64.0.14'])).stdout.includes('PERMANENT'));
      await c14.exec(['node', CLI, 'client']);
      await linkEndsActive(c14, 'vm14');
      // Requests from the client's own address for each target; prints the targets answered within half a second.
      const arp = `
${ARP_SOCKET}for target in sys.argv[1:]:
    request = struct.pack('>HHBBH', 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton('100.64.0.14') + bytes(6) + socket.inet_aton(target)
    s.send(b'\\xff' * 6 + mac + b'\\x08\\x06' + request)
${arpAnswers('sender')}`;
      const { stdout } = await c14.exec(['python3', '-c', arp, '169.254.0.1', '192.0.2.14', '198.51.100.14', '127.0.0.1']);
      expect(JSON.parse(stdout)).toEqual(['169.254.0.1']);
      expect((await provider.exec(['cat', '/proc/sys/net/ipv4/conf/vm14/arp_ignore'])).stdout.trim()).toBe('1');
      await c14.ip(['neigh', 'flush', 'dev', 'eth0']);
      await pingGateway(c14);
    } finally {
      await provider.ip(['link', 'del', 'dev', 'vm14']).catch(() => undefined);
      await provider.ip(['link', 'del', 'dev', 'up14']);
      await provider.ip(['addr', 'del', '198.51.100.14/32', 'dev', 'lo']);
    }
  });

  it("drops a client's ARP from any sender but itself before the kernel learns from it, whatever arp_accept says; its own ARP and 0.0.0.0 probes pass, and it leases and pings the gateway", async () => {
    // With arp_accept (on the link or in `all`: the kernel takes the higher), gratuitous ARP and
    // unsolicited replies make neighbour entries for their senders, arp_filter or not: only the
    // firewall's ARP guard keeps a client from filling the table so.
    const c13 = await harness.namespace('c13');
    await clientLink(c13, 'vm13', 13);
    await eventually('vm13 configured', async () => (await provider.ip(['neigh', 'show', '100.64.0.13'])).stdout.includes('PERMANENT'));
    await c13.ip(['link', 'set', 'dev', 'eth0', 'up']);
    await linkEndsActive(c13, 'vm13');
    const arpAccept = async (value: number): Promise<void> => void (await provider.exec(['sysctl', '-q', '-w', `net.ipv4.conf.all.arp_accept=${value}`]));
    await arpAccept(1);
    // Every neighbour entry the kernel makes, changes or deletes on vm13, as it happens: the agent
    // deletes entries a client taught it for others' addresses, so the table alone would not say.
    const monitor = provider.spawn(['ip', '-o', 'monitor', 'neigh', 'dev', 'vm13']);
    /** An entry of our own (permanent, outside the client network: left alone), to know the monitor has seen all before it. */
    const mark = async (ip: string): Promise<void> => {
      await provider.ip(['neigh', 'add', ip, 'lladdr', '02:00:00:00:00:99', 'dev', 'vm13', 'nud', 'permanent']);
      // With `dev`, ip prints no device: `192.0.2.98 lladdr ... PERMANENT`.
      await monitor.waitForOutput(new RegExp(`(^|\n)${ip.replaceAll('.', '\\.')} lladdr `));
      await provider.ip(['neigh', 'del', ip, 'dev', 'vm13']);
    };
    try {
      expect((await provider.exec(['cat', '/proc/sys/net/ipv4/conf/all/arp_accept'])).stdout.trim()).toBe('1');
      const leased = await udhcpc(c13);
      expect(leased.code, leased.stderr).toBe(0);
      expect((await c13.ip(['-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain('inet 100.64.0.13/32');
      await mark('192.0.2.98');
      const before = (await status(join(dir, 'control.sock'))).firewall.arpDrops;
      // Another client's address, one in the client network nobody has, addresses off the link.
      const forged = ['100.64.0.1', '100.64.0.200', '169.254.0.9', '198.51.100.7', ...Array.from({ length: 26 }, (_, index) => `203.0.113.${index + 1}`)];
      const { stdout } = await c13.exec(['python3', '-c', ARP_PROBE, mac(0x80, 13), '100.64.0.13', ...forged]);
      expect(JSON.parse(stdout)).toEqual(['0.0.0.0', '100.64.0.13']);
      await mark('192.0.2.99');
      const learnt = monitor.stdout.split('\n').filter((line) => forged.some((ip) => line.startsWith(`${ip} `) || line.startsWith(`Deleted ${ip} `)));
      expect(learnt).toEqual([]);
      const entries = (await provider.ip(['-4', 'neigh', 'show', 'dev', 'vm13'])).stdout.trim().split('\n');
      expect(entries.filter((line) => !line.includes('NOARP'))).toEqual([`100.64.0.13 lladdr ${mac(0x00, 13)} PERMANENT`]);
      // Each forged sender's packets, counted; its own and the probe are not.
      const drops = (await status(join(dir, 'control.sock'))).firewall.arpDrops - before;
      expect(drops).toBeGreaterThanOrEqual(ARP_PROBE_PACKETS_PER_SENDER * forged.length);
      expect(drops).toBeLessThan(ARP_PROBE_PACKETS_PER_SENDER * forged.length + 10);
      await c13.ip(['neigh', 'flush', 'dev', 'eth0']);
      await pingGateway(c13);
    } finally {
      await monitor.kill('SIGTERM', 1000);
      await arpAccept(0);
      await provider.ip(['link', 'del', 'dev', 'vm13']);
    }
  });

  it('sets arp_filter and disable_ipv6 on provider links renamed as they come, as udev renames them', async () => {
    // Renamed a moment after the agent learns of the link, its sysctls were read by the name it
    // had just lost: missing, which was taken as nothing to set, for good. One link at a time, the
    // agent idle when each comes (as a hot-plug finds it): a few in forty lost the race before.
    const far = await harness.namespace('renfar');
    const ids = Array.from({ length: 40 }, (_, index) => 320 + index);
    const sysctls = async (id: number): Promise<string> =>
      (await provider.exec(['cat', `/proc/sys/net/ipv4/conf/r${id}/arp_filter`, `/proc/sys/net/ipv6/conf/r${id}/disable_ipv6`])).stdout.trim().replace('\n', ',');
    const all = async (): Promise<Record<string, string>> => Object.fromEntries(await Promise.all(ids.map(async (id) => [`r${id}`, await sysctls(id)])));
    try {
      for (const id of ids) {
        await provider.exec(['ip', '-batch', '-'], { input: `link add t${id} address ${mac(0x80, id)} type veth peer name e${id} netns ${far.name}\nlink set dev t${id} name r${id}\n` });
        await eventually(`r${id} configured`, async () => (await provider.ip(['neigh', 'show', 'dev', `r${id}`])).stdout.includes('PERMANENT'));
      }
      // Set within moments of the rest; a link that missed them never got them.
      await eventually('arp_filter and disable_ipv6 on every renamed link', async () => Object.values(await all()).every((value) => value === '1,1'), 3000).catch(() => undefined);
      expect(await all()).toEqual(Object.fromEntries(ids.map((id) => [`r${id}`, '1,1'])));
    } finally {
      await provider.exec(['ip', '-batch', '-'], { input: ids.map((id) => `link del dev r${id}\n`).join(''), allowFailure: true });
    }
  });

  it.each([
    ['run', ''],
    ['status', ''],
    ['run', `/tmp/${'a'.repeat(103)}`],
    ['status', `/tmp/${'a'.repeat(103)}`],
  ])('refuses `%s --control-socket %j` with one line and exit 2 (used to be an internal error, or a hang)', async (command, path) => {
    const result = await provider.exec(['node', CLI, command, '--control-socket', path], { enter: 'nsenter', allowFailure: true, timeoutMs: 15_000 });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/^spectrum-netd: --control-socket ".*"(\.\.\.)? is not valid: give a path of 1 to 107 bytes\n$/);
  });

  it.each([
    ['--firewall-audit', 'abc'],
    ['--firewall-audit', '-1'],
    ['--firewall-audit', '0.01'],
    ['--firewall-audit', '100000'],
    ['--firewall-audit', ''],
    // Number() takes these; an agent given them used to start.
    ['--firewall-audit', '0x10'],
    ['--firewall-audit', '1e3'],
    ['--lease-seconds', '3.6e3'],
    ['--client-flow-limit', '-1'],
    ['--client-flow-limit', '1e3'],
    ['--client-flow-limit', '4294967296'],
    ['--client-flow-limit', 'half'],
    ['--client-new-flow-rate', '-1'],
    ['--client-new-flow-rate', '1000001'],
    ['--client-new-flow-rate', 'fast'],
    ['--client-new-flow-rate', '1e2'],
    ['--conntrack-reap-threshold', '-1'],
    ['--conntrack-reap-threshold', 'half'],
    ['--conntrack-reap-threshold', '1e3'],
    ['--conntrack-reap-threshold', '2147483648'],
    ['--conntrack-reap-threshold', ''],
    // Names no interface can have: they would match nothing, silently.
    ['--ignore', 'eth0:1'],
    ['--ignore', 'a b'],
    ['--ignore', '..'],
    ['--ignore', 'sixteen-bytes-xx'],
    // Used to fail only once the agent had started (exit 1).
    ['--dns-upstream', '192.0.2.53:99999'],
    ['--dns-upstream', 'resolver.example'],
  ])('refuses %s %j with one line and exit 2', async (option, value) => {
    const result = await provider.exec(['node', CLI, 'run', '--control-socket', join(dir, 'never.sock'), option, value], {
      enter: 'nsenter',
      allowFailure: true,
      timeoutMs: 15_000,
    });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain(option);
  });
});
