// The per-client flow cap in a provider namespace with its real table: a client holding its cap
// of conntrack entries opens no new flow, forwarded or to the gateway's services, and each one
// refused is counted; another client opens its own all the while; the cap frees up as the
// client's entries are deleted or expire; an audit keeps what the set counts. A small cap, so
// that no test comes anywhere near the machine-wide table limit (a few hundred entries in all).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FirewallReconciler, firewallCounters, reconcileFirewall } from '../../../guest/firewall/nft.js';
import { FLOW_SET, parseTableListing, staticTableText } from '../../../guest/firewall/ruleset.js';
import { GATEWAY_IP } from '../../../shared/scheme.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { udpEchoServer } from './icmp-probe.js';
import { INTERNET_IP, type ProviderWorld, TEST_NEW_FLOW_RATE, type WorldClient, makeProviderWorld, withoutFlowElements } from './provider-world.js';

const PURGE = fileURLToPath(new URL('../../../dist/test/guest/conntrack/fixtures/conntrack-purge.js', import.meta.url));
const LIMIT = 24;
/** New flows a client tries past its cap, in each burst. */
const EXTRA = 6;
/** The internet server's ports: one flow per port from a client. */
const FIRST_PORT = 7100;
const PORTS = Array.from({ length: LIMIT + EXTRA }, (_, index) => FIRST_PORT + index);
/** A's flows all leave from this port, so that sending again to a port is the same flow. */
const A_PORT = 40100;
const DNS_PORT = 53;

/** argv: a UDP server on every port of PORTS printing `port <port> <payload>` per datagram. Prints "ready". */
function multiPortServer(ip: string): string[] {
  return [
    'python3',
    '-u',
    '-c',
    [
      'import selectors, socket',
      'sel = selectors.DefaultSelector()',
      `for port in range(${FIRST_PORT}, ${FIRST_PORT + PORTS.length}):`,
      '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `    s.bind(("${ip}", port))`,
      '    sel.register(s, selectors.EVENT_READ, port)',
      'print("ready")',
      'while True:',
      '    for key, _ in sel.select():',
      '        data = key.fileobj.recv(4096)',
      '        print("port %d %s" % (key.data, data.decode(errors="replace")))',
    ].join('\n'),
  ];
}

/** argv: one datagram `payload` to each of `ports` on `ip`, 5 ms apart (each flow through the table before the next), from `lport` (0: any). */
function sendEach(ip: string, ports: readonly number[], payload: string, lport = 0, times = 1): string[] {
  return [
    'python3',
    '-c',
    [
      'import socket, time',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      `s.bind(("0.0.0.0", ${lport}))`,
      `for port in [${ports.join(', ')}]:`,
      `    for _ in range(${times}): s.sendto(b"${payload}", ("${ip}", port))`,
      '    time.sleep(0.005)',
    ].join('\n'),
  ];
}

