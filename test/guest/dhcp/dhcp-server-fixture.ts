import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DhcpLink, LeaseInfo } from '../../../guest/dhcp/dhcp-server.js';
import type { Harness, Netns, NetnsProcess, ProcessExit } from '../../harness/index.js';

/** The compiled server fixture; tests never build it themselves. */
// From the sources (vitest) the compiled fixtures are under dist/; compiled (the bench), beside us.
const FIXTURES = import.meta.url.includes('/dist/test/') ? './fixtures/' : '../../../dist/test/guest/dhcp/fixtures/';
export const SERVER_FIXTURE = fileURLToPath(new URL(`${FIXTURES}dhcp-server.js`, import.meta.url));
export const PROBE_FIXTURE = fileURLToPath(new URL(`${FIXTURES}dhcp-probe.js`, import.meta.url));
export const READER_FIXTURE = fileURLToPath(new URL(`${FIXTURES}link-socket-reader.js`, import.meta.url));

export function requireBuild(): void {
  for (const file of [SERVER_FIXTURE, PROBE_FIXTURE, READER_FIXTURE]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run npm run build`);
  }
}

/**
 * The probe fixture in client namespace `ns`, configured as a bound client with `clientIp` would be
 * (its /32, the gateway on-link, the default route), so that a plain UDP socket sends and receives.
 */
export async function startProbeAsBoundClient(harness: Harness, ns: Netns, clientIp: string): Promise<NetnsProcess> {
  await harness.addAddress(ns, 'eth0', `${clientIp}/32`);
  await ns.ip(['route', 'add', '169.254.0.1/32', 'dev', 'eth0']);
  await ns.ip(['route', 'add', 'default', 'via', '169.254.0.1', 'dev', 'eth0']);
  const probe = ns.spawn([process.execPath, PROBE_FIXTURE], { stdin: 'pipe' });
  await probe.waitForOutput(/^ready$/m);
  return probe;
}

export interface ServerStats {
  readonly leases: LeaseInfo[];
  readonly counters: Record<string, number>;
  readonly unserved: Record<string, string>;
  readonly maxRssKiB: number;
  readonly pid: number;
}

/** The DHCP server fixture running in the provider namespace, driven over stdin. */
export class ServerFixture {
  #answers = 0;
  private constructor(readonly process: NetnsProcess) {}

  static async start(provider: Netns, links: readonly DhcpLink[], leaseSeconds?: number, nodeFlags: readonly string[] = []): Promise<ServerFixture> {
    requireBuild();
    const config = JSON.stringify({ links, ...(leaseSeconds !== undefined && { leaseSeconds }) });
    const child = provider.spawn([process.execPath, ...nodeFlags, SERVER_FIXTURE, config], { enter: 'nsenter', stdin: 'pipe' });
    await child.waitForOutput(/^ready$/m, 30_000);
    return new ServerFixture(child);
  }

  async #ask(command: string): Promise<string> {
    const before = this.process.stdout.split('\n').length;
    this.process.child.stdin?.write(`${command}\n`);
    for (let waited = 0; waited < 10_000; waited += 10) {
      const lines = this.process.stdout.split('\n');
      if (lines.length > before) return lines[before - 1] ?? '';
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`DHCP fixture did not answer ${command}; stderr: ${this.process.stderr}`);
  }

  async stats(): Promise<ServerStats> {
    this.#answers += 1;
    return JSON.parse(await this.#ask('stats')) as ServerStats;
  }

  /** "ok", or "error " and what setLinks rejected with. */
  async setLinks(links: readonly DhcpLink[]): Promise<string> {
    return this.#ask(`links ${JSON.stringify(links)}`);
  }

  /** Close the server and wait up to `waitMs` for the process to end on its own; then kill it. Its exit, or undefined if killed. */
  async stop(waitMs = 3000): Promise<ProcessExit | undefined> {
    if (this.process.exit === undefined) this.process.child.stdin?.write('quit\n');
    const exit = await Promise.race([this.process.wait(), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), waitMs))]);
    await this.process.kill('SIGKILL', 0);
    return exit;
  }
}

/**
 * Make the server's socket on `ifname` fail for real, from outside the server process: a copy of
 * its descriptor (pidfd_getfd) is given IP_RECVERR and sent a datagram larger than the link's MTU,
 * which the kernel refuses (EMSGSIZE) and, with IP_RECVERR, queues on the socket's error queue.
 * The socket then polls POLLERR, which libuv reports and raw-socket emits as 'error': the path a
 * socket error takes in the server, whatever its cause. (Taking the link down, or deleting it and
 * making another of the same name, makes no error at all: a raw socket bound to a device stays
 * open, deaf after a delete. `ss -K` would abort it, on kernels with CONFIG_INET_RAW_DIAG.)
 * Run in the provider namespace; `destination` is routed over the link (its client's address).
 */
export async function failLinkSocket(provider: Netns, pid: number, ifname: string, destination: string): Promise<void> {
  await provider.exec(['python3', '-c', FAIL_LINK_SOCKET, String(pid), ifname, destination]);
}

const FAIL_LINK_SOCKET = `
import ctypes, os, socket, sys
pid, ifname, destination = int(sys.argv[1]), sys.argv[2], sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd, SO_BINDTODEVICE, IP_RECVERR = 438, 25, 11
# The process's raw IPPROTO_UDP sockets: in /proc/PID/net/raw, local "port" 0x11.
inodes = {line.split()[9] for line in open(f'/proc/{pid}/net/raw').read().splitlines()[1:] if line.split()[1].endswith(':0011')}
pidfd = os.pidfd_open(pid)
failed = 0
for name in os.listdir(f'/proc/{pid}/fd'):
    try:
        target = os.readlink(f'/proc/{pid}/fd/{name}')
    except OSError:
        continue
    if not (target.startswith('socket:[') and target[8:-1] in inodes):
        continue
    fd = libc.syscall(SYS_pidfd_getfd, pidfd, int(name), 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'pidfd_getfd')
    copy = socket.socket(fileno=fd)
    try:
        if copy.getsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, 16).rstrip(b'\\0').decode() != ifname:
            continue
        copy.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        try:
            copy.sendto(bytes([0x45]) + bytes(3999), (destination, 0))
        except OSError as error:
            if error.errno != 90:  # EMSGSIZE, as meant
                raise
        failed += 1
    finally:
        copy.close()
if failed != 1:
    sys.exit(f'{failed} sockets bound to {ifname} in process {pid}, not one')
`;
