// DNS forwarding throughput: spectrum-net's forwarder versus dnsmasq as a forwarder, in the same
// namespaces and the same run. Load: dnsperf (Debian package dnsperf) in the client namespace,
// a bounded number of queries with a bounded window of outstanding ones, against the gateway
// address; both forwarders relay to the same dnsmasq upstream in the "internet" namespace.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHarness, descendantsOf, type Netns, type NetnsProcess } from '../harness/index.js';
import { DNSMASQ_BASE, ForwarderProcess, NUMBERED_NAMES, UPSTREAM_A, buildTopology, eventually, startUpstream } from '../guest/dns/dns-topology.js';
import { AGENT_NODE_FLAGS, type BenchResult, median } from './measure.js';

const QUERIES_PER_ROUND = 40_000;
const OUTSTANDING = 200;
/** Alternating rounds: single rounds on this 2-core machine swing by a third or more. */
const ROUNDS = 7;
const ROUND_TIME_LIMIT_S = 15;
const SUITE = 'dns';

interface DnsperfFigures {
  readonly qps: number;
  readonly completed: number;
  readonly lost: number;
}

async function dnsperf(client: Netns, server: string, datafile: string): Promise<DnsperfFigures> {
  const { stdout } = await client.exec(
    ['dnsperf', '-s', server, '-d', datafile, '-n', '1', '-l', String(ROUND_TIME_LIMIT_S), '-q', String(OUTSTANDING), '-t', '2', '-c', '4'],
    { timeoutMs: (ROUND_TIME_LIMIT_S + 10) * 1000 },
  );
  const number = (pattern: RegExp): number => Number(pattern.exec(stdout)?.[1] ?? Number.NaN);
  const figures = {
    qps: number(/Queries per second:\s+([\d.]+)/),
    completed: number(/Queries completed:\s+(\d+)/),
    lost: number(/Queries lost:\s+(\d+)/),
  };
  if (!Number.isFinite(figures.qps)) throw new Error(`dnsperf printed no figures:\n${stdout}`);
  return figures;
}

function dnsmasqForwarder(provider: Netns, cacheSize: number): NetnsProcess {
  return provider.spawn(
    [
      ...DNSMASQ_BASE,
      `--server=${UPSTREAM_A}`,
      '--listen-address=169.254.0.1',
      '--bind-interfaces',
      `--cache-size=${cacheSize}`,
      '--dns-forward-max=4096',
    ],
    { pidns: true },
  );
}

/** CPU time a process has used so far, user and system, in seconds (proc(5): utime, stime). */
function cpuSeconds(pid: number): { user: number; system: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  const ticksPerSecond = 100; // USER_HZ on Linux
  return { user: Number(fields[11]) / ticksPerSecond, system: Number(fields[12]) / ticksPerSecond };
}

/** The process named `comm` among `root` and its descendants (dnsmasq runs under unshare). */
function findServer(root: number, comm: string): number {
  for (const pid of [root, ...descendantsOf(root).map((child) => child.pid)]) {
    if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) return pid;
  }
  throw new Error(`no ${comm} process under ${root}`);
}

/** The forwarders compared, each started and stopped around its rounds. */
interface Contender {
  readonly name: string;
  /**
   * `pid`: the forwarder process itself, whose CPU time each round is read from; `counters`:
   * its own counts, where it has them.
   */
  start(): Promise<{ pid: number; stop(): Promise<void>; counters?: () => Promise<Record<string, unknown>> }>;
}

