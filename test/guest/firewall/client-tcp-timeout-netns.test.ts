// Clients' TCP timeouts in a provider namespace with its real table: a client's TCP connection,
// forwarded (to the internet, to another client of an allowed pair) or to the gateway, leaves a
// TIME_WAIT entry of at most 10 s, where the kernel's 120 s would let a client hold 100 a second x
// 130 s entries the flow cap does not count; the provider's own connections keep the kernel's
// timeouts; the audit finds the live table (the policy as nft lists it) unchanged and repairs an
// operator's edit of the policy or its rules. Entries are read with conntrack(8).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_CLOSED_TIMEOUT_SECONDS, KERNEL_TCP_TIMEOUTS, TCP_TIMEOUT_SYSCTLS, type TcpTimeouts, clientTcpTimeouts } from '../../../guest/firewall/client-tcp-timeouts.js';
import { FirewallReconciler, reconcileFirewall } from '../../../guest/firewall/nft.js';
import { CLIENT_TCP_TIMEOUT, TABLE_NAME, parseTableListing, planFirewall, staticTableText } from '../../../guest/firewall/ruleset.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import type { TableSettings } from '../../../guest/firewall/table-settings.js';
import { GATEWAY_IP } from '../../../shared/scheme.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns, eventually } from '../../harness/index.js';
import { INTERNET_IP, PROVIDER_UPLINK_IP, type ProviderWorld, TEST_FLOW_LIMIT, TEST_NEW_FLOW_RATE, type WorldClient, makeProviderWorld } from './provider-world.js';

const INTERNET_PORT = 7500;
const PAIR_PORT = 7501;
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
 * argv: a hostile client. One TCP connection to ip:port, a round trip, closed by us (the server
 * closes in turn); then its last ACK, crafted on a raw socket from the server's FIN as captured,
 * sent again every 3 s, `times` times. Prints "closed <local port>" once it has closed.
 */
function resendLastAck(ip: string, port: number, times: number): string[] {
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
      'c = socket.create_connection((IP, PORT), timeout=5)',
      'c.sendall(b"x"); c.recv(1)',
      'src, sport = c.getsockname()',
      'c.close()',
      'while True:',
      '    pkt = sniff.recv(65535)',
      '    ihl = (pkt[0] & 15) * 4',
      '    s, d, seq, ack, off, flags = struct.unpack("!HHIIBB", pkt[ihl:ihl + 14])',
      '    if socket.inet_ntoa(pkt[12:16]) == IP and s == PORT and d == sport and flags & 1: break',
      'print("closed", sport)',
      'tcp = struct.pack("!HHIIBBHHH", sport, PORT, ack, seq + 1, 5 << 4, 0x10, 502, 0, 0)',
      'pseudo = socket.inet_aton(src) + socket.inet_aton(IP) + struct.pack("!BBH", 0, 6, len(tcp))',
      'tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]',
      'out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)',
      `for _ in range(${times}):`,
      '    time.sleep(3)',
      '    out.sendto(tcp, (IP, 0))',
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

  beforeAll(async () => {
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

    // Known gap (review): every in-window packet of a flow refreshes its entry with the timeout of
    // its state, TIME_WAIT and CLOSE included (nf_conntrack_proto_tcp: "sTW -> sTW Retransmitted
    // last ACK"). A hostile client that re-sends its last ACK every few seconds keeps each closed
    // entry in the table, uncounted by the cap, as long as it likes: it holds more than its cap +
    // rate x 22 s, growing by its rate each second. `it.fails` until the firewall bounds it.
    it.fails('leaves no closed entry past 20 s, even for a client that keeps re-sending its last ACK', { timeout: 50_000 }, async () => {
      const hostile = a.ns.spawn(resendLastAck(INTERNET_IP, INTERNET_PORT, 12));
      try {
        const port = Number((await hostile.waitForOutput(/^closed (\d+)$/m))[1]);
        const ours = async (): Promise<TcpEntry[]> => (await tcpEntries(provider)).filter((each) => each.src === a.ip && each.sport === port);
        // The entry is closed (uncounted by the cap) from here on.
        await eventually('the entry in TIME_WAIT', async () => (await ours()).some((each) => each.state === 'TIME_WAIT'));
        await eventually('the entry gone', async () => (await ours()).length === 0, 30_000).catch(() => undefined);
        // Seen failing here: still there after 30 s, in CLOSE (the server's RST to the ACK moved it
        // there) with 9 s to go, each ACK restarting its timeout.
        expect(await ours()).toEqual([]);
      } finally {
        await hostile.kill('SIGKILL', 0);
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
      expect(planFirewall(text, validateFirewallModel(model()), settings)).toEqual({ kind: 'unchanged' });
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
        expect(planFirewall(text, validateFirewallModel(model()), tuned)).toEqual({ kind: 'unchanged' });
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
