// The per-client new-flow rate in a provider namespace with its real table: a client opening new
// flows faster than the rate gets its burst and then the rate through, each one past it counted,
// while another client opens its own all the while; an audit keeps what traffic put in the rate
// set. A small rate, so that the test sends a few hundred datagrams in all.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FirewallReconciler, firewallCounters, reconcileFirewall } from '../../../guest/firewall/nft.js';
import { parseTableListing, staticTableText } from '../../../guest/firewall/ruleset.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { INTERNET_IP, type ProviderWorld, TEST_FLOW_LIMIT, type WorldClient, makeProviderWorld } from './provider-world.js';

const RATE = 20;
const BURST = 2 * RATE;
/** New flows A tries, each from a fresh source port; far more than the burst and the rate let through. */
const A_FLOWS = 300;
/** New flows B opens at the same time: under its own burst. */
const B_FLOWS = 30;
const PORT = 7300;

/** argv: a UDP server on PORT printing each datagram's payload on a line. Prints "ready". */
function server(ip: string): string[] {
  return [
    'python3',
    '-u',
    '-c',
    [
      'import socket',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `s.bind(("${ip}", ${PORT}))`,
      'print("ready")',
      'while True:',
      '    data = s.recv(4096)',
      '    print(data.decode(errors="replace"))',
    ].join('\n'),
  ];
}

/** argv: `count` datagrams `payload` to ip:PORT, each from a new socket (a new flow), `gapS` apart; prints the seconds it took. */
function newFlows(ip: string, count: number, payload: string, gapS: number): string[] {
  return [
    'python3',
    '-c',
    [
      'import socket, time',
      'start = time.monotonic()',
      `for _ in range(${count}):`,
      '    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `    s.sendto(b"${payload}", ("${ip}", ${PORT}))`,
      '    s.close()',
      `    time.sleep(${gapS})`,
      'print("%.3f" % (time.monotonic() - start))',
    ].join('\n'),
  ];
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeNetns('the per-client new-flow rate in network namespaces', () => {
  let harness: Harness;
  let world: ProviderWorld;
  let a: WorldClient;
  let b: WorldClient;
  let provider: Netns;
  let sink: NetnsProcess;
  const options = (): { netns: string; clientFlowLimit: number; clientNewFlowRate: number } => ({
    netns: provider.name,
    clientFlowLimit: TEST_FLOW_LIMIT,
    clientNewFlowRate: RATE,
  });
  const received = (payload: string): number => sink.stdout.split('\n').filter((line) => line === payload).length;
  const counters = async (): Promise<{ rate: number; limit: number }> => {
    const { flowRateDrops, flowLimitDrops } = await firewallCounters(options());
    return { rate: flowRateDrops, limit: flowLimitDrops };
  };

  beforeAll(async () => {
    harness = createHarness('flowrate');
    world = await makeProviderWorld(harness, [311, 312]);
    [a, b] = world.clients as [WorldClient, WorldClient];
    provider = world.provider;
    sink = world.internet.spawn(server(INTERNET_IP));
    await sink.waitForOutput(/ready/);
    expect(await reconcileFirewall(world.model(), options())).toEqual({ changed: true });
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('holds the rate as the table text says: the listing has the dynamic set and both rules', async () => {
    const listing = parseTableListing((await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout);
    expect(listing.structure).toBe(staticTableText(options()));
    expect(listing.structure.match(/limit rate over 20\/second burst 40 packets/g)).toHaveLength(2);
  });

  it('lets a client past its rate open its burst and then the rate, counting each refused, while another client opens its own', async () => {
    const before = await counters();
    const [fromA, fromB] = await Promise.all([a.ns.exec(newFlows(INTERNET_IP, A_FLOWS, 'A', 0.003)), b.ns.exec(newFlows(INTERNET_IP, B_FLOWS, 'B', 0.02))]);
    const seconds = Number(fromA.stdout.trim());
    expect(seconds).toBeGreaterThan(0);
    await eventually("B's flows to arrive", async () => received('B') === B_FLOWS, 5_000);
    await sleep(300);
    const through = received('A');
    // The whole burst, then about the rate for the time A kept sending (slack for scheduling).
    expect(through).toBeGreaterThanOrEqual(BURST);
    expect(through).toBeLessThanOrEqual(BURST + Math.ceil(RATE * (seconds + 0.5)));
    const after = await counters();
    expect(after.rate - before.rate).toBe(A_FLOWS - through);
    expect(after.limit - before.limit).toBe(0);
    expect(received('B')).toBe(B_FLOWS);
    expect(fromB.code).toBe(0);
  });

  it('is kept by an audit: traffic fills the rate set, which is no change', async () => {
    const text = (await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout;
    const listed = parseTableListing(text);
    expect(listed.rateElements).toEqual([`${a.ip} limit rate over ${RATE}/second burst ${BURST} packets`, `${b.ip} limit rate over ${RATE}/second burst ${BURST} packets`]);
    expect(listed.structure).toBe(staticTableText(options()));
    expect(await reconcileFirewall(world.model(), options())).toEqual({ changed: false });
    expect(await new FirewallReconciler(options()).reconcile(world.model(), { verify: true })).toEqual({ changed: false });
    expect(parseTableListing((await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).rateElements).toEqual(listed.rateElements);
  });

  it('forgets a client a few seconds after its last new flow (the set times its elements out), so a client that went leaves nothing', async () => {
    const listed = async (): Promise<readonly string[]> => parseTableListing((await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', 'spectrum_netd'])).stdout).rateElements;
    await eventually('both clients to leave the rate set', async () => (await listed()).length === 0, 10_000);
    // And a client back gets its whole burst again.
    const before = received('A');
    await a.ns.exec(newFlows(INTERNET_IP, BURST, 'A', 0));
    await eventually("A's burst to arrive", async () => received('A') - before === BURST, 5_000);
    expect(await listed()).toEqual([`${a.ip} limit rate over ${RATE}/second burst ${BURST} packets`]);
  });
});