export async function dnsBench(): Promise<BenchResult[]> {
  if (process.getuid?.() !== 0) {
    console.warn('dns bench skipped: needs root for network namespaces');
    return [];
  }
  process.env['SPECTRUM_TEST_PREFIX'] ??= `snt${randomBytes(4).toString('hex')}-`;
  const harness = createHarness('dnsbench');
  const workDir = mkdtempSync(join(tmpdir(), 'spectrum-dnsbench-'));
  try {
    const net = await buildTopology(harness);
    startUpstream(net.internet, UPSTREAM_A, 'A');
    const datafile = join(workDir, 'queries');
    writeFileSync(datafile, Array.from({ length: QUERIES_PER_ROUND }, (_, i) => `n${i % NUMBERED_NAMES}.test.example A\n`).join(''));
    await eventually('the upstream resolver', async () => {
      const result = await net.provider.exec(['dig', `@${UPSTREAM_A}`, '+time=1', '+tries=1', '+short', 'n0.test.example'], { allowFailure: true });
      return result.stdout.includes('203.0.113.100');
    });
    const servedBy = async (server: string): Promise<void> => {
      await eventually(`a forwarder on ${server}`, async () => {
        const result = await net.client.exec(['dig', `@${server}`, '+time=1', '+tries=1', '+short', 'n0.test.example'], { allowFailure: true });
        return result.stdout.includes('203.0.113.100');
      });
    };

    const contenders: Contender[] = [
      {
        name: 'spectrum-net forwarder',
        start: async () => {
          const forwarder = await ForwarderProcess.start(
            net.provider,
            { upstreams: [UPSTREAM_A], ratePerClient: { perSecond: 1e9, burst: 1e9 } },
            { ...process.env, SPECTRUM_LOG_LEVEL: 'warn' },
            AGENT_NODE_FLAGS,
          );
          await servedBy('169.254.0.1');
          return { pid: findServer(forwarder.process.pid, 'node'), stop: async () => void (await forwarder.process.kill()), counters: () => forwarder.counters() };
        },
      },
      {
        name: 'dnsmasq forwarder (--cache-size=0)',
        start: async () => {
          const dnsmasq = dnsmasqForwarder(net.provider, 0);
          await servedBy('169.254.0.1');
          return { pid: findServer(dnsmasq.pid, 'dnsmasq'), stop: async () => void (await dnsmasq.kill()) };
        },
      },
    ];

    // Rounds alternate between contenders so a slow moment of the machine hits both.
    const rates = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
    const losses = new Map<string, number>(contenders.map((c) => [c.name, 0]));
    // Microseconds of the forwarder's own CPU time per answered query, user and system apart.
    const cpu = new Map<string, { user: number[]; system: number[] }>(contenders.map((c) => [c.name, { user: [], system: [] }]));
    // What our forwarder did about queries the upstream dropped (its socket buffer overflows when
    // the whole window arrives at once): resent, or answered SERVFAIL after every try.
    const recovery = { retransmits: 0, failed: 0 };
    for (let round = 0; round < ROUNDS; round++) {
      for (const contender of contenders) {
        const running = await contender.start();
        try {
          const before = cpuSeconds(running.pid);
          const figures = await dnsperf(net.client, '169.254.0.1', datafile);
          const after = cpuSeconds(running.pid);
          rates.get(contender.name)?.push(figures.qps);
          cpu.get(contender.name)?.user.push(((after.user - before.user) * 1e6) / figures.completed);
          cpu.get(contender.name)?.system.push(((after.system - before.system) * 1e6) / figures.completed);
          losses.set(contender.name, (losses.get(contender.name) ?? 0) + figures.lost);
          const counters = await running.counters?.();
          if (counters !== undefined) {
            recovery.retransmits += Number(counters['retransmits'] ?? 0);
            recovery.failed += Number(counters['failed'] ?? 0);
          }
        } finally {
          await running.stop();
        }
      }
    }
    // The ceiling: the upstream asked directly from the provider namespace, no forwarder.
    const direct: number[] = [];
    for (let round = 0; round < ROUNDS; round++) direct.push((await dnsperf(net.provider, UPSTREAM_A, datafile)).qps);

    const results: BenchResult[] = contenders.map((c) => ({
      suite: SUITE,
      name: `${c.name}, lost ${losses.get(c.name) ?? 0}`,
      value: median(rates.get(c.name) ?? []),
      unit: 'queries/s',
      note: `median of ${ROUNDS} rounds of ${QUERIES_PER_ROUND}`,
    }));
    for (const contender of contenders) {
      const { user, system } = cpu.get(contender.name) ?? { user: [], system: [] };
      results.push({
        suite: SUITE,
        name: `${contender.name}: its CPU time per query`,
        value: median(user) + median(system),
        unit: 'us',
        note: `user ${median(user).toFixed(1)} + system ${median(system).toFixed(1)} us, medians of ${user.length} rounds`,
      });
    }
    results.push({
      suite: SUITE,
      name: `${contenders[0]?.name ?? ''}: queries resent after a lost datagram`,
      value: recovery.retransmits,
      unit: 'queries',
      note: `over all rounds; ${recovery.failed} answered SERVFAIL after every try`,
    });
    results.push({ suite: SUITE, name: 'upstream dnsmasq asked directly (ceiling)', value: median(direct), unit: 'queries/s', note: `median of ${ROUNDS} rounds` });
    // The goal's figure: each round's spectrum-net rate over the dnsmasq rate of the same round
    // (run back to back), whose median a slow moment of the machine skews least.
    const [ours, theirs] = contenders.map((c) => rates.get(c.name) ?? []);
    if (ours !== undefined && theirs !== undefined) {
      const ratios = ours.map((rate, round) => rate / (theirs[round] ?? Number.NaN)).filter(Number.isFinite);
      results.push({ suite: SUITE, name: 'spectrum-net / dnsmasq, paired rounds', value: median(ratios), unit: 'ratio', note: `median of ${ratios.length} rounds (${ratios.map((r) => r.toFixed(2)).join(', ')}); goal >= 1` });
    }
    return results;
  } finally {
    await harness.cleanup();
    rmSync(workDir, { recursive: true, force: true });
  }
}
