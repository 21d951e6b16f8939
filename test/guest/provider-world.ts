// A whole provider in namespaces: an "internet" (HTTP on 192.0.2.80, a DNS server for the test
// zone on 192.0.2.53, no route back to clients), a provider running the real spectrum-netd
// behind it, and client namespaces whose links carry Spectrum link MACs.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FirewallCounters } from '../../guest/firewall-port.js';
import { type ExecResult, type Harness, type Netns, type NetnsProcess, trackTempDir } from '../harness/index.js';
import { ROOT } from '../host/link-fixture.js';

export const NETD_CLI = join(ROOT, 'dist', 'guest', 'cli.js');
export const INTERNET_HTTP = '192.0.2.80';
export const INTERNET_DNS = '192.0.2.53';
export const TEST_NAME = 'www.test.example';
export const PAGE_TEXT = 'hello from the simulated internet';
/** A slow HTTP stream on INTERNET_HTTP:SLOW_PORT: SLOW_CHUNKS chunks of SLOW_CHUNK_BYTES, 0.1 s apart. */
export const SLOW_PORT = 8081;
export const SLOW_CHUNK_BYTES = 16_384;
export const SLOW_CHUNKS = 40;
export const SLOW_BYTES = SLOW_CHUNK_BYTES * SLOW_CHUNKS;

/**
 * A Python HTTP server on ip:port that answers every request with `chunks` chunks of
 * `chunkBytes`, 0.1 s apart: a transfer that surely spans what a test does meanwhile. (The
 * server paces it: curl's --limit-rate does not hold back a fast path.) Prints "slow ready".
 */
export function slowHttpServerScript(ip: string, port: number, chunks: number, chunkBytes: number): string {
  return [
    'import socketserver, time',
    'class Slow(socketserver.StreamRequestHandler):',
    '    def handle(self):',
    '        while self.rfile.readline() not in (b"\\r\\n", b"\\n", b""): pass',
    `        self.wfile.write(b"HTTP/1.0 200 OK\\r\\nContent-Length: ${chunks * chunkBytes}\\r\\n\\r\\n")`,
    `        for _ in range(${chunks}):`,
    `            self.wfile.write(b"z" * ${chunkBytes}); self.wfile.flush(); time.sleep(0.1)`,
    'socketserver.ThreadingTCPServer.allow_reuse_address = True',
    `server = socketserver.ThreadingTCPServer(("${ip}", ${port}), Slow)`,
    'print("slow ready", flush=True)',
    'server.serve_forever()',
  ].join('\n');
}

export function linkMac(role: 'provider' | 'client', id: number): string {
  const hex = (n: number): string => n.toString(16).padStart(2, '0');
  return `0a:b3:ec:${role === 'provider' ? '80' : '00'}:${hex(id >> 8)}:${hex(id & 0xff)}`;
}

export const clientIp = (id: number): string => `100.64.${id >> 8}.${id & 0xff}`;

/** One of the agent's JSON log lines (pino). */
export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

/** The JSON log lines `agent` has written so far (one a line: its stderr is no terminal). */
export function agentLogLines(agent: NetnsProcess): LogLine[] {
  return agent.stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine);
}

/** A provider link `name` for client id `id` in `provider`, a veth whose far end is eth0 in `client`. */
export async function addProviderLink(provider: Netns, name: string, id: number, client: Netns): Promise<void> {
  await provider.ip(['link', 'add', name, 'address', linkMac('provider', id), 'type', 'veth', 'peer', 'name', 'eth0', 'address', linkMac('client', id), 'netns', client.name]);
}

export function requireNetdBuild(): void {
  if (!existsSync(NETD_CLI)) throw new Error(`${NETD_CLI} is missing: run \`npm run build\` first`);
}

export interface Internet {
  readonly ns: Netns;
  /** Serve through this uplink veth of `provider`: provider gets 192.0.2.1/24 on `uplink`. */
  readonly stop: () => Promise<void>;
}

