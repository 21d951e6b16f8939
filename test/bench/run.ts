import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { codecBench } from './codec.bench.js';
import type { BenchResult } from './measure.js';
import { type LatencyResult, netdBench } from './netd.bench.js';

// `npm run bench`: every suite, a table on stdout and the same figures as JSON in dist/bench/.
const results: BenchResult[] = [...codecBench()];
// Namespace suites need root; SPECTRUM_BENCH_SKIP_NETNS=1 leaves them out.
const latencies: LatencyResult[] = process.env['SPECTRUM_BENCH_SKIP_NETNS'] === '1' ? [] : await netdBench();

const outputDir = fileURLToPath(new URL('../../bench/', import.meta.url));
mkdirSync(outputDir, { recursive: true });
const report = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  results,
  latencies,
};
writeFileSync(`${outputDir}results.json`, `${JSON.stringify(report, null, 2)}\n`);

const width = Math.max(...results.map((result) => result.name.length));
console.log(`${'suite'.padEnd(8)} ${'case'.padEnd(width)}  ops/s`);
for (const result of results) {
  console.log(`${result.suite.padEnd(8)} ${result.name.padEnd(width)}  ${Math.round(result.opsPerSecond).toLocaleString('en-US').padStart(12)}`);
}
if (latencies.length > 0) {
  const nameWidth = Math.max(...latencies.map((latency) => latency.name.length));
  console.log(`\n${'suite'.padEnd(8)} ${'case'.padEnd(nameWidth)}  ${'median ms'.padStart(10)} ${'p99 ms'.padStart(10)} samples`);
  for (const latency of latencies) {
    console.log(
      `${latency.suite.padEnd(8)} ${latency.name.padEnd(nameWidth)}  ${latency.medianMs.toFixed(2).padStart(10)} ${latency.p99Ms.toFixed(2).padStart(10)} ${String(latency.samples).padStart(7)}`,
    );
  }
}
console.log(`\nJSON: ${outputDir}results.json`);
