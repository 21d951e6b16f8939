// The demo's command line (scripts/demo passes its options through): bad usage is one line and
// exit 2, as in spectrum-link and spectrum-netd, before anything is brought up (scripts/demo
// refuses it before it runs scripts/setup); a failure of the demo itself is one line and exit 1.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { describeNetns, runPrefix, trackTempDir } from '../harness/index.js';
import { ROOT } from '../host/link-fixture.js';
import { compiledFixture } from '../host/vmm/fake-cloud-hypervisor-process.js';
import DEMO_OPTIONS from './demo-options.json' with { type: 'json' };

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

/** The fake trees made (fakeDemoTree), removed after each test. */
const trees: string[] = [];
afterEach(() => {
  for (const tree of trees.splice(0)) rmSync(tree, { recursive: true, force: true });
});

/**
 * A copy of scripts/demo (and its check of its arguments) in a tree of its own with the demo's
 * options, whose scripts/setup, scripts/build-test-guest and built demo each leave a file in
 * `ran/` (the demo prints its arguments): the tree's root. `installed`: with this checkout's
 * node_modules (as after npm ci); without, as a fresh clone.
 */
function fakeDemoTree(installed = false): string {
  const tree = mkdtempSync(join(tmpdir(), 'sn-demo-script-'));
  trackTempDir(tree);
  trees.push(tree);
  for (const dir of ['scripts', 'test/e2e', 'dist/test/e2e', 'ran']) mkdirSync(join(tree, dir), { recursive: true });
  for (const script of ['demo', 'demo-usage.cjs']) copyFileSync(join(ROOT, 'scripts', script), join(tree, 'scripts', script));
  if (installed) symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'));
  copyFileSync(join(ROOT, 'test', 'e2e', 'demo-options.json'), join(tree, 'test', 'e2e', 'demo-options.json'));
  for (const script of ['setup', 'build-test-guest']) {
    writeFileSync(join(tree, 'scripts', script), `#!/bin/sh\ntouch ran/${script}\n`);
    chmodSync(join(tree, 'scripts', script), 0o755);
  }
  writeFileSync(join(tree, 'dist', 'test', 'e2e', 'demo.js'), "console.log(['demo', ...process.argv.slice(2)].join(' '));\n");
  return tree;
}

