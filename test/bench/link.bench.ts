// Host linking speed: spectrum-link against the Spectrum-style one-process-per-step shell glue
// and against one hand-written `ip -batch`, in the same run, each in a fresh namespace.
import { execFileSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Netns } from '../harness/index.js';
import { LINK_BIN, makeConfigDir } from '../host/link-fixture.js';
import { benchHarness } from './bench-netns.js';
import { type BenchResult, median } from './measure.js';

const SIDE_BY_SIDE = Number(process.env['SPECTRUM_BENCH_LINKS'] ?? 200);
const BULK = Number(process.env['SPECTRUM_BENCH_BULK_LINKS'] ?? 1000);

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Spectrum's start-vmm way: bridge + two taps, every step its own `ip` process. */
function perStepShell(ns: Netns, count: number): number {
  const start = process.hrtime.bigint();
  for (let id = 1; id <= count; id++) {
    const steps = [
      ['link', 'add', `sb${id}`, 'type', 'bridge'],
      ['tuntap', 'add', 'dev', `sc${id}`, 'mode', 'tap', 'vnet_hdr'],
      ['tuntap', 'add', 'dev', `sp${id}`, 'mode', 'tap', 'vnet_hdr'],
      ['link', 'set', `sc${id}`, 'master', `sb${id}`],
      ['link', 'set', `sp${id}`, 'master', `sb${id}`],
      ['link', 'set', `sc${id}`, 'up'],
      ['link', 'set', `sp${id}`, 'up'],
      ['link', 'set', `sb${id}`, 'up'],
    ];
    for (const step of steps) execFileSync('ip', ['-n', ns.name, ...step]);
  }
  return seconds(start);
}

/** The floor for a process-based tool: everything precomputed, one `ip -batch`. */
function oneBatch(ns: Netns, count: number): number {
  const lines: string[] = [];
  for (let id = 1; id <= count; id++) {
    lines.push(
      `link add sb${id} type bridge`,
      `tuntap add dev sc${id} mode tap vnet_hdr`,
      `tuntap add dev sp${id} mode tap vnet_hdr`,
      `link set dev sc${id} master sb${id} up`,
      `link set dev sp${id} master sb${id} up`,
      `link set dev sb${id} up`,
    );
  }
  const start = process.hrtime.bigint();
  execFileSync('ip', ['-n', ns.name, '-batch', '-'], { input: `${lines.join('\n')}\n` });
  return seconds(start);
}

// Where NODE_EXTRA_CA_CERTS is set (as in some development sandboxes), every Node process reads
// and parses that CA bundle before running any code: here that is most of Node's start-up. The
// spectrum-link bin drops the variable in its shebang (it makes no TLS connection); `node -e 0`
// is measured with and without it, to show what Node's start-up costs here.
const EXTRA_CA = process.env['NODE_EXTRA_CA_CERTS'];
const WITHOUT_EXTRA_CA = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'NODE_EXTRA_CA_CERTS'));

