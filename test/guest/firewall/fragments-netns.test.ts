// IPv4 fragments from clients in a provider namespace with its real table: the kernel queues every
// fragment it is handed for reassembly, in one pool per namespace (ipfrag_high_thresh, 4 MiB), and
// drops everyone's fragments while the pool is full, until incomplete queues time out
// (ipfrag_time, 30 s). A client flooding first fragments that never complete must not take that
// pool from the others: another client's fragmented ping still passes, and the drops are counted.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { firewallCounters, reconcileFirewall } from '../../../guest/firewall/nft.js';
import { CLIENT_FRAGMENT_BURST, CLIENT_FRAGMENT_RATE, parseTableListing, staticTableText } from '../../../guest/firewall/ruleset.js';
import { type Harness, type Netns, createHarness, describeNetns } from '../../harness/index.js';
import { INTERNET_IP, type ProviderWorld, TEST_FLOW_LIMIT, TEST_NEW_FLOW_RATE, type WorldClient, makeProviderWorld } from './provider-world.js';

/** First fragments a flood sends: 2000 of 1.2 KB fill the 4 MiB pool (about 1700 do) with room to spare. */
const FLOOD = 2000;

/**
 * argv: `count` first fragments (MF set, offset 0) of UDP datagrams to `dst` that never complete,
 * each of its own datagram (a new IP id, or a new source), 1200 bytes of payload, through a raw
 * socket. `spoof`: each from a forged source in 203.0.113.0/24, else from `own`. Prints the
 * seconds it took.
 */
function firstFragments(dst: string, count: number, source: { spoof: true } | { own: string }): string[] {
  return [
    'python3',
    '-c',
    [
      'import socket, struct, time',
      'start = time.monotonic()',
      's = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)',
      'payload = b"Z" * 1200',
      `for i in range(${count}):`,
      `    src = ${'own' in source ? `"${source.own}"` : '"203.0.113.%d" % (i % 254 + 1)'}`,
      // Version/IHL, TOS, total length, id (never 0: the kernel would pick one), MF, TTL, UDP.
      '    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), i % 65535 + 1, 0x2000, 64, 17, 0, socket.inet_aton(src), socket.inet_aton("' +
        dst +
        '"))',
      `    s.sendto(header + payload, ("${dst}", 0))`,
      'print("%.3f" % (time.monotonic() - start))',
    ].join('\n'),
  ];
}

/**
 * argv: `count` first fragments shaped as a DHCP client's first packets (0.0.0.0:68 ->
 * 255.255.255.255:67, the one source the table takes from a client with no address yet), MF set,
 * each of its own datagram, 1200 bytes of payload after the UDP header, broadcast out of eth0
 * through a packet socket (a raw IP socket would put the client's address in for 0.0.0.0).
 */
function dhcpFirstFragments(count: number): string[] {
  return [
    'python3',
    '-c',
    [
      'import socket, struct',
      'def checksum(header):',
      '    total = sum(struct.unpack("!10H", header))',
      '    total = (total & 0xffff) + (total >> 16)',
      '    return ~((total & 0xffff) + (total >> 16)) & 0xffff',
      's = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))',
      // The UDP header of the whole datagram (twice this long), then the first 1200 bytes of it.
      'payload = struct.pack("!HHHH", 68, 67, 8 + 2400, 0) + b"Z" * 1200',
      `for i in range(${count}):`,
      '    fields = [0x45, 0, 20 + len(payload), i % 65535 + 1, 0x2000, 64, 17, 0, socket.inet_aton("0.0.0.0"), socket.inet_aton("255.255.255.255")]',
      '    fields[7] = checksum(struct.pack("!BBHHHBBH4s4s", *fields))',
      '    s.sendto(struct.pack("!BBHHHBBH4s4s", *fields) + payload, ("eth0", 0x0800, 0, 0, b"\\xff" * 6))',
    ].join('\n'),
  ];
}

/** The provider's reassembly pool: queues and bytes held (/proc/net/sockstat's FRAG line). */
async function reassembly(ns: Netns): Promise<{ inuse: number; memory: number }> {
  const line = /^FRAG: inuse (\d+) memory (\d+)$/m.exec((await ns.exec(['cat', '/proc/net/sockstat'])).stdout);
  expect(line).not.toBeNull();
  return { inuse: Number(line?.[1]), memory: Number(line?.[2]) };
}

