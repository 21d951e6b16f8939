import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { codecBench } from './codec.bench.js';
import { dnsBench } from './dns.bench.js';
import type { BenchResult } from './measure.js';

// `npm run bench`: every suite, a table on stdout and the same figures as JSON in dist/bench/.
const results: BenchResult[] = [...codecBench(), ...(await dnsBench())];

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

const width = Math.max(...results.map((result) => result.name.length));
console.log(`${'suite'.padEnd(8)} ${'case'.padEnd(width)}  ops/s`);
for (const result of results) {
  console.log(`${result.suite.padEnd(8)} ${result.name.padEnd(width)}  ${Math.round(result.opsPerSecond).toLocaleString('en-US').padStart(12)}`);
}
console.log(`\nJSON: ${outputDir}results.json`);