/** spectrum-link in the namespace, run as a user runs it (its shebang), wall time including Node's start-up. */
function spectrumLink(ns: Netns, args: readonly string[]): number {
  const start = process.hrtime.bigint();
  execFileSync('nsenter', [`--net=/run/netns/${ns.name}`, '--', LINK_BIN, ...args], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}` } });
  return seconds(start);
}

/** Node's start-up alone: the floor under any figure that includes it. */
function nodeStartup(env: NodeJS.ProcessEnv): number {
  const start = process.hrtime.bigint();
  execFileSync(process.execPath, ['-e', '0'], { stdio: 'ignore', env });
  return seconds(start);
}

export async function linkBench(): Promise<BenchResult[]> {
  const harness = benchHarness('benchlink');
  if (typeof harness === 'string') {
    console.error(`bench link: skipped: ${harness}`);
    return [];
  }
  const results: BenchResult[] = [];
  const perLink = (name: string, totalSeconds: number, count: number, note?: string): void => {
    results.push({ suite: 'link', name, value: (totalSeconds * 1000) / count, unit: 'ms/link', ...(note === undefined ? {} : { note }) });
  };
  const configDir = await makeConfigDir(Math.max(SIDE_BY_SIDE, BULK) + 10);
  try {
    const shellNs = await harness.namespace('shell');
    perLink(`Spectrum-style, one ip per step (${SIDE_BY_SIDE})`, perStepShell(shellNs, SIDE_BY_SIDE), SIDE_BY_SIDE);
    const batchNs = await harness.namespace('batch');
    perLink(`one precomputed ip -batch (${SIDE_BY_SIDE})`, oneBatch(batchNs, SIDE_BY_SIDE), SIDE_BY_SIDE);

    // spectrum-link links only the VMs asked for; `--all` would take every appvm of the dir.
    const vms = Array.from({ length: SIDE_BY_SIDE }, (_, index) => `appvm-${index}`);
    const linkNs = await harness.namespace('link');
    const stateA = `${configDir}.state-a`;
    perLink(`spectrum-link link, ${SIDE_BY_SIDE} VMs in one call`, spectrumLink(linkNs, ['link', ...vms, '--attach', 'none', '--config-dir', configDir, '--state-dir', stateA]), SIDE_BY_SIDE, 'goal: <= ip -batch');
    const rerun = spectrumLink(linkNs, ['link', ...vms, '--attach', 'none', '--config-dir', configDir, '--state-dir', stateA]);
    results.push({ suite: 'link', name: `re-link ${SIDE_BY_SIDE} VMs, nothing to change`, value: rerun * 1000, unit: 'ms' });

    const bulkNs = await harness.namespace('bulk');
    const stateB = `${configDir}.state-b`;
    const bulkVms = Array.from({ length: BULK }, (_, index) => `appvm-${index}`);
    const bulk = spectrumLink(bulkNs, ['link', ...bulkVms, '--attach', 'none', '--config-dir', configDir, '--state-dir', stateB]);
    results.push({ suite: 'link', name: `spectrum-link: ${BULK} connections in one call`, value: bulk * 1000, unit: 'ms', note: 'goal: < 2000, and <= the batch below' });

    // The floor for the bulk figure: the same number of links by one precomputed batch, at equal
    // N (the kernel's cost per link grows with the devices there are), measured after it so that
    // the batch is not favoured by a quieter kernel.
    const bulkBatchNs = await harness.namespace('bulkbatch');
    const bulkBatch = oneBatch(bulkBatchNs, BULK);
    results.push({ suite: 'link', name: `one precomputed ip -batch, ${BULK} links`, value: bulkBatch * 1000, unit: 'ms' });

    // One new VM at a time on a host that already has BULK links: what a VM start costs.
    const singleArgs = (index: number): string[] => ['link', `appvm-${index}`, '--attach', 'none', '--config-dir', configDir, '--state-dir', stateB];
    const singles = [BULK, BULK + 1, BULK + 2, BULK + 3, BULK + 4].map((index) => spectrumLink(bulkNs, singleArgs(index)));
    results.push({ suite: 'link', name: `single link <vm>, host with ${BULK} links (median of 5)`, value: median(singles) * 1000, unit: 'ms', note: 'goal: < 200, includes Node start-up' });
    const startups = Array.from({ length: 5 }, () => nodeStartup(process.env));
    results.push({ suite: 'link', name: 'Node start-up alone, `node -e 0` (median of 5)', value: median(startups) * 1000, unit: 'ms', note: 'as the environment is; the bin itself drops NODE_EXTRA_CA_CERTS' });
    if (EXTRA_CA !== undefined) {
      const cleanStartups = Array.from({ length: 5 }, () => nodeStartup(WITHOUT_EXTRA_CA));
      results.push({ suite: 'link', name: '`node -e 0` without NODE_EXTRA_CA_CERTS (median of 5)', value: median(cleanStartups) * 1000, unit: 'ms' });
    }
    await rm(stateA, { recursive: true, force: true });
    await rm(stateB, { recursive: true, force: true });
  } finally {
    await harness.cleanup();
    await rm(configDir, { recursive: true, force: true });
  }
  return results;
}
