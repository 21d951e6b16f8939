// The demo's command line (scripts/demo passes its options through): bad usage is one line and
// exit 2, as in spectrum-link and spectrum-netd, before anything is brought up.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { compiledFixture } from '../host/vmm/fake-cloud-hypervisor-process.js';

/** Run the built demo with these arguments; its exit code and output. */
async function demo(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = compiledFixture('test/e2e/demo', ['shared/cli/run-cli']);
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [script, ...args], { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    return { code: typeof failed.code === 'number' ? failed.code : -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

describe('demo usage', () => {
  it.each([
    [['--bogus'], "demo: unknown option '--bogus'\n"],
    [['--json', 'extra'], 'demo: too many arguments. Expected 0 arguments but got 1.\n'],
  ])('refuses %j in one line, exit 2, bringing nothing up', async (args, line) => {
    expect(await demo(args)).toEqual({ code: 2, stdout: '', stderr: line });
  });

  it('prints its help on --help, exit 0', async () => {
    const result = await demo(['--help']);
    expect([result.code, result.stderr]).toEqual([0, '']);
    expect(result.stdout).toMatch(/^Usage: demo \[options\]\n[\s\S]*--qemu[\s\S]*--keep[\s\S]*--json/);
  });
});
