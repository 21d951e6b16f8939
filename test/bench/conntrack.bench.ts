// The agent's conntrack purge (the reaper's dump-and-delete, by the address filter): one call over
// a table of N entries of one client, in a namespace this bench creates and removes. Figures: how
// long the call took, and how far the process's peak resident size rose over that of a call that
// matched nothing, per entry matched (what a match is held as until the dump ends). Needs root.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Netns, RUN_PREFIX_ENV, createHarness } from '../harness/index.js';
import { newRunPrefix } from '../harness/names.js';
import type { BenchResult } from './measure.js';

const SUITE = 'conntrack';
const FIXTURE = fileURLToPath(new URL('../../../dist/test/guest/conntrack/fixtures/conntrack-purge.js', import.meta.url));
const ENTRIES = [40_000];
const CLIENT = '100.64.0.1';
const SERVER = '192.0.2.10';

interface Outcome {
  readonly result?: { readonly scanned: number; readonly deleted: number };
  readonly ms?: number;
  readonly peakKiB?: number;
  readonly error?: { readonly kind: string; readonly message: string };
}

async function purge(ns: Netns): Promise<Required<Pick<Outcome, 'result' | 'ms' | 'peakKiB'>>> {
  const filter = { addresses: [CLIENT], sweep: null };
  const { stdout } = await ns.exec([process.execPath, FIXTURE, 'purge', JSON.stringify(filter)], { enter: 'nsenter', timeoutMs: 120_000 });
  const outcome = JSON.parse(stdout) as Outcome;
  if (outcome.result === undefined || outcome.ms === undefined || outcome.peakKiB === undefined) throw new Error(`conntrack bench: the purge failed: ${stdout.trim()}`);
  return { result: outcome.result, ms: outcome.ms, peakKiB: outcome.peakKiB };
}

/** One UDP datagram from the client to each of `count` ports of the server: an entry each. */
async function fill(ns: Netns, count: number): Promise<void> {
  const script = ['import socket', 's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)', `s.bind(("${CLIENT}", 0))`, `for port in range(1, ${count + 1}): s.sendto(b"x", ("${SERVER}", port))`].join('\n');
  await ns.exec(['python3', '-c', script], { timeoutMs: 120_000 });
}

export async function conntrackBench(): Promise<BenchResult[]> {
  if (process.getuid?.() !== 0) {
    console.warn(`!!! SKIPPING the "${SUITE}" benchmark: it needs root to create network namespaces`);
    return [];
  }
  if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run npm run build`);
  process.env[RUN_PREFIX_ENV] ??= newRunPrefix();
  const harness = createHarness('ctbench');
  try {
    const ns = await harness.namespace('agent');
    const peer = await harness.namespace('peer');
    await harness.veth(ns, 'v0', peer, 'v1');
    await ns.ip(['address', 'add', `${CLIENT}/32`, 'dev', 'v0']);
    await peer.ip(['address', 'add', `${SERVER}/32`, 'dev', 'v1']);
    await ns.ip(['link', 'set', 'v0', 'up']);
    await peer.ip(['link', 'set', 'v1', 'up']);
    await ns.ip(['route', 'add', `${SERVER}/32`, 'dev', 'v0']);
    // Every packet gets an entry once a ruleset uses conntrack; the peer's answers make none.
    await ns.exec(['nft', '-f', '-'], { input: 'table ip ct_bench {\n  chain out { type filter hook output priority 0; ct state new counter; }\n}\n' });
    // The table's size in this namespace is the whole kernel's nf_conntrack_max: the largest case must fit.
    const results: BenchResult[] = [];
    const empty = await purge(ns);
    for (const entries of ENTRIES) {
      await fill(ns, entries);
      const full = await purge(ns);
      if (full.result.deleted !== entries) throw new Error(`conntrack bench: ${entries} entries made, ${full.result.deleted} deleted (nf_conntrack_max too small?)`);
      const name = `purge of ${entries.toLocaleString('en-US')} entries of one client`;
      results.push({ suite: SUITE, name: `${name}: time`, value: full.ms, unit: 'ms', note: 'one dump, then a delete each, on a pool thread' });
      results.push({
        suite: SUITE,
        name: `${name}: peak memory per entry matched`,
        value: Math.round(((full.peakKiB - empty.peakKiB) * 1024) / entries),
        unit: 'bytes',
        note: `peak resident size rose ${full.peakKiB - empty.peakKiB} KiB over an empty purge's; goal < 100 (the library's entry held whole was ~400)`,
      });
    }
    return results;
  } finally {
    await harness.cleanup();
  }
}
