import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ClientId, clientId } from '../../../shared/client-id.js';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import { createHarness, describeNetns, type Harness, type Netns } from '../../harness/index.js';
import { buildTopology, type DhcpTopology } from './dhcp-topology.js';
import { ServerFixture } from './dhcp-server-fixture.js';

const UDHCPC = clientId(0x0102);
const DHCLIENT = clientId(0x0a01);
const DHCPCD = clientId(0x0304);
const WRONG_MAC = clientId(0x0405);

/** What a client namespace ends up with: IPv4 addresses on eth0, routes, and whether the gateway answers. */
async function clientState(ns: Netns): Promise<{ addresses: string[]; routes: string[]; pings: boolean }> {
  const addr = await ns.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  const addresses = [...addr.stdout.matchAll(/inet (\S+)/g)].map((match) => match[1] ?? '');
  const route = await ns.exec(['ip', '-4', 'route', 'show']);
  const routes = route.stdout.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  const ping = await ns.exec(['busybox', 'ping', '-c', '1', '-W', '2', '169.254.0.1'], { allowFailure: true });
  return { addresses, routes, pings: ping.code === 0 };
}

function expectSpectrumConfiguration(state: Awaited<ReturnType<typeof clientState>>, id: ClientId): void {
  expect(state.addresses).toEqual([`${clientIpTextOf(id)}/32`]);
  expect(state.routes.some((route) => /^default via 169\.254\.0\.1 dev eth0/.test(route))).toBe(true);
  expect(state.pings).toBe(true);
}

describeNetns('DHCP server with stock clients', () => {
  let harness: Harness;
  let topology: DhcpTopology;
  let server: ServerFixture;

  beforeAll(async () => {
    harness = createHarness('dhcp');
    topology = await buildTopology(harness, [UDHCPC, DHCLIENT, DHCPCD, WRONG_MAC], {
      clientMacs: new Map([[WRONG_MAC, '0a:b3:ec:00:99:99']]),
    });
    server = await ServerFixture.start(topology.provider, topology.links, 600);
  });

  afterAll(async () => {
    await server?.stop();
    await harness?.cleanup();
  });

  function client(id: ClientId): Netns {
    const ns = topology.clients.get(id);
    if (ns === undefined) throw new Error(`no client namespace for ${id}`);
    return ns;
  }

  it('gives busybox udhcpc with Debian default.script a /32 address, the gateway on-link and the default route', async () => {
    const ns = client(UDHCPC);
    const run = await ns.exec(['udhcpc', '-f', '-q', '-n', '-t', '3', '-T', '1', '-i', 'eth0', '-O', 'staticroutes', '-s', '/etc/udhcpc/default.script'], {
      timeoutMs: 20_000,
    });
    expect(run.code).toBe(0);
    expectSpectrumConfiguration(await clientState(ns), UDHCPC);
    expect(readFileSync(`/etc/netns/${ns.name}/resolv.conf`, 'utf8')).toContain('nameserver 169.254.0.1');
    const lease = (await server.stats()).leases.find((entry) => entry.id === UDHCPC);
    expect(lease).toMatchObject({ ifname: 'p258', clientIp: '100.64.1.2', clientMac: '0A:B3:EC:00:01:02', state: 'bound' });
  });

  it('gives ISC dhclient with its stock script the same configuration', async () => {
    const ns = client(DHCLIENT);
    const dir = mkdtempSync(join(tmpdir(), 'snt-dhclient-'));
    // dhclient -1 daemonizes once bound; the PID namespace ends the daemon when the parent exits.
    const run = await ns.spawn(
      ['dhclient', '-1', '-v', '-sf', '/sbin/dhclient-script', '-lf', join(dir, 'leases'), '-pf', join(dir, 'pid'), 'eth0'],
      { pidns: true },
    );
    const exit = await Promise.race([run.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 25_000))]);
    await run.kill('SIGKILL', 0);
    expect(exit, run.stderr).toMatchObject({ code: 0 });
    expectSpectrumConfiguration(await clientState(ns), DHCLIENT);
    // Debian's dhclient-script writes through the bind-mounted /etc/resolv.conf (cat, not rename).
    expect(readFileSync(`/etc/netns/${ns.name}/resolv.conf`, 'utf8')).toContain('nameserver 169.254.0.1');
    const lease = (await server.stats()).leases.find((entry) => entry.id === DHCLIENT);
    expect(lease?.state).toBe('bound');
  });

  it('gives dhcpcd the same configuration', async () => {
    const ns = client(DHCPCD);
    // dhcpcd keeps pid files and leases in /run/dhcpcd and /var/lib/dhcpcd, shared with the host:
    // give it private ones inside the PID namespace's own mount namespace.
    const script = [
      'mkdir -p /run/dhcpcd /var/lib/dhcpcd',
      'mount -t tmpfs tmpfs /run/dhcpcd',
      'mount -t tmpfs tmpfs /var/lib/dhcpcd',
      'exec dhcpcd -4 -1 -B -t 15 eth0',
    ].join(' && ');
    const run = ns.spawn(['sh', '-c', script], { pidns: true });
    const exit = await Promise.race([run.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 25_000))]);
    await run.kill('SIGKILL', 0);
    expect(exit, run.stderr).toMatchObject({ code: 0 });
    expectSpectrumConfiguration(await clientState(ns), DHCPCD);
  });

  it('gives no lease to a client whose MAC is not the one its link encodes, and counts it', async () => {
    const ns = client(WRONG_MAC);
    const before = (await server.stats()).counters['ignoredWrongMac'] ?? 0;
    const run = await ns.exec(['udhcpc', '-f', '-q', '-n', '-t', '2', '-T', '1', '-i', 'eth0', '-s', '/bin/true'], {
      allowFailure: true,
      timeoutMs: 20_000,
    });
    expect(run.code).not.toBe(0);
    const after = await server.stats();
    expect(after.counters['ignoredWrongMac']).toBeGreaterThan(before);
    expect(after.leases.find((entry) => entry.id === WRONG_MAC)).toBeUndefined();
    const addr = await ns.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    expect(addr.stdout).toBe('');
  });
});
