import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { codecBench } from './codec.bench.js';
import { dhcpStormBench } from './dhcp-storm.bench.js';
import type { BenchResult } from './measure.js';

// `npm run bench`: every suite, a table on stdout and the same figures as JSON in dist/bench/.
const results: BenchResult[] = [...codecBench()];
const storm = await dhcpStormBench();

const outputDir = fileURLToPath(new URL('../../bench/', import.meta.url));
mkdirSync(outputDir, { recursive: true });
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  results,
  dhcpStorm: storm,
};
writeFileSync(`${outputDir}results.json`, `${JSON.stringify(report, null, 2)}\n`);

const width = Math.max(...results.map((result) => result.name.length));
console.log(`${'suite'.padEnd(8)} ${'case'.padEnd(width)}  ops/s`);
for (const result of results) {
  console.log(`${result.suite.padEnd(8)} ${result.name.padEnd(width)}  ${Math.round(result.opsPerSecond).toLocaleString('en-US').padStart(12)}`);
}
if (storm.length > 0) {
  console.log('\nDHCP boot storm (udhcpc per client namespace, all started at once)');
  console.log('server        clients  failures  all-leased-ms  spawn-ms  server-window-ms  peak-RSS-KiB  bytes/client');
  for (const row of storm) {
    console.log(
      `${row.server.padEnd(13)} ${String(row.clients).padStart(7)}  ${String(row.failures).padStart(8)}  ${String(row.allLeasedMs).padStart(13)}  ${String(row.spawnMs).padStart(8)}  ${String(row.serverWindowMs ?? '-').padStart(16)}  ${String(row.peakRssKiB).padStart(12)}  ${String(row.bytesPerClient).padStart(12)}`,
    );
  }
}
console.log(`\nJSON: ${outputDir}results.json`);
