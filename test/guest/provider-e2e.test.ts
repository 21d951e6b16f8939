// The provider agent as a whole (spectrum-netd run: links, nftables, DHCP, DNS) with stock DHCP
// clients, the acceptance checks of the core and services issues in one topology.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness, type Netns } from '../harness/index.js';
import { withoutFlowElements } from './firewall/provider-world.js';
import {
  Agent,
  INTERNET_DNS,
  INTERNET_HTTP,
  type Internet,
  PAGE_TEXT,
  SLOW_BYTES,
  SLOW_PORT,
  TEST_NAME,
  addClient,
  clientIp,
  eventually,
  linkEndsActive,
  linkMac,
  makeInternet,
  udhcpc,
} from './provider-world.js';

async function fetchPage(client: Netns, url = `http://${INTERNET_HTTP}/`): Promise<string> {
  const result = await client.exec(['curl', '-sS', '--max-time', '5', url], { allowFailure: true });
  return result.code === 0 ? result.stdout : `curl failed: ${result.stderr}`;
}

async function pings(from: Netns, to: string, source?: string): Promise<boolean> {
  const args = ['/bin/busybox', 'ping', '-c', '1', '-W', '1', ...(source === undefined ? [] : ['-I', source]), to];
  return (await from.exec(args, { allowFailure: true })).code === 0;
}

async function resolves(client: Netns, name: string): Promise<string> {
  const result = await client.exec(['/bin/busybox', 'nslookup', name, '169.254.0.1'], { allowFailure: true });
  return /Address:\s*(192\.0\.2\.\d+)/.exec(result.stdout.split(name)[1] ?? '')?.[1] ?? `no answer: ${result.stdout} ${result.stderr}`;
}

