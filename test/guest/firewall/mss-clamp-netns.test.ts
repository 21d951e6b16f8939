// MSS clamping on the provider's forward path, against a PMTU black hole: the provider's uplink
// is a 1280-byte link (as a PPPoE or WireGuard uplink is smaller than 1500) to a router that
// drops the ICMP "fragmentation needed" it would send, and behind the router a server on a
// 1500-byte link. A client's SYN announces an MSS for its own 1500-byte link; unless the provider
// lowers it, the server's full-size segments die at the router and the download stalls.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { reconcileFirewall } from '../../../guest/firewall/nft.js';
import { type Harness, type Netns, type NetnsProcess, createHarness, describeNetns } from '../../harness/index.js';
import { CODE_FRAG_NEEDED, ICMP_UNREACHABLE } from './icmp-probe.js';
import { INTERNET_IP, type ProviderWorld, TEST_FLOW_LIMIT, TEST_NEW_FLOW_RATE, type WorldClient, UPLINK, makeProviderWorld } from './provider-world.js';

const SMALL_MTU = 1280;
/** The largest MSS a 1280-byte IPv4 link carries: less 20 bytes of IP and 20 of TCP header. */
const SMALL_LINK_MSS = SMALL_MTU - 40;
const ROUTER_SERVER_SIDE_IP = '198.51.100.1';
const SERVER_IP = '198.51.100.10';
const SERVER_PORT = 8090;
const DOWNLOAD_BYTES = 200_000;
/** A transfer of 200 KB over veths takes milliseconds; one that stalls never ends. */
const DOWNLOAD_SECONDS = 3;

/**
 * A server that reads a tag line from each connection, prints `<tag> mss <n>` (TCP_MAXSEG: the
 * segment size it sends with, never above what the client's SYN announced once it reached it, less
 * the timestamp option), then sends DOWNLOAD_BYTES and closes.
 */
const serverScript = [
  'import socket, threading',
  'srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)',
  'srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  `srv.bind(("${SERVER_IP}", ${SERVER_PORT}))`,
  'srv.listen()',
  'print("ready", flush=True)',
  'def serve(conn):',
  '    with conn:',
  '        conn.settimeout(10)',
  '        tag = b""',
  '        while not tag.endswith(b"\\n"):',
  '            data = conn.recv(64)',
  '            if not data: return',
  '            tag += data',
  '        mss = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)',
  '        print("%s mss %d" % (tag.decode().strip(), mss), flush=True)',
  '        try:',
  `            conn.sendall(b"x" * ${DOWNLOAD_BYTES})`,
  '        except OSError:',
  '            pass',
  'while True:',
  '    conn, _ = srv.accept()',
  '    threading.Thread(target=serve, args=(conn,), daemon=True).start()',
].join('\n');

/**
 * argv: connect, send `tag`, print the client's own MSS (TCP_MAXSEG as the handshake left it:
 * what the server's SYN-ACK announced, once it reached the client) and how many bytes arrived
 * before EOF or DOWNLOAD_SECONDS.
 */
const download = (tag: string): string[] => [
  'python3',
  '-c',
  [
    'import socket, time',
    `deadline = time.monotonic() + ${DOWNLOAD_SECONDS}`,
    `s = socket.create_connection(("${SERVER_IP}", ${SERVER_PORT}), timeout=${DOWNLOAD_SECONDS})`,
    'mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)',
    `s.sendall(b"${tag}\\n")`,
    'got = 0',
    'try:',
    '    while time.monotonic() < deadline:',
    '        s.settimeout(max(deadline - time.monotonic(), 0.01))',
    '        data = s.recv(65536)',
    '        if not data: break',
    '        got += len(data)',
    'except socket.timeout:',
    '    pass',
    'print(mss, got)',
  ].join('\n'),
];

/** The router's own errors: frag-needed dropped on their way out, counted. */
const ROUTER_TABLE = [
  'table ip router {',
  '\tcounter frag_needed_drops {',
  '\t}',
  '\tchain output {',
  '\t\ttype filter hook output priority 0; policy accept;',
  `\t\ticmp type ${ICMP_UNREACHABLE} icmp code ${CODE_FRAG_NEEDED} counter name "frag_needed_drops" drop`,
  '\t}',
  '}',
  '',
].join('\n');

