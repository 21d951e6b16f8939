// Namespaces for benchmarks run outside vitest: the harness with a run prefix of its own.
import { randomBytes } from 'node:crypto';
import { createHarness, type Harness, netnsSupport } from '../harness/index.js';

/** A harness for a benchmark, or the reason one cannot run here (not root, no ip, ...). */
export function benchHarness(label: string): Harness | string {
  process.env['SPECTRUM_TEST_PREFIX'] ??= `snt${randomBytes(3).toString('hex')}-`;
  const support = netnsSupport();
  if (!support.ok) return support.reason;
  return createHarness(label);
}
