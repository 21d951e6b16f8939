// Host linking speed: spectrum-link against the Spectrum-style one-process-per-step shell glue
// and against one hand-written `ip -batch`, in the same run, each in a fresh namespace; and,
// beside them, the floor under any one-shot Node tool (Node's start-up plus only the kernel part).
//
// Fairness: deleting a namespace with thousands of devices keeps the kernel busy (holding RTNL)
// for many seconds after `ip netns del` returns, so every timed case first waits until a probe
// that needs RTNL is quick again. And each device costs more the more devices exist (sysfs is
// shared by all namespaces): by hand, one ip -batch of 1000 links took 0.76 s alone and 1.43 s
// beside 9,000 earlier devices. So every timed case runs alone, in a namespace of its own that is
// deleted before the next case's wait; rounds still alternate which side goes first.
import { execFileSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type Harness, type Netns, trackTempDir } from '../harness/index.js';
import { LINK_BIN, ROOT, makeConfigDir } from '../host/link-fixture.js';
import { benchHarness } from './bench-netns.js';
import { type BenchResult, median } from './measure.js';

const SIDE_BY_SIDE = Number(process.env['SPECTRUM_BENCH_LINKS'] ?? 200);
const BULK = Number(process.env['SPECTRUM_BENCH_BULK_LINKS'] ?? 1000);
/** Rounds of the side-by-side comparison (odd: the median is a round's figure). */
const ROUNDS = 3;
/** A probe (one `ip` process making a bridge) this fast means RTNL is free. */
const QUIET_PROBE_MS = 25;
const QUIET_WAIT_MAX_MS = 90_000;

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** A VM directory `vm` in the config dir with one provider, `provider`, a VM directory too (made where missing). */
async function addVm(configDir: string, vm: string, provider: string): Promise<void> {
  for (const name of [vm, provider]) {
    await mkdir(join(configDir, name, 'blk'), { recursive: true });
    await writeFile(join(configDir, name, 'vmlinux'), '');
    await writeFile(join(configDir, name, 'blk', 'root.img'), '');
  }
  await mkdir(join(configDir, vm, 'providers', 'net'), { recursive: true });
  await writeFile(join(configDir, vm, 'providers', 'net', provider), '');
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

/** Delete what oneBatch made, one device at a time, in one `ip -batch` (as a script would). */
function batchDelete(ns: Netns, count: number): number {
  const lines: string[] = [];
  for (let id = 1; id <= count; id++) lines.push(`link del dev sc${id}`, `link del dev sp${id}`, `link del dev sb${id}`);
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

const FLOOR_BIN = join(ROOT, 'dist', 'test', 'bench', 'node-floor.cjs');

/**
 * The floor under any one-shot Node tool: a Node process (without the CA variable, as the bin
 * runs) that only plans and makes `count` fresh connections' devices through spectrum-link's
 * own planner and route netlink program (test/bench/node-floor.ts).
 */
function nodeFloor(ns: Netns, count: number): number {
  const start = process.hrtime.bigint();
  execFileSync('nsenter', [`--net=/run/netns/${ns.name}`, '--', process.execPath, FLOOR_BIN, String(count)], { stdio: ['ignore', 'ignore', 'inherit'], env: WITHOUT_EXTRA_CA });
  return seconds(start);
}

let probes = 0;

/**
 * Wait until the kernel has finished earlier namespace deletions: a probe that takes RTNL (a
 * bridge made in a scratch namespace; deleting one would itself wait for RCU) is quick twice in
 * a row. Returns the wait.
 */
function kernelQuiet(scratch: Netns): number {
  const start = process.hrtime.bigint();
  let quickInARow = 0;
  while (quickInARow < 2 && seconds(start) * 1000 < QUIET_WAIT_MAX_MS) {
    const probe = process.hrtime.bigint();
    execFileSync('ip', ['-n', scratch.name, 'link', 'add', `quiet${String(++probes)}`, 'type', 'bridge']);
    quickInARow = seconds(probe) * 1000 < QUIET_PROBE_MS ? quickInARow + 1 : 0;
    if (quickInARow < 2) execFileSync('sleep', ['0.2']);
  }
  return seconds(start);
}

/** Node's start-up alone: the floor under any figure that includes it. */
function nodeStartup(env: NodeJS.ProcessEnv): number {
  const start = process.hrtime.bigint();
  execFileSync(process.execPath, ['-e', '0'], { stdio: 'ignore', env });
  return seconds(start);
}

export async function linkBench(): Promise<BenchResult[]> {
  const support = benchHarness('benchlink');
  if (typeof support === 'string') {
    console.error(`bench link: skipped: ${support}`);
    return [];
  }
  await support.cleanup();
  const results: BenchResult[] = [];
  const perLink = (name: string, totalSeconds: number, count: number, note?: string): void => {
    results.push({ suite: 'link', name, value: (totalSeconds * 1000) / count, unit: 'ms/link', ...(note === undefined ? {} : { note }) });
  };
  const configDir = await makeConfigDir(Math.max(SIDE_BY_SIDE, BULK) + 10);
  const states: string[] = [];
  const newState = (label: string): string => {
    const dir = `${configDir}.state-${label}`;
    states.push(dir);
    trackTempDir(dir);
    return dir;
  };
  // The probe's namespace outlives the others, to wait out their deletion at the end.
  const quiet = benchHarness('benchlinkquiet');
  if (typeof quiet === 'string') throw new Error(`bench link: ${quiet}`);
  const scratch = await quiet.namespace('quiet');
  /** Harnesses still holding namespaces: removed at the end, also where a case fails. */
  const open = new Set<Harness>();
  /**
   * One case alone on the kernel: a namespace of its own, made once the kernel is quiet, and
   * deleted afterwards (the next case waits that deletion out), so that no case meets the
   * devices of another. `prepare` runs untimed before the wait; `timed` is measured.
   */
  const alone = async (name: string, timed: (ns: Netns) => number, prepare?: (ns: Netns) => void): Promise<number> => {
    const harness = benchHarness('benchlink');
    if (typeof harness === 'string') throw new Error(`bench link: ${harness}`);
    open.add(harness);
    try {
      const ns = await harness.namespace(name);
      prepare?.(ns);
      kernelQuiet(scratch);
      return timed(ns);
    } finally {
      await harness.cleanup();
      open.delete(harness);
    }
  };
  try {
    perLink(`Spectrum-style, one ip per step (${SIDE_BY_SIDE})`, await alone('shell', (ns) => perStepShell(ns, SIDE_BY_SIDE)), SIDE_BY_SIDE);

    // spectrum-link links only the VMs asked for; `--all` would take every appvm of the dir.
    const vms = Array.from({ length: SIDE_BY_SIDE }, (_, index) => `appvm-${index}`);
    const linkArgs = (stateDir: string, names: readonly string[]): string[] => ['link', ...names, '--attach', 'none', '--config-dir', configDir, '--state-dir', stateDir];
    const batchTimes: number[] = [];
    const linkTimes: number[] = [];
    const ratios: number[] = [];
    const floorTimes: number[] = [];
    const floorRatios: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const runBatch = (): Promise<number> => alone(`batch${round}`, (ns) => oneBatch(ns, SIDE_BY_SIDE));
      const runLink = (): Promise<number> => {
        const state = newState(String(round));
        return alone(`link${round}`, (ns) => spectrumLink(ns, linkArgs(state, vms)));
      };
      const runFloor = (): Promise<number> => alone(`floor${round}`, (ns) => nodeFloor(ns, SIDE_BY_SIDE));
      // Rounds rotate which goes first (the page cache, Node's files and the CPU's state then favour none).
      const sides = [runBatch, runLink, runFloor];
      const times = new Map<() => Promise<number>, number>();
      for (let turn = 0; turn < sides.length; turn++) {
        const side = sides[(round + turn) % sides.length];
        if (side !== undefined) times.set(side, await side());
      }
      const [batch, link, floor] = [runBatch, runLink, runFloor].map((side) => times.get(side) ?? Number.NaN) as [number, number, number];
      batchTimes.push(batch);
      linkTimes.push(link);
      floorTimes.push(floor);
      ratios.push(link / batch);
      floorRatios.push(floor / batch);
    }
    perLink(`one precomputed ip -batch (${SIDE_BY_SIDE}, median of ${ROUNDS})`, median(batchTimes), SIDE_BY_SIDE);
    perLink(`spectrum-link link, ${SIDE_BY_SIDE} VMs in one call (median of ${ROUNDS})`, median(linkTimes), SIDE_BY_SIDE, 'goal: <= ip -batch');
    results.push({
      suite: 'link',
      name: `spectrum-link / ip -batch at ${SIDE_BY_SIDE}, per round (alternating who goes first)`,
      value: median(ratios),
      unit: 'x',
      note: `rounds ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')}; goal: <= 1`,
    });
    perLink(`Node floor: node-floor.cjs, only the kernel part of ${SIDE_BY_SIDE} links (median of ${ROUNDS})`, median(floorTimes), SIDE_BY_SIDE, 'no config, ids or state: under any one-shot Node tool');
    results.push({
      suite: 'link',
      name: `Node floor / ip -batch at ${SIDE_BY_SIDE}, per round`,
      value: median(floorRatios),
      unit: 'x',
      note: `rounds ${floorRatios.map((ratio) => ratio.toFixed(2)).join(', ')}`,
    });

    // Linking again what is linked, then taking it all down: unlink of the provider (every link
    // in one call) against one ip -batch that deletes the same devices, device by device.
    const relinkState = newState('relink');
    let unlinked = 0;
    const rerun = await alone(
      'relink',
      (ns) => {
        const time = spectrumLink(ns, linkArgs(relinkState, vms));
        kernelQuiet(scratch);
        unlinked = spectrumLink(ns, ['unlink', 'netvm', '--state-dir', relinkState]);
        return time;
      },
      (ns) => void spectrumLink(ns, linkArgs(relinkState, vms)),
    );
    results.push({ suite: 'link', name: `re-link ${SIDE_BY_SIDE} VMs, nothing to change`, value: rerun * 1000, unit: 'ms' });
    const deleted = await alone('batchdelete', (ns) => batchDelete(ns, SIDE_BY_SIDE), (ns) => void oneBatch(ns, SIDE_BY_SIDE));
    perLink(`spectrum-link unlink netvm: its ${SIDE_BY_SIDE} links in one call`, unlinked, SIDE_BY_SIDE, 'devices deleted as one device group');
    perLink(`one precomputed ip -batch deleting the same devices one by one (${SIDE_BY_SIDE})`, deleted, SIDE_BY_SIDE);

    // The bulk comparison at equal N, in two rounds that swap who goes first, each side alone.
    const bulkVms = Array.from({ length: BULK }, (_, index) => `appvm-${index}`);
    const bulkTimes: number[] = [];
    const bulkBatchTimes: number[] = [];
    for (let round = 0; round < 2; round++) {
      const runBatch = async (): Promise<void> => void bulkBatchTimes.push(await alone(`bulkbatch${round}`, (ns) => oneBatch(ns, BULK)));
      const runLink = async (): Promise<void> => {
        const state = newState(`bulk${round}`);
        bulkTimes.push(await alone(`bulk${round}`, (ns) => spectrumLink(ns, linkArgs(state, bulkVms))));
      };
      if (round === 0) {
        await runBatch();
        await runLink();
      } else {
        await runLink();
        await runBatch();
      }
    }
    const bulkRatios = bulkTimes.map((time, round) => time / (bulkBatchTimes[round] ?? time));
    results.push({ suite: 'link', name: `spectrum-link: ${BULK} connections in one call (batch first, then link first)`, value: Math.max(...bulkTimes) * 1000, unit: 'ms', note: `goal: < 2000 (the slower of ${bulkTimes.map((time) => Math.round(time * 1000)).join(' and ')})` });
    results.push({ suite: 'link', name: `one precomputed ip -batch, ${BULK} links`, value: (bulkBatchTimes.reduce((sum, time) => sum + time, 0) / bulkBatchTimes.length) * 1000, unit: 'ms', note: `mean of ${bulkBatchTimes.map((time) => Math.round(time * 1000)).join(' and ')}` });
    results.push({
      suite: 'link',
      name: `spectrum-link / ip -batch at ${BULK}, mean of the two rounds`,
      value: bulkRatios.reduce((sum, ratio) => sum + ratio, 0) / bulkRatios.length,
      unit: 'x',
      note: `rounds ${bulkRatios.map((ratio) => ratio.toFixed(2)).join(', ')}; goal: <= 1`,
    });

    // One new VM at a time on a host that already has BULK links: what a VM start costs. Three
    // ways: `--attach none`, which settles every side's mode, so that no recorded link is looked
    // at; a new client of netvm, the provider of the BULK links, with the modes kept (no --attach,
    // as a VM start runs it); and a new client of a provider of its own, sharing nothing with the
    // BULK links, with the modes kept.
    const singleState = newState('single');
    const singleArgs = (vm: string, attach: readonly string[] = []): string[] => ['link', vm, ...attach, '--config-dir', configDir, '--state-dir', singleState];
    const sharing = (index: number): string => `appvm-${BULK + 5 + index}`;
    const solo = (index: number): string => `solo-client-${index}`;
    for (let index = 0; index < 5; index++) await addVm(configDir, solo(index), `solo-provider-${index}`);
    let singles: number[] = [];
    let keptSharing: number[] = [];
    let keptSolo: number[] = [];
    await alone(
      'single',
      (ns) => {
        singles = [0, 1, 2, 3, 4].map((index) => spectrumLink(ns, singleArgs(`appvm-${BULK + index}`, ['--attach', 'none'])));
        keptSharing = [0, 1, 2, 3, 4].map((index) => spectrumLink(ns, singleArgs(sharing(index))));
        keptSolo = [0, 1, 2, 3, 4].map((index) => spectrumLink(ns, singleArgs(solo(index))));
        return 0;
      },
      (ns) => void spectrumLink(ns, linkArgs(singleState, bulkVms)),
    );
    results.push({ suite: 'link', name: `single link <vm> --attach none, host with ${BULK} links (median of 5)`, value: median(singles) * 1000, unit: 'ms', note: 'goal: < 200, includes Node start-up' });
    results.push({ suite: 'link', name: `single link <vm>, modes kept, a new client of the provider of the ${BULK} links (median of 5)`, value: median(keptSharing) * 1000, unit: 'ms', note: 'goal: < 200, includes Node start-up' });
    results.push({ suite: 'link', name: `single link <vm>, modes kept, a new VM sharing nothing with the ${BULK} links (median of 5)`, value: median(keptSolo) * 1000, unit: 'ms', note: 'goal: < 200, includes Node start-up' });
    const startups = Array.from({ length: 5 }, () => nodeStartup(process.env));
    results.push({ suite: 'link', name: 'Node start-up alone, `node -e 0` (median of 5)', value: median(startups) * 1000, unit: 'ms', note: 'as the environment is; the bin itself drops NODE_EXTRA_CA_CERTS' });
    if (EXTRA_CA !== undefined) {
      const cleanStartups = Array.from({ length: 5 }, () => nodeStartup(WITHOUT_EXTRA_CA));
      results.push({ suite: 'link', name: '`node -e 0` without NODE_EXTRA_CA_CERTS (median of 5)', value: median(cleanStartups) * 1000, unit: 'ms' });
    }
  } finally {
    for (const harness of open) await harness.cleanup();
    for (const dir of states) await rm(dir, { recursive: true, force: true });
    await rm(configDir, { recursive: true, force: true });
    // Leave the kernel as quiet as it was found: the next suite should not measure these deletions.
    try {
      const wait = kernelQuiet(scratch);
      results.push({ suite: 'link', name: 'kernel busy deleting the bench namespaces afterwards', value: wait * 1000, unit: 'ms', note: 'waited out before the next suite' });
    } finally {
      await quiet.cleanup();
    }
  }
  return results;
}
