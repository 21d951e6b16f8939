import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClientId, clientId } from '../../../shared/client-id.js';
import { clientIpTextOf } from '../../../shared/client-ip.js';
import { type DhcpPacket, MAX_MESSAGE_LENGTH, encodeDhcpPacket, parseDhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';
import { portHolderHint, sendFailureHint } from '../../../guest/dhcp/dhcp-server.js';
import { MESSAGE_TYPE, OPTION } from '../../../guest/dhcp/option-code.js';
import { createHarness, describeNetns, type Harness, type Netns, type NetnsProcess } from '../../harness/index.js';
import { buildTopology, clientNetns, linksActive, type DhcpTopology } from './dhcp-topology.js';
import { requireBuild, SERVER_FIXTURE, ServerFixture, startProbeAsBoundClient } from './dhcp-server-fixture.js';

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
    await linksActive(topology, [UDHCPC, DHCLIENT, DHCPCD, WRONG_MAC]);
    server = await ServerFixture.start(topology.provider, topology.links, 600);
  });

  afterAll(async () => {
    await server?.stop();
    await harness?.cleanup();
  });

  const client = (id: ClientId): Netns => clientNetns(topology, id);

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
    try {
      // dhclient -1 daemonizes once bound; the PID namespace ends the daemon when the parent exits.
      const run = await ns.spawn(
        ['dhclient', '-1', '-v', '-sf', '/sbin/dhclient-script', '-lf', join(dir, 'leases'), '-pf', join(dir, 'pid'), 'eth0'],
        { pidns: true },
      );
      const exit = await Promise.race([run.wait(), new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 25_000))]);
      await run.kill('SIGKILL', 0);
      expect(exit, run.stderr).toMatchObject({ code: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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

  it("rate-limits none of the stock clients' requests", async () => {
    const { counters } = await server.stats();
    expect(counters['rateLimited']).toBe(0);
    expect(counters['received']).toBeGreaterThan(0);
  });
});

const PROBE = clientId(0x0506);
const PROBE_IP = '100.64.5.6';

