// scripts/run-tests (what scripts/test runs once setup is done) stopped by a signal to its own
// PID, as CI's timeout or `kill <pid>` sends it: the run stops at once (not at vitest's end),
// nothing of it keeps running, its namespaces and temp dir go, and it exits 128 + the signal's
// number. Its run: test/harness/fixtures/stopped-run.config.ts, whose one test leaves a
// namespace of the run's and waits.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
    try {
      const { exit, output } = await sandboxRun(['--pid', '--fork', '--mount-proc', '--net', '--mount', '--propagation', 'private'], [
        'mount -t tmpfs spectrum-sandbox /run/netns || exit 99',
        'sleep 600 & sleeper=$!',
        `scripts/run-tests --config test/harness/fixtures/${config}; status=$?`,
        'if kill -0 "$sleeper" 2>/dev/null; then echo "sleeper: running"; kill "$sleeper"; else echo "sleeper: gone"; fi',
        'echo "names left: $(ls /run/netns)"',
        'echo "run-tests: $status"',
      ].join('\n'), dir, repoRoot);
      expect({ exit, output }).toEqual({ exit: { code: 0, signal: null }, output: expect.stringContaining('tests: 1 passed, 0 failed, 0 skipped') });
      if (status !== 0) expect(output).toContain('leaked network namespaces (now removed)');
      expect(output.split('\n').filter((line) => /^(sleeper|names left|run-tests):/.test(line))).toEqual(['sleeper: running', 'names left: ', `run-tests: ${String(status)}`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * A copy of scripts/run-tests in a tree of its own (it runs from its parent dir), whose vitest
 * (node_modules/.bin, first on the script's PATH) is the bash script `vitest`. `afterStart`: a
 * line put in the copy right after the line that starts vitest in the background.
 */
function fakeVitestTree(dir: string, vitest: string, afterStart?: string): string {
  const tree = join(dir, 'tree');
  mkdirSync(join(tree, 'scripts'), { recursive: true });
  mkdirSync(join(tree, 'node_modules/.bin'), { recursive: true });
  let script = readFileSync(join(repoRoot, 'scripts/run-tests'), 'utf8');
  if (afterStart !== undefined) {
    const start = /^vitest run .*&\n/m;
    if (!start.test(script)) throw new Error("scripts/run-tests has no line that starts vitest in the background");
    script = script.replace(start, (line) => `${line}${afterStart}\n`);
  }
  writeFileSync(join(tree, 'scripts/run-tests'), script, { mode: 0o755 });
  writeFileSync(join(tree, 'node_modules/.bin/vitest'), `#!/bin/bash\n${vitest}\n`, { mode: 0o755 });
  return tree;
}

/** Runs `script` (bash) under unshare with `options`, in a process group of its own, in `cwd` (`dir`, the temp dir, unless given). */
async function sandboxRun(options: readonly string[], script: string, dir: string, cwd = dir): Promise<{ exit: ProcessExit; output: string }> {
  const child = spawn('unshare', [...options, '--', 'bash', '-c', script], {
    cwd,
    env: { ...process.env, TMPDIR: dir, SPECTRUM_TEST_RESULTS: join(dir, 'results.json') },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  try {
    const exit = await new Promise<ProcessExit>((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig })));
    return { exit, output };
  } finally {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  }
}

// Polls for a file, each time after a pause (so what follows starts later than what made it).
const waitForFile = 'wait_for() { local i=0; until sleep 0.05; [[ -e $1 ]] || ((++i > 1200)); do :; done; }';

describeNetns('scripts/run-tests: its cleanup never changes its exit status', () => {
  // A mount in the run's temp dir, in a mount namespace of the sandbox's own: rm -rf cannot remove it.
  // A bind mount of a dir of the temp dir's own file system (the same device: rm
  // --one-file-system goes into it) as a tmpfs.
  it.each([
    { how: 'vitest ends with status 3', stop: false, status: 3, mount: 'mount -t tmpfs busy "$TMPDIR/busy"' },
    { how: 'a SIGTERM stops it', stop: true, status: signalExitCode('SIGTERM'), mount: 'mount -t tmpfs busy "$TMPDIR/busy"' },
    { how: 'a bind mount of a dir of the same file system', stop: false, status: 3, mount: 'mkdir "$TMPDIR/../kept" && mount --bind "$TMPDIR/../kept" "$TMPDIR/busy"' },
  ])('a temp dir it cannot remove (a busy mount) is said in one line, the status kept, the mount\'s files left alone: $how', { timeout: 120_000 }, async ({ stop, status, mount }) => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-run-tests-'));
    try {
      const tree = fakeVitestTree(dir, [
        `mkdir -p "$TMPDIR/busy" "$TMPDIR/other/deep" && ${mount} && touch "$TMPDIR/busy/canary" "$TMPDIR/other/deep/file" || exit 99`,
        stop ? `touch ${dir}/ready; exec sleep 600` : 'exit 3',
      ].join('\n'));
      const { exit, output } = await sandboxRun(['--mount', '--propagation', 'private'], [
        waitForFile,
        `${tree}/scripts/run-tests & run=$!`,
        stop ? `wait_for ${dir}/ready; kill -TERM "$run"` : '',
        'wait "$run"; echo "run-tests: $?"',
        `echo "canary: $(cd ${dir} && echo snt-*/busy/canary)"`,
        `echo "left: $(cd ${dir}/snt-* && echo *)"`,
      ].join('\n'), dir);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(output.split('\n').filter((line) => /^(run-tests:|test run: could not|canary:|left:)/.test(line))).toEqual([
        expect.stringMatching(new RegExp(`^test run: could not remove its temp dir ${dir}/snt-[^/ ]+: .*busy.*`)),
        `run-tests: ${String(status)}`,
        expect.stringMatching(/^canary: snt-[^/ *]+\/busy\/canary$/),
        // The rest of it gone.
        'left: busy',
      ]);
    } finally {
      // The mount went with the sandbox's mount namespace.
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeNetns('scripts/run-tests: a signal during its cleanup after the run', () => {
  it('neither stops the cleanup half done nor changes the status: the temp dir goes, vitest\'s status kept', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-run-tests-'));
    try {
      const tree = fakeVitestTree(dir, 'exit 3');
      // The cleanup's first command, `ip netns list` (the tree's bin is first on the script's
      // PATH): it says it began, then waits until the signal was sent; it lists nothing.
      writeFileSync(join(tree, 'node_modules/.bin/ip'), [
        '#!/bin/bash',
        waitForFile,
        `if [[ $1 == netns && $2 == list ]]; then touch ${dir}/cleaning; wait_for ${dir}/signalled; fi`,
      ].join('\n') + '\n', { mode: 0o755 });
      const { exit, output } = await sandboxRun([], [
        waitForFile,
        `${tree}/scripts/run-tests & run=$!`,
        `wait_for ${dir}/cleaning; kill -TERM "$run"; touch ${dir}/signalled`,
        'wait "$run"; echo "run-tests: $?"',
        `echo "temp dirs left: $(cd ${dir} && echo snt-*)"`,
      ].join('\n'), dir);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(output.split('\n').filter((line) => /^(run-tests|temp dirs left|test run):/.test(line))).toEqual([
        'run-tests: 3',
        'temp dirs left: snt-*',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// In a PID namespace of its own, where the next PID is set (/proc/sys/kernel/ns_last_pid).
describeNetns('scripts/run-tests stopped by a signal stops only what runs under vitest', () => {
  it('a process under vitest that ended while the run stops, its PID reused by an unrelated process: that process\'s child is left running', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-run-tests-'));
    try {
      // Its child, found at the signal; at the SIGTERM it ends that child and reaps it, then
      // waits until its PID is another's (the file reused) before it exits.
      const tree = fakeVitestTree(dir, [
        `sleep 600 & child=$!; echo "$child" >${dir}/child`,
        `trap 'kill "$child"; wait "$child"; touch ${dir}/child-gone; until [[ -e ${dir}/reused ]]; do sleep 0.05; done; exit 0' TERM`,
        `touch ${dir}/ready`,
        'wait',
      ].join('\n'));
      const { exit, output } = await sandboxRun(['--pid', '--fork', '--mount-proc'], [
        waitForFile,
        `${tree}/scripts/run-tests & run=$!`,
        `wait_for ${dir}/ready; kill -TERM "$run"; wait_for ${dir}/child-gone`,
        `pid=$(<${dir}/child)`,
        // The next process forked here gets the PID, unless another (the script's sleep) took it first.
        'for ((i = 0; i < 100; i++)); do',
        '  echo "$((pid - 1))" >/proc/sys/kernel/ns_last_pid',
        `  bash -c 'sleep 600 & echo "$!" >${dir}/unrelated; wait' & reuser=$!`,
        '  [[ $reuser != "$pid" ]] || break',
        '  kill -KILL "$reuser"; wait "$reuser" 2>/dev/null',
        'done',
        'echo "reused: $([[ $reuser == "$pid" ]] && echo yes || echo no)"',
        `wait_for ${dir}/unrelated; touch ${dir}/reused`,
        'wait "$run"; echo "run-tests: $?"',
        `state=$(awk '{print $3}' "/proc/$(<${dir}/unrelated)/stat" 2>/dev/null)`,
        'echo "unrelated child: ${state:-gone}"',
      ].join('\n'), dir);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(output.split('\n').filter((line) => /^(reused|run-tests|unrelated child):/.test(line))).toEqual([
        'reused: yes',
        `run-tests: ${String(signalExitCode('SIGTERM'))}`,
        'unrelated child: S',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  // In a PID namespace of its own: what is left of the run there is seen. Its stderr a pipe whose
  // reader is gone (`scripts/test 2>&1 | tee log`, tee ended by the same Ctrl-C): SIGPIPE.
  it('its stderr a pipe whose reader ended: the line it cannot write does not cut the stop short', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-run-tests-'));
    try {
      const tree = fakeVitestTree(dir, `echo "$PPID" >${dir}/run; touch ${dir}/ready; exec sleep 600`);
      const { exit, output } = await sandboxRun(['--pid', '--fork', '--mount-proc'], [
        waitForFile,
        `{ ( ${tree}/scripts/run-tests; echo "run-tests: $?" >${dir}/status ) 2>&1 >/dev/null | true; } & pipeline=$!`,
        `wait_for ${dir}/ready; kill -TERM "$(<${dir}/run)"; wait "$pipeline"; cat ${dir}/status`,
        'for stat in /proc/[0-9]*/stat; do read -r line <"$stat" && ((${line%% *} != 1)) && echo "left: $line"; done 2>/dev/null; true',
      ].join('\n'), dir);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(output.split('\n').filter((line) => /^(run-tests|left):/.test(line))).toEqual([`run-tests: ${String(signalExitCode('SIGTERM'))}`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  // In a PID namespace of its own: what is left of the run there is seen.
  it('a signal in the instant after vitest started (before any command after it) stops vitest too', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spectrum-run-tests-'));
    try {
      const tree = fakeVitestTree(dir, 'exec sleep 600', 'kill -TERM $$');
      const { exit, output } = await sandboxRun(['--pid', '--fork', '--mount-proc'], [
        `${tree}/scripts/run-tests; echo "run-tests: $?"`,
        'for stat in /proc/[0-9]*/stat; do read -r line <"$stat" && ((${line%% *} != 1)) && echo "left: $line"; done 2>/dev/null; true',
      ].join('\n'), dir);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(output).toContain('test run: stopped by SIGTERM');
      expect(output.split('\n').filter((line) => /^(run-tests|left):/.test(line))).toEqual([`run-tests: ${String(signalExitCode('SIGTERM'))}`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