/** Run scripts/demo of a fake tree (fakeDemoTree) with these arguments (and environment): its exit code and output. */
async function demoScript(tree: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(join(tree, 'scripts', 'demo'), args, { timeout: 30_000, env });
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

  // scripts/demo, copied beside the demo's options into a tree whose scripts/setup,
  // scripts/build-test-guest and built demo only say that they ran (and with what).
  it.each([
    [['--bogus'], "demo: unknown option '--bogus'\n"],
    [['--json', 'extra'], 'demo: too many arguments. Expected 0 arguments but got 1.\n'],
    [['--qemu', '-x'], "demo: unknown option '-x'\n"],
  ])('scripts/demo refuses %j as the demo does, in one line, exit 2, before it runs scripts/setup (or builds the test guest)', async (args, line) => {
    const tree = fakeDemoTree();
    expect(await demoScript(tree, args)).toEqual({ code: 2, stdout: '', stderr: line });
    expect(readdirSync(join(tree, 'ran'))).toEqual([]);
    // The demo's own line for them.
    expect((await demo(args)).stderr).toBe(line);
  });

  it('scripts/demo passes the demo options it is given through setup to the demo', async () => {
    const tree = fakeDemoTree();
    const options = Object.keys(DEMO_OPTIONS);
    expect(options).toContain('--qemu');
    expect(await demoScript(tree, options)).toEqual({ code: 0, stdout: `demo ${options.join(' ')}\n`, stderr: '' });
    expect(readdirSync(join(tree, 'ran')).sort()).toEqual(['build-test-guest', 'setup']);
  });

  it.each([[['--help']], [['--help', '--qemu']], [['--qemu', '-h']]])('scripts/demo %j prints the demo\'s own help, exit 0, before it runs scripts/setup or builds the test guest (installed or a fresh clone)', async (args) => {
    const help = await demo(['--help']);
    expect([help.code, help.stderr]).toEqual([0, '']);
    expect(help.stdout).toMatch(/^Usage: demo/);
    for (const installed of [true, false]) {
      const tree = fakeDemoTree(installed);
      expect(await demoScript(tree, args), installed ? 'installed' : 'fresh').toEqual({ code: 0, stdout: help.stdout, stderr: '' });
      expect(readdirSync(join(tree, 'ran'))).toEqual([]);
    }
  });

  it.each([[['--bogus']], [['--help']], [[]]])('scripts/demo %j without node on PATH says so in one line, exit 1, before it runs scripts/setup', async (args) => {
    const tree = fakeDemoTree(true);
    // A PATH with what the script and its fakes use, but no node.
    const bin = join(tree, 'bin');
    mkdirSync(bin);
    for (const tool of ['bash', 'dirname', 'touch']) symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(bin, tool));
    const result = await demoScript(tree, args, { PATH: bin });
    expect(result).toMatchObject({ code: 1, stdout: '' });
    expect(result.stderr).toMatch(/^demo: Node.js is not on PATH: [^\n]*install Node.js 20.19 or newer[^\n]*\n$/);
    expect(readdirSync(join(tree, 'ran'))).toEqual([]);
  });

  // Another user than root: setup's build failed on the root-owned checkout (node-gyp's output
  // silenced), which ended scripts/demo with exit 1 and nothing said.
  it.each([[[]], [['--json']], [['--qemu']]])('scripts/demo %j run as nobody says in one line that it needs root, exit 1, before it runs scripts/setup (its help still given)', async (args) => {
    const tree = fakeDemoTree();
    for (const dir of ['', 'scripts', 'test', 'test/e2e', 'dist', 'dist/test', 'dist/test/e2e']) chmodSync(join(tree, dir), 0o755);
    const asNobody = async (given: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
      try {
        const { stdout, stderr } = await promisify(execFile)('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', join(tree, 'scripts', 'demo'), ...given], { timeout: 30_000 });
        return { code: 0, stdout, stderr };
      } catch (error) {
        const failed = error as { code?: unknown; stdout?: string; stderr?: string };
        return { code: typeof failed.code === 'number' ? failed.code : -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
      }
    };
    const result = await asNobody(args);
    expect(result).toEqual({ code: 1, stdout: '', stderr: expect.stringMatching(/^demo: run it as root \(it builds network namespaces[^\n]*; you are nobody\n$/) });
    expect(readdirSync(join(tree, 'ran'))).toEqual([]);
    // Help and bad usage need no root.
    expect(await asNobody([...args, '--help'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^Usage: demo/), stderr: '' });
    expect(await asNobody([...args, '--bogus'])).toEqual({ code: 2, stdout: '', stderr: "demo: unknown option '--bogus'\n" });
  });

  // What the built demo makes of some arguments, told apart without bringing anything up: a run
  // prefix that is not one stops a demo that took them at its first step (exit 1, saying so).
  async function demoVerdict(args: readonly string[]): Promise<{ takes: true; help?: string } | { takes: false; line: string }> {
    const result = await demo(args, { ...process.env, SPECTRUM_TEST_PREFIX: 'not a prefix' });
    if (result.code === 0 && result.stdout.startsWith('Usage: demo')) return { takes: true, help: result.stdout };
    if (result.code === 1 && result.stderr.startsWith('demo: the demo needs root and network namespaces: ')) return { takes: true };
    expect(result, 'bad usage: exit 2, one line on stderr').toMatchObject({ code: 2, stdout: '', stderr: expect.stringMatching(/^demo: [^\n]*\n$/) });
    return { takes: false, line: result.stderr };
  }

  // `--` ends the options (the demo takes it); --help wins over anything before `--`; commander's
  // hint for a near miss; arguments with spaces, quotes, a newline, an escape sequence.
  it.each([
    [['--']], [['--json', '--']], [['--', 'x']], [['--', '--qemu']], [['--', '--help']], [['-']], [['']], [['a b', "it's \"quoted\""]],
    [['--json=1']], [['--jsno']], [['--he']], [['-hx']], [['--help', 'x']], [['x', '--help']], [['--bogus', '--help']], [['-h', '--bogus']],
    [['x', '--bogus']], [['--bogus', 'x']], [['--qemu', '--qemu']], [['--keep', '--json']], [['--a\nb']], [['--\u001b[31mred']],
  ])('scripts/demo takes or refuses %j as the demo does, with the demo\'s help or line (without its "Did you mean" before npm ci), before setup', async (args) => {
    const [verdict, installed, fresh] = await Promise.all([demoVerdict(args), demoScript(fakeDemoTree(true), args), demoScript(fakeDemoTree(false), args)]);
    if (verdict.takes) {
      // Help is printed by the script itself; anything else the demo takes goes to the demo.
      const passed = { code: 0, stdout: verdict.help ?? `${['demo', ...args].join(' ')}\n`, stderr: '' };
      expect({ installed, fresh }).toEqual({ installed: passed, fresh: passed });
    } else {
      expect(installed).toEqual({ code: 2, stdout: '', stderr: verdict.line });
      expect(fresh).toEqual({ code: 2, stdout: '', stderr: verdict.line.replace(/ \(Did you mean [^)]*\?\)\n$/, '\n') });
    }
    const ran = args.includes('--qemu') ? ['build-test-guest', 'setup'] : ['setup'];
    for (const tree of trees) expect(readdirSync(join(tree, 'ran')).sort(), tree).toEqual(verdict.takes && verdict.help === undefined ? ran : []);
  });

  it('scripts/demo checks as on a fresh clone where commander fails itself (too new for an old Node.js): no stack trace', async () => {
    const tree = fakeDemoTree();
    mkdirSync(join(tree, 'node_modules', 'commander'), { recursive: true });
    writeFileSync(join(tree, 'node_modules', 'commander', 'index.js'), "exports.Command = class { constructor() { throw new TypeError('not on this Node.js'); } };\n");
    expect(await demoScript(tree, ['--jsno'])).toEqual({ code: 2, stdout: '', stderr: "demo: unknown option '--jsno'\n" });
    expect(await demoScript(tree, ['--json'])).toEqual({ code: 0, stdout: 'demo --json\n', stderr: '' });
  });

  // It runs on whatever Node.js is on PATH, before setup checks the version (Debian 11's and
  // Ubuntu 22.04's are 12): a syntax error there would be a stack trace instead of setup's line.
  it('scripts/demo-usage.cjs uses no syntax past ES2019 (Node.js 12): TypeScript lowers nothing of it for that target', async () => {
    const ts = (await import('typescript')).default;
    const source = readFileSync(join(ROOT, 'scripts', 'demo-usage.cjs'), 'utf8');
    const emitted = (target: number): string => ts.transpileModule(source, { compilerOptions: { target, module: ts.ModuleKind.CommonJS }, fileName: 'demo-usage.js' }).outputText;
    expect(emitted(ts.ScriptTarget.ES2019)).toBe(emitted(ts.ScriptTarget.ESNext));
    // The check can fail: a line with `?.` is lowered.
    expect(ts.transpileModule('a?.b;', { compilerOptions: { target: ts.ScriptTarget.ES2019 } }).outputText).not.toContain('?.');
  });

  it('prints its help on --help, exit 0', async () => {
    const result = await demo(['--help']);
    expect([result.code, result.stderr]).toEqual([0, '']);
    expect(result.stdout).toMatch(/^Usage: demo \[options\]\n[\s\S]*--qemu[\s\S]*--keep[\s\S]*--json/);
  });
});