describeNetns('DHCP server spoken to directly (renew, rebind, release, init-reboot, NAK)', () => {
  let harness: Harness;
  let topology: DhcpTopology;
  let server: ServerFixture;
  let probe: NetnsProcess;

  beforeAll(async () => {
    requireBuild();
    harness = createHarness('dhcpproto');
    topology = await buildTopology(harness, [PROBE]);
    await linksActive(topology, [PROBE]);
    server = await ServerFixture.start(topology.provider, topology.links, 600);
    probe = await startProbeAsBoundClient(harness, clientNetns(topology, PROBE), PROBE_IP);
  });

  afterAll(async () => {
    await server?.stop();
    await harness?.cleanup();
  });

  let answered = 1;
  async function exchange(spec: Parameters<typeof probeRequest>[0], to: string, waitMs = 400): Promise<DhcpPacket[]> {
    const bytes = encodeDhcpPacket(probeRequest(spec), MAX_MESSAGE_LENGTH);
    probe.child.stdin?.write(`${JSON.stringify({ send: Buffer.from(bytes).toString('hex'), to, waitMs })}\n`);
    answered += 1;
    for (let waited = 0; waited < 5000; waited += 20) {
      const lines = probe.stdout.split('\n').filter((line) => line !== '');
      if (lines.length >= answered) {
        const { replies } = JSON.parse(lines[answered - 1] ?? '') as { replies: { from: string; hex: string }[] };
        for (const reply of replies) expect(reply.from).toBe('169.254.0.1');
        return replies.map((reply) => parseDhcpPacket(Buffer.from(reply.hex, 'hex')));
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`probe did not answer; stderr ${probe.stderr}`);
  }
  const typeOf = (packet: DhcpPacket | undefined): number | undefined => packet?.options.get(OPTION.messageType)?.[0];

  async function unreachablesSent(): Promise<number> {
    const { stdout } = await topology.provider.exec(['cat', '/proc/net/snmp'], { enter: 'nsenter' });
    const lines = stdout.split('\n').filter((line) => line.startsWith('Icmp:'));
    const names = lines[0]?.split(/\s+/) ?? [];
    const values = lines[1]?.split(/\s+/) ?? [];
    return Number(values[names.indexOf('OutDestUnreachs')]);
  }

  it('comes out of its start-up warm-up with no lease and every counter at zero', async () => {
    // The fixture prints "ready" once the warm-up's made-up requests have all been served.
    const stats = await server.stats();
    expect(stats.leases).toEqual([]);
    expect(Object.values(stats.counters).every((value) => value === 0), JSON.stringify(stats.counters)).toBe(true);
    expect(Object.keys(stats.counters)).toContain('offers');
  });

  it('OFFERs and ACKs the link address, then ACKs a unicast RENEW without any ICMP port-unreachable', async () => {
    const [offer] = await exchange({ type: MESSAGE_TYPE.discover }, '255.255.255.255');
    expect(typeOf(offer)).toBe(MESSAGE_TYPE.offer);
    expect(offer?.yiaddr).toBe(PROBE_IP);
    const [ack] = await exchange({ type: MESSAGE_TYPE.request, requested: PROBE_IP, serverId: '169.254.0.1' }, '255.255.255.255');
    expect(typeOf(ack)).toBe(MESSAGE_TYPE.ack);
    const unreachables = await unreachablesSent();
    const [renewed] = await exchange({ type: MESSAGE_TYPE.request, ciaddr: PROBE_IP }, '169.254.0.1');
    expect(typeOf(renewed)).toBe(MESSAGE_TYPE.ack);
    expect(renewed?.ciaddr).toBe(PROBE_IP);
    expect(await unreachablesSent()).toBe(unreachables);
    const lease = (await server.stats()).leases.find((entry) => entry.id === PROBE);
    expect(lease?.state).toBe('bound');
    expect(lease?.lastRenewed).toBeGreaterThanOrEqual(lease?.firstSeen ?? Infinity);
  });

  /** The socket holding the gateway's port 67 (169.254.0.1:67) in the provider, from /proc/net/udp: its receive queue's bytes and its drops. */
  async function portHolderQueue(): Promise<{ rxQueue: number; drops: number }> {
    const { stdout } = await topology.provider.exec(['cat', '/proc/net/udp'], { enter: 'nsenter' });
    const entries = stdout.split('\n').slice(1).map((line) => line.trim().split(/\s+/)).filter((fields) => fields[1]?.endsWith(':0043'));
    // One socket on port 67, the gateway's address in the kernel's (little-endian) hex.
    expect(entries.map((fields) => fields[1])).toEqual(['0100FEA9:0043']);
    const fields = entries[0] ?? [];
    return { rxQueue: Number.parseInt((fields[4] ?? '').split(':')[1] ?? '', 16), drops: Number(fields[12]) };
  }

  /** The provider's UDP counters (/proc/net/snmp's Udp: lines), by name. */
  async function udpCounters(): Promise<Record<string, number>> {
    const { stdout } = await topology.provider.exec(['cat', '/proc/net/snmp'], { enter: 'nsenter' });
    const [names = [], values = []] = stdout.split('\n').filter((line) => line.startsWith('Udp:')).map((line) => line.split(/\s+/).slice(1));
    return Object.fromEntries(names.map((name, i) => [name, Number(values[i])]));
  }

  it('never queues a datagram to port 67 on the socket holding the port: the kernel drops a unicast one there, the link socket answers, and no ICMP port-unreachable goes out', async () => {
    // Were the holder read (a dgram socket), every request, a flood's too, would be read twice.
    const before = await portHolderQueue();
    const unreachables = await unreachablesSent();
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, ciaddr: PROBE_IP, flags: 0x8000 }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.ack);
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, ciaddr: PROBE_IP }, '169.254.0.1'))[0])).toBe(MESSAGE_TYPE.ack);
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.inform, ciaddr: PROBE_IP }, '169.254.0.1'))[0])).toBe(MESSAGE_TYPE.ack);
    // The two unicasts; the broadcast never reaches it (see the next test).
    expect(await portHolderQueue()).toEqual({ rxQueue: 0, drops: before.drops + 2 });
    expect(await unreachablesSent()).toBe(unreachables);
  });

  it('counts no broadcast to port 67 in the provider\'s UDP error counters: answered by the link socket, it finds no socket holding the port', async () => {
    // Held on 0.0.0.0, the port's socket dropped every broadcast (each client's DISCOVER and
    // REQUEST, every other host's on an uplink's LAN) into UdpInErrors, which monitoring alerts on.
    const before = await udpCounters();
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.discover }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.offer);
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, requested: PROBE_IP, serverId: '169.254.0.1' }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.ack);
    const after = await udpCounters();
    expect({ InErrors: after['InErrors'], RcvbufErrors: after['RcvbufErrors'], NoPorts: after['NoPorts'] }).toEqual({
      InErrors: before['InErrors'],
      RcvbufErrors: before['RcvbufErrors'],
      NoPorts: before['NoPorts'],
    });
    // Unclaimed broadcasts, as with no socket on the port at all.
    expect(after['IgnoredMulti']).toBe(Number(before['IgnoredMulti']) + 2);
    // The port still held, on the gateway's address.
    expect((await portHolderQueue()).rxQueue).toBe(0);
  });

  it('refuses to start a second server in the namespace (its port 67 taken), saying why', async () => {
    const second = topology.provider.spawn([process.execPath, SERVER_FIXTURE, JSON.stringify({ links: [] })], { enter: 'nsenter' });
    const exit = await second.wait();
    expect(exit.code).not.toBe(0);
    expect(second.stderr).toMatch(/cannot bind UDP port 67\b.*: bind: Address already in use \(is another DHCP server running in this namespace\?\)/);
  });

  it('ACKs a broadcast REBIND and an INIT-REBOOT for the right address', async () => {
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, ciaddr: PROBE_IP, flags: 0x8000 }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.ack);
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, requested: PROBE_IP }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.ack);
  });

  it('NAKs a wrong address in INIT-REBOOT, SELECTING and RENEWING, and stays silent for another server id', async () => {
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, requested: '100.64.7.7' }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.nak);
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, requested: '100.64.7.7', serverId: '169.254.0.1' }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.nak);
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.request, ciaddr: '100.64.7.7' }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.nak);
    expect(await exchange({ type: MESSAGE_TYPE.request, requested: PROBE_IP, serverId: '169.254.9.9' }, '255.255.255.255')).toEqual([]);
    expect((await server.stats()).counters['naks']).toBe(3);
  });

  it('answers INFORM with configuration but no lease, and records a RELEASE without replying', async () => {
    const [inform] = await exchange({ type: MESSAGE_TYPE.inform, ciaddr: PROBE_IP }, '169.254.0.1');
    expect(typeOf(inform)).toBe(MESSAGE_TYPE.ack);
    expect(inform?.options.has(OPTION.leaseTime)).toBe(false);
    expect(await exchange({ type: MESSAGE_TYPE.release, ciaddr: PROBE_IP, serverId: '169.254.0.1' }, '169.254.0.1')).toEqual([]);
    const stats = await server.stats();
    expect(stats.leases.find((entry) => entry.id === PROBE)?.state).toBe('released');
    expect(stats.counters['releases']).toBe(1);
  });

  it('answers a DISCOVER naming another address in ciaddr at the link address, resolving no neighbour for the other', async () => {
    const strangers = ['100.64.7.7', '100.64.7.8', '192.0.2.77'];
    for (const ciaddr of strangers) {
      const [offer] = await exchange({ type: MESSAGE_TYPE.discover, ciaddr }, '255.255.255.255');
      expect(typeOf(offer)).toBe(MESSAGE_TYPE.offer);
      expect(offer?.yiaddr).toBe(PROBE_IP);
    }
    const { stdout } = await topology.provider.exec(['ip', '-4', 'neigh', 'show']);
    for (const ciaddr of strangers) expect(stdout).not.toContain(`${ciaddr} `);
  });

  it("keeps a reply to a client that takes 65535 bytes within the link's MTU as it is now: a 1300-byte identifier echoed, a 51,000-byte one dropped with a warning saying why", async () => {
    const ifname = topology.links[0]?.ifname ?? '';
    const logLines = (): string[] => server.process.stderr.split('\n').filter((line) => line.includes(`"ifname":"${ifname}"`));
    expect((await topology.provider.exec(['ip', '-o', 'link', 'show', 'dev', ifname])).stdout).toMatch(/ mtu 1500 /);
    const id = new Uint8Array(1300).fill(0x62);
    // More than the options field holds in 1472 bytes: the reply overloads sname and file.
    const [offer] = await exchange({ type: MESSAGE_TYPE.discover, clientIdentifier: id, maxSize: 0xffff }, '255.255.255.255');
    expect(typeOf(offer)).toBe(MESSAGE_TYPE.offer);
    expect(offer?.options.get(OPTION.clientIdentifier)).toEqual(id);
    const before = await server.stats();
    const linesBefore = logLines().length;
    // 200 instances of 255 bytes (RFC 3396), sent in IP fragments: no reply of it fits 1500 bytes.
    expect(await exchange({ type: MESSAGE_TYPE.discover, clientIdentifier: new Uint8Array(200 * 255).fill(0x61), maxSize: 0xffff }, '255.255.255.255')).toEqual([]);
    const after = await server.stats();
    expect(after.counters['dropped']).toBe((before.counters['dropped'] ?? 0) + 1);
    expect(after.counters['sendErrors']).toBe(before.counters['sendErrors']);
    const logged = logLines().slice(linesBefore).map((line) => JSON.parse(line) as { level: number; msg: string });
    expect(logged.filter((entry) => entry.level >= 40)).toEqual([
      expect.objectContaining({
        level: 40,
        msg: "request dropped: its 51000-byte client identifier (option 61), which a reply must echo (RFC 6842), does not fit the 1472-byte reply the link's MTU of 1500 allows",
      }),
    ]);
    // The MTU the link has now, not a constant: lowered, the 1300-byte identifier no longer fits.
    // Both ends (a veth drops what is longer than its peer's MTU): the client fragments its request.
    const setMtu = async (mtu: number): Promise<void> => {
      await topology.provider.ip(['link', 'set', 'dev', ifname, 'mtu', String(mtu)]);
      await clientNetns(topology, PROBE).ip(['link', 'set', 'dev', 'eth0', 'mtu', String(mtu)]);
    };
    await setMtu(1280);
    try {
      const linesThen = logLines().length;
      expect(await exchange({ type: MESSAGE_TYPE.discover, clientIdentifier: id, maxSize: 0xffff }, '255.255.255.255')).toEqual([]);
      expect(logLines().slice(linesThen).map((line) => (JSON.parse(line) as { msg: string }).msg)).toContain(
        "request dropped: its 1300-byte client identifier (option 61), which a reply must echo (RFC 6842), does not fit the 1252-byte reply the link's MTU of 1280 allows",
      );
    } finally {
      await setMtu(1500);
    }
  });

  it('logs a few of the warnings a flood of DECLINEs and unanswerable DISCOVERs causes (or its rate limit), and counts them all', async () => {
    const ifname = topology.links[0]?.ifname ?? '';
    const logged = (): number =>
      server.process.stderr.split('\n').filter((line) => line.includes(`"ifname":"${ifname}"`) && /"level":(40|50)/.test(line)).length;
    const errors = (): number => server.process.stderr.split('\n').filter((line) => line.includes(`"ifname":"${ifname}"`) && line.includes('"level":50')).length;
    const errorsBefore = errors();
    const before = await server.stats();
    const logsBefore = logged();
    // A client identifier the reply must echo (RFC 6842) but cannot fit in 548 bytes.
    const hugeIdentifier = new Uint8Array(500).fill(7);
    for (let i = 0; i < 15; i++) {
      expect(await exchange({ type: MESSAGE_TYPE.decline, requested: PROBE_IP, serverId: '169.254.0.1' }, '255.255.255.255', 20)).toEqual([]);
      expect(await exchange({ type: MESSAGE_TYPE.discover, clientIdentifier: hugeIdentifier }, '255.255.255.255', 20)).toEqual([]);
    }
    const after = await server.stats();
    const grew = (name: string): number => (after.counters[name] ?? 0) - (before.counters[name] ?? 0);
    // Thirty in a second or so: past the link's burst, some are dropped by its rate limit instead.
    expect(grew('declines') + grew('dropped') + grew('rateLimited')).toBe(30);
    expect(grew('declines')).toBeGreaterThanOrEqual(5);
    // The identifier is the client's doing: a dropped request, no failure of the server's.
    expect(grew('dropped')).toBeGreaterThanOrEqual(5);
    expect(grew('sendErrors')).toBe(0);
    expect(logged() - logsBefore).toBeGreaterThanOrEqual(1);
    expect(logged() - logsBefore).toBeLessThanOrEqual(5);
    expect(errors()).toBe(errorsBefore);
  });

  it('stops serving a link removed by setLinks', async () => {
    await server.setLinks([]);
    expect(await exchange({ type: MESSAGE_TYPE.discover }, '255.255.255.255')).toEqual([]);
    expect((await server.stats()).leases).toEqual([]);
    await server.setLinks(topology.links);
    expect(typeOf((await exchange({ type: MESSAGE_TYPE.discover }, '255.255.255.255'))[0])).toBe(MESSAGE_TYPE.offer);
  });
});