/** argv: one datagram `payload` from lport to ip:port (broadcast allowed); prints the answer, or "timeout" after 3 s. */
function askOnce(ip: string, port: number, lport: number, payload: string): string[] {
  return [
    'python3',
    '-c',
    [
      'import socket',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      's.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)',
      `s.bind(("0.0.0.0", ${lport}))`,
      's.settimeout(3)',
      `s.sendto(b"${payload}", ("${ip}", ${port}))`,
      'try:',
      '    print(s.recv(4096).decode())',
      'except socket.timeout:',
      '    print("timeout")',
    ].join('\n'),
  ];
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeNetns('the per-client flow cap in network namespaces', () => {
  let harness: Harness;
  let world: ProviderWorld;
  let a: WorldClient;
  let b: WorldClient;
  let provider: Netns;
  let server: NetnsProcess;
  let gatewayDns: NetnsProcess;
  let gatewayDhcp: NetnsProcess;
  const options = (): { netns: string; clientFlowLimit: number; clientNewFlowRate: number } => ({ netns: provider.name, clientFlowLimit: LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE });

  /** The ports `tag`'s datagrams reached the server on, each once. */
  const received = (tag: string): number[] =>
    [...new Set([...server.stdout.matchAll(new RegExp(`^port (\\d+) ${tag}$`, 'gm'))].map((match) => Number(match[1])))].sort((x, y) => x - y);

  /** Conntrack entries the provider holds for flows `client` opened. */
  async function entriesOf(client: WorldClient): Promise<number> {
    const table = (await provider.exec(['cat', '/proc/net/nf_conntrack'])).stdout;
    return table.split('\n').filter((line) => line.includes(`src=${client.ip} `)).length;
  }

  /** `client` sends one datagram tagged `tag` to each of `ports`; resolves once those let through have arrived (and a little more). */
  async function burst(client: WorldClient, ports: readonly number[], tag: string, lport = 0): Promise<number[]> {
    await client.ns.exec(sendEach(INTERNET_IP, ports, tag, lport));
    await sleep(300);
    return received(tag);
  }

  /** Delete every conntrack entry naming `client`, with the agent's own purge. */
  async function purge(client: WorldClient): Promise<void> {
    const { stdout } = await provider.exec([process.execPath, PURGE, 'purge', JSON.stringify({ addresses: [client.ip], sweep: null })], { enter: 'nsenter' });
    expect(stdout).toContain('"result"');
  }

  const drops = async (): Promise<number> => (await firewallCounters(options())).flowLimitDrops;

  beforeAll(async () => {
    if (!existsSync(PURGE)) throw new Error(`${PURGE} is missing: run npm run build`);
    harness = createHarness('flowcap');
    world = await makeProviderWorld(harness, [301, 302]);
    [a, b] = world.clients as [WorldClient, WorldClient];
    provider = world.provider;
    // Unreplied UDP entries live 30 s by default: long enough, but not on a loaded machine.
    await provider.exec(['sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout=300']);
    server = world.internet.spawn(multiPortServer(INTERNET_IP));
    await server.waitForOutput(/ready/);
    // Stands in for the DNS forwarder on the gateway.
    gatewayDns = provider.spawn(udpEchoServer('0.0.0.0', DNS_PORT));
    await gatewayDns.waitForOutput(/ready/);
    // Stands in for the DHCP server: answers a client's port 68 as a DHCPACK would.
    gatewayDhcp = provider.spawn(udpEchoServer('0.0.0.0', 67));
    await gatewayDhcp.waitForOutput(/ready/);
    expect(await reconcileFirewall(world.model(), options())).toEqual({ changed: true });
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('holds the cap as the table text says: the listing has the dynamic set and both rules', async () => {
    const listing = parseTableListing((await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
    expect(listing.structure).toBe(staticTableText({ clientFlowLimit: LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE }));
    expect(listing.structure.match(/ct count over 24 /g)).toHaveLength(2);
  });

  it('lets a client open its cap of new flows and no more, counting each refused, while another client opens its own', async () => {
    const before = await drops();
    // A and B at the same time; B again once A is at its cap.
    const [fromA, fromB] = await Promise.all([burst(a, PORTS, 'A1', A_PORT), burst(b, PORTS.slice(0, 10), 'B1')]);
    expect(fromA).toEqual(PORTS.slice(0, LIMIT));
    expect(fromB).toEqual(PORTS.slice(0, 10));
    expect(await burst(b, PORTS.slice(10, 20), 'B2')).toEqual(PORTS.slice(10, 20));
    expect(await entriesOf(a)).toBe(LIMIT);
    expect(await entriesOf(b)).toBe(20);
    expect((await drops()) - before).toBe(EXTRA);
    // The flows A holds still carry its datagrams (later packets are not counted again), a burst included.
    await a.ns.exec(sendEach(INTERNET_IP, PORTS.slice(0, LIMIT), 'A1again', A_PORT, 20));
    await eventually("A's admitted flows to carry on", async () => received('A1again').length === LIMIT);
    expect(server.stdout.match(/^port \d+ A1again$/gm)).toHaveLength(LIMIT * 20);
    expect((await drops()) - before).toBe(EXTRA);
    expect(await entriesOf(a)).toBe(LIMIT);
  });

  it("counts flows to the gateway's services too: the capped client's DNS query and ping go unanswered, the other client's not", async () => {
    const before = await drops();
    const seen = gatewayDns.stdout.length;
    await a.ns.exec(sendEach(GATEWAY_IP, [DNS_PORT], 'query-a'));
    await b.ns.exec(sendEach(GATEWAY_IP, [DNS_PORT], 'query-b'));
    await gatewayDns.waitForOutput(/ query-b\n/);
    await sleep(300);
    expect(gatewayDns.stdout.slice(seen)).not.toContain('query-a');
    const ping = async (client: WorldClient): Promise<number | null> =>
      (await client.ns.exec(['busybox', 'ping', '-c', '1', '-W', '1', GATEWAY_IP], { allowFailure: true })).code;
    expect(await ping(a)).not.toBe(0);
    expect(await ping(b)).toBe(0);
    expect((await drops()) - before).toBe(2);
  });

  it('lets the capped client renew its DHCP lease (port 68 to 67, gateway or broadcast), but no other flow to port 67', async () => {
    expect(await entriesOf(a)).toBe(LIMIT);
    const before = await drops();
    for (const [to, lport, payload] of [
      [GATEWAY_IP, 68, 'echo-renew'],
      ['255.255.255.255', 68, 'echo-rebind'],
      [GATEWAY_IP, 40067, 'echo-other'],
    ] as const) {
      const answer = await a.ns.exec(askOnce(to, 67, lport, payload), { allowFailure: true });
      expect(answer.stdout.trim()).toBe(lport === 68 ? payload : 'timeout');
    }
    expect(gatewayDhcp.stdout).toContain(`from ${a.ip}:68 echo-renew`);
    expect(gatewayDhcp.stdout).toContain(`from ${a.ip}:68 echo-rebind`);
    expect(gatewayDhcp.stdout).not.toContain('echo-other');
    expect((await drops()) - before).toBe(1);
    // Its renewals' entries on top of its cap: one per server address.
    expect(await entriesOf(a)).toBe(LIMIT + 2);
  });

  it('is kept by an audit: traffic fills the set, which is no change, and the counts stay; a hand-made element goes', async () => {
    const text = (await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout;
    const listed = parseTableListing(text);
    expect(listed.flowElements).toEqual([`${a.ip} ct count over ${LIMIT}`, `${b.ip} ct count over ${LIMIT}`]);
    // What the other namespace tests compare listings with.
    const less = parseTableListing(withoutFlowElements(text));
    expect(less).toEqual({ ...listed, flowElements: [], rateElements: [] });
    expect(await reconcileFirewall(world.model(), options())).toEqual({ changed: false });
    expect(await new FirewallReconciler(options()).reconcile(world.model(), { verify: true })).toEqual({ changed: false });
    // An element made by hand (no expression: every new flow of its client would be dropped) is
    // deleted, and only it.
    await provider.exec(['nft', 'add', 'element', 'inet', 'spectrum_netd', FLOW_SET, '{ 100.64.9.9 }']);
    expect(await new FirewallReconciler(options()).reconcile(world.model(), { verify: true })).toEqual({ changed: true });
    expect(parseTableListing((await provider.exec(['nft', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).flowElements).toEqual(listed.flowElements);
    // Still at its cap: a table replaced, or its set emptied, would have let these through.
    expect(await burst(a, PORTS.slice(LIMIT), 'A2', A_PORT)).toEqual([]);
  });

  it("lets a client open new flows again once its entries are deleted (the agent's purge), up to its cap", async () => {
    await purge(a);
    expect(await entriesOf(a)).toBe(0);
    const before = await drops();
    expect(await burst(a, PORTS, 'A3', A_PORT)).toEqual(PORTS.slice(0, LIMIT));
    expect((await drops()) - before).toBe(EXTRA);
    expect(await entriesOf(a)).toBe(LIMIT);
  });

  it('lets a client open new flows again once its entries expire, up to its cap', async () => {
    await purge(a);
    await provider.exec(['sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout=3']);
    try {
      expect(await burst(a, PORTS.slice(0, LIMIT), 'A4', A_PORT)).toEqual(PORTS.slice(0, LIMIT));
      expect(await burst(a, PORTS.slice(LIMIT), 'A5', A_PORT)).toEqual([]);
      await eventually("A's entries to expire", async () => (await entriesOf(a)) === 0, 10_000);
      const before = await drops();
      expect(await burst(a, PORTS, 'A6', A_PORT)).toEqual(PORTS.slice(0, LIMIT));
      expect((await drops()) - before).toBe(EXTRA);
      // The set forgets a client with no entries left.
      await purge(a);
      await eventually(`${a.ip} to leave ${FLOW_SET}`, async () => !(await provider.exec(['nft', 'list', 'set', 'inet', 'spectrum_netd', FLOW_SET])).stdout.includes(a.ip), 10_000);
    } finally {
      await provider.exec(['sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout=300']);
    }
  });
});
