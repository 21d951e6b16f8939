/**
 * Boot storm: N client namespaces start busybox udhcpc at the same moment against one provider
 * namespace. Measured for spectrum-net's DHCP server and, on the same topology in the same run,
 * dnsmasq with a static host entry per client. Reports the time until every client holds a lease,
 * failures, and the server's peak RSS. N from SPECTRUM_DHCP_STORM_N (comma list; default
 * 50,200,500,1000). Needs root; everything lives in namespaces named with this bench's own prefix.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ClientId, clientId } from '../../shared/client-id.js';
import { clientIpTextOf } from '../../shared/client-ip.js';
import { clientMacOf } from '../../shared/link-mac.js';
import { RUN_PREFIX_ENV } from '../harness/names.js';
import type { Netns } from '../harness/netns.js';
import { NETNS_RUN_DIR } from '../harness/process-registry.js';
import { AGENT_NODE_FLAGS, median } from './measure.js';

export interface StormResult {
  readonly server: 'spectrum-net' | 'dnsmasq';
  readonly clients: number;
  readonly failures: number;
  /** All clients released at once -> last udhcpc exited with its lease. */
  readonly allLeasedMs: number;
  /** Starting the N clients until all are blocked at the gate, before the clock starts. */
  readonly spawnMs: number;
  /** Server view: first DISCOVER seen -> last ACK sent (spectrum-net only). */
  readonly serverWindowMs?: number;
  /**
   * Server view: first DISCOVER of the first client -> first DISCOVER of the last one. How long the
   * clients themselves take to start on this machine, whatever the server does.
   */
  readonly discoverSpreadMs?: number;
  /** Server view: a client's first DISCOVER -> its ACK, median over the clients. */
  readonly exchangeMedianMs?: number;
  readonly peakRssKiB: number;
  /** (peak RSS from idle through the storm - RSS when idle, same process) / clients. */
  readonly bytesPerClient: number;
  /** Before the storm: (peak RSS while taking the N links - RSS when idle) / N (spectrum-net only). */
  readonly bytesPerLinkServed?: number;
}

const DEFAULT_SIZES = [50, 200, 500, 1000];
/** busybox-static (scripts/setup installs it): its udhcpc runs its own applets as scripts in-process. */
const BUSYBOX = '/bin/busybox';

function sizes(): number[] {
  const wanted = process.env['SPECTRUM_DHCP_STORM_N'];
  if (wanted === undefined || wanted === '') return DEFAULT_SIZES;
  return wanted.split(',').map((part) => Number(part.trim())).filter((n) => Number.isInteger(n) && n > 0 && n <= 65534);
}

/** VmRSS (now) or VmHWM (peak since start or since the last resetPeak) of a process, in KiB. */
function rssKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (match === null) throw new Error(`no ${field} for process ${pid}`);
  return Number(match[1]);
}

/** Reset a process's VmHWM to its current RSS (proc(5), clear_refs "5"). */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

async function settle<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([promise, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms).unref())]);
}

