import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FirewallError } from '../../../guest/firewall/firewall-error.js';
import { FirewallReconciler, firewallCounters, reconcileFirewall, removeFirewall } from '../../../guest/firewall/nft.js';
import { parseTableListing, staticTableText } from '../../../guest/firewall/ruleset.js';
import { GATEWAY_IP, PROVIDER_LINK_GROUP } from '../../../shared/scheme.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns } from '../../harness/index.js';
import { slowHttpServerScript } from '../provider-world.js';
import { ARP_PROBE, ARP_PROBE_PACKETS_PER_SENDER } from './arp-probe.js';
import {
  CODE_FRAG_NEEDED,
  CODE_PORT_UNREACHABLE,
  type EmbeddedUdp,
  ICMP_UNREACHABLE,
  errorLine,
  icmpErrorSender,
  icmpWatcher,
  udpEchoServer,
  udpFlow,
} from './icmp-probe.js';
import { INTERNET_IP, PROVIDER_UPLINK_IP, type ProviderWorld, TEST_FLOW_LIMIT, TEST_NEW_FLOW_RATE, type WorldClient, makeProviderWorld, withoutFlowElements } from './provider-world.js';

const FIXTURE = fileURLToPath(new URL('../../../dist/test/guest/firewall/fixtures/reconcile.js', import.meta.url));
const SLOW_PORT = 8081;
const SLOW_CHUNKS = 40;
const SLOW_CHUNK_BYTES = 16_384;
const HTTP_PORT = 8080;
const UDP_PORT = 7000;
const CLOSED_PORT = 9999;
const ECHO_PORT = 7001;
const DNS_PORT = 53;
/** A router on the uplink segment, beyond the provider: the source of PMTU errors. */
const ROUTER_IP = '192.0.2.254';

const udpListener = (port: number): string[] => [
  'python3',
  '-u',
  '-c',
  [
    'import socket',
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    `s.bind(("0.0.0.0", ${port}))`,
    'print("ready")',
    'while True:',
    '    data, peer = s.recvfrom(4096)',
    '    print("from %s:%d %d bytes" % (peer[0], peer[1], len(data)))',
  ].join('\n'),
];

const udpSend = (ip: string, port: number): string[] => [
  'python3',
  '-c',
  `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(3): s.sendto(b"hello", ("${ip}", ${port}))`,
];

async function httpServer(ns: Netns, bind: string, port: number, dir: string): Promise<NetnsProcess> {
  const server = ns.spawn(['python3', '-u', '-m', 'http.server', String(port), '--bind', bind, '--directory', dir]);
  await server.waitForOutput(/Serving HTTP/);
  return server;
}

/** HTTP status from `from` to url, or 0 when no connection could be made. */
async function httpStatus(from: Netns, url: string, seconds = 2): Promise<number> {
  const result = await from.exec(['curl', '-sS', '--max-time', String(seconds), '-o', '/dev/null', '-w', '%{http_code}', url], {
    allowFailure: true,
  });
  return Number(result.stdout.trim() || '0');
}

async function pings(from: Netns, target: string, extra: readonly string[] = []): Promise<boolean> {
  const result = await from.exec(['busybox', 'ping', '-c', '2', '-W', '1', ...extra, target], { allowFailure: true });
  return result.code === 0;
}

/** Start an ICMP watcher in `ns`; the caller kills it. */
async function watchIcmp(ns: Netns): Promise<NetnsProcess> {
  const watcher = ns.spawn(icmpWatcher());
  await watcher.waitForOutput(/ready/);
  return watcher;
}

/**
 * Open a UDP flow to `server` (the gateway's port 53 or the internet's echo port) whose socket
 * stays open unless `close`; resolves with the port the server sees it from (after masquerading).
 */