/** Echo replies a fragmented ping (3 fragments a request) of `count` requests got. */
async function fragmentedPings(client: WorldClient, count: number): Promise<number> {
  const ping = await client.ns.exec(['/bin/busybox', 'ping', '-c', String(count), '-W', '1', '-s', '3000', INTERNET_IP], { allowFailure: true });
  return Number(/(\d+) packets received/.exec(ping.stdout)?.[1] ?? -1);
}

describeNetns('client fragments and the provider reassembly pool in network namespaces', () => {
  let harness: Harness;
  let world: ProviderWorld;
  let a: WorldClient;
  let b: WorldClient;
  const options = (): { netns: string; clientFlowLimit: number; clientNewFlowRate: number } => ({
    netns: world.provider.name,
    clientFlowLimit: TEST_FLOW_LIMIT,
    clientNewFlowRate: TEST_NEW_FLOW_RATE,
  });

  beforeAll(async () => {
    harness = createHarness('frag');
    world = await makeProviderWorld(harness, [321, 322]);
    [a, b] = world.clients as [WorldClient, WorldClient];
    expect(await reconcileFirewall(world.model(), options())).toEqual({ changed: true });
    expect(await fragmentedPings(b, 1)).toBe(1);
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('drops a flood of fragments with forged sources before reassembly, counted: the pool stays empty, and another client fragments as before', async () => {
    const before = await firewallCounters(options());
    await a.ns.exec(firstFragments(INTERNET_IP, FLOOD, { spoof: true }));
    expect((await firewallCounters(options())).antispoofDrops - before.antispoofDrops).toBe(FLOOD);
    expect(await reassembly(world.provider)).toEqual({ inuse: 0, memory: 0 });
    expect(await fragmentedPings(b, 3)).toBe(3);
  });

  it("drops fragments shaped as a DHCP client's first packets (from 0.0.0.0) before reassembly, counted: the pool stays empty", async () => {
    // The DHCP exception takes 0.0.0.0, which no client's fragment rate counts: a DHCP packet is
    // never fragmented, so its fragments are spoofed like any other source's.
    const before = await firewallCounters(options());
    await a.ns.exec(dhcpFirstFragments(FLOOD));
    expect((await firewallCounters(options())).antispoofDrops - before.antispoofDrops).toBe(FLOOD);
    expect(await reassembly(world.provider)).toEqual({ inuse: 0, memory: 0 });
    expect(await fragmentedPings(b, 3)).toBe(3);
  });

  it("holds a client flooding fragments of its own address to its fragment rate, counted: it takes at most a quarter of the pool, and another client fragments as before", async () => {
    const before = await firewallCounters(options());
    const flood = await a.ns.exec(firstFragments(INTERNET_IP, FLOOD, { own: a.ip }));
    const seconds = Number(flood.stdout.trim());
    expect(seconds).toBeGreaterThan(0);
    const held = await reassembly(world.provider);
    // What passed: the burst, then the rate for the time the flood took (slack for scheduling).
    const passed = FLOOD - ((await firewallCounters(options())).fragmentDrops - before.fragmentDrops);
    expect(passed).toBeGreaterThanOrEqual(CLIENT_FRAGMENT_BURST);
    expect(passed).toBeLessThanOrEqual(CLIENT_FRAGMENT_BURST + Math.ceil(CLIENT_FRAGMENT_RATE * (seconds + 0.5)));
    // Each fragment that passed waits in its own queue (none completes); nothing else does.
    expect(held.inuse).toBe(passed);
    expect(held.memory).toBeLessThanOrEqual((4 * 1024 * 1024) / 4);
    expect(await fragmentedPings(b, 3)).toBe(3);
    // Traffic's element in the rate set, as the rule writes it, and the table as made.
    const listing = parseTableListing((await world.provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
    expect(listing.structure).toBe(staticTableText(options()));
    expect(listing.fragmentElements).toContain(`${a.ip} limit rate over ${CLIENT_FRAGMENT_RATE}/second burst ${CLIENT_FRAGMENT_BURST} packets`);
    expect(await reconcileFirewall(world.model(), options())).toEqual({ changed: false });
  });
});
