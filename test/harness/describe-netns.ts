import { describe, it } from 'vitest';
import { netnsSupport, type NetnsSupport } from './support.js';

export type NetnsSuiteMode = 'run' | 'fail' | 'skip';

/** Unsupported suites fail under CI=true — they must never skip silently there — else skip. */
export function netnsSuiteMode(support: NetnsSupport, env: NodeJS.ProcessEnv): NetnsSuiteMode {
  if (support.ok) return 'run';
  return env.CI === 'true' ? 'fail' : 'skip';
}

/**
 * `describe` for suites that need network namespaces (root). Unsupported: under CI=true a
 * failing test says why; elsewhere the suite is skipped with a loud warning.
 */
export function describeNetns(name: string, body: () => void): void {
  const support = netnsSupport();
  const mode = netnsSuiteMode(support, process.env);
  const reason = support.ok ? '' : support.reason;
  switch (mode) {
    case 'run':
      describe(name, body);
      return;
    case 'fail':
      describe(name, () => {
        it('has network namespace support', () => {
          throw new Error(`network namespace tests cannot run under CI: ${reason}`);
        });
      });
      return;
    case 'skip':
      console.warn(`\n!!! SKIPPING "${name}": network namespace tests cannot run here: ${reason}\n`);
      describe.skip(name, body);
      return;
  }
}
