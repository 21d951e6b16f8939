/**
 * Vitest global setup: choose this run's namespace prefix and hand it to the workers through
 * the environment (forks inherit process.env as it is after setup), and afterwards remove
 * anything still carrying it. Leftovers mean some harness missed its cleanup: that fails the run.
 */
import { execFileSync } from 'node:child_process';
import { RUN_PREFIX_ENV, checkRunPrefix, newRunPrefix } from './names.js';
import { sweepRunOnExit, useOwnTempDir } from './process-registry.js';

/** The run's temp dir where scripts/test made it (and points TMPDIR at it). */
const RUN_TMPDIR_ENV = 'SPECTRUM_TEST_TMPDIR';

function canSweep(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export default function setup(): () => void {
  const fromEnv = process.env[RUN_PREFIX_ENV];
  const prefix = fromEnv !== undefined && fromEnv !== '' ? checkRunPrefix(fromEnv) : newRunPrefix();
  process.env[RUN_PREFIX_ENV] = prefix;
  // The workers' temp dirs go under one of the run's own, removed at the end or at a signal;
  // where scripts/test made it (and removes it) they go there, not in a dir nested in it: a
  // unix socket's path under it has 107 bytes at most, and tests put long names there.
  const made = process.env[RUN_TMPDIR_ENV];
  if (made === undefined || made === '' || made !== process.env['TMPDIR']) useOwnTempDir();

  // Without root (or ip) no test could have created a namespace, so there is nothing to sweep.
  // Else, with a last resort if vitest exits without running the teardown, or is stopped by a
  // signal: with the temp dir, by the harness's handlers (an 'exit' listener here never ran at a
  // signal, the process killed by it again first).
  const sweep = canSweep() ? sweepRunOnExit(prefix) : (): string[] => [];

  return () => {
    const leaked = sweep();
    if (leaked.length > 0) {
      // Vitest only logs errors thrown here; the exit code is what makes CI notice.
      process.exitCode = 1;
      throw new Error(`test run ${prefix} leaked network namespaces (now removed): ${leaked.join(', ')}`);
    }
  };
}