describeNetns('provider firewall: TCP MSS clamping behind a 1280-byte uplink whose router sends no frag-needed', () => {
  let harness: Harness;
  let world: ProviderWorld;
  let client: WorldClient;
  let router: Netns;
  let server: NetnsProcess;
  const netns = (): { netns: string; clientFlowLimit: number; clientNewFlowRate: number } => ({ netns: world.provider.name, clientFlowLimit: TEST_FLOW_LIMIT, clientNewFlowRate: TEST_NEW_FLOW_RATE });

  /** Bytes downloaded within DOWNLOAD_SECONDS, and the MSS each end sends with. */
  async function fetchFromServer(tag: string): Promise<{ bytes: number; serverMss: number; clientMss: number }> {
    const result = await client.ns.exec(download(tag), { timeoutMs: (DOWNLOAD_SECONDS + 10) * 1000 });
    const [clientMss, bytes] = result.stdout.trim().split(' ').map(Number);
    const seen = await server.waitForOutput(new RegExp(`^${tag} mss (\\d+)$`, 'm'), 2000);
    return { bytes: bytes ?? Number.NaN, serverMss: Number(seen[1]), clientMss: clientMss ?? Number.NaN };
  }

  async function fragNeededDrops(): Promise<number> {
    const listed = (await router.exec(['nft', 'list', 'counter', 'ip', 'router', 'frag_needed_drops'])).stdout;
    return Number(/packets (\d+)/.exec(listed)?.[1] ?? Number.NaN);
  }

  beforeAll(async () => {
    harness = createHarness('mssclamp');
    world = await makeProviderWorld(harness, [1]);
    [client] = world.clients as [WorldClient];
    // The provider's "internet" namespace is the router here: the far end of the uplink.
    router = world.internet;
    const serverNs = await harness.namespace('srv');
    await router.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    await harness.veth(router, 'srv0', serverNs, 'eth0');
    await harness.addAddress(router, 'srv0', `${ROUTER_SERVER_SIDE_IP}/24`);
    await harness.addAddress(serverNs, 'eth0', `${SERVER_IP}/24`);
    await harness.up(router, 'srv0');
    await harness.up(serverNs, 'eth0');
    // srv0, raised first, is activated by the kernel's linkwatch some time after eth0 comes up.
    await Promise.all([router.linkActive('srv0'), serverNs.linkActive('eth0')]);
    await serverNs.ip(['route', 'add', 'default', 'via', ROUTER_SERVER_SIDE_IP]);
    await world.provider.ip(['route', 'add', '198.51.100.0/24', 'via', INTERNET_IP, 'dev', UPLINK]);
    await world.provider.ip(['link', 'set', 'dev', UPLINK, 'mtu', String(SMALL_MTU)]);
    await router.ip(['link', 'set', 'dev', 'eth0', 'mtu', String(SMALL_MTU)]);
    await router.exec(['nft', '-f', '-'], { input: ROUTER_TABLE });
    // No black-hole detection on the server (the kernel default, set so a test does not depend on it).
    await serverNs.exec(['sysctl', '-q', '-w', 'net.ipv4.tcp_mtu_probing=0']);
    server = serverNs.spawn(['python3', '-u', '-c', serverScript]);
    await server.waitForOutput(/ready/);
    expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: true });
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('with the firewall as made, 200 KB arrive: both SYNs reach the other end announcing an MSS the 1280-byte link carries', async () => {
    const { bytes, serverMss, clientMss } = await fetchFromServer('clamped');
    expect(bytes).toBe(DOWNLOAD_BYTES);
    expect(serverMss).toBeLessThanOrEqual(SMALL_LINK_MSS);
    // The server announced 1460 for its own link; the SYN-ACK, established to conntrack, was
    // clamped on its way in (the reverse route is the 1280-byte uplink).
    expect(clientMss).toBeLessThanOrEqual(SMALL_LINK_MSS);
  });

  it('control: with the clamp rule taken out of the table, the same download stalls and the router drops its frag-needed errors', async () => {
    const handles = (await world.provider.exec(['nft', '-a', 'list', 'chain', 'inet', 'spectrum_netd', 'forward'])).stdout;
    const handle = /maxseg size set rt mtu # handle (\d+)/.exec(handles)?.[1];
    expect(handle).toBeDefined();
    await world.provider.exec(['nft', 'delete', 'rule', 'inet', 'spectrum_netd', 'forward', 'handle', handle ?? '']);
    try {
      const dropsBefore = await fragNeededDrops();
      const { bytes, serverMss, clientMss } = await fetchFromServer('unclamped');
      expect(bytes).toBeLessThan(DOWNLOAD_BYTES);
      // Each SYN announced what its sender's 1500-byte link carries, and nothing lowered it.
      expect(serverMss).toBeGreaterThan(SMALL_LINK_MSS);
      expect(clientMss).toBeGreaterThan(SMALL_LINK_MSS);
      expect(await fragNeededDrops()).toBeGreaterThan(dropsBefore);
    } finally {
      // The audit's repair: the whole table again, clamp included.
      expect(await reconcileFirewall(world.model(), netns())).toEqual({ changed: true });
    }
    expect((await fetchFromServer('repaired')).bytes).toBe(DOWNLOAD_BYTES);
  });
});