describeNetns('demo failure', () => {
  // The moments: its state dir and the internet's files are there (said after makeInternet
  // returned); spectrum-link has made an app VM's namespace, which the demo adopts only once the
  // link is said (killed with the demo, spectrum-link leaves it).
  it.each([
    ['the simulated internet is up', '] starting spectrum-netd in netvm\n', undefined],
    ['spectrum-link has made an app VM\'s namespace', '] linking appvm-lynx and appvm-catgirl to netvm', 'vm-appvm-'],
  ])('stopped by SIGTERM once %s, dies by it leaving nothing: no namespace, nothing in the temp dir (its state dir, the internet\'s files), its last line saying so', async (_when, line, namespace) => {
    const script = compiledFixture('test/e2e/demo', ['shared/cli/run-cli', 'test/e2e/example-system', 'test/guest/provider-world', 'test/harness/process-registry']);
    // The demo's temp dirs go in a dir of this test's own (TMPDIR), so that no other test's count.
    const temp = mkdtempSync(join(tmpdir(), 'sn-demo-signal-'));
    trackTempDir(temp);
    const namespaces = (prefix: string): string[] => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((entry) => entry.split(' ')[0] ?? '').filter((name) => name.startsWith(prefix));
    try {
      const child = spawn(process.execPath, [script], { env: { ...process.env, TMPDIR: temp }, stdio: ['ignore', 'pipe', 'pipe'] });
      const prefix = `${runPrefix()}demo-${child.pid ?? 0}-`;
      let stderr = '';
      // On close, its stderr read to the end.
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
      const said = new Promise<void>((resolve) => {
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
          stderr += chunk;
          if (stderr.includes(line)) resolve();
        });
      });
      await Promise.race([said, exited]);
      if (namespace !== undefined) {
        const made = (): boolean => namespaces(prefix).some((name) => name.includes(namespace));
        for (let done = false; !made() && !done; ) done = await Promise.race([exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 5))]);
      }
      const made = readdirSync(temp).map((name) => name.replace(/[^-]+$/, '')).sort();
      child.kill('SIGTERM');
      expect(await exited, stderr).toEqual({ code: null, signal: 'SIGTERM' });
      // Said as a normal run's last line says it: it was the last progress line.
      expect(stderr.split('\n').slice(-2)).toEqual(['demo: stopped by SIGTERM, everything torn down', '']);
      expect(made).toEqual(['spectrum-example-state-', 'spectrum-internet-']);
      expect(readdirSync(temp)).toEqual([]);
      expect(namespaces(prefix)).toEqual([]);
      expect(readdirSync('/etc/netns').filter((name) => name.startsWith(prefix))).toEqual([]);
    } finally {
      rmSync(temp, { recursive: true, force: true });
    }
  });

  it('stopped by SIGINT (Ctrl-C) where the tear-down fails (an `ip netns delete` refused), says so in its last line, naming what was left, and dies by SIGINT', async () => {
    const script = compiledFixture('test/e2e/demo', ['shared/cli/run-cli', 'test/e2e/example-system', 'test/guest/provider-world', 'test/harness/process-registry']);
    const dir = mkdtempSync(join(tmpdir(), 'sn-demo-stuck-'));
    trackTempDir(dir);
    const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
    // An `ip` first in PATH that refuses to delete the demo's host namespace.
    writeFileSync(join(dir, 'ip'), `#!/bin/sh\ncase "$*" in *"netns delete "*-host) echo 'refused by the test' >&2; exit 1;; esac\nexec ${realIp} "$@"\n`);
    chmodSync(join(dir, 'ip'), 0o755);
    const child = spawn(process.execPath, [script], { env: { ...process.env, PATH: `${dir}:${process.env['PATH'] ?? ''}` }, stdio: ['ignore', 'pipe', 'pipe'] });
    const prefix = `${runPrefix()}demo-${child.pid ?? 0}-`;
    const namespaces = (): string[] => execFileSync(realIp, ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((entry) => entry.split(' ')[0] ?? '').filter((name) => name.startsWith(prefix));
    try {
      let stderr = '';
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
      const said = new Promise<void>((resolve) => {
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
          stderr += chunk;
          if (stderr.includes('] starting spectrum-netd in netvm\n')) resolve();
        });
      });
      await Promise.race([said, exited]);
      child.kill('SIGINT');
      expect(await exited, stderr).toEqual({ code: null, signal: 'SIGINT' });
      const [left] = namespaces();
      expect(namespaces(), stderr).toEqual([expect.stringMatching(/-host$/)]);
      expect(stderr.split('\n').slice(-2)).toEqual([`demo: stopped by SIGINT, the tear-down failed: could not delete namespace ${left ?? ''}: Error: Command failed: ip netns delete ${left ?? ''} refused by the test`, '']);
    } finally {
      for (const name of namespaces()) execFileSync(realIp, ['netns', 'delete', name], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    }
  });

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
