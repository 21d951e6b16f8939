// spectrum-netd run: nothing meant for a client whose link has gone leaves by the uplink. The
// provider routes only each served client's /32 to its link, so such a client's address follows
// the default route: the DNS forwarder's late answer to it (from the gateway address, the name it
// asked in it) and the replies on its masqueraded flows (de-NATed to its address; while the agent
// is stopped, its tables kept, for as long as they come) went out of the uplink to its gateway.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { Agent, type Internet, addClient, clientIp, linkEndsActive, makeInternet } from '../provider-world.js';

/** An upstream resolver in the internet that answers every query (UDP and TCP) 6 s late: the client's link is deleted well before, however loaded the machine. */
const SLOW_DNS = '192.0.2.54';
const SLOW_DNS_SCRIPT = `
import socket, struct, threading, time
def answer(query):
    # The question back, QR and RA set, one A record 192.0.2.80 for it.
    end = 12
    while query[end] != 0: end += 1 + query[end]
    question = query[12:end + 5]
    return query[:2] + b'\\x81\\x80' + struct.pack('!HHHH', 1, 1, 0, 0) + question + b'\\xc0\\x0c' + struct.pack('!HHIH', 1, 1, 60, 4) + bytes([192, 0, 2, 80])
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('${SLOW_DNS}', 53))
    while True:
        query, peer = s.recvfrom(4096)
        threading.Timer(6, lambda q=query, p=peer: s.sendto(answer(q), p)).start()
def tcp_client(c):
    try:
        data = b''
        while len(data) < 2 or len(data) < 2 + struct.unpack('!H', data[:2])[0]:
            more = c.recv(4096)
            if not more: return
            data += more
        time.sleep(6)
        reply = answer(data[2:]); c.sendall(struct.pack('!H', len(reply)) + reply); time.sleep(5)
    finally: c.close()
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('${SLOW_DNS}', 53)); s.listen(16)
    while True: threading.Thread(target=tcp_client, args=(s.accept()[0],), daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
print('slow dns ready', flush=True)
threading.Event().wait()
`;

/** A query for `name` over `proto` from the client to the gateway's forwarder, then 10 s of waiting. */
const queryScript = (proto: 'udp' | 'tcp', name: string): string => `
import socket, struct, time
qname = b''.join(bytes([len(label)]) + label for label in b'${name}'.split(b'.')) + b'\\0'
q = struct.pack('!HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + qname + b'\\0\\1\\0\\1'
if '${proto}' == 'tcp':
    s = socket.create_connection(('169.254.0.1', 53), timeout=8); s.sendall(struct.pack('!H', len(q)) + q)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(q, ('169.254.0.1', 53))
print('asked', flush=True)
time.sleep(14)
`;

/**
 * Counters in the internet namespace of what arrives from the provider's uplink: packets to the
 * client range, and packets from the gateway address. Read as numbers.
 */
const WATCH = `table inet watch {
  counter to_clients { }
  counter from_gateway { }
  chain pre {
    type filter hook prerouting priority -500; policy accept;
    ip daddr 100.64.0.0/16 counter name "to_clients"
    ip saddr 169.254.0.1 counter name "from_gateway"
  }
}
`;

