// The demo's command line (scripts/demo passes its options through): bad usage is one line and
// exit 2, as in spectrum-link and spectrum-netd, before anything is brought up; a failure of the
// demo itself is one line and exit 1.
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { describeNetns, trackTempDir } from '../harness/index.js';
import { compiledFixture } from '../host/vmm/fake-cloud-hypervisor-process.js';

/** Run the built demo with these arguments (and environment); its exit code and output. */
async function demo(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = compiledFixture('test/e2e/demo', ['shared/cli/run-cli']);
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [script, ...args], { timeout: 30_000, env });
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

describeNetns('demo failure', () => {
  it('says a failure whose message carries a command\'s stderr of several lines (an `ip netns add` refused) in one line after its progress lines, exit 1, nothing left up', async () => {
    // An `ip` first in PATH that refuses to make the demo's host namespace, in two lines, and
    // passes everything else (the harness's probe, its clean-up) to the real one.
    const dir = mkdtempSync(join(tmpdir(), 'sn-demo-fail-'));
    trackTempDir(dir);
    try {
      const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
      writeFileSync(
        join(dir, 'ip'),
        `#!/bin/sh\ncase "$*" in *"netns add "*-host) printf 'first line of a refusal\\nsecond line\\n' >&2; exit 1;; esac\nexec ${realIp} "$@"\n`,
      );
      chmodSync(join(dir, 'ip'), 0o755);
      const result = await demo([], { ...process.env, PATH: `${dir}:${process.env['PATH'] ?? ''}` });
      expect([result.code, result.stdout], result.stderr).toEqual([1, '']);
      const lines = result.stderr.split('\n');
      expect(lines.slice(0, 2)).toEqual(['[1/9] creating the host namespace', '[2/9] tearing down']);
      expect(lines.slice(3)).toEqual(['']);
      const failure = /^demo: command failed \(exit code 1\) creating namespace: ip netns add (\S+-host) stderr: first line of a refusal second line$/.exec(lines[2] ?? '');
      expect(failure, lines[2]).not.toBeNull();
      expect(existsSync(`/run/netns/${failure?.[1] ?? ''}`)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
