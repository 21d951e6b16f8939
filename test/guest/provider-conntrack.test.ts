// Conntrack entries outlive the client that made them: replies to a stopped VM's masqueraded
// flows must never reach the next VM given its client id (the same client IP), while the flows of
// clients that stay served are never cut. The real agent, the simulated internet, and a UDP
// server there that keeps sending to every peer it has heard from.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns } from '../harness/index.js';
import { Agent, INTERNET_HTTP, type Internet, SLOW_BYTES, SLOW_PORT, clientIp, eventually, linkEndsActive, linkMac, makeInternet } from './provider-world.js';

/** The internet's UDP server: every peer it hears from gets a datagram every 50 ms from then on. */
const TICKER = '192.0.2.10';
const TICKER_PORT = 7000;
/** The fixed source port of every client flow here: the port a stale entry de-NATs replies to. */
const CLIENT_PORT = 4444;

const tickerScript = [
  'import select, socket, time',
  's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
  `s.bind(("${TICKER}", ${TICKER_PORT}))`,
  'print("ticker ready", flush=True)',
  'peers, n, end = set(), 0, time.time() + 120',
  'while time.time() < end:',
  '    while select.select([s], [], [], 0)[0]:',
  '        data, peer = s.recvfrom(100); peers.add(peer); print("peer", peer, flush=True)',
  '    for peer in peers:',
  '        try: s.sendto(b"tick %d" % n, peer)',
  '        except OSError: pass',
  '    n += 1; time.sleep(0.05)',
].join('\n');

/** A client's UDP socket on CLIENT_PORT: says hello to the ticker when `hello`, prints every datagram it gets. */
function clientScript(hello: boolean): string {
  return [
    'import socket',
    's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    `s.bind(("0.0.0.0", ${CLIENT_PORT}))`,
    ...(hello ? [`s.sendto(b"hello", ("${TICKER}", ${TICKER_PORT}))`] : []),
    'print("listening", flush=True)',
    'while True:',
    '    data, peer = s.recvfrom(100); print("got", data.decode(), flush=True)',
  ].join('\n');
}

const received = (process: NetnsProcess): number => (process.stdout.match(/^got /gm) ?? []).length;

