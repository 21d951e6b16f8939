import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { signalExitCode } from '../../shared/cli/interruption.js';
import type { SignalTargetReport } from './fixtures/signal-target.js';
import type { StoppedRunReport } from './fixtures/stopped-run-waits.js';
import { createHarness, describeNetns, isRunning, type ProcessExit } from './index.js';
import { newRunPrefix } from './names.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = 'test/harness/fixtures/signal-target';
/** The compiled fixture runs these modules from dist/; they must be as new as their sources. */
const FIXTURE_SOURCES = [FIXTURE, 'test/harness/netns', 'test/harness/names', 'test/harness/process-registry', 'test/harness/proc'];

function compiledFixture(): string {
  for (const source of FIXTURE_SOURCES) {
    const compiled = `${repoRoot}dist/${source}.js`;
    if (!existsSync(compiled)) {
      throw new Error(`${compiled} is missing: run \`npm run build\` before the tests`);
    }
    if (statSync(compiled).mtimeMs < statSync(`${repoRoot}${source}.ts`).mtimeMs) {
      throw new Error(`${compiled} is older than ${source}.ts: run \`npm run build\` before the tests`);
    }
  }
  return `${repoRoot}dist/${FIXTURE}.js`;
}

function namespaceList(): string {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
}

async function eventually(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

async function runFixture(mode: 'wait' | 'exit', signal: NodeJS.Signals | undefined): Promise<void> {
  const fixture = compiledFixture();
  const child = spawn(process.execPath, [fixture, mode], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start node');
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<ProcessExit>((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig })));
  let report: SignalTargetReport | undefined;
  try {
    const deadline = Date.now() + 20_000;
    for (let line = /^ready (.*)$/m.exec(stdout); line === null; line = /^ready (.*)$/m.exec(stdout)) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        if (mode === 'exit' && child.exitCode !== null) break;
        throw new Error(`fixture never became ready; stdout: ${stdout}; stderr: ${stderr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const readyLine = /^ready (.*)$/m.exec(stdout);
    if (readyLine?.[1] === undefined) throw new Error(`fixture printed no ready line; stderr: ${stderr}`);
    report = JSON.parse(readyLine[1]) as SignalTargetReport;
    expect(report.namespaces).toHaveLength(2);
    // In 'exit' mode the fixture may be gone, and its exit handler done, before this reads its
    // line (it exits right after printing it): its temp dir may rightly be gone already.
    if (mode === 'wait') expect(existsSync(report.tempDir)).toBe(true);
    if (mode === 'wait') expect(existsSync(report.untrackedDir)).toBe(true);
    expect(report.processes.length).toBeGreaterThanOrEqual(2);

    if (signal !== undefined) {
      expect(namespaceList()).toContain(report.namespaces[0]);
      process.kill(pid, signal);
    }
    const exit = await exited;
    // The handler re-raises the signal, so the process still dies by it.
    expect(exit).toEqual(signal !== undefined ? { code: null, signal } : { code: 3, signal: null });

    const listing = namespaceList();
    for (const name of report.namespaces) {
      expect(listing).not.toContain(name);
      expect(existsSync(`/etc/netns/${name}`)).toBe(false);
    }
    expect(existsSync(report.tempDir)).toBe(false);
    // Not tracked itself: gone with the process's own temp dir, as a test's mkdtemp dir is.
    expect(existsSync(report.untrackedDir)).toBe(false);
    const processes = report.processes;
    // SIGKILL lands asynchronously; give it a moment before asserting.
    await eventually(() => !processes.some(isRunning), 2_000);
    expect(processes.filter(isRunning)).toEqual([]);
  } finally {
    if (child.exitCode === null && child.signalCode === null) process.kill(-pid, 'SIGKILL');
    for (const identity of report?.processes ?? []) {
      if (isRunning(identity)) process.kill(identity.pid, 'SIGKILL');
    }
    // Whatever the fixture left behind is removed here so a failing test does not leak.
    const leftovers = (report?.namespaces ?? []).filter((name) => existsSync(`/run/netns/${name}`));
    if (leftovers.length > 0) {
      const harness = createHarness('sigleft');
      for (const name of leftovers) harness.adopt(name);
      await harness.cleanup();
    }
  }
}

describeNetns('namespaces are removed when the creating process dies', () => {
  it.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)('on %s', async (signal) => {
    await runFixture('wait', signal);
  });

  it('on process.exit() without cleanup()', async () => {
    await runFixture('exit', undefined);
  });
});

/**
 * A test run of its own (vitest with test/harness/fixtures/stopped-run.config.ts: this run's
 * global setup), of another prefix, its one test leaving a namespace of it (as a worker killed
 * before its cleanup does) and waiting; the run stopped by `signal` sent to vitest's process.
 */
async function stopRun(signal: NodeJS.Signals): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'spectrum-stopped-run-'));
  const readyFile = join(dir, 'ready.json');
  const prefix = newRunPrefix();
  const child = spawn(process.execPath, [join(repoRoot, 'node_modules/vitest/vitest.mjs'), 'run', '--config', 'test/harness/fixtures/stopped-run.config.ts'], {
    cwd: repoRoot,
    // Not scripts/test's run dir: this run makes its own temp dir, which the test sees go.
    env: { ...process.env, SPECTRUM_TEST_PREFIX: prefix, SPECTRUM_TEST_READY_FILE: readyFile, SPECTRUM_TEST_TMPDIR: '' },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start vitest');
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<ProcessExit>((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig })));
  let report: StoppedRunReport | undefined;
  try {
    await eventually(() => existsSync(readyFile) || child.exitCode !== null, 30_000);
    if (!existsSync(readyFile)) throw new Error(`the run's test never became ready: ${output}`);
    report = JSON.parse(readFileSync(readyFile, 'utf8')) as StoppedRunReport;
    expect(report.namespace.startsWith(prefix)).toBe(true);
    expect(namespaceList()).toContain(report.namespace);
    expect(report.tempDir).toMatch(/\/spectrum-test-[^/]+$/);
    expect(existsSync(report.tempDir)).toBe(true);
    process.kill(pid, signal);
    const exit = await exited;
    // Dead by the signal, or exited as vitest does after one (128 + its number).
    expect([JSON.stringify({ code: null, signal }), JSON.stringify({ code: signalExitCode(signal), signal: null })]).toContain(JSON.stringify(exit));
    expect(namespaceList()).not.toContain(report.namespace);
    expect(existsSync(report.tempDir)).toBe(false);
  } finally {
    if (child.exitCode === null && child.signalCode === null) process.kill(-pid, 'SIGKILL');
    // Not this run's: removed by its exact name, made by the run started here (known from its
    // prefix even where its report was never read: the run too slow to become ready, or killed).
    const left = report?.namespace ?? `${prefix}left`;
    if (existsSync(`/run/netns/${left}`)) execFileSync('ip', ['netns', 'delete', left]);
    if (report !== undefined) rmSync(report.tempDir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

describeNetns("a test run's namespaces and temp dir are removed when vitest is stopped by a signal", () => {
  it.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)('on %s', async (signal) => {
    await stopRun(signal);
  });
});
