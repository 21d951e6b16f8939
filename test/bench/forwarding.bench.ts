// Forwarding cost of the provider firewall: iperf3 from one client through the provider to the
// "internet" namespace, with the full ruleset holding 1000 clients versus masquerading alone,
// alternated in the same run; plus how long reconciling 1000 clients takes. Needs root.
import { readConntrackMax } from '../../guest/firewall/conntrack-max.js';
import { firewallCounters, reconcileFirewall, removeFirewall } from '../../guest/firewall/nft.js';
import { defaultClientFlowLimit, defaultClientNewFlowRate } from '../../guest/firewall/table-settings.js';
import type { FirewallModel } from '../../guest/firewall/model.js';
import { clientIpTextOf } from '../../shared/client-ip.js';
import { clientId } from '../../shared/client-id.js';
import { PROVIDER_LINK_GROUP } from '../../shared/scheme.js';
import { type Netns, RUN_PREFIX_ENV, createHarness } from '../harness/index.js';
import { newRunPrefix } from '../harness/names.js';
import { INTERNET_IP, UPLINK, makeProviderWorld, providerIfOf } from '../guest/firewall/provider-world.js';
import type { BenchResult } from './measure.js';

const SUITE = 'forward';
const CLIENTS = 1000;
// Throughput on a 2-core VM swings by a third between rounds: enough rounds for a stable median.
const ROUNDS = Number(process.env['SPECTRUM_BENCH_FORWARDING_ROUNDS'] ?? 11);
const SECONDS = 3;
const MASQUERADE_ONLY = `table ip bench_masquerade {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname "${UPLINK}" masquerade\n\t}\n}\n`;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Received bits per second from `iperf3 -J` output. */
function receivedBitsPerSecond(json: string): number {
  const parsed: unknown = JSON.parse(json);
  const end = isRecord(parsed) ? parsed['end'] : undefined;
  const sum = isRecord(end) ? end['sum_received'] : undefined;
  const bits = isRecord(sum) ? sum['bits_per_second'] : undefined;
  if (typeof bits !== 'number') throw new Error(`iperf3 printed no end.sum_received.bits_per_second: ${json.slice(0, 300)}`);
  return bits;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function timed(operation: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await operation();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const result = (name: string, value: number, rounds: number, unit: string): BenchResult => ({ suite: SUITE, name, value, unit, note: `${rounds} rounds` });

export async function forwardingBench(): Promise<BenchResult[]> {
  if (process.getuid?.() !== 0) {
    console.warn(`!!! SKIPPING the "${SUITE}" benchmark: it needs root to create network namespaces`);
    return [];
  }
  process.env[RUN_PREFIX_ENV] ??= newRunPrefix();
  const harness = createHarness('fwbench');
  try {
    const world = await makeProviderWorld(harness, [1]);
    const provider = world.provider;
    const client = world.clients[0];
    if (client === undefined) throw new Error('no client in the benchmark world');
    // The flow cap and rate the agent would derive on this machine (only new flows meet them).
    const conntrackMax = readConntrackMax() ?? 0;
    const netns = { netns: provider.name, clientFlowLimit: defaultClientFlowLimit(conntrackMax), clientNewFlowRate: defaultClientNewFlowRate(conntrackMax) };
    // As the agent does: the client's link in the group the table guards, so each of its packets
    // also meets the guard's set lookup.
    await provider.ip(['link', 'set', 'dev', providerIfOf(clientId(1)), 'group', String(PROVIDER_LINK_GROUP)]);
    // One real link plus 999 links whose interfaces do not exist: only set sizes matter.
    const model: FirewallModel = world.model({
      providerLinks: Array.from({ length: CLIENTS }, (_, index) => {
        const id = clientId(index + 1);
        return { ifname: providerIfOf(id), clientIp: clientIpTextOf(id) };
      }),
      allowedPairs: Array.from({ length: 50 }, (_, index) => ({ from: clientIpTextOf(clientId(index + 2)), to: clientIpTextOf(clientId(index + 3)) })),
    });

    const create = await timed(() => reconcileFirewall(model, netns));
    const noop = await timed(() => reconcileFirewall(model, netns));
    const oneLink = await timed(() => reconcileFirewall({ ...model, providerLinks: model.providerLinks.slice(0, -1) }, netns));
    await reconcileFirewall(model, netns);

    const server = world.internet.spawn(['iperf3', '-s', '-B', INTERNET_IP, '--forceflush']);
    await server.waitForOutput(/Server listening/);
    const iperf = async (): Promise<number> =>
      receivedBitsPerSecond((await client.ns.exec(['iperf3', '-c', INTERNET_IP, '-t', String(SECONDS), '-J'], { timeoutMs: (SECONDS + 15) * 1000 })).stdout);
    const useMasqueradeOnly = async (ns: Netns): Promise<void> => {
      await removeFirewall(netns);
      await ns.exec(['nft', '-f', '-'], { input: MASQUERADE_ONLY });
    };
    const useFirewall = async (ns: Netns): Promise<void> => {
      await ns.exec(['nft', '-f', '-'], { input: 'add table ip bench_masquerade\ndelete table ip bench_masquerade\n' });
      await reconcileFirewall(model, netns);
    };

    // Other work on the machine moves iperf3 figures by tens of percent between seconds: warm up
    // once, alternate which configuration goes first, and compare each round's pair.
    await useFirewall(provider);
    await iperf();
    const masqueradeRates: number[] = [];
    const firewallRates: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['masquerade', 'firewall'] as const) : (['firewall', 'masquerade'] as const);
      for (const configuration of order) {
        if (configuration === 'masquerade') {
          await useMasqueradeOnly(provider);
          masqueradeRates.push(await iperf());
        } else {
          await useFirewall(provider);
          firewallRates.push(await iperf());
        }
      }
    }
    await useFirewall(provider);
    const counters = await firewallCounters(netns);
    await server.kill('SIGTERM', 1000);

    const masquerade = median(masqueradeRates);
    const firewall = median(firewallRates);
    const ratio = median(firewallRates.map((rate, index) => rate / (masqueradeRates[index] ?? Number.NaN)));
    const gbit = (bits: number): string => `${(bits / 1e9).toFixed(2)} Gbit/s`;
    console.log(
      `forward: iperf3 ${SECONDS}s x ${ROUNDS} alternating rounds; masquerade only ${masqueradeRates.map(gbit).join(', ')}; ` +
        `full ruleset with ${CLIENTS} clients ${firewallRates.map(gbit).join(', ')}; median of per-round ratios ${ratio.toFixed(3)}, ratio of medians ${(firewall / masquerade).toFixed(3)} (goal >= 0.9)`,
    );
    console.log(
      `forward: reconcile ${CLIENTS} clients: create ${(create * 1000).toFixed(1)} ms, unchanged ${(noop * 1000).toFixed(1)} ms, ` +
        `one link removed ${(oneLink * 1000).toFixed(1)} ms; drops during the run ${JSON.stringify(counters)}`,
    );
    return [
      result('iperf3 masquerade only', masquerade, ROUNDS, 'bit/s'),
      result(`iperf3 full ruleset, ${CLIENTS} clients`, firewall, ROUNDS, 'bit/s'),
      result('throughput ratio full/masquerade (median of rounds)', ratio, ROUNDS, 'ratio'),
      result(`reconcile create (${CLIENTS} clients)`, 1 / create, 1, 'ops/s'),
      result(`reconcile unchanged (${CLIENTS} clients)`, 1 / noop, 1, 'ops/s'),
      result(`reconcile one link removed (${CLIENTS} clients)`, 1 / oneLink, 1, 'ops/s'),
    ];
  } finally {
    await harness.cleanup();
  }
}