describeNetns('spectrum-netd provider: conntrack entries of clients no longer served', () => {
  let harness: Harness;
  let provider: Netns;
  let internet: Internet;
  let ticker: NetnsProcess;
  let agent: Agent;
  let dir: string;
  const started: NetnsProcess[] = [];
  let namespaces = 0;

  /**
   * A VM behind provider link `ifname` with client id `id` (a namespace of its own), configured
   * as DHCP would: its /32, the gateway route and the default route.
   */
  async function vm(ifname: string, id: number): Promise<Netns> {
    namespaces += 1;
    const client = await harness.namespace(`vm${namespaces}`);
    await harness.veth(provider, ifname, client, 'eth0');
    await provider.ip(['link', 'set', 'dev', ifname, 'address', linkMac('provider', id)]);
    await configureClient(client, id);
    return client;
  }

  async function configureClient(client: Netns, id: number): Promise<void> {
    await client.ip(['address', 'flush', 'dev', 'eth0']);
    await client.ip(['link', 'set', 'dev', 'eth0', 'address', linkMac('client', id), 'up']);
    await client.ip(['address', 'add', `${clientIp(id)}/32`, 'dev', 'eth0']);
    await client.ip(['route', 'add', '169.254.0.1/32', 'dev', 'eth0']);
    await client.ip(['route', 'add', 'default', 'via', '169.254.0.1', 'dev', 'eth0']);
  }

  /** Wait until the agent routes `id`'s client IP out of `ifname` (or, with null, nowhere). */
  async function routed(id: number, ifname: string | null): Promise<void> {
    await eventually(`${clientIp(id)} to be routed ${ifname === null ? 'nowhere' : `out of ${ifname}`}`, async () => {
      const route = (await provider.ip(['route', 'show', `${clientIp(id)}/32`])).stdout;
      return ifname === null ? route.trim() === '' : route.includes(`dev ${ifname} `);
    });
  }

  /**
   * routed(id, ifname), then until the link passes traffic both ways: the agent raised `ifname`,
   * and the kernel's linkwatch activates the client's eth0, raised before, some time after
   * (seconds on a loaded machine), dropping what it sends meanwhile.
   */
  async function served(id: number, ifname: string, client: Netns): Promise<void> {
    await routed(id, ifname);
    await linkEndsActive(provider, ifname, client);
  }

  /** A UDP flow from `client` to the ticker, from CLIENT_PORT; resolves once ticks arrive. */
  async function flow(client: Netns): Promise<NetnsProcess> {
    const process = track(client.spawn(['python3', '-u', '-c', clientScript(true)]));
    await eventually('the ticker to answer the flow', async () => received(process) >= 3);
    return process;
  }

  function track(process: NetnsProcess): NetnsProcess {
    started.push(process);
    return process;
  }

  /** Conntrack entries in the provider that name `ip`. */
  async function entriesOf(ip: string): Promise<string[]> {
    const table = (await provider.exec(['cat', '/proc/net/nf_conntrack'])).stdout;
    return table.split('\n').filter((line) => new RegExp(`=${ip.replaceAll('.', '\\.')} `).test(line));
  }

  /** A listener on CLIENT_PORT in `client`: what a stale entry would deliver, it prints. */
  async function listen(client: Netns): Promise<NetnsProcess> {
    const listener = track(client.spawn(['python3', '-u', '-c', clientScript(false)]));
    await listener.waitForOutput(/listening/);
    return listener;
  }

  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

  /**
   * Once `id` is routed out of `ifname` (and the link passes traffic: else what a stale entry
   * delivers would be dropped on the way, and nothing would be seen for that), the VM listening
   * there gets none of the datagrams the ticker keeps sending to the old VM's masqueraded address.
   */
  async function expectNothingStale(listener: NetnsProcess, id: number, ifname: string, client: Netns): Promise<void> {
    await served(id, ifname, client);
    await sleep(1500);
    expect(received(listener), `the new VM got the old VM's datagrams: ${listener.stdout}`).toBe(0);
  }

  beforeAll(async () => {
    harness = createHarness('ct');
    dir = mkdtempSync(join(tmpdir(), 'spectrum-conntrack-'));
    provider = await harness.namespace('netvm');
    internet = await makeInternet(harness, provider);
    ticker = internet.ns.spawn(['python3', '-u', '-c', tickerScript]);
    await ticker.waitForOutput(/ticker ready/);
    agent = await Agent.start(provider, join(dir, 'netd.sock'));
  });

  afterEach(async () => {
    for (const process of started.splice(0)) await process.kill('SIGKILL');
  });

  afterAll(async () => {
    await ticker?.kill('SIGKILL');
    await agent?.kill('SIGKILL');
    await internet?.stop();
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("does not hand a stopped VM's flow to the next VM given its client id on a new link", async () => {
    const old = await vm('p20', 20);
    await served(20, 'p20', old);
    await flow(old);
    expect(await entriesOf(clientIp(20))).not.toEqual([]);
    // The VM stops: its link goes. The ticker keeps sending to its masqueraded address.
    await provider.ip(['link', 'del', 'p20']);
    await routed(20, null);
    const next = await vm('q20', 20);
    const listener = await listen(next);
    await expectNothingStale(listener, 20, 'q20', next);
    expect(await entriesOf(clientIp(20))).toEqual([]);
    expect((await agent.status()).counters.conntrackPurged).toBeGreaterThan(0);
    await provider.ip(['link', 'del', 'q20']);
  });

  it('does not hand the flow of a link whose client changed to the next link given that client id', async () => {
    const old = await vm('p21', 21);
    await served(21, 'p21', old);
    await flow(old);
    // The host gives the link to another VM (id 22): the link serves 100.64.0.22 from now on.
    await provider.ip(['link', 'set', 'dev', 'p21', 'address', linkMac('provider', 22)]);
    await configureClient(old, 22);
    await routed(22, 'p21');
    await routed(21, null);
    const next = await vm('q21', 21);
    const listener = await listen(next);
    await expectNothingStale(listener, 21, 'q21', next);
    await provider.ip(['link', 'del', 'p21']);
    await provider.ip(['link', 'del', 'q21']);
  });

  it("keeps a served client's UDP and TCP flows while another link goes and its id comes back", async () => {
    const steady = await vm('p23', 23);
    const leaving = await vm('p24', 24);
    await served(23, 'p23', steady);
    await served(24, 'p24', leaving);
    await flow(leaving);
    const udp = await flow(steady);
    const tcp = track(steady.spawn(['curl', '-sS', '--max-time', '30', '-o', '/dev/null', '-w', '%{size_download}', `http://${INTERNET_HTTP}:${SLOW_PORT}/`]));
    await sleep(500);
    await provider.ip(['link', 'del', 'p24']);
    await routed(24, null);
    await vm('q24', 24);
    await routed(24, 'q24');
    expect(tcp.exit, 'the transfer must span the removal').toBeUndefined();
    const before = received(udp);
    await sleep(1000);
    expect(received(udp), 'the steady client kept getting its datagrams').toBeGreaterThan(before + 5);
    const exit = await tcp.wait();
    expect(exit.code, tcp.stderr).toBe(0);
    expect(Number(tcp.stdout)).toBe(SLOW_BYTES);
    expect(await entriesOf(clientIp(23))).not.toEqual([]);
    await provider.ip(['link', 'del', 'p23']);
    await provider.ip(['link', 'del', 'q24']);
  }, 60_000);

  it('purges at start the entries of a client id whose link changed while the agent was not running', async () => {
    const old = await vm('p25', 25);
    await served(25, 'p25', old);
    await flow(old);
    await agent.kill('SIGKILL');
    await provider.ip(['link', 'del', 'p25']);
    const next = await vm('q25', 25);
    const listener = await listen(next);
    agent = await Agent.start(provider, join(dir, 'netd.sock'));
    await expectNothingStale(listener, 25, 'q25', next);
    expect(await entriesOf(clientIp(25))).toEqual([]);
    await provider.ip(['link', 'del', 'q25']);
  });
});