/** The internet namespace and its servers, joined to `provider` by a veth `uplink`. */
export async function makeInternet(harness: Harness, provider: Netns, uplink = 'up0'): Promise<Internet> {
  const ns = await harness.namespace('inet');
  await harness.veth(provider, uplink, ns, 'eth0');
  await harness.addAddress(provider, uplink, '192.0.2.1/24');
  for (const address of ['192.0.2.10/24', `${INTERNET_HTTP}/24`, `${INTERNET_DNS}/24`]) await harness.addAddress(ns, 'eth0', address);
  await harness.up(provider, uplink);
  await harness.up(ns, 'eth0');
  await linkEndsActive(provider, uplink, ns, 'eth0');
  const dir = mkdtempSync(join(tmpdir(), 'spectrum-internet-'));
  // Removed by stop, at once where a server does not start, and at exit or on a signal before
  // either (the servers, and the namespace, are the harness's to remove).
  trackTempDir(dir);
  const servers: NetnsProcess[] = [];
  try {
    writeFileSync(join(dir, 'index.html'), `${PAGE_TEXT}\n`);
    servers.push(
      ns.spawn(['python3', '-u', '-m', 'http.server', '80', '--bind', INTERNET_HTTP, '--directory', dir]),
      ns.spawn([
        'dnsmasq', '--keep-in-foreground', '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', `--listen-address=${INTERNET_DNS}`,
        '--port=53', `--address=/${TEST_NAME}/${INTERNET_HTTP}`, '--pid-file=', '--user=root', '--log-facility=-',
      ]),
      ns.spawn(['python3', '-u', '-c', slowHttpServerScript(INTERNET_HTTP, SLOW_PORT, SLOW_CHUNKS, SLOW_CHUNK_BYTES)]),
    );
    await servers[0]?.waitForOutput(/Serving HTTP/, 10_000);
    await servers[2]?.waitForOutput(/slow ready/, 10_000);
  } catch (error) {
    for (const server of servers) await server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  // The provider resolves through the internet's DNS server, as connman would set it up.
  provider.setResolvConf(`nameserver ${INTERNET_DNS}\n`);
  return {
    ns,
    stop: async () => {
      for (const server of servers) await server.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Wait until the kernel has activated both ends of a veth (see Netns.linkActive): `ifname` in
 * `provider` and `peerIfname` in `peer`. The end raised first gets its carrier when the other comes
 * up, but the kernel's linkwatch activates it some time after (seconds on a loaded machine),
 * dropping what it sends meanwhile. A client link's provider end is raised by the agent: call
 * this once the agent runs, before the client's first packet.
 */
export async function linkEndsActive(provider: Netns, ifname: string, peer: Netns, peerIfname = 'eth0'): Promise<void> {
  await Promise.all([provider.linkActive(ifname), peer.linkActive(peerIfname)]);
}

/** A client namespace whose eth0 is the client end of link `id`; the provider end is `ifname`. */
export async function addClient(harness: Harness, provider: Netns, id: number, ifname = `p${id}`): Promise<Netns> {
  const client = await harness.namespace(`c${id}`);
  await harness.veth(provider, ifname, client, 'eth0');
  await provider.ip(['link', 'set', 'dev', ifname, 'address', linkMac('provider', id)]);
  await client.ip(['link', 'set', 'dev', 'eth0', 'address', linkMac('client', id), 'up']);
  return client;
}

export interface AgentStatus {
  links: { name: string; role: string; id: number | null; ip: string | null; state: string; error: string | null }[];
  counters: { initialChanges: number | null; changesApplied: number; conntrackPurged?: number };
  /** null while the table cannot be read (nft refused it: firewallError says why). */
  firewall: FirewallCounters | null;
  firewallError?: string | null;
  services: { leases: { ifname: string; clientIp: string; state: string }[]; dns: { upstreams: string[]; queries: number; tcpQueries: number; answered: number; failed: number } | null } | null;
}

export class Agent {
  private constructor(
    readonly ns: Netns,
    readonly socket: string,
    readonly process: NetnsProcess,
  ) {}

  /** Start the real agent in `ns`; resolves once its initial reconcile is done. */
  static async start(ns: Netns, socket: string, extra: readonly string[] = []): Promise<Agent> {
    requireNetdBuild();
    const child = ns.spawn(
      ['node', NETD_CLI, 'run', '--control-socket', socket, '--notify-fd', '1', '--resolv-conf', `/etc/netns/${ns.name}/resolv.conf`, ...extra],
      { env: { ...process.env, SPECTRUM_LOG_LEVEL: 'info' } },
    );
    await child.waitForOutput(/^\n/, 15_000); // the readiness newline on fd 1
    return new Agent(ns, socket, child);
  }

  async status(): Promise<AgentStatus> {
    const { stdout } = await this.ns.exec(['node', NETD_CLI, 'status', '--json', '--control-socket', this.socket]);
    return JSON.parse(stdout) as AgentStatus;
  }

  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.process.kill(signal);
  }
}

export { eventually } from '../harness/index.js';

/** busybox udhcpc with Debian's stock script. */
export async function udhcpc(client: Netns, ifname = 'eth0'): Promise<ExecResult> {
  // -f -q: stays in the foreground and exits once leased, so nothing outlives the call.
  return client.exec(['udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '1', '-i', ifname, '-O', 'staticroutes', '-s', '/etc/udhcpc/default.script'], {
    allowFailure: true,
    timeoutMs: 30_000,
  });
}