function probeRequest(spec: { type: number; ciaddr?: string; requested?: string; serverId?: string; flags?: number; clientIdentifier?: Uint8Array; maxSize?: number }): DhcpPacket {
  const ip = (text: string): Uint8Array => Uint8Array.from(text.split('.').map(Number));
  const options = new Map<number, Uint8Array>([[OPTION.messageType, Uint8Array.of(spec.type)]]);
  if (spec.clientIdentifier !== undefined) options.set(OPTION.clientIdentifier, spec.clientIdentifier);
  if (spec.maxSize !== undefined) options.set(OPTION.maxMessageSize, Uint8Array.of(spec.maxSize >> 8, spec.maxSize & 0xff));
  if (spec.requested !== undefined) options.set(OPTION.requestedIp, ip(spec.requested));
  if (spec.serverId !== undefined) options.set(OPTION.serverId, ip(spec.serverId));
  const chaddr = new Uint8Array(16);
  chaddr.set([0x0a, 0xb3, 0xec, 0x00, 0x05, 0x06]);
  return {
    op: 1, htype: 1, hlen: 6, hops: 0, xid: Math.floor(Math.random() * 0xffffffff), secs: 0, flags: spec.flags ?? 0,
    ciaddr: spec.ciaddr ?? '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0',
    chaddr, sname: new Uint8Array(64), file: new Uint8Array(128), options,
  };
}

