// Clients' TCP timeouts in a provider namespace with its real table: a client's TCP connection,
// forwarded (to the internet, to another client of an allowed pair) or to the gateway, leaves a
// TIME_WAIT entry of at most 10 s, where the kernel's 120 s would let a client hold 100 a second x
// 130 s entries the flow cap does not count; the provider's own connections keep the kernel's
// timeouts; a client that keeps its closed entries alive by re-sending ACKs has them deleted by
// the agent's reaper (which deletes the provider's own closed entries too, and no live flow),
// after which its ACKs are new flows the cap bounds; the audit finds the live table (the policy as nft lists it) unchanged and repairs an
// operator's edit of the policy or its rules. Entries are read with conntrack(8).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_CLOSED_TIMEOUT_SECONDS, KERNEL_TCP_TIMEOUTS, TCP_TIMEOUT_SYSCTLS, type TcpTimeouts, clientTcpTimeouts } from '../../../guest/firewall/client-tcp-timeouts.js';
import { FirewallReconciler, firewallCounters, reconcileFirewall } from '../../../guest/firewall/nft.js';
import { CLIENT_TCP_TIMEOUT, type FirewallListings, TABLE_NAME, parseTableListing, planFirewall, staticTableText } from '../../../guest/firewall/ruleset.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import type { TableSettings } from '../../../guest/firewall/table-settings.js';
import { GATEWAY_IP } from '../../../shared/scheme.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { INTERNET_IP, PROVIDER_UPLINK_IP, type ProviderWorld, TEST_FLOW_LIMIT, TEST_NEW_FLOW_RATE, type WorldClient, makeProviderWorld } from './provider-world.js';

/** The agent's reaper, run in the provider's namespace (test/guest/conntrack/fixtures/conntrack-purge.ts). */
const REAPER_FIXTURE = fileURLToPath(new URL('../../../dist/test/guest/conntrack/fixtures/conntrack-purge.js', import.meta.url));

/** A line of the reaper's log (pino JSON). */
interface ReaperLine {
  readonly msg: string;
  readonly [key: string]: unknown;
}

const INTERNET_PORT = 7500;
const PAIR_PORT = 7501;
/** Where the reaper test sends UDP datagrams (nobody listens: the entries stay unreplied). */
const UDP_PORT = 7600;
/** DNS over TCP on the gateway: the one TCP service clients reach on the provider. */
const DNS_PORT = 53;
/** More than any TIME_WAIT of a client's (10 s), well under the kernel's 120 s. */
const KERNEL_TIME_WAIT_AT_LEAST = 100;

/** argv: a TCP server on ip:port that answers each connection's first byte, then closes once the client has. Prints "ready". */
function closingServer(ip: string, port: number): string[] {
  return [
    'python3',
    '-u',
    '-c',
    [
      'import socket, threading',
      's = socket.socket()',
      's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      `s.bind(("${ip}", ${port}))`,
      's.listen(64)',
      'print("ready")',
      'def serve(c):',
      '    c.recv(1); c.sendall(b"y")',
      '    while c.recv(100): pass',
      '    c.close()',
      'while True:',
      '    c, _ = s.accept()',
      '    threading.Thread(target=serve, args=(c,), daemon=True).start()',
    ].join('\n'),
  ];
}

/** argv: `count` TCP connections to ip:port, one after the other, each a round trip then closed by us; prints the local ports. */
function connectAndClose(ip: string, port: number, count = 1): string[] {
  return [
    'python3',
    '-c',
    [
      'import socket',
      'ports = []',
      `for _ in range(${count}):`,
      `    c = socket.create_connection(("${ip}", ${port}), timeout=5)`,
      '    c.sendall(b"x"); c.recv(1)',
      '    ports.append(c.getsockname()[1])',
      '    c.close()',
      'print(" ".join(map(str, ports)))',
    ].join('\n'),
  ];
}

/**
 * argv: a hostile client. `count` TCP connections to ip:port, one after the other, each a round
 * trip, closed by us (the server closes in turn); then the last ACK of each, crafted on a raw
 * socket from the server's FIN as captured, sent again every `every` seconds, `times` times.
 * Prints "closed <local ports>" once all are closed, and "sent <n>" after each round.
 */