describeNetns('spectrum-netd run: traffic for a client whose link has gone never leaves by the uplink', () => {
  let harness: Harness;
  let provider: Netns;
  let internet: Internet;
  let agent: Agent | undefined;
  let dir: string;
  const clients = new Map<number, Netns>();
  const spawned: NetnsProcess[] = [];

  async function arrived(): Promise<{ toClients: number; fromGateway: number }> {
    const { stdout } = await internet.ns.exec(['nft', '-j', 'list', 'counters', 'table', 'inet', 'watch']);
    const packets = (name: string): number => {
      const entry = (JSON.parse(stdout) as { nftables: { counter?: { name: string; packets: number } }[] }).nftables.find((item) => item.counter?.name === name);
      if (entry?.counter === undefined) throw new Error(`no counter ${name} in ${stdout}`);
      return entry.counter.packets;
    };
    return { toClients: packets('to_clients'), fromGateway: packets('from_gateway') };
  }

  /** The provider's leak_drops counter, read from the table itself (the agent may be stopped). */
  async function leakDrops(): Promise<number> {
    const { stdout } = await provider.exec(['nft', 'list', 'counter', 'inet', 'spectrum_netd', 'leak_drops']);
    return Number(/packets (\d+)/.exec(stdout)?.[1] ?? Number.NaN);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'netd-leak-'));
    harness = createHarness('leak');
    provider = await harness.namespace('prov');
    internet = await makeInternet(harness, provider);
    await provider.ip(['route', 'add', 'default', 'via', '192.0.2.10']);
    await harness.addAddress(internet.ns, 'eth0', `${SLOW_DNS}/24`);
    const slowDns = internet.ns.spawn(['python3', '-u', '-c', SLOW_DNS_SCRIPT]);
    spawned.push(slowDns);
    await slowDns.waitForOutput(/slow dns ready/, 10_000);
    provider.setResolvConf(`nameserver ${SLOW_DNS}\n`);
    await internet.ns.exec(['nft', '-f', '-'], { input: WATCH });
    for (const id of [2, 3]) {
      const client = await addClient(harness, provider, id);
      // As the spec configures a client (what its DHCP lease gives it).
      await client.ip(['address', 'add', `${clientIp(id)}/32`, 'dev', 'eth0']);
      await client.ip(['route', 'add', '169.254.0.1', 'dev', 'eth0']);
      await client.ip(['route', 'add', 'default', 'via', '169.254.0.1', 'dev', 'eth0']);
      clients.set(id, client);
    }
    agent = await Agent.start(provider, join(dir, 'netd.sock'));
    await Promise.all([...clients].map(([id, client]) => linkEndsActive(provider, `p${id}`, client)));
  });

  afterAll(async () => {
    for (const process of spawned) await process.kill('SIGKILL');
    await agent?.kill('SIGKILL');
    await internet?.stop();
    await harness?.cleanup();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  it("keeps the forwarder's late answers (UDP and TCP) to a client gone off the uplink, counted as leakDrops", async () => {
    const client = clients.get(3)!;
    const before = await arrived();
    const statusBefore = await agent!.status();
    const leaksBefore = statusBefore.firewall!.leakDrops;
    // What the forwarder sent clients: an answer, or a failure (SERVFAIL at its deadline, which may come before the upstream's).
    const replied = (status: typeof statusBefore): number => (status.services?.dns?.answered ?? 0) + (status.services?.dns?.failed ?? 0);
    const [askedBefore, repliedBefore] = [statusBefore.services?.dns?.queries ?? 0, replied(statusBefore)];
    const queries = (['udp', 'tcp'] as const).map((proto) => client.spawn(['python3', '-u', '-c', queryScript(proto, `private-name-of-c3-${proto}.example`)]));
    spawned.push(...queries);
    for (const query of queries) await query.waitForOutput(/asked/, 10_000);
    // Both queries are with the upstream, which answers 6 s after it got them: client 3's VM goes.
    await eventually('the forwarder to have asked upstream', async () => ((await agent!.status()).services?.dns?.queries ?? 0) >= askedBefore + 2);
    await provider.ip(['link', 'del', 'p3']);
    // Gone before any answer came (else nothing would be left to leak, and the test would show nothing).
    expect(replied(await agent!.status())).toBe(repliedBefore);
    // The answers come back from upstream and the forwarder sends them on, to the client's address.
    await eventually('the forwarder to have answered (or failed)', async () => replied(await agent!.status()) >= repliedBefore + 2, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // TCP retransmits its answer meanwhile
    expect(await arrived()).toEqual(before);
    expect((await agent!.status()).firewall!.leakDrops).toBeGreaterThan(leaksBefore);
  }, 45_000);

  it("keeps replies on a gone client's flows off the uplink while the agent is stopped, its tables kept", async () => {
    const client = clients.get(2)!;
    // Client 2 opens a UDP flow to the internet, masqueraded on the uplink.
    await client.exec(['python3', '-c', [
      'import socket',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      `s.bind(("${clientIp(2)}", 43000))`,
      's.sendto(b"hi", ("192.0.2.10", 9999))',
    ].join('\n')]);
    await eventually('the flow to be tracked', async () => (await provider.exec(['conntrack', '-L', '-p', 'udp', '--dport', '9999'], { allowFailure: true })).stdout.includes(clientIp(2)));
    const before = await arrived();
    const leaksBefore = await leakDrops();
    await agent!.kill('SIGTERM');
    await agent!.process.wait();
    agent = undefined;
    // Client 2's VM goes while the agent is stopped: nobody purges its flow.
    await provider.ip(['link', 'del', 'p2']);
    expect((await provider.exec(['conntrack', '-L', '-p', 'udp', '--dport', '9999'])).stdout).toContain('dport=43000');
    // The server answers, to the uplink address and the port the flow was masqueraded to (its own).
    const reply = [
      'import socket',
      's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      's.bind(("192.0.2.10", 9999))',
      'for _ in range(5): s.sendto(b"data for client 2", ("192.0.2.1", 43000))',
    ].join('\n');
    await internet.ns.exec(['python3', '-c', reply]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await arrived()).toEqual(before);
    expect(await leakDrops()).toBeGreaterThanOrEqual(leaksBefore + 5);
  }, 30_000);
});