export async function dhcpStormBench(): Promise<StormResult[]> {
  if (process.getuid?.() !== 0) {
    console.warn('dhcp-storm: skipped (needs root for network namespaces)');
    return [];
  }
  // Standalone: this bench names its own run so its namespaces are recognisably its own.
  if ((process.env[RUN_PREFIX_ENV] ?? '') === '') process.env[RUN_PREFIX_ENV] = `snt${randomBytes(3).toString('hex')}-`;
  // Loaded after the prefix is set: the harness reads it.
  const { createHarness } = await import('../harness/index.js');
  const { sweepRunPrefixSync } = await import('../harness/process-registry.js');
  const { buildTopology } = await import('../guest/dhcp/dhcp-topology.js');
  const { ServerFixture } = await import('../guest/dhcp/dhcp-server-fixture.js');
  const prefix = process.env[RUN_PREFIX_ENV] ?? '';
  const sweep = (): void => void sweepRunPrefixSync(prefix);
  process.on('exit', sweep);

  const results: StormResult[] = [];
  try {
    // Memory per client: each server's peak RSS from the moment it is idle (started, warmed up,
    // nothing served) through the storm, less its RSS at that moment, in the same process. Other
    // baselines mislead: the same server started alike differs by a megabyte or two from one
    // process to the next, and a peak since start is mostly the start's own.
    for (const n of sizes()) {
      const harness = createHarness('storm');
      const ids: ClientId[] = Array.from({ length: n }, (_, index) => clientId(index + 1));
      const lock = join(tmpdir(), `${harness.prefix}storm.lock`);
      try {
        writeFileSync(lock, '');
        const setupStart = Date.now();
        const topology = await buildTopology(harness, ids, { concurrency: 32 });
        console.warn(`dhcp-storm: N=${n} topology built in ${Date.now() - setupStart} ms`);

        const storm = async (): Promise<{ failures: number; allLeasedMs: number; spawnMs: number }> => {
          // Spawning a thousand processes takes seconds on two cores: every client first blocks on
          // a shared flock that a gate process holds, and all are released at once. What runs
          // after the gate opens is what the clients cost these two cores, so it is the client
          // alone: flock execs udhcpc without forking, and the script is busybox's own `true`
          // applet, which udhcpc runs in-process (a /bin/true costs a fork and exec per call).
          // All clients share one PID namespace (so nothing they fork outlives the bench): one
          // per client made tearing the namespaces down a third of the storm's CPU.
          const gate = spawn('flock', ['-x', lock, 'sh', '-c', 'echo locked; read _'], { stdio: ['pipe', 'pipe', 'ignore'] });
          const gateClosed = new Promise((resolve) => gate.once('exit', resolve));
          await new Promise((resolve) => gate.stdout.once('data', resolve));
          const spawnStart = performance.now();
          const names = ids.map((id) => (topology.clients.get(id) as Netns).name);
          const clients = topology.provider.spawn(
            ['sh', '-c', STORM_SCRIPT, 'storm', NETNS_RUN_DIR, lock, BUSYBOX, ...names],
            { pidns: true, enter: 'nsenter' },
          );
          const exits = new Map<string, number>();
          let allReported: () => void = () => undefined;
          const reported = new Promise<void>((resolve) => (allReported = resolve));
          let pending = '';
          clients.child.stdout?.on('data', (chunk: string) => {
            const lines = (pending + chunk).split('\n');
            pending = lines.pop() ?? '';
            for (const line of lines) {
              const [name, code] = line.split(' ');
              if (name !== undefined && code !== undefined) exits.set(name, Number(code));
            }
            if (exits.size === n) allReported();
          });
          await waitForBlockedLocks(lock, n, 10_000 + n * 10);
          const spawnMs = performance.now() - spawnStart;
          const start = performance.now();
          gate.stdin.end('\n');
          await settle(reported, 60_000);
          const allLeasedMs = performance.now() - start;
          await gateClosed;
          await clients.kill('SIGKILL', 0);
          const failures = names.filter((name) => exits.get(name) !== 0).length;
          if (failures > 0) {
            const codes = new Map<string, number>();
            for (const name of names) {
              const code = exits.has(name) ? `exit ${String(exits.get(name))}` : 'no result';
              if (exits.get(name) !== 0) codes.set(code, (codes.get(code) ?? 0) + 1);
            }
            console.warn(`dhcp-storm: N=${n}: ${failures} clients failed:`, [...codes]);
          }
          return { failures, allLeasedMs, spawnMs };
        };

        // spectrum-net, on the topology exactly as the agent builds it: started (and warmed up)
        // with no link, then given the N links, as the agent does when it finds them.
        const server = await ServerFixture.start(topology.provider, [], undefined, AGENT_NODE_FLAGS);
        const pid = server.process.pid;
        const idleKiB = rssKiB(pid, 'VmRSS');
        resetPeak(pid);
        await server.setLinks(topology.links);
        const servingKiB = rssKiB(pid, 'VmHWM');
        const ours = await storm();
        // Read before asking for the leases: printing a thousand of them as JSON costs the
        // server a few transient megabytes that are the question's, not the storm's.
        const peakKiB = rssKiB(pid, 'VmHWM');
        const stats = await server.stats();
        await server.stop();
        const bound = stats.leases.filter((lease) => lease.state === 'bound');
        const firstSeen = Math.min(...bound.map((lease) => lease.firstSeen));
        const lastAck = Math.max(...bound.map((lease) => lease.lastRenewed ?? 0));
        const lastFirstSeen = Math.max(...bound.map((lease) => lease.firstSeen));
        const exchanges = bound.map((lease) => (lease.lastRenewed ?? 0) - lease.firstSeen);
        results.push({
          server: 'spectrum-net',
          clients: n,
          failures: Math.max(ours.failures, n - bound.length),
          allLeasedMs: Math.round(ours.allLeasedMs),
          spawnMs: Math.round(ours.spawnMs),
          serverWindowMs: bound.length > 0 ? lastAck - firstSeen : 0,
          discoverSpreadMs: bound.length > 0 ? lastFirstSeen - firstSeen : 0,
          exchangeMedianMs: median(exchanges),
          peakRssKiB: peakKiB,
          bytesPerClient: Math.round(((peakKiB - idleKiB) * 1024) / n),
          bytesPerLinkServed: Math.round(((servingKiB - idleKiB) * 1024) / n),
        });

        // dnsmasq needs an address from the served range on every link to serve it at all.
        const batch = join(tmpdir(), `${harness.prefix}dnsmasq-addresses.batch`);
        writeFileSync(batch, `${topology.links.map((link) => `address add 100.64.255.254/16 dev ${link.ifname} noprefixroute`).join('\n')}\n`);
        await topology.provider.ip(['-batch', batch], { timeoutMs: 300_000 });
        rmSync(batch, { force: true });
        const hosts = join(tmpdir(), `${harness.prefix}dnsmasq.hosts`);
        const dnsmasq = topology.provider.spawn(dnsmasqArgv(hosts, ids), { enter: 'nsenter' });
        for (let waited = 0; !/DHCP, static leases only/.test(dnsmasq.stderr) && waited < 10_000; waited += 20) {
          if (dnsmasq.exit !== undefined) throw new Error(`dnsmasq exited: ${dnsmasq.stderr}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        const dnsmasqIdle = rssKiB(dnsmasq.pid, 'VmRSS');
        resetPeak(dnsmasq.pid);
        const theirs = await storm();
        const dnsmasqRss = rssKiB(dnsmasq.pid, 'VmHWM');
        await dnsmasq.kill('SIGTERM');
        results.push({
          server: 'dnsmasq',
          clients: n,
          failures: theirs.failures,
          allLeasedMs: Math.round(theirs.allLeasedMs),
          spawnMs: Math.round(theirs.spawnMs),
          peakRssKiB: dnsmasqRss,
          bytesPerClient: Math.round(((dnsmasqRss - dnsmasqIdle) * 1024) / n),
        });
      } finally {
        rmSync(lock, { force: true });
        rmSync(join(tmpdir(), `${harness.prefix}dnsmasq.hosts`), { force: true });
        await fastCleanup(harness.prefix, ids);
        await harness.cleanup();
      }
    }
  } finally {
    sweep();
    process.off('exit', sweep);
  }
  return results;
}

/**
 * The storm's clients, all in one PID namespace: $1 the namespaces' directory, $2 the gate's lock,
 * $3 busybox, then the client namespaces. Prints "<namespace> <udhcpc's exit code>" per client.
 */
const STORM_SCRIPT = `dir=$1 lock=$2 busybox=$3; shift 3
for ns; do
  (nsenter --net="$dir/$ns" flock --shared --no-fork "$lock" "$busybox" udhcpc -f -q -n -t 10 -T 1 -i eth0 -s true >/dev/null 2>&1
   echo "$ns $?") &
done
wait`;

/** Wait until `count` processes are blocked on the lock (proc(5), /proc/locks: "->" lines). */
async function waitForBlockedLocks(lock: string, count: number, timeoutMs: number): Promise<void> {
  const inode = `:${statSync(lock).ino} `;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const blocked = readFileSync('/proc/locks', 'utf8').split('\n').filter((line) => line.includes('->') && line.includes(inode)).length;
    if (blocked >= count) return;
    if (Date.now() > deadline) throw new Error(`only ${blocked} of ${count} storm clients reached the gate in ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function dnsmasqArgv(hostsFile: string, ids: readonly ClientId[]): string[] {
  writeFileSync(hostsFile, ids.map((id) => `${clientMacOf(id).toLowerCase()},${clientIpTextOf(id)}`).join('\n') + '\n');
  return [
    'dnsmasq',
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--leasefile-ro',
    '--dhcp-authoritative',
    '--except-interface=lo',
    '--dhcp-range=100.64.0.0,static,255.255.0.0,1h',
    `--dhcp-hostsfile=${hostsFile}`,
    '--dhcp-option=option:router,169.254.0.1',
    '--dhcp-option=option:dns-server,169.254.0.1',
    '--dhcp-option=121,169.254.0.1/32,0.0.0.0,0.0.0.0/0,169.254.0.1',
    '--log-facility=-',
    '--quiet-dhcp',
    '--user=root',
  ];
}

/**
 * Delete the client namespaces in one `ip -batch` (the harness deletes one `ip` process at a time,
 * minutes for a thousand); the harness then only removes what is left. The clients have exited.
 */
async function fastCleanup(harnessPrefix: string, ids: readonly ClientId[]): Promise<void> {
  const { execFileSync } = await import('node:child_process');
  const { assertOwnedNamespace } = await import('../harness/names.js');
  const names = ids.map((id) => `${harnessPrefix}c${id}`);
  names.forEach(assertOwnedNamespace);
  const file = join(tmpdir(), `${harnessPrefix}delete.batch`);
  writeFileSync(file, `${names.map((name) => `netns delete ${name}`).join('\n')}\n`);
  try {
    execFileSync('ip', ['-force', '-batch', file], { stdio: 'ignore' });
  } catch {
    // Whatever is left, the harness cleanup removes one by one.
  } finally {
    rmSync(file, { force: true });
  }
}
