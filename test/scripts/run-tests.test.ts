// scripts/run-tests (what scripts/test runs once setup is done) stopped by a signal to its own
// PID, as CI's timeout or `kill <pid>` sends it: the run stops at once (not at vitest's end),
// nothing of it keeps running, its namespaces and temp dir go, and it exits 128 + the signal's
// number. Its run: test/harness/fixtures/stopped-run.config.ts, whose one test leaves a
// namespace of the run's and waits.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { signalExitCode } from '../../shared/cli/interruption.js';
import type { StoppedRunReport } from '../harness/fixtures/stopped-run-waits.js';
import { describeNetns, descendantsOf, isRunning, type ProcessExit, type ProcessIdentity } from '../harness/index.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

function namespaceList(): string {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
}

async function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
}

/** `target` 'script': the signal to the script's PID only; 'group': to its process group, as Ctrl-C at a terminal sends it. */
async function stopScript(signal: NodeJS.Signals, target: 'script' | 'group'): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'spectrum-run-tests-'));
  const readyFile = join(dir, 'ready.json');
  const child = spawn(join(repoRoot, 'scripts/run-tests'), ['--config', 'test/harness/fixtures/stopped-run.config.ts'], {
    cwd: repoRoot,
    env: { ...process.env, SPECTRUM_TEST_READY_FILE: readyFile, SPECTRUM_TEST_RESULTS: join(dir, 'results.json') },
    // A group of its own: the 'group' case signals it, and a failing test kills what is left.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start scripts/run-tests');
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<ProcessExit>((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig })));
  let report: StoppedRunReport | undefined;
  let processes: ProcessIdentity[] = [];
  try {
    await until(() => existsSync(readyFile) || child.exitCode !== null, 60_000);
    if (!existsSync(readyFile)) throw new Error(`the run's test never became ready: ${output}`);
    report = JSON.parse(readFileSync(readyFile, 'utf8')) as StoppedRunReport;
    const prefix = report.namespace.slice(0, -'left'.length);
    expect(prefix).toMatch(/^snt[0-9a-f]{6}-$/);
    expect(namespaceList()).toContain(report.namespace);
    // The script's run dir, the workers' temp dir too.
    expect(report.tempDir).toMatch(/\/snt-[^/]+$/);
    expect(existsSync(report.tempDir)).toBe(true);
    // Vitest and its worker (the one running the test), at least.
    processes = descendantsOf(pid);
    expect(processes.length).toBeGreaterThanOrEqual(2);

    process.kill(target === 'group' ? -pid : pid, signal);
    // Generous: the script waits 10 s at most for vitest after passing the signal on, and a
    // script that waited for vitest's end would exit only after the test's 110 s.
    const exit = await Promise.race([exited, new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 60_000))]);
    expect(exit).toEqual({ code: signalExitCode(signal), signal: null });

    // An orphan is reaped by PID 1 in its own time; a zombie no longer runs.
    await until(() => !processes.some(isRunning), 10_000);
    expect(processes.filter(isRunning)).toEqual([]);
    expect(namespaceList()).not.toContain(prefix);
    expect(existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((entry) => entry.startsWith(prefix)) : []).toEqual([]);
    expect(existsSync(report.tempDir)).toBe(false);
    expect(output).toContain(`test run: stopped by ${signal}`);
  } finally {
    if (child.exitCode === null && child.signalCode === null) process.kill(-pid, 'SIGKILL');
    for (const identity of processes) if (isRunning(identity)) process.kill(identity.pid, 'SIGKILL');
    // Removed by its exact name: made by the run started here.
    if (report !== undefined) {
      if (existsSync(`/run/netns/${report.namespace}`)) execFileSync('ip', ['netns', 'delete', report.namespace]);
      rmSync(report.tempDir, { recursive: true, force: true });
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

describeNetns('scripts/run-tests stopped by a signal to its own PID stops the run, cleans up and exits 128 + n', () => {
  it.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)('on %s', { timeout: 180_000 }, async (signal) => {
    await stopScript(signal, 'script');
  });

  it('on SIGINT to its process group (Ctrl-C at a terminal): once is enough', { timeout: 180_000 }, async () => {
    await stopScript('SIGINT', 'group');
  });
});

// In a sandbox of its own (PID, network and mount namespaces, /run/netns a tmpfs there): its
// network namespace stands for the host's, where the script runs with everything else.
describeNetns("scripts/run-tests at its end kills what runs in the run's namespaces, never in its own", () => {
  // The script's own cleanup alone, and the global setup's sweep before it (the run fails: the
  // names were left to it).
  it.each([
    { config: 'elsewhere-run.config.ts', status: 0 },
    { config: 'elsewhere-run-swept.config.ts', status: 1 },
  ])('names with the run prefix that lead to its own namespace (a symlink to /proc/PID/ns/net, a bind mount) are removed, and the processes there, not the run\'s, left running: $config', { timeout: 120_000 }, async ({ config, status }) => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-run-tests-'));
    const sandbox = [
      'mount -t tmpfs spectrum-sandbox /run/netns || exit 99',
      'sleep 600 & sleeper=$!',
      `scripts/run-tests --config test/harness/fixtures/${config}; status=$?`,
      'if kill -0 "$sleeper" 2>/dev/null; then echo "sleeper: running"; kill "$sleeper"; else echo "sleeper: gone"; fi',
      'echo "names left: $(ls /run/netns)"',
      'echo "run-tests: $status"',
    ].join('\n');
    const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--net', '--mount', '--propagation', 'private', '--', 'sh', '-c', sandbox], {
      cwd: repoRoot,
      env: { ...process.env, SPECTRUM_TEST_RESULTS: join(dir, 'results.json') },
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    try {
      const exit = await new Promise<ProcessExit>((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig })));
      expect({ exit, output }).toEqual({ exit: { code: 0, signal: null }, output: expect.stringContaining('tests: 1 passed, 0 failed, 0 skipped') });
      if (status !== 0) expect(output).toContain('leaked network namespaces (now removed)');
      expect(output.split('\n').filter((line) => /^(sleeper|names left|run-tests):/.test(line))).toEqual(['sleeper: running', 'names left: ', `run-tests: ${String(status)}`]);
    } finally {
      // The sandbox's first process: everything in it goes with it.
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