function resendLastAcks(ip: string, port: number, times: number, count = 1, every = 3): string[] {
  return [
    'python3',
    '-u',
    '-c',
    [
      'import socket, struct, time',
      `IP, PORT = "${ip}", ${port}`,
      'def csum(b):',
      '    if len(b) % 2: b += b"\\0"',
      '    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))',
      '    while s >> 16: s = (s & 0xffff) + (s >> 16)',
      '    return ~s & 0xffff',
      'sniff = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)',
      'sniff.settimeout(10)',
      'acks, ports = [], []',
      `for _ in range(${count}):`,
      '    c = socket.create_connection((IP, PORT), timeout=5)',
      '    c.sendall(b"x"); c.recv(1)',
      '    src, sport = c.getsockname()',
      '    c.close()',
      '    while True:',
      '        pkt = sniff.recv(65535)',
      '        ihl = (pkt[0] & 15) * 4',
      '        s, d, seq, ack, off, flags = struct.unpack("!HHIIBB", pkt[ihl:ihl + 14])',
      '        if socket.inet_ntoa(pkt[12:16]) == IP and s == PORT and d == sport and flags & 1: break',
      '    tcp = struct.pack("!HHIIBBHHH", sport, PORT, ack, seq + 1, 5 << 4, 0x10, 502, 0, 0)',
      '    pseudo = socket.inet_aton(src) + socket.inet_aton(IP) + struct.pack("!BBH", 0, 6, len(tcp))',
      '    acks.append(tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:])',
      '    ports.append(sport)',
      'print("closed", " ".join(map(str, ports)))',
      'out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)',
      `for n in range(${times}):`,
      `    time.sleep(${every})`,
      '    for tcp in acks: out.sendto(tcp, (IP, 0))',
      '    print("sent", n + 1)',
    ].join('\n'),
  ];
}

interface TcpEntry {
  readonly seconds: number;
  readonly state: string;
  readonly src: string;
  readonly sport: number;
  readonly dport: number;
}

/** The provider's TCP conntrack entries, as `conntrack -L` prints them (original direction). */
async function tcpEntries(provider: Netns): Promise<TcpEntry[]> {
  const { stdout } = await provider.exec(['conntrack', '-L', '-p', 'tcp']);
  return stdout.split('\n').flatMap((line) => {
    const match = /^tcp\s+6\s+(\d+)\s+(\S+)\s+src=(\S+) dst=\S+ sport=(\d+) dport=(\d+)/.exec(line);
    return match === null ? [] : [{ seconds: Number(match[1]), state: match[2] ?? '', src: match[3] ?? '', sport: Number(match[4]), dport: Number(match[5]) }];
  });
}

/**
 * A TCP connection from `client` (at `clientIp`) to the internet server, held open for a minute: the process
 * (to kill) and the provider's conntrack entry of it.
 */
async function heldConnection(client: Netns, clientIp: string, provider: Netns): Promise<{ held: NetnsProcess; entry: TcpEntry | undefined }> {
  const held = client.spawn([
    'python3',
    '-u',
    '-c',
    `import socket, time\nc = socket.create_connection(("${INTERNET_IP}", ${INTERNET_PORT}))\nc.sendall(b"x"); c.recv(1)\nprint(c.getsockname()[1])\ntime.sleep(60)`,
  ]);
  const port = Number((await held.waitForOutput(/^(\d+)$/m))[1]);
  const entry = (await tcpEntries(provider)).find((each) => each.src === clientIp && each.sport === port);
  return { held, entry };
}

/** The provider's conntrack TCP timeouts (its sysctls), read inside its namespace. */
async function providerTimeouts(provider: Netns): Promise<TcpTimeouts> {
  const timeouts: Record<string, number> = { ...KERNEL_TCP_TIMEOUTS };
  for (const [state, name] of Object.entries(TCP_TIMEOUT_SYSCTLS)) {
    timeouts[state] = Number((await provider.exec(['cat', `/proc/sys/net/netfilter/${name}`])).stdout.trim());
  }
  return timeouts as unknown as TcpTimeouts;
}

