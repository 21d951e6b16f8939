import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { codecBench } from './codec.bench.js';
import { conntrackBench } from './conntrack.bench.js';
import { dhcpStormBench } from './dhcp-storm.bench.js';
import { dnsBench } from './dns.bench.js';
import { forwardingBench } from './forwarding.bench.js';
import { linkBench } from './link.bench.js';
import type { BenchResult } from './measure.js';
import { netdBench } from './netd.bench.js';

// `npm run bench [suite...]`: every suite (or the named ones), a table on stdout and the same
// figures as JSON in dist/bench/results.json. Suites needing root say so and are skipped.
const suites: Record<string, () => Promise<BenchResult[]> | BenchResult[]> = {
  codec: codecBench,
  link: linkBench,
  forwarding: forwardingBench,
  netd: async () =>
    (await netdBench()).flatMap((latency) => [
      { suite: latency.suite, name: `${latency.name}, median`, value: latency.medianMs, unit: 'ms', note: `${latency.samples} samples` },
      { suite: latency.suite, name: `${latency.name}, p99`, value: latency.p99Ms, unit: 'ms' },
    ]),
  dns: dnsBench,
  conntrack: conntrackBench,
  dhcp: async () => {
    const rows = await dhcpStormBench();
    const results: BenchResult[] = rows.flatMap((row) => {
      const name = `boot storm, ${row.server}, N=${row.clients}`;
      const serverView =
        row.serverWindowMs === undefined
          ? ''
          : `; server saw: first to last DISCOVER ${row.discoverSpreadMs ?? 0} ms, DISCOVER to ACK median ${row.exchangeMedianMs ?? 0} ms, first DISCOVER to last ACK ${row.serverWindowMs} ms`;
      return [
        { suite: 'dhcp', name: `${name}: all leased`, value: row.allLeasedMs, unit: 'ms', note: `${row.failures} failures${serverView}` },
        { suite: 'dhcp', name: `${name}: peak RSS`, value: row.peakRssKiB, unit: 'KiB', note: `${row.bytesPerClient} bytes/client over the idle server, same process${row.bytesPerLinkServed === undefined ? '' : `; ${row.bytesPerLinkServed} bytes/link serving before the storm`}` },
      ];
    });
    // What each further client costs: the least-squares slope of the peak RSS growth over the
    // sizes run, which leaves out every fixed cost (code, compiled code, heap reserve) whatever
    // its size and is steadier than any two sizes.
    for (const server of ['spectrum-net', 'dnsmasq'] as const) {
      const points = rows.filter((row) => row.server === server).map((row) => ({ x: row.clients, y: row.bytesPerClient * row.clients }));
      if (new Set(points.map((point) => point.x)).size < 2) continue;
      const meanX = points.reduce((sum, point) => sum + point.x, 0) / points.length;
      const meanY = points.reduce((sum, point) => sum + point.y, 0) / points.length;
      const slope =
        points.reduce((sum, point) => sum + (point.x - meanX) * (point.y - meanY), 0) / points.reduce((sum, point) => sum + (point.x - meanX) ** 2, 0);
      const sizes = points.map((point) => point.x).join(', ');
      results.push({ suite: 'dhcp', name: `boot storm, ${server}: peak RSS per further client (fit over N = ${sizes})`, value: Math.round(slope), unit: 'bytes', note: 'goal (spectrum-net): < 2048' });
    }
    return results;
  },
};

const wanted = process.argv.slice(2);
for (const name of wanted) {
  if (!(name in suites)) {
    console.error(`bench: unknown suite ${JSON.stringify(name)}; suites: ${Object.keys(suites).join(', ')}`);
    process.exit(2);
  }
}

const results: BenchResult[] = [];
for (const [name, suite] of Object.entries(suites)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  process.stderr.write(`bench: ${name}...\n`);
  results.push(...(await suite()));
}

const outputDir = fileURLToPath(new URL('../../bench/', import.meta.url));
mkdirSync(outputDir, { recursive: true });
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  results,
};
writeFileSync(`${outputDir}results.json`, `${JSON.stringify(report, null, 2)}\n`);

const format = (value: number): string => (value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(value >= 10 ? 1 : 2));
const nameWidth = Math.max(...results.map((result) => result.name.length), 4);
console.log(`${'suite'.padEnd(8)} ${'case'.padEnd(nameWidth)}  ${'value'.padStart(12)}  unit`);
for (const result of results) {
  const note = result.note === undefined ? '' : `  (${result.note})`;
  console.log(`${result.suite.padEnd(8)} ${result.name.padEnd(nameWidth)}  ${format(result.value).padStart(12)}  ${result.unit}${note}`);
}
console.log(`\nJSON: ${outputDir}results.json`);