describeNetns('spectrum-netd provider: links, NAT, isolation, anti-spoofing, DHCP, DNS', () => {
  let harness: Harness;
  let provider: Netns;
  let internet: Internet;
  let agent: Agent;
  let dir: string;
  const clients = new Map<number, Netns>();

  beforeAll(async () => {
    harness = createHarness('prov');
    dir = mkdtempSync(join(tmpdir(), 'spectrum-provider-'));
    provider = await harness.namespace('netvm');
    internet = await makeInternet(harness, provider);
    for (const id of [10, 11]) clients.set(id, await addClient(harness, provider, id));
    agent = await Agent.start(provider, join(dir, 'netd.sock'));
    // The agent raised the provider ends; the clients' eth0, raised before, wait for linkwatch.
    await Promise.all([...clients].map(([id, client]) => linkEndsActive(provider, `p${id}`, client)));
  });
  afterAll(async () => {
    await agent?.kill('SIGKILL');
    await internet?.stop();
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it('leases busybox udhcpc its MAC-derived /32, a default route via the gateway, and DNS on the gateway', async () => {
    const client = clients.get(10)!;
    const run = await udhcpc(client);
    expect(run.code, run.stderr).toBe(0);
    expect((await client.ip(['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain(`${clientIp(10)}/32`);
    expect((await client.ip(['route', 'show', 'default'])).stdout).toMatch(/default via 169\.254\.0\.1 dev eth0/);
    expect(await fetchPage(client)).toContain(PAGE_TEXT);
    expect(await resolves(client, TEST_NAME)).toBe(INTERNET_HTTP);
    const status = await agent.status();
    expect(status.services?.leases).toContainEqual(expect.objectContaining({ clientIp: clientIp(10), state: 'bound' }));
  });

  it('leases ISC dhclient with its stock script the same configuration', async () => {
    const client = clients.get(11)!;
    const files = mkdtempSync(join(tmpdir(), 'spectrum-dhclient-'));
    try {
      // dhclient -1 daemonizes once bound: its own PID namespace ends the daemon with the parent.
      const run = client.spawn(['dhclient', '-1', '-sf', '/sbin/dhclient-script', '-lf', join(files, 'leases'), '-pf', join(files, 'pid'), 'eth0'], {
        pidns: true,
      });
      const exit = await run.wait();
      expect(exit.code).toBe(0);
    } finally {
      rmSync(files, { recursive: true, force: true });
    }
    expect((await client.ip(['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain(`${clientIp(11)}/`);
    expect((await client.ip(['route', 'show', 'default'])).stdout).toMatch(/default via 169\.254\.0\.1/);
    expect(await fetchPage(client)).toContain(PAGE_TEXT);
    expect(await resolves(client, TEST_NAME)).toBe(INTERNET_HTTP);
  });

  it('keeps clients apart: no ping, TCP or UDP from one client to another, and counts the drops', async () => {
    const [a, b] = [clients.get(10)!, clients.get(11)!];
    const before = (await agent.status()).firewall!.isolationDrops;
    const tcp = b.spawn(['python3', '-u', '-m', 'http.server', '8080', '--bind', clientIp(11)]);
    const udp = b.spawn(['python3', '-u', '-c', [
      'import socket', 's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)', `s.bind(("${clientIp(11)}", 9999))`,
      'print("ready", flush=True)', 'data, peer = s.recvfrom(100)', 'print("got", data, flush=True)',
    ].join('\n')]);
    try {
      await tcp.waitForOutput(/Serving HTTP/);
      await udp.waitForOutput(/ready/);
      // Each server answers locally, so a failure below is the firewall, not a dead server.
      expect((await b.exec(['curl', '-sS', '--max-time', '3', '-o', '/dev/null', '-w', '%{http_code}', `http://${clientIp(11)}:8080/`])).stdout).toBe('200');
      expect(await pings(a, clientIp(11))).toBe(false);
      expect((await a.exec(['curl', '-sS', '--max-time', '2', `http://${clientIp(11)}:8080/`], { allowFailure: true })).code).not.toBe(0);
      await a.exec(['python3', '-c', `import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hello", ("${clientIp(11)}", 9999))`]);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(udp.stdout).not.toContain('got');
      expect((await agent.status()).firewall!.isolationDrops).toBeGreaterThan(before);
    } finally {
      await tcp.kill('SIGKILL');
      await udp.kill('SIGKILL');
    }
  });

  it("keeps the gateway's services from the uplink side: no DNS (UDP, TCP) or ping from a neighbour routing 169.254.0.1 to it, counted", async () => {
    const outside = internet.ns;
    await outside.ip(['route', 'add', '169.254.0.1/32', 'via', '192.0.2.1']);
    try {
      const before = await agent.status();
      const dig = (extra: readonly string[]): Promise<string> =>
        outside.exec(['dig', ...extra, '+time=1', '+tries=1', '+short', '@169.254.0.1', TEST_NAME], { allowFailure: true }).then((result) => result.stdout);
      expect(await dig([])).not.toContain(INTERNET_HTTP);
      expect(await dig(['+tcp'])).not.toContain(INTERNET_HTTP);
      expect(await pings(outside, '169.254.0.1')).toBe(false);
      const after = await agent.status();
      expect(after.firewall!.inputDrops).toBeGreaterThan(before.firewall!.inputDrops);
      expect(after.services?.dns?.queries).toBe(before.services?.dns?.queries);
      expect(after.services?.dns?.tcpQueries).toBe(before.services?.dns?.tcpQueries);
      // Clients still have the same resolver, and the uplink side the provider's own address.
      expect(await resolves(clients.get(10)!, TEST_NAME)).toBe(INTERNET_HTTP);
      expect(await pings(outside, '192.0.2.1')).toBe(true);
    } finally {
      await outside.ip(['route', 'del', '169.254.0.1/32', 'via', '192.0.2.1']);
    }
  });

  it("drops a client's packets sent with another client's address, and counts them", async () => {
    const a = clients.get(10)!;
    const before = (await agent.status()).firewall!.antispoofDrops;
    await a.ip(['address', 'add', `${clientIp(11)}/32`, 'dev', 'eth0']);
    try {
      expect(await pings(a, INTERNET_HTTP, clientIp(11))).toBe(false);
      expect(await pings(a, INTERNET_HTTP, clientIp(10))).toBe(true);
    } finally {
      await a.ip(['address', 'del', `${clientIp(11)}/32`, 'dev', 'eth0']);
    }
    expect((await agent.status()).firewall!.antispoofDrops).toBeGreaterThan(before);
  });

  it('serves a link added while it runs within a second, and leaves nothing behind when it goes', async () => {
    const added = performance.now();
    const client = await addClient(harness, provider, 12);
    await eventually('the hot-plugged link to be configured', async () => {
      const routes = (await provider.ip(['route', 'show', `${clientIp(12)}/32`])).stdout;
      const neighbours = (await provider.ip(['neigh', 'show', 'nud', 'permanent'])).stdout;
      return routes.includes('p12') && neighbours.includes(linkMac('client', 12));
    });
    expect(performance.now() - added).toBeLessThan(1000 + 300); // +300: the ip calls that made the link
    await linkEndsActive(provider, 'p12', client);
    expect((await udhcpc(client)).code).toBe(0);
    expect(await fetchPage(client)).toContain(PAGE_TEXT);

    await provider.ip(['link', 'del', 'p12']);
    await eventually('the removed link to leave the firewall', async () => {
      const table = (await provider.exec(['nft', 'list', 'table', 'inet', 'spectrum_netd'])).stdout;
      return !table.includes(clientIp(12)) && !table.includes('"p12"');
    });
    expect((await provider.ip(['route'])).stdout).not.toContain(clientIp(12));
    expect((await provider.ip(['neigh', 'show', 'nud', 'permanent'])).stdout).not.toContain(clientIp(12));
    const status = await agent.status();
    expect(status.links.map((link) => link.name)).not.toContain('p12');
    expect(status.services?.leases.map((lease) => lease.ifname)).not.toContain('p12');
  });

  it('survives SIGKILL during a TCP transfer: the transfer goes on and the ruleset is the same', async () => {
    const a = clients.get(10)!;
    // Less the flow set's elements: the transfer's own flow may add one.
    const ruleset = async (): Promise<string> => withoutFlowElements((await provider.exec(['nft', '-s', 'list', 'ruleset'])).stdout);
    const rulesetBefore = await ruleset();
    const download = a.spawn(['curl', '-sS', '--max-time', '30', '-o', '/dev/null', '-w', '%{size_download}', `http://${INTERNET_HTTP}:${SLOW_PORT}/`]);
    await new Promise((resolve) => setTimeout(resolve, 800));
    await agent.kill('SIGKILL');
    agent = await Agent.start(provider, join(dir, 'netd.sock'));
    expect((await agent.status()).counters.initialChanges).toBe(0);
    expect(await ruleset()).toBe(rulesetBefore);
    expect(download.exit, 'the transfer must still be running after the restart').toBeUndefined();
    const exit = await download.wait();
    expect(exit.code).toBe(0);
    expect(Number(download.stdout)).toBe(SLOW_BYTES);
  }, 60_000);

  /**
   * A chained provider `name` behind netvm: a client of netvm on link `uplinkId` (`up<id>`, netvm's
   * end `p<id>`), whose resolv.conf names its gateway 169.254.0.1 as DHCP would.
   */
  async function chainedProvider(name: string, uplinkId: number): Promise<Netns> {
    const vpn = await harness.namespace(name);
    await harness.veth(provider, `p${uplinkId}`, vpn, `up${uplinkId}`);
    await provider.ip(['link', 'set', 'dev', `p${uplinkId}`, 'address', linkMac('provider', uplinkId)]);
    await vpn.ip(['link', 'set', 'dev', `up${uplinkId}`, 'address', linkMac('client', uplinkId)]);
    vpn.setResolvConf('nameserver 169.254.0.1\n');
    return vpn;
  }

  it('serves clients through a chained provider (client-side link upstream) with the same guarantees', async () => {
    // vpnvm: a client of netvm (link 13) and a provider to its own clients (links 14 and 15).
    const vpn = await chainedProvider('vpnvm', 13);
    const inner = await addClient(harness, vpn, 14);
    const innerPeer = await addClient(harness, vpn, 15);
    // Its upstream's gateway is its own address too: its DNS goes to a resolver beyond netvm.
    const vpnAgent = await Agent.start(vpn, join(dir, 'vpn.sock'), ['--dns-upstream', INTERNET_DNS]);
    try {
      await eventually('vpnvm to have its upstream address', async () => (await vpn.ip(['-4', '-o', 'addr', 'show', 'dev', 'up13'])).stdout.includes(clientIp(13)));
      // Each link's ends raised by the two agents and the test: all activated before any traffic.
      await Promise.all([linkEndsActive(provider, 'p13', vpn, 'up13'), linkEndsActive(vpn, 'p14', inner), linkEndsActive(vpn, 'p15', innerPeer)]);
      expect((await udhcpc(inner)).code).toBe(0);
      expect((await udhcpc(innerPeer)).code).toBe(0);
      expect((await inner.ip(['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain(`${clientIp(14)}/32`);
      expect(await fetchPage(inner)).toContain(PAGE_TEXT);
      expect(await resolves(inner, TEST_NAME)).toBe(INTERNET_HTTP);
      // vpnvm's own clients are kept apart as netvm's are.
      expect(await pings(innerPeer, INTERNET_HTTP)).toBe(true);
      expect(await pings(inner, clientIp(15))).toBe(false);
      expect((await vpnAgent.status()).firewall!.isolationDrops).toBeGreaterThan(0);
      // The inner client cannot reach netvm's clients, nor spoof.
      expect(await pings(inner, clientIp(10))).toBe(false);
      await inner.ip(['address', 'add', `${clientIp(10)}/32`, 'dev', 'eth0']);
      expect(await pings(inner, INTERNET_HTTP, clientIp(10))).toBe(false);
      expect((await vpnAgent.status()).firewall!.antispoofDrops).toBeGreaterThan(0);
      expect((await vpnAgent.status()).links).toContainEqual(expect.objectContaining({ name: 'up13', role: 'client' }));
    } finally {
      await vpnAgent.kill('SIGKILL');
    }
  }, 60_000);

  it("lets a chained provider's forwarder use its upstream provider's, at the same gateway address, with no --dns-upstream", async () => {
    // vpnvm2: a client of netvm (link 16) whose resolv.conf names netvm's forwarder, 169.254.0.1,
    // which is also the address vpnvm2 itself serves its client (link 17) on.
    const vpn = await chainedProvider('vpnvm2', 16);
    const inner = await addClient(harness, vpn, 17);
    const vpnAgent = await Agent.start(vpn, join(dir, 'vpn2.sock'));
    try {
      const through = `169.254.0.1:53 via up16 from ${clientIp(16)}`;
      await eventually('vpnvm2 to reach its upstream provider', async () => (await vpnAgent.status()).services?.dns?.upstreams.includes(through) === true);
      expect((await vpn.exec(['cat', '/proc/sys/net/ipv4/conf/up16/accept_local'])).stdout.trim()).toBe('1');
      await Promise.all([linkEndsActive(provider, 'p16', vpn, 'up16'), linkEndsActive(vpn, 'p17', inner)]);
      expect((await udhcpc(inner)).code).toBe(0);
      const asked = (await agent.status()).services?.dns?.queries ?? 0;
      expect(await resolves(inner, TEST_NAME)).toBe(INTERNET_HTTP);
      // The answer came through netvm's forwarder, not from vpnvm2's own answering itself.
      expect((await agent.status()).services?.dns?.queries ?? 0).toBeGreaterThan(asked);
      expect((await vpnAgent.status()).services?.dns?.answered ?? 0).toBeGreaterThan(0);
      // Over TCP too (what a client does with a truncated answer): through the link as well.
      const tcpQueries = (await agent.status()).services?.dns?.tcpQueries ?? 0;
      const overTcp = await inner.exec(['dig', '+tcp', '+time=3', '+tries=1', '+short', '@169.254.0.1', TEST_NAME]);
      expect(overTcp.stdout.trim()).toBe(INTERNET_HTTP);
      expect((await agent.status()).services?.dns?.tcpQueries ?? 0).toBeGreaterThan(tcpQueries);
      // vpnvm2 itself asks the forwarder on its own gateway address (through lo), which asks netvm's.
      const own = await vpn.exec(['dig', '+time=3', '+tries=1', '+short', '@169.254.0.1', TEST_NAME]);
      expect(own.stdout.trim()).toBe(INTERNET_HTTP);
    } finally {
      await vpnAgent.kill('SIGKILL');
    }
  }, 60_000);
});