describeNetns("clients' TCP timeouts in network namespaces", () => {
  let harness: Harness;
  let world: ProviderWorld;
  let a: WorldClient;
  let b: WorldClient;
  let provider: Netns;
  const servers: NetnsProcess[] = [];
  let settings: TableSettings;
  const options = (): TableSettings & { netns: string } => ({ netns: provider.name, ...settings });
  const model = (): ReturnType<ProviderWorld['model']> => world.model({ allowedPairs: [{ from: a.ip, to: b.ip }] });
  const listing = async (): Promise<string> => (await provider.exec(['nft', '-n', '-s', 'list', 'table', 'inet', TABLE_NAME])).stdout;
  const listings = async (): Promise<FirewallListings> => ({ inet: await listing(), arp: (await provider.exec(['nft', '-n', '-s', 'list', 'table', 'arp', TABLE_NAME])).stdout });

  /**
   * `client` connects to ip:port and closes; resolves with the provider's entry of that
   * connection once it is in TIME_WAIT.
   */
  async function closedEntry(client: Netns, from: string, ip: string, port: number): Promise<TcpEntry> {
    const localPort = Number((await client.exec(connectAndClose(ip, port))).stdout.trim());
    let entry: TcpEntry | undefined;
    await eventually(`the entry of ${from}:${localPort} -> ${ip}:${port} in TIME_WAIT`, async () => {
      entry = (await tcpEntries(provider)).find((each) => each.src === from && each.sport === localPort && each.dport === port && each.state === 'TIME_WAIT');
      return entry !== undefined;
    });
    if (entry === undefined) throw new Error('unreachable');
    return entry;
  }

  /**
   * Run `body` while the agent's reaper (the real ConntrackReaper, in a fixture process in the
   * provider's namespace) reaps the closed TCP flows over `threshold` entries; its log lines are
   * in `lines`.
   */
  async function withReaper(threshold: number, body: (reaper: { lines: ReaperLine[] }) => Promise<void>): Promise<void> {
    const process_ = provider.spawn([process.execPath, REAPER_FIXTURE, 'reaper', String(threshold)], { enter: 'nsenter' });
    const reaper = {
      get lines(): ReaperLine[] {
        return process_.stderr.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as ReaperLine);
      },
    };
    try {
      await process_.waitForOutput(/reaper started/);
      await body(reaper);
    } finally {
      await process_.kill('SIGKILL', 0);
    }
  }

  beforeAll(async () => {
    if (!existsSync(REAPER_FIXTURE)) throw new Error(`${REAPER_FIXTURE} is missing: run npm run build`);
    harness = createHarness('tcptimeout');
    world = await makeProviderWorld(harness, [331, 332]);
    [a, b] = world.clients as [WorldClient, WorldClient];
    provider = world.provider;
    settings = { clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE, clientTcpTimeouts: clientTcpTimeouts(await providerTimeouts(provider)) };
    for (const [ns, ip, port] of [
      [world.internet, INTERNET_IP, INTERNET_PORT],
      [b.ns, b.ip, PAIR_PORT],
      [provider, GATEWAY_IP, DNS_PORT],
    ] as const) {
      const server = ns.spawn(closingServer(ip, port));
      await server.waitForOutput(/ready/);
      servers.push(server);
    }
    expect(await reconcileFirewall(model(), options())).toEqual({ changed: true });
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  describe('a TCP connection a client closed', () => {
    it('leaves a TIME_WAIT entry of at most 10 s, forwarded to the internet', async () => {
      const entry = await closedEntry(a.ns, a.ip, INTERNET_IP, INTERNET_PORT);
      expect(entry.seconds).toBeLessThanOrEqual(CLIENT_CLOSED_TIMEOUT_SECONDS);
    });

    it('likewise forwarded to another client (an allowed pair), and to DNS over TCP on the gateway', async () => {
      expect((await closedEntry(a.ns, a.ip, b.ip, PAIR_PORT)).seconds).toBeLessThanOrEqual(CLIENT_CLOSED_TIMEOUT_SECONDS);
      expect((await closedEntry(b.ns, b.ip, GATEWAY_IP, DNS_PORT)).seconds).toBeLessThanOrEqual(CLIENT_CLOSED_TIMEOUT_SECONDS);
    });

    it('keeps the provider\'s timeout while open: only the closed states are shorter', async () => {
      const { held, entry } = await heldConnection(a.ns, a.ip, provider);
      expect(entry?.state).toBe('ESTABLISHED');
      expect(entry?.seconds).toBeGreaterThan(settings.clientTcpTimeouts!.established - 60);
      await held.kill('SIGKILL', 0);
    });

    it('frees the table of many closed connections within 10 s, none left for the cap not to count', async () => {
      const ports = (await a.ns.exec(connectAndClose(INTERNET_IP, INTERNET_PORT, 40))).stdout.trim().split(' ').map(Number);
      expect(ports).toHaveLength(40);
      const ours = async (): Promise<TcpEntry[]> => (await tcpEntries(provider)).filter((each) => each.src === a.ip && ports.includes(each.sport));
      await eventually('all 40 in TIME_WAIT', async () => (await ours()).filter((each) => each.state === 'TIME_WAIT').length === 40);
      expect(Math.max(...(await ours()).map((each) => each.seconds))).toBeLessThanOrEqual(CLIENT_CLOSED_TIMEOUT_SECONDS);
      await eventually('their entries gone', async () => (await ours()).length === 0, 15_000);
    });
  });

  // Every in-window packet of a flow refreshes its entry with the timeout of its state, TIME_WAIT
  // and CLOSE included (nf_conntrack_proto_tcp: "sTW -> sTW Retransmitted last ACK"), and the cap
  // does not count those states: a client that re-sends its last ACK every few seconds keeps each
  // closed entry as long as it likes (without the reaper these tests fail: the entries stay). The
  // agent's reaper deletes them once the table passes its threshold (here 1 entry, checked each
  // second). A re-sent ACK after that is no longer in any flow: with nf_conntrack_tcp_loose (1,
  // the default) conntrack picks it up as a new flow, which meets the firewall's new-flow rules
  // like any other (the rate, the cap, the client's timeouts).
  describe("the reaper: clients' closed TCP entries kept alive", () => {
    it('deletes a closed entry kept alive by re-sent ACKs; the ACKs then open nothing that stays', { timeout: 60_000 }, async () => {
      const hostile = a.ns.spawn(resendLastAcks(INTERNET_IP, INTERNET_PORT, 10));
      try {
        const port = Number((await hostile.waitForOutput(/^closed (\d+)$/m))[1]);
        const ours = async (): Promise<TcpEntry[]> => (await tcpEntries(provider)).filter((each) => each.src === a.ip && each.sport === port);
        await eventually('the entry in TIME_WAIT', async () => (await ours()).some((each) => each.state === 'TIME_WAIT'));
        await withReaper(1, async (reaper) => {
          await eventually('the entry deleted', async () => (await ours()).length === 0, 10_000);
          // Two more ACKs: each is picked up as a new flow, forwarded, and the server's RST to it
          // (no socket there any more) ends it at once (an entry whose only reply is a RST goes).
          const sent = (): number => Number(/sent (\d+)\n(?![\s\S]*sent)/.exec(hostile.stdout)?.[1] ?? 0);
          const from = sent();
          await eventually('two more ACKs sent', async () => sent() >= from + 2, 15_000);
          expect(await ours()).toEqual([]);
          expect(reaper.lines.some((line) => line.msg.includes('deleted') && Number(line['deleted']) >= 1)).toBe(true);
        });
      } finally {
        await hostile.kill('SIGKILL', 0);
      }
    });

    it("holds a client that keeps re-sending ACKs to its cap, when the server does not answer them", { timeout: 90_000 }, async () => {
      const cap = 8;
      const connections = 3 * cap;
      const capped: TableSettings = { ...settings, clientFlowLimit: cap };
      expect(await reconcileFirewall(model(), { netns: provider.name, ...capped })).toEqual({ changed: true });
      // The internet sends no RST: a picked-up ACK's flow then stays (established, unreplied),
      // and the cap counts it.
      await world.internet.exec(['nft', '-f', '-'], { input: 'table ip quiet {\n\tchain out {\n\t\ttype filter hook output priority 0; policy accept;\n\t\ttcp flags rst drop\n\t}\n}\n' });
      const hostile = a.ns.spawn(resendLastAcks(INTERNET_IP, INTERNET_PORT, 12, connections, 2));
      try {
        const ports = ((await hostile.waitForOutput(/^closed ([\d ]+)$/m, 30_000))[1] ?? '').split(' ').map(Number);
        expect(ports).toHaveLength(connections);
        const ours = async (): Promise<TcpEntry[]> => (await tcpEntries(provider)).filter((each) => each.src === a.ip && ports.includes(each.sport));
        const closed = (entries: readonly TcpEntry[]): number => entries.filter((each) => each.state === 'TIME_WAIT' || each.state === 'CLOSE').length;
        // Without the reaper: all of them, more than the cap, none counted by it.
        await eventually('all closed entries kept alive', async () => closed(await ours()) === connections, 15_000);
        const dropsBefore = (await firewallCounters({ netns: provider.name, ...capped })).flowLimitDrops;
        await withReaper(1, async () => {
          await eventually('no closed entry left', async () => closed(await ours()) === 0, 15_000);
          const sent = (): number => Number(/sent (\d+)\n(?![\s\S]*sent)/.exec(hostile.stdout)?.[1] ?? 0);
          const from = sent();
          // Rounds of ACKs after the reap: each picked up as a new flow, counted, the ones past the cap dropped.
          for (let round = 1; round <= 3; round++) {
            await eventually(`ACK round ${from + round}`, async () => sent() >= from + round, 15_000);
            const entries = await ours();
            expect(entries.length).toBeLessThanOrEqual(cap);
            expect(closed(entries)).toBe(0);
          }
          const entries = await ours();
          expect(entries.length).toBeGreaterThan(0);
          expect(entries.every((each) => each.state === 'ESTABLISHED')).toBe(true);
          expect((await firewallCounters({ netns: provider.name, ...capped })).flowLimitDrops).toBeGreaterThan(dropsBefore);
        });
      } finally {
        await hostile.kill('SIGKILL', 0);
        await world.internet.exec(['nft', 'delete', 'table', 'ip', 'quiet']);
        await provider.exec(['conntrack', '-D', '-s', a.ip], { allowFailure: true });
        expect(await reconcileFirewall(model(), options())).toEqual({ changed: true });
      }
    });

    it("deletes the provider's own closed entries too, and leaves established flows (a client's, the provider's) and UDP alone", { timeout: 60_000 }, async () => {
      const client = await heldConnection(a.ns, a.ip, provider);
      const own = await heldConnection(provider, PROVIDER_UPLINK_IP, provider);
      try {
        expect(client.entry?.state).toBe('ESTABLISHED');
        expect(own.entry?.state).toBe('ESTABLISHED');
        const ownClosed = await closedEntry(provider, PROVIDER_UPLINK_IP, INTERNET_IP, INTERNET_PORT);
        const clientsClosed = await closedEntry(b.ns, b.ip, INTERNET_IP, INTERNET_PORT);
        // A UDP flow of a client's and one of the provider's (unanswered: entries of 30 s).
        for (const [ns, port] of [
          [a.ns, UDP_PORT],
          [provider, UDP_PORT + 1],
        ] as const) {
          await ns.exec(['python3', '-c', `import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("${INTERNET_IP}", ${port}))`]);
        }
        const present = async (wanted: TcpEntry): Promise<TcpEntry | undefined> =>
          (await tcpEntries(provider)).find((each) => each.src === wanted.src && each.sport === wanted.sport && each.dport === wanted.dport);
        await withReaper(1, async () => {
          // The provider's own closed entry (120 s of TIME_WAIT, the kernel's) goes like the client's (10 s).
          await eventually('both closed entries reaped', async () => (await present(ownClosed)) === undefined && (await present(clientsClosed)) === undefined, 5000);
        });
        expect((await present(client.entry ?? ownClosed))?.state).toBe('ESTABLISHED');
        expect((await present(own.entry ?? ownClosed))?.state).toBe('ESTABLISHED');
        const udp = (await provider.exec(['conntrack', '-L', '-p', 'udp'])).stdout;
        const udpFlows = [...udp.matchAll(/^udp\s+17\s+\d+\s+src=(\S+) dst=\S+ sport=\d+ dport=(\d+)/gm)].map((match) => `${match[1]}:${match[2]}`);
        expect(udpFlows).toEqual(expect.arrayContaining([`${a.ip}:${UDP_PORT}`, `${PROVIDER_UPLINK_IP}:${UDP_PORT + 1}`]));
      } finally {
        await client.held.kill('SIGKILL', 0);
        await own.held.kill('SIGKILL', 0);
      }
    });
  });

  it("leaves the provider's own TCP connections the kernel's TIME_WAIT", async () => {
    const entry = await closedEntry(provider, PROVIDER_UPLINK_IP, INTERNET_IP, INTERNET_PORT);
    expect(entry.seconds).toBeGreaterThan(KERNEL_TIME_WAIT_AT_LEAST);
  });

  describe('the audit', () => {
    it('finds the live table, policy included, exactly the text it expects: unchanged', async () => {
      const text = await listing();
      expect(text).toContain(`\tct timeout ${CLIENT_TCP_TIMEOUT} {\n\t\tprotocol tcp\n\t\tl3proto ip\n\t\tpolicy = { time_wait : 10 }\n\t}\n`);
      expect(parseTableListing(text).structure).toBe(staticTableText(settings));
      expect(planFirewall({ ...(await listings()), inet: text }, validateFirewallModel(model()), settings)).toEqual({ kind: 'unchanged' });
      expect(await reconcileFirewall(model(), options())).toEqual({ changed: false });
      expect(await new FirewallReconciler(options()).reconcile(model(), { verify: true })).toEqual({ changed: false });
    });

    it('repairs a rule of the policy deleted by hand; without it a client\'s TIME_WAIT is the kernel\'s 120 s', async () => {
      const before = await listing();
      const handles = (await provider.exec(['nft', '-a', 'list', 'chain', 'inet', TABLE_NAME, 'forward'])).stdout;
      const handle = /ct timeout set "client_tcp" # handle (\d+)/.exec(handles)?.[1];
      expect(handle).toBeDefined();
      await provider.exec(['nft', 'delete', 'rule', 'inet', TABLE_NAME, 'forward', 'handle', handle ?? '']);
      // What this change is for: without the rule, the kernel's timeout.
      expect((await closedEntry(a.ns, a.ip, INTERNET_IP, INTERNET_PORT)).seconds).toBeGreaterThan(KERNEL_TIME_WAIT_AT_LEAST);
      expect(await new FirewallReconciler(options()).reconcile(model(), { verify: true })).toEqual({ changed: true });
      expect(parseTableListing(await listing()).structure).toBe(parseTableListing(before).structure);
      expect((await closedEntry(a.ns, a.ip, INTERNET_IP, INTERNET_PORT)).seconds).toBeLessThanOrEqual(CLIENT_CLOSED_TIMEOUT_SECONDS);
    });

    it('repairs the policy deleted and made again otherwise by hand (nft takes no change to a policy in place)', async () => {
      const before = await listing();
      const script = [
        `flush chain inet ${TABLE_NAME} forward`,
        `flush chain inet ${TABLE_NAME} input_from_client_link`,
        `delete ct timeout inet ${TABLE_NAME} ${CLIENT_TCP_TIMEOUT}`,
        `add ct timeout inet ${TABLE_NAME} ${CLIENT_TCP_TIMEOUT} { protocol tcp; l3proto ip; policy = { time_wait : 120 }; }`,
        '',
      ].join('\n');
      await provider.exec(['nft', '-f', '-'], { input: script });
      // Every state at the kernel's default: nft lists no value.
      expect(await listing()).toContain('\t\tpolicy = {  }\n');
      expect(await new FirewallReconciler(options()).reconcile(model(), { verify: true })).toEqual({ changed: true });
      expect(parseTableListing(await listing()).structure).toBe(parseTableListing(before).structure);
      expect(await new FirewallReconciler(options()).reconcile(model(), { verify: true })).toEqual({ changed: false });
    });

    it("follows the provider's timeouts as they were read: a tuned established timeout, a shorter CLOSE, and back", async () => {
      const sysctl = async (name: string, value: number): Promise<void> => void (await provider.exec(['sysctl', '-q', '-w', `net.netfilter.${name}=${value}`]));
      await sysctl('nf_conntrack_tcp_timeout_established', 3600);
      await sysctl('nf_conntrack_tcp_timeout_close', 5);
      try {
        const tuned: TableSettings = { ...settings, clientTcpTimeouts: clientTcpTimeouts(await providerTimeouts(provider)) };
        expect(await reconcileFirewall(model(), { netns: provider.name, ...tuned })).toEqual({ changed: true });
        const text = await listing();
        expect(text).toContain('\t\tpolicy = { established : 3600, time_wait : 10, close : 5 }\n');
        expect(planFirewall({ ...(await listings()), inet: text }, validateFirewallModel(model()), tuned)).toEqual({ kind: 'unchanged' });
        const { held, entry } = await heldConnection(a.ns, a.ip, provider);
        expect(entry?.seconds).toBeLessThanOrEqual(3600);
        expect(entry?.seconds).toBeGreaterThan(3500);
        await held.kill('SIGKILL', 0);
      } finally {
        await sysctl('nf_conntrack_tcp_timeout_established', KERNEL_TCP_TIMEOUTS.established);
        await sysctl('nf_conntrack_tcp_timeout_close', KERNEL_TCP_TIMEOUTS.close);
      }
      expect(await reconcileFirewall(model(), options())).toEqual({ changed: true });
      expect(parseTableListing(await listing()).structure).toBe(staticTableText(settings));
    });
  });
});
