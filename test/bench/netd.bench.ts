// spectrum-netd against the Spectrum-style per-interface shell handler (ip -j | jq, then three
// ip calls), in the same run: hot-plug latency (link announced -> fully configured) and cold
// start with 100 and 1000 links. Everything runs in namespaces this bench creates and removes.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Harness, type Netns, RUN_PREFIX_ENV, createHarness } from '../harness/index.js';
import { AGENT_NODE_FLAGS, percentile } from './measure.js';

export interface LatencyResult {
  readonly suite: string;
  readonly name: string;
  readonly samples: number;
  readonly medianMs: number;
  readonly p99Ms: number;
}

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = `${ROOT}dist/guest/cli.js`;
const PROBE = `${ROOT}dist/test/bench/fixtures/hotplug-probe.js`;
const IFACE = `${ROOT}test/bench/fixtures/spectrum-iface.sh`;
const MONITOR = `${ROOT}test/bench/fixtures/spectrum-monitor.sh`;
const HOTPLUGS = 40;

const hex = (n: number): string => n.toString(16).padStart(2, '0');
const macOf = (role: number, id: number): string => `0a:b3:ec:${hex(role)}:${hex(id >> 8)}:${hex(id & 0xff)}`;

const result = (name: string, values: readonly number[]): LatencyResult => ({
  suite: 'netd',
  name,
  samples: values.length,
  medianMs: percentile(values, 50),
  p99Ms: percentile(values, 99),
});

/** A provider namespace with `links` provider links whose far ends sit in a second namespace. */
async function providerWithLinks(harness: Harness, label: string, links: number): Promise<{ provider: Netns; far: Netns }> {
  const provider = await harness.namespace(`${label}p`);
  const far = await harness.namespace(`${label}f`);
  const lines: string[] = [];
  for (let id = 1; id <= links; id++) {
    lines.push(`link add vm${id} address ${macOf(0x80, id)} type veth peer name c${id} address ${macOf(0, id)} netns ${far.name}`);
  }
  await provider.exec(['ip', '-batch', '-'], { input: `${lines.join('\n')}\n`, enter: 'nsenter', timeoutMs: 120_000 });
  return { provider, far };
}

async function hotplug(provider: Netns, far: Netns, mode: 'agent' | 'spectrum', firstId: number): Promise<number[]> {
  const { stdout } = await provider.exec(['node', PROBE, mode, far.name, String(firstId), String(HOTPLUGS)], { enter: 'nsenter', timeoutMs: 120_000 });
  return JSON.parse(stdout) as number[];
}

async function agentCase(harness: Harness, links: number): Promise<LatencyResult[]> {
  const { provider, far } = await providerWithLinks(harness, `a${links}`, links);
  const started = performance.now();
  const agent = provider.spawn(['node', ...AGENT_NODE_FLAGS, CLI, 'run', '--control-socket', `/tmp/${provider.name}.sock`, '--notify-fd', '1'], { enter: 'nsenter' });
  await agent.waitForOutput(/^\n/, 60_000);
  const coldMs = performance.now() - started;
  const latencies = await hotplug(provider, far, 'agent', links + 1);
  await agent.kill('SIGTERM');
  return [result(`cold start, ${links} links (spectrum-netd, incl. node start)`, [coldMs]), result(`hot-plug with ${links} links (spectrum-netd)`, latencies)];
}

async function spectrumCase(harness: Harness, links: number): Promise<LatencyResult[]> {
  const { provider, far } = await providerWithLinks(harness, `s${links}`, links);
  // Coldplug as mdevd does it: the handler once per existing interface, one after the other.
  const script = `for i in $(seq 1 ${links}); do sh ${IFACE} vm$i; done`;
  const started = performance.now();
  await provider.exec(['sh', '-c', script], { enter: 'nsenter', timeoutMs: 300_000 });
  const coldMs = performance.now() - started;
  const monitor = provider.spawn(['sh', MONITOR, IFACE], { enter: 'nsenter' });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const latencies = await hotplug(provider, far, 'spectrum', links + 1);
  await monitor.kill('SIGKILL', 0);
  return [result(`cold start, ${links} links (Spectrum-style shell handler)`, [coldMs]), result(`hot-plug with ${links} links (Spectrum-style shell handler)`, latencies)];
}

/** The whole suite; sets its own run prefix so the harness accepts its namespaces. */
export async function netdBench(sizes: readonly number[] = [100, 1000]): Promise<LatencyResult[]> {
  for (const path of [CLI, PROBE]) if (!existsSync(path)) throw new Error(`${path} is missing: run npm run build`);
  process.env[RUN_PREFIX_ENV] ??= `snt${randomBytes(3).toString('hex')}-`;
  const harness = createHarness('bench');
  const results: LatencyResult[] = [];
  try {
    for (const links of sizes) {
      results.push(...(await agentCase(harness, links)));
      results.push(...(await spectrumCase(harness, links)));
    }
  } finally {
    await harness.cleanup();
  }
  return results;
}
