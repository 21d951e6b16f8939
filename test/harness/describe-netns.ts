import { describe, it } from 'vitest';
import { netnsSupport } from './support.js';

/**
 * `describe` for suites that need network namespaces (root). Unsupported: under CI=true a
 * failing test says why — such suites must never skip silently there; elsewhere the suite is
 * skipped with a loud warning.
 */
export function describeNetns(name: string, body: () => void): void {
  const support = netnsSupport();
  if (support.ok) {
    describe(name, body);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('has network namespace support', () => {
        throw new Error(`network namespace tests cannot run under CI: ${support.reason}`);
      });
    });
    return;
  }
  console.warn(`\n!!! SKIPPING "${name}": network namespace tests cannot run here: ${support.reason}\n`);
  describe.skip(name, body);
}