describe('what a failed send of a reply points at', () => {
  it("names the link's MTU for EMSGSIZE, a full queue for EAGAIN and ENOBUFS, the link's route and neighbour else", () => {
    expect(sendFailureHint('Message too long')).toMatch(/^it is larger than the link's MTU/);
    expect(sendFailureHint('Message too long')).not.toMatch(/check the link is up/);
    expect(sendFailureHint('Resource temporarily unavailable')).toMatch(/send queue is full/);
    expect(sendFailureHint('No buffer space available')).toMatch(/send queue is full/);
    expect(sendFailureHint('Network is unreachable')).toBe('check the link is up and has its /32 route and neighbour entry');
  });
});

describe('what to check when port 67 cannot be held', () => {
  it('names the cause each errno points at', () => {
    expect(portHolderHint('EADDRINUSE')).toBe('is another DHCP server running in this namespace?');
    // Every capability the agent needs, not the port's alone: given that one only, the agent
    // failed at the next step (nftables, links).
    for (const code of ['EACCES', 'EPERM']) {
      expect(portHolderHint(code)).toBe('binding port 67 needs CAP_NET_BIND_SERVICE, and the agent needs CAP_NET_ADMIN and CAP_NET_RAW as well: run it as root, or with all three');
    }
    // Out of descriptors is no missing capability.
    expect(portHolderHint('EMFILE')).toMatch(/limit of open files/);
    expect(portHolderHint('ENOMEM')).not.toMatch(/CAP_NET_/);
  });
});