async function openFlow(
  from: Netns,
  local: string,
  lport: number,
  remote: string,
  server: NetnsProcess,
  tag: string,
  close = false,
): Promise<{ flow: NetnsProcess; natPort: number }> {
  const flow = from.spawn(udpFlow(local, lport, remote, remote === GATEWAY_IP ? DNS_PORT : ECHO_PORT, tag, close));
  await flow.waitForOutput(/sent/);
  const seen = await server.waitForOutput(new RegExp(`from [\\d.]+:(\\d+) ${tag}\\n`));
  return { flow, natPort: Number(seen[1]) };
}

const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 500));

/** The ruleset, counters included, less what traffic put in the flow set (it comes and goes with conntrack entries). */
async function ruleset(provider: Netns): Promise<string> {
  return withoutFlowElements((await provider.exec(['nft', 'list', 'ruleset'])).stdout);
}

/** The model's sets as listed: the flow set names client addresses too, as long as they have entries. */
async function modelElements(provider: Netns): Promise<string> {
  return JSON.stringify(parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).elements);
}

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

/** Run reconcile in a fresh node process, as a restarted agent would. */
function freshAgent(netns: string, model: unknown): { done: Promise<{ code: number | null; stdout: string; stderr: string }>; kill: () => void } {
  const child = spawn(process.execPath, [FIXTURE, netns, String(TEST_FLOW_LIMIT), JSON.stringify(model)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  return { done, kill: () => child.kill('SIGKILL') };
}

describeNetns('provider firewall in network namespaces', () => {
  let harness: Harness;
  let world: ProviderWorld;
  let a: WorldClient;
  let b: WorldClient;
  let provider: Netns;
  let dir: string;
  let udpOnB: NetnsProcess;
  let echo: NetnsProcess;
  let gatewayDns: NetnsProcess;
  const netns = (): { netns: string; clientFlowLimit: number; clientNewFlowRate: number } => ({ netns: provider.name, clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE });

  beforeAll(async () => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
    dir = mkdtempSync(join(tmpdir(), 'snt-firewall-'));
    writeFileSync(join(dir, 'hello.txt'), 'hello\n');
    harness = createHarness('firewall');
    world = await makeProviderWorld(harness, [257, 258]);
    [a, b] = world.clients as [WorldClient, WorldClient];
    provider = world.provider;
    await httpServer(world.internet, INTERNET_IP, HTTP_PORT, dir);
    await world.internet.spawn(['python3', '-u', '-c', slowHttpServerScript(INTERNET_IP, SLOW_PORT, SLOW_CHUNKS, SLOW_CHUNK_BYTES)]).waitForOutput(/slow ready/);
    await httpServer(a.ns, a.ip, HTTP_PORT, dir);
    await httpServer(b.ns, b.ip, HTTP_PORT, dir);
    await httpServer(provider, '0.0.0.0', CLOSED_PORT, dir);
    udpOnB = b.ns.spawn(udpListener(UDP_PORT));
    await udpOnB.waitForOutput(/ready/);
    echo = world.internet.spawn(udpEchoServer(INTERNET_IP, ECHO_PORT));
    await echo.waitForOutput(/ready/);
    // Stands in for the DNS forwarder on the gateway: a query to it opens a flow, nothing refuses it.
    gatewayDns = provider.spawn(udpEchoServer('0.0.0.0', DNS_PORT));
    await gatewayDns.waitForOutput(/ready/);
  });

  afterAll(async () => {
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('control, without the firewall: clients reach each other and the gateway, the internet only with NAT', async () => {
    expect(await pings(a.ns, b.ip)).toBe(true);
    expect(await httpStatus(a.ns, `http://${b.ip}:${HTTP_PORT}/hello.txt`)).toBe(200);
    const before = udpOnB.stdout.length;
    await a.ns.exec(udpSend(b.ip, UDP_PORT));
    expect(await waitUntil(() => udpOnB.stdout.slice(before).includes(`from ${a.ip}`), 2000)).toBe(true);
    expect(await httpStatus(a.ns, `http://${GATEWAY_IP}:${CLOSED_PORT}/hello.txt`)).toBe(200);
    // The internet has no route back to 100.64.0.0/16: without masquerading nothing returns.
    expect(await httpStatus(a.ns, `http://${INTERNET_IP}:${HTTP_PORT}/hello.txt`)).toBe(0);
    await world.internet.ip(['route', 'add', '100.64.0.0/16', 'via', PROVIDER_UPLINK_IP]);
    try {
      expect(await httpStatus(world.internet, `http://${b.ip}:${HTTP_PORT}/hello.txt`)).toBe(200);
    } finally {
      await world.internet.ip(['route', 'del', '100.64.0.0/16', 'via', PROVIDER_UPLINK_IP]);
    }
    // A neighbour on the uplink that routes the gateway address to the provider reaches its services.
    await world.internet.ip(['route', 'add', `${GATEWAY_IP}/32`, 'via', PROVIDER_UPLINK_IP]);
    try {
      expect(await pings(world.internet, GATEWAY_IP)).toBe(true);
      expect(await httpStatus(world.internet, `http://${GATEWAY_IP}:${CLOSED_PORT}/hello.txt`)).toBe(200);
    } finally {
      await world.internet.ip(['route', 'del', `${GATEWAY_IP}/32`, 'via', PROVIDER_UPLINK_IP]);
    }
  });

  it('installs the table, then finds nothing to change', async () => {
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: true });
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: false });
    const listing = parseTableListing((await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
    expect(listing.structure).toBe(staticTableText({ clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE }));
    expect(listing.elements.client_sources).toEqual([`"${a.providerIf}" . ${a.ip}`, `"${b.providerIf}" . ${b.ip}`]);
  });

  it('lets a client reach the internet, which only masquerading makes possible (see the control)', async () => {
    expect(await httpStatus(a.ns, `http://${INTERNET_IP}:${HTTP_PORT}/hello.txt`)).toBe(200);
  });

  it('drops client-to-client ping, TCP and UDP, counting them', async () => {
    const before = await firewallCounters(netns());
    expect(await pings(a.ns, b.ip)).toBe(false);
    expect(await httpStatus(a.ns, `http://${b.ip}:${HTTP_PORT}/hello.txt`, 1)).toBe(0);
    const seen = udpOnB.stdout.length;
    await a.ns.exec(udpSend(b.ip, UDP_PORT));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(udpOnB.stdout.slice(seen)).toBe('');
    const after = await firewallCounters(netns());
    expect(after.isolationDrops - before.isolationDrops).toBeGreaterThanOrEqual(2 + 1 + 3);
  });

  it('lets nothing from the uplink open a connection to a client', async () => {
    const before = await firewallCounters(netns());
    await world.internet.ip(['route', 'add', '100.64.0.0/16', 'via', PROVIDER_UPLINK_IP]);
    try {
      expect(await httpStatus(world.internet, `http://${b.ip}:${HTTP_PORT}/hello.txt`, 1)).toBe(0);
      expect(await pings(world.internet, b.ip)).toBe(false);
    } finally {
      await world.internet.ip(['route', 'del', '100.64.0.0/16', 'via', PROVIDER_UPLINK_IP]);
    }
    expect((await firewallCounters(netns())).isolationDrops).toBeGreaterThan(before.isolationDrops);
  });

  it("drops a client's packets sent from another client's address, counting them", async () => {
    await a.ns.ip(['address', 'add', `${b.ip}/32`, 'dev', 'eth0']);
    try {
      const before = await firewallCounters(netns());
      expect(await pings(a.ns, INTERNET_IP, ['-I', b.ip])).toBe(false);
      expect(await pings(a.ns, GATEWAY_IP, ['-I', b.ip])).toBe(false);
      const after = await firewallCounters(netns());
      expect(after.antispoofDrops - before.antispoofDrops).toBeGreaterThanOrEqual(4);
      // The same client with its own address still gets through.
      expect(await pings(a.ns, INTERNET_IP, ['-I', a.ip])).toBe(true);
    } finally {
      await a.ns.ip(['address', 'del', `${b.ip}/32`, 'dev', 'eth0']);
    }
  });

  it('opens only the gateway services to clients: ping yes, other TCP ports no', async () => {
    const before = await firewallCounters(netns());
    expect(await pings(a.ns, GATEWAY_IP)).toBe(true);
    expect(await httpStatus(a.ns, `http://${GATEWAY_IP}:${CLOSED_PORT}/hello.txt`, 1)).toBe(0);
    expect(await httpStatus(a.ns, `http://${PROVIDER_UPLINK_IP}:${CLOSED_PORT}/hello.txt`, 1)).toBe(0);
    expect((await firewallCounters(netns())).inputDrops).toBeGreaterThan(before.inputDrops);
    // Not the firewall's business: the uplink side still reaches the provider.
    expect(await httpStatus(world.internet, `http://${PROVIDER_UPLINK_IP}:${CLOSED_PORT}/hello.txt`)).toBe(200);
  });

  it('keeps the gateway from the uplink side: ping, UDP and TCP to it from there get nothing, counted; clients still reach it', async () => {
    await world.internet.ip(['route', 'add', `${GATEWAY_IP}/32`, 'via', PROVIDER_UPLINK_IP]);
    try {
      const before = await firewallCounters(netns());
      expect(await pings(world.internet, GATEWAY_IP)).toBe(false);
      expect(await httpStatus(world.internet, `http://${GATEWAY_IP}:${CLOSED_PORT}/hello.txt`, 1)).toBe(0);
      const seen = gatewayDns.stdout.length;
      await world.internet.exec(udpSend(GATEWAY_IP, DNS_PORT));
      await settle();
      expect(gatewayDns.stdout.slice(seen)).toBe('');
      expect((await firewallCounters(netns())).inputDrops - before.inputDrops).toBeGreaterThanOrEqual(2 + 1 + 3);
      // The same services, from a client link.
      expect(await pings(a.ns, GATEWAY_IP)).toBe(true);
      await a.ns.exec(udpSend(GATEWAY_IP, DNS_PORT));
      await gatewayDns.waitForOutput(new RegExp(`from ${a.ip.replaceAll('.', '\\.')}:`), 2000);
      // And from the provider itself (through lo).
      expect(await pings(provider, GATEWAY_IP)).toBe(true);
    } finally {
      await world.internet.ip(['route', 'del', `${GATEWAY_IP}/32`, 'via', PROVIDER_UPLINK_IP]);
    }
  });

  it("keeps a client's ICMP errors about another client's flows from that client, counting them", async () => {
    const watcher = await watchIcmp(b.ns);
    const toGateway = await openFlow(b.ns, b.ip, 40001, GATEWAY_IP, gatewayDns, 'query-b');
    const toInternet = await openFlow(b.ns, b.ip, 40002, INTERNET_IP, echo, 'hello-b');
    try {
      const before = await firewallCounters(netns());
      // Straight to B, naming B's query to the gateway: conntrack relates it to that flow.
      const query: EmbeddedUdp = { src: b.ip, sport: 40001, dst: GATEWAY_IP, dport: DNS_PORT };
      await a.ns.exec(icmpErrorSender({ to: b.ip, type: ICMP_UNREACHABLE, code: CODE_PORT_UNREACHABLE, about: query }));
      // To the provider's uplink address, naming B's masqueraded flow as it left: de-NATed to B.
      const masqueraded: EmbeddedUdp = { src: PROVIDER_UPLINK_IP, sport: toInternet.natPort, dst: INTERNET_IP, dport: ECHO_PORT };
      await a.ns.exec(icmpErrorSender({ to: PROVIDER_UPLINK_IP, type: ICMP_UNREACHABLE, code: CODE_FRAG_NEEDED, mtu: 576, about: masqueraded }));
      await settle();
      expect(watcher.stdout).not.toMatch(errorLine(ICMP_UNREACHABLE, CODE_PORT_UNREACHABLE, query));
      expect(watcher.stdout).not.toMatch(errorLine(ICMP_UNREACHABLE, CODE_FRAG_NEEDED, { src: b.ip, sport: 40002, dst: INTERNET_IP, dport: ECHO_PORT }));
      expect((await b.ns.ip(['route', 'get', INTERNET_IP])).stdout).not.toContain('mtu');
      expect((await firewallCounters(netns())).isolationDrops - before.isolationDrops).toBeGreaterThanOrEqual(3 + 3);
    } finally {
      for (const process of [watcher, toGateway.flow, toInternet.flow]) await process.kill('SIGKILL', 0);
      // Should the frag-needed have got through, forget the path MTU it set.
      await b.ns.ip(['route', 'flush', 'cache']);
    }
  });

  it("keeps a client's ICMP errors about the provider's own flows from the provider, counting them", async () => {
    const watcher = await watchIcmp(provider);
    const own = await openFlow(provider, PROVIDER_UPLINK_IP, 40003, INTERNET_IP, echo, 'hello-provider');
    try {
      const before = await firewallCounters(netns());
      const about: EmbeddedUdp = { src: PROVIDER_UPLINK_IP, sport: 40003, dst: INTERNET_IP, dport: ECHO_PORT };
      await a.ns.exec(icmpErrorSender({ to: PROVIDER_UPLINK_IP, type: ICMP_UNREACHABLE, code: CODE_PORT_UNREACHABLE, about }));
      await settle();
      expect(watcher.stdout).not.toMatch(errorLine(ICMP_UNREACHABLE, CODE_PORT_UNREACHABLE, about));
      expect((await firewallCounters(netns())).inputDrops - before.inputDrops).toBeGreaterThanOrEqual(3);
    } finally {
      for (const process of [watcher, own.flow]) await process.kill('SIGKILL', 0);
    }
  });

  it("passes ICMP errors about a client's flows from the uplink side (PMTU discovery) and from the client itself", async () => {
    await world.internet.ip(['address', 'add', `${ROUTER_IP}/24`, 'dev', 'eth0']);
    const watcher = await watchIcmp(b.ns);
    const watcherOutside = await watchIcmp(world.internet);
    const flow = await openFlow(b.ns, b.ip, 40004, INTERNET_IP, echo, 'hello-b2');
    try {
      const leaving: EmbeddedUdp = { src: PROVIDER_UPLINK_IP, sport: flow.natPort, dst: INTERNET_IP, dport: ECHO_PORT };
      await world.internet.exec(icmpErrorSender({ from: ROUTER_IP, to: PROVIDER_UPLINK_IP, type: ICMP_UNREACHABLE, code: CODE_FRAG_NEEDED, mtu: 1280, about: leaving }));
      await watcher.waitForOutput(errorLine(ICMP_UNREACHABLE, CODE_FRAG_NEEDED, { src: b.ip, sport: 40004, dst: INTERNET_IP, dport: ECHO_PORT }), 2000);
      expect((await b.ns.ip(['route', 'get', INTERNET_IP])).stdout).toContain('mtu 1280');
      // A's reply to the server is echoed to a closed port: A's own port unreachable reaches the server, de-NATed.
      const closed = await openFlow(a.ns, a.ip, 40005, INTERNET_IP, echo, 'echo-a', true);
      await closed.flow.wait();
      await watcherOutside.waitForOutput(
        errorLine(ICMP_UNREACHABLE, CODE_PORT_UNREACHABLE, { src: INTERNET_IP, sport: ECHO_PORT, dst: PROVIDER_UPLINK_IP, dport: closed.natPort }),
        2000,
      );
    } finally {
      for (const process of [watcher, watcherOutside, flow.flow]) await process.kill('SIGKILL', 0);
      await world.internet.ip(['address', 'del', `${ROUTER_IP}/24`, 'dev', 'eth0']);
    }
  });

  it("lets a DHCP client's first broadcast from 0.0.0.0 reach the provider's port 67", async () => {
    const listener = provider.spawn(udpListener(67));
    await listener.waitForOutput(/ready/);
    const before = await firewallCounters(netns());
    const dhcp = a.ns.spawn(['busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-t', '1', '-T', '1', '-s', '/bin/true'], { pidns: true });
    const match = await listener.waitForOutput(/from 0\.0\.0\.0:68 \d+ bytes/, 5000);
    expect(match[0]).toMatch(/from 0\.0\.0\.0:68/);
    await dhcp.kill('SIGKILL', 0);
    await listener.kill('SIGKILL', 0);
    expect((await firewallCounters(netns())).antispoofDrops).toBe(before.antispoofDrops);
    // udhcpc ran without a script, so the client's address is untouched.
    expect(await pings(a.ns, GATEWAY_IP)).toBe(true);
  });

  it('drops all IPv6 from client links, counting it', async () => {
    const linkLocal = /inet6 (fe80::[0-9a-f:]+)\/64/.exec((await provider.ip(['-6', '-o', 'address', 'show', 'dev', a.providerIf])).stdout)?.[1];
    expect(linkLocal).toBeDefined();
    await a.ns.exec(['sysctl', '-q', '-w', 'net.ipv6.conf.eth0.accept_dad=0', 'net.ipv6.conf.eth0.disable_ipv6=0']);
    try {
      const before = await firewallCounters(netns());
      expect(await pings(a.ns, `${linkLocal ?? ''}%eth0`)).toBe(false);
      expect((await firewallCounters(netns())).antispoofDrops - before.antispoofDrops).toBeGreaterThanOrEqual(2);
    } finally {
      await a.ns.exec(['sysctl', '-q', '-w', 'net.ipv6.conf.eth0.disable_ipv6=1']);
    }
  });

  it('drops, whatever arp_accept says, ARP from a client link whose sender is not its client, and all but probes from a provider-group link serving nobody; counted', async () => {
    // No arp_filter here (the agent's planner sets it): the guard alone. arp_accept makes
    // gratuitous ARP and unsolicited replies create neighbour entries, for any sender.
    const arpAccept = async (value: number): Promise<void> => void (await provider.exec(['sysctl', '-q', '-w', `net.ipv4.conf.all.arp_accept=${value}`]));
    const learnt = async (dev: string, ips: readonly string[]): Promise<string[]> =>
      (await provider.ip(['-4', 'neigh', 'show', 'dev', dev])).stdout.split('\n').filter((line) => ips.some((ip) => line.startsWith(`${ip} `)));
    const probe = async (ns: Netns, providerMac: string, own: string, forged: readonly string[]): Promise<string[]> =>
      JSON.parse((await ns.exec(['python3', '-c', ARP_PROBE, providerMac, own, ...forged])).stdout) as string[];
    const macOf = async (dev: string): Promise<string> => (await provider.exec(['cat', `/sys/class/net/${dev}/address`])).stdout.trim();
    // A link beside the clients', with the gateway address, in no group and no set at first.
    const far = await harness.namespace('arpx');
    const extra = 'snpx';
    await harness.veth(provider, extra, far, 'eth0');
    await provider.ip(['address', 'add', `${GATEWAY_IP}/32`, 'dev', extra]);
    await harness.up(provider, extra);
    await harness.up(far, 'eth0');
    await Promise.all([provider.linkActive(extra), far.linkActive('eth0')]);
    await arpAccept(1);
    try {
      // Another client's address, and addresses off the link.
      const forged = [b.ip, ...Array.from({ length: 8 }, (_, index) => `203.0.113.${index + 1}`)];
      let before = await firewallCounters(netns());
      expect(await probe(a.ns, await macOf(a.providerIf), a.ip, forged)).toEqual(['0.0.0.0', a.ip].sort());
      expect(await learnt(a.providerIf, forged)).toEqual([]);
      let drops = (await firewallCounters(netns())).arpDrops - before.arpDrops;
      expect(drops).toBeGreaterThanOrEqual(ARP_PROBE_PACKETS_PER_SENDER * forged.length);
      expect(drops).toBeLessThan(ARP_PROBE_PACKETS_PER_SENDER * forged.length + 3);

      // The control: a link the guard does not hold is not ours to police, and there the kernel
      // answers every sender and learns them all (what the guard keeps from client links).
      const senders = Array.from({ length: 8 }, (_, index) => `198.51.100.${index + 1}`);
      const own = '198.51.100.100';
      expect(await probe(far, await macOf(extra), own, senders)).toEqual(['0.0.0.0', own, ...senders].sort());
      expect(await learnt(extra, [own, ...senders])).toHaveLength(senders.length + 1);
      await provider.ip(['neigh', 'flush', 'dev', extra]);

      // In the provider links' group, not named (renamed while up, a name the sets cannot hold):
      // nothing passes. Then named as isolated (a second link for a client id already served): it
      // has no client, so nothing passes but a probe, which makes no entry (as its DHCP discovery
      // from 0.0.0.0 passes the inet table).
      await provider.ip(['link', 'set', 'dev', extra, 'group', String(PROVIDER_LINK_GROUP)]);
      for (const [model, passing] of [
        [world.model(), []],
        [world.model({ isolatedLinks: [extra] }), ['0.0.0.0']],
      ] as const) {
        await reconcileFirewall(model, netns());
        before = await firewallCounters(netns());
        expect(await probe(far, await macOf(extra), own, senders)).toEqual(passing);
        expect(await learnt(extra, [own, ...senders])).toEqual([]);
        drops = (await firewallCounters(netns())).arpDrops - before.arpDrops;
        expect(drops).toBeGreaterThanOrEqual(ARP_PROBE_PACKETS_PER_SENDER * senders.length + 2 - passing.length);
        expect(drops).toBeLessThan(ARP_PROBE_PACKETS_PER_SENDER * senders.length + 5);
      }
    } finally {
      await arpAccept(0);
      await provider.ip(['link', 'del', 'dev', extra]);
      await reconcileFirewall(world.model(), netns());
    }
    // The clients' own ARP still passes: they reach the gateway, their neighbour entries flushed.
    await a.ns.ip(['neigh', 'flush', 'dev', 'eth0']);
    expect(await pings(a.ns, GATEWAY_IP)).toBe(true);
  });

  it('changes nothing, counters included, when the same model is applied again in this or a fresh process', async () => {
    const before = await ruleset(provider);
    expect(before).toMatch(/packets [1-9]/);
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: false });
    const fresh = await freshAgent(provider.name, world.model()).done;
    expect(fresh).toMatchObject({ code: 0, stdout: '{"changed":false}\n' });
    expect(await ruleset(provider)).toBe(before);
  });

  it('replaces a table whose structure was changed, and only then', async () => {
    const handles = (await provider.exec(['nft', '-a', 'list', 'chain', 'inet', 'spectrum_netd', 'forward'])).stdout;
    const handle = /ct state established accept # handle (\d+)/.exec(handles)?.[1];
    expect(handle).toBeDefined();
    await provider.exec(['nft', 'delete', 'rule', 'inet', 'spectrum_netd', 'forward', 'handle', handle ?? '']);
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: true });
    const listing = parseTableListing((await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
    expect(listing.structure).toBe(staticTableText({ clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE }));
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: false });
  });

  it("removes a link's elements when the link goes, and puts them back", async () => {
    const only = world.model({ providerLinks: [{ ifname: a.providerIf, clientIp: a.ip }] });
    expect(await reconcileFirewall(only, netns())).toEqual({ changed: true });
    const listed = await modelElements(provider);
    expect(listed).not.toContain(b.providerIf);
    expect(listed).not.toContain(b.ip);
    expect(listed).toContain(a.providerIf);
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: true });
    expect((await provider.exec(['nft', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).toContain(b.providerIf);
  });

  it('lets an allowed pair open connections in its direction only', async () => {
    expect(await reconcileFirewall(world.model({ allowedPairs: [{ from: a.ip, to: b.ip }] }), netns())).toEqual({ changed: true });
    expect(await httpStatus(a.ns, `http://${b.ip}:${HTTP_PORT}/hello.txt`)).toBe(200);
    expect(await httpStatus(b.ns, `http://${a.ip}:${HTTP_PORT}/hello.txt`, 1)).toBe(0);
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: true });
    expect(await httpStatus(a.ns, `http://${b.ip}:${HTTP_PORT}/hello.txt`, 1)).toBe(0);
  });

  it('keeps an active TCP transfer going through a SIGKILLed agent, a restart and a table replacement', async () => {
    const download = a.ns.spawn([
      'curl', '-sS', '--max-time', '20', '-o', '/dev/null', '-w', '%{size_download}',
      `http://${INTERNET_IP}:${SLOW_PORT}/`,
    ]);
    await new Promise((resolve) => setTimeout(resolve, 700));
    const killed = freshAgent(provider.name, world.model());
    await new Promise((resolve) => setTimeout(resolve, 60));
    killed.kill();
    await killed.done;
    const restarted = await freshAgent(provider.name, world.model()).done;
    expect(restarted).toMatchObject({ code: 0, stdout: '{"changed":false}\n' });
    // A structure change forces a whole-table replacement mid-transfer: conntrack keeps the flow.
    await provider.exec(['nft', 'add', 'rule', 'inet', 'spectrum_netd', 'forward', 'counter']);
    expect(await freshAgent(provider.name, world.model()).done).toMatchObject({ code: 0, stdout: '{"changed":true}\n' });
    expect(download.exit).toBeUndefined();
    const exit = await download.wait();
    await download.waitClosed();
    expect(download.stderr).toBe('');
    expect(exit.code).toBe(0);
    expect(Number(download.stdout)).toBe(SLOW_CHUNKS * SLOW_CHUNK_BYTES);
  }, 30_000);

  it('FirewallReconciler: applies changes as element transactions and recovers when one fails', async () => {
    const reconciler = new FirewallReconciler(netns());
    expect(await reconciler.reconcile(world.model())).toEqual({ changed: false });
    const onlyA = world.model({ providerLinks: [{ ifname: a.providerIf, clientIp: a.ip }] });
    expect(await reconciler.reconcile(onlyA)).toEqual({ changed: true });
    expect(await modelElements(provider)).not.toContain(b.ip);
    expect(await reconciler.reconcile(world.model())).toEqual({ changed: true });
    // Someone removes B's address behind the reconciler's back: its next transaction (which
    // deletes it) fails, and it falls back to listing the table, converging all the same.
    await provider.exec(['nft', 'delete', 'element', 'inet', 'spectrum_netd', 'client_ips', `{ ${b.ip} }`]);
    expect(await reconciler.reconcile(onlyA)).toEqual({ changed: true });
    expect(await reconcileFirewall(onlyA, netns())).toEqual({ changed: false });
    expect(await reconciler.reconcile(world.model())).toEqual({ changed: true });
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: false });
  });

  it('removes the whole table, idempotently, and the control behaviour returns', async () => {
    // Tables of others, one of our name in another family: never touched.
    const others = 'table ip spectrum_netd {\n}\ntable arp filter {\n}\ntable inet spectrum_netd_other {\n}\n';
    await provider.exec(['nft', '-f', '-'], { input: others });
    expect(await removeFirewall(netns())).toEqual(['inet', 'arp']);
    expect(await removeFirewall(netns())).toEqual([]);
    expect(await ruleset(provider)).toBe(others);
    await provider.exec(['nft', '-f', '-'], { input: 'delete table ip spectrum_netd\ndelete table arp filter\ndelete table inet spectrum_netd_other\n' });
    expect(await ruleset(provider)).toBe('');
    await expect(firewallCounters(netns())).rejects.toSatisfy((error) => error instanceof FirewallError && error.kind === 'table-missing');
    expect(await pings(a.ns, b.ip)).toBe(true);
  });
});
