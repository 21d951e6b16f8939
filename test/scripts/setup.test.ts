// scripts/setup (which scripts/demo and scripts/test run first): a step that fails is said in one
// line, naming the step and where its output is, never a silent exit (as its build as another
// user than root was: node-gyp's output silenced under `npm run --silent`).
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { trackTempDir } from '../harness/index.js';
import { ROOT } from '../host/link-fixture.js';

type Run = { code: number; stdout: string; stderr: string };

async function runFile(file: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(file, args, { timeout: 60_000, ...options });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    return { code: typeof failed.code === 'number' ? failed.code : -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), name));
  trackTempDir(dir);
  dirs.push(dir);
  return dir;
}

/** What the fake npm ci does (a node -e script, no single quote in it). */
const INSTALL =
  'const fs = require("fs"); const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8")); ' +
  'for (const path of Object.keys(lock.packages)) if (path !== "") { fs.mkdirSync(path, { recursive: true }); fs.writeFileSync(path + "/package.json", "{}"); } ' +
  'fs.writeFileSync("node_modules/.package-lock.json", JSON.stringify(lock));';

/**
 * A copy of scripts/setup (and its scripts/build-stamp.mjs) in a tree of its own (with this
 * checkout's package-lock.json), run with an `npm` first on PATH whose `ci` and `run build` print
 * a line each and exit with the code given (the build makes dist/ and build/ first); the Debian
 * packages and Node.js are this machine's, all there. Its temp dir (where a kept log is found),
 * its `npm` and the record of its calls are outside the tree. `run`: setup run once more, with
 * the npm commands it ran and its calls of scripts/build-stamp.mjs (through a `node` on PATH that
 * records them and runs this Node.js).
 */
function setupTree(exits: { ci?: number; build?: number }): { tree: string; run: () => Promise<Run & { logs: string[]; npm: string[]; stamp: string[] }> } {
  const outer = tempDir('sn-setup-script-');
  const tree = join(outer, 'checkout');
  mkdirSync(join(tree, 'scripts'), { recursive: true });
  for (const script of ['setup', 'build-stamp.mjs']) copyFileSync(join(ROOT, 'scripts', script), join(tree, 'scripts', script));
  copyFileSync(join(ROOT, 'package-lock.json'), join(tree, 'package-lock.json'));
  const bin = join(outer, 'bin');
  mkdirSync(bin);
  const calls = join(outer, 'npm-calls');
  writeFileSync(
    join(bin, 'npm'),
    `#!/bin/sh\necho "$*" >>'${calls}'\ncase "$1" in\n` +
      // As npm ci leaves node_modules: a folder per package, its record of them.
      `  ci) node -e '${INSTALL}'; echo "npm ci's own words"; exit ${exits.ci ?? 0};;\n` +
      `  run) mkdir -p dist build/Release && echo built >dist/out.js && echo addon >build/Release/addon.node; echo "the build's own words: $*"; exit ${exits.build ?? 0};;\n` +
      `esac\nexit 99\n`,
  );
  chmodSync(join(bin, 'npm'), 0o755);
  const stampCalls = join(outer, 'stamp-calls');
  writeFileSync(join(bin, 'node'), `#!/bin/sh\nif [ "$1" = scripts/build-stamp.mjs ]; then shift; echo "$*" >>'${stampCalls}'; set -- scripts/build-stamp.mjs "$@"; fi\nexec '${process.execPath}' "$@"\n`);
  chmodSync(join(bin, 'node'), 0o755);
  const temp = join(outer, 'tmp');
  mkdirSync(temp);
  const lines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : []);
  const run = async (): Promise<Run & { logs: string[]; npm: string[]; stamp: string[] }> => {
    rmSync(calls, { force: true });
    rmSync(stampCalls, { force: true });
    const result = await runFile(join(tree, 'scripts', 'setup'), [], { env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}`, TMPDIR: temp } });
    return { ...result, logs: readdirSync(temp).map((name) => join(temp, name)), npm: lines(calls), stamp: lines(stampCalls) };
  };
  return { tree, run };
}

/** Setup run once in a new tree (setupTree), `prepare`d first. */
async function setup(exits: { ci?: number; build?: number }, prepare: (tree: string) => void = () => {}): Promise<Run & { logs: string[]; npm: string[]; stamp: string[] }> {
  const { tree, run } = setupTree(exits);
  prepare(tree);
  return run();
}

describe('scripts/setup', () => {
  it.each([
    ['the build (npm run build)', { build: 1 }, "the build's own words: run build"],
    ['npm ci', { ci: 1 }, "npm ci's own words"],
  ])('a failing step (%s) is one line naming it and the file holding its output, exit 1', async (step, exits, words) => {
    const result = await setup(exits);
    expect([result.code, result.stdout]).toEqual([1, '']);
    const logs = result.logs;
    expect(logs).toHaveLength(1);
    const lines = result.stderr.split('\n');
    expect(lines.at(-2)).toBe(`setup: ${step} failed (exit 1): its output is in ${logs[0] ?? ''}`);
    expect(lines.at(-1)).toBe('');
    expect(readFileSync(logs[0] ?? '', 'utf8')).toContain(words);
  });

  it('with every step passing, exit 0, no log left', async () => {
    const result = await setup({});
    expect(result).toMatchObject({ code: 0, stdout: '', logs: [] });
    expect(result.stderr).not.toMatch(/failed/);
  });

  // npm ci only where node_modules is not what the lock says, however it was installed: a manual
  // `npm ci` left no stamp of setup's own, and setup ran npm ci again (18 s in place of 8).
  describe('npm ci', () => {
    type Lock = { packages: Record<string, Record<string, unknown>> };
    const lock = (): Lock => JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as Lock;
    const installedLock = (): Lock => JSON.parse(readFileSync(join(ROOT, 'node_modules', '.package-lock.json'), 'utf8')) as Lock;
    /** The tree's node_modules as npm ci leaves it (its record of what it installed, a folder per package), `installed` its record. */
    const install = (tree: string, installed: Lock = installedLock()): void => {
      writeFileSync(join(tree, 'node_modules', '.package-lock.json'), JSON.stringify(installed, null, 2));
      for (const path of Object.keys(installed.packages)) {
        if (path === '') continue;
        mkdirSync(join(tree, path), { recursive: true });
        writeFileSync(join(tree, path, 'package.json'), '{}\n');
      }
    };
    const installed = (prepare: (tree: string) => void) =>
      setup({}, (tree) => {
        mkdirSync(join(tree, 'node_modules'));
        prepare(tree);
      });

    it('does not run where node_modules is what the lock says, as a manual npm ci leaves it (nothing said)', async () => {
      // The record leaves out optional packages of other platforms: the check does not ask for them.
      expect(Object.keys(lock().packages).filter((path) => !(path in installedLock().packages) && path !== '').length).toBeGreaterThan(0);
      expect(await installed((tree) => install(tree))).toMatchObject({ code: 0, stderr: '', npm: ['run build'] });
    });

    it.each([
      ['there is no node_modules', (_tree: string) => {}],
      ['npm recorded nothing', (tree: string) => mkdirSync(join(tree, 'node_modules'))],
      ['the lock has another version of a package', (tree: string) => {
        mkdirSync(join(tree, 'node_modules'));
        install(tree);
        const changed = lock();
        const entry = changed.packages['node_modules/commander'];
        if (entry === undefined) throw new Error('no commander in the lock');
        changed.packages['node_modules/commander'] = { ...entry, version: '0.0.1' };
        writeFileSync(join(tree, 'package-lock.json'), JSON.stringify(changed, null, 2));
      }],
      ['the lock has a package more (not optional)', (tree: string) => {
        mkdirSync(join(tree, 'node_modules'));
        install(tree);
        const changed = lock();
        changed.packages['node_modules/left-pad'] = { version: '1.3.0', license: 'WTFPL' };
        writeFileSync(join(tree, 'package-lock.json'), JSON.stringify(changed, null, 2));
      }],
      ['npm recorded a package the lock no longer has', (tree: string) => {
        mkdirSync(join(tree, 'node_modules'));
        const record = installedLock();
        install(tree, { ...record, packages: { ...record.packages, 'node_modules/left-pad': { version: '1.3.0' } } });
      }],
      ['a package\'s folder is gone', (tree: string) => {
        mkdirSync(join(tree, 'node_modules'));
        install(tree);
        rmSync(join(tree, 'node_modules', 'commander'), { recursive: true });
      }],
      ['the record is not JSON', (tree: string) => {
        mkdirSync(join(tree, 'node_modules'));
        install(tree);
        writeFileSync(join(tree, 'node_modules', '.package-lock.json'), '{');
      }],
    ])('runs where %s', async (_case, prepare) => {
      const result = await setup({}, prepare);
      expect(result).toMatchObject({ code: 0, stderr: 'setup: installing npm packages (npm ci)\n', npm: ['ci --no-audit --no-fund --loglevel=error', 'run build'] });
    });
  });

  // The build only where something it could read or made changed since setup's last build: it
  // rebuilt everything (tsc, node-gyp, the bundle) at every run, costing more than the demo.
  describe('the build', () => {
    const BUILD = 'run build';
    const builtOnce = async (): Promise<ReturnType<typeof setupTree>> => {
      const tree = setupTree({});
      expect((await tree.run()).npm).toEqual(['ci --no-audit --no-fund --loglevel=error', BUILD]);
      return tree;
    };

    it('is skipped where nothing changed since setup built (nothing said, exit 0)', async () => {
      const { run } = await builtOnce();
      expect(await run()).toMatchObject({ code: 0, stdout: '', stderr: '', npm: [] });
      expect(await run()).toMatchObject({ code: 0, stderr: '', npm: [] });
    });

    it.each([
      ['a source changed', (tree: string) => writeFileSync(join(tree, 'scripts', 'setup'), '\n# changed\n', { flag: 'a' })],
      ['a source touched only (the tests check dist by mtime)', (tree: string) => utimesSync(join(tree, 'package-lock.json'), new Date(), new Date(Date.now() + 5000))],
      ['a source changed with its mtime kept', (tree: string) => {
        const path = join(tree, 'package-lock.json');
        const { atime, mtime } = statSync(path);
        writeFileSync(path, readFileSync(path, 'utf8').replace('"lockfileVersion": 3', '"lockfileVersion":  3'));
        utimesSync(path, atime, mtime);
      }],
      ['a file added (a new module)', (tree: string) => {
        mkdirSync(join(tree, 'host'));
        writeFileSync(join(tree, 'host', 'new.ts'), 'export {};\n');
      }],
      ['a config added (tsconfig.json)', (tree: string) => writeFileSync(join(tree, 'tsconfig.json'), '{}\n')],
      ['a file changed in a folder the tree links to', (tree: string) => {
        const elsewhere = tempDir('sn-setup-linked-');
        writeFileSync(join(elsewhere, 'linked.ts'), 'export {};\n');
        symlinkSync(elsewhere, join(tree, 'linked'));
        return () => writeFileSync(join(elsewhere, 'linked.ts'), 'export const changed = 1;\n');
      }],
      ['the lock has another version of a package (npm ci runs first)', (tree: string) => {
        const path = join(tree, 'package-lock.json');
        writeFileSync(path, readFileSync(path, 'utf8').replace(/("node_modules\/commander": \{\s*"version": ")[^"]+/, '$10.0.1'));
        expect(readFileSync(path, 'utf8')).toContain('0.0.1');
      }],
      ['an output changed', (tree: string) => writeFileSync(join(tree, 'dist', 'out.js'), 'edited\n')],
      ['an output is gone', (tree: string) => rmSync(join(tree, 'build', 'Release', 'addon.node'))],
      ['dist is gone (as in a clean clone)', (tree: string) => rmSync(join(tree, 'dist'), { recursive: true })],
      ['its stamp is not its own', (tree: string) => writeFileSync(join(tree, 'dist', '.setup-build-stamp'), '{"inputs":"x","outputs":"y"}\n')],
    ])('runs again where %s', async (_case, change: (tree: string) => void | (() => void)) => {
      const { tree, run } = await builtOnce();
      const after = change(tree);
      // A change in two steps: the first, then a build, then the one that counts.
      if (after !== undefined) {
        await run();
        expect((await run()).npm).toEqual([]);
        after();
      }
      expect((await run()).npm).toContain(BUILD);
      // And is skipped after that build.
      expect((await run()).npm).toEqual([]);
    });

    // Where it rebuilds, every input is hashed once, before the build (check, which prints their
    // digest for write); it was hashed twice (check, then inputs), the build writing no input.
    it.each([
      ['with no stamp (a clean clone)', async () => setupTree({})],
      ['where a source changed', async () => {
        const built = await builtOnce();
        writeFileSync(join(built.tree, 'scripts', 'setup'), '\n# changed\n', { flag: 'a' });
        return built;
      }],
    ])('hashes its inputs once %s: check, then write with the digest check printed', async (_case, prepare) => {
      const { tree, run } = await prepare();
      const result = await run();
      expect(result).toMatchObject({ code: 0, stderr: expect.not.stringMatching(/failed/) });
      expect(result.npm).toContain(BUILD);
      // The inputs' digest after the build (as setup's PATH has it: npm's is one of them) is the one written.
      const env = { ...process.env, PATH: `${join(tree, '..', 'bin')}:${process.env['PATH'] ?? ''}` };
      const inputs = await runFile(process.execPath, [join(tree, 'scripts', 'build-stamp.mjs'), 'inputs'], { cwd: tree, env });
      expect(inputs).toMatchObject({ code: 0, stdout: expect.stringMatching(/^[0-9a-f]{64}\n$/) });
      expect(result.stamp).toEqual(['check', `write ${inputs.stdout.trim()}`]);
      expect((await run()).npm).toEqual([]);
    });

    // check exits 1 where it must rebuild, and (Node's exit for an error thrown) where hashing the
    // inputs fails, printing no digest: setup built for nothing, then its `write ""` failed on a
    // usage line, as if setup had called it wrongly. (Before check printed the digest, a second
    // hashing failed the same way before the build.) A file that cannot be read: /proc/self/mem.
    it('stops before the build where its stamp check fails hashing the inputs, saying so', async () => {
      const result = await setup({}, (tree) => symlinkSync('/proc/self/mem', join(tree, 'unreadable')));
      expect(result.code).toBe(1);
      expect(result.npm).not.toContain(BUILD);
      expect(result.stamp).toEqual(['check']);
      expect(result.stderr).not.toMatch(/usage/);
      // Its error in one line naming the file, not Node's stack trace (readSync's error names none).
      expect(result.stderr).not.toMatch(/^\s+at /m);
      expect(result.stderr).toMatch(/^build-stamp: cannot read \/.*\/unreadable \(EIO\) to hash it$/m);
      expect(result.stderr).toMatch(/^setup: the build stamp's check \(node scripts\/build-stamp\.mjs check\) failed: its error is above$/m);
    });

    // Its inputs' digest read each file whole (readFileSync), which refuses one over 2 GiB (a VM
    // image, a core dump in the checkout): setup failed at every run, a stack trace its output.
    it('builds in a checkout holding a file over 2 GiB (a sparse one here)', async () => {
      const result = await setup({}, (tree) => {
        writeFileSync(join(tree, 'disk.img'), '');
        truncateSync(join(tree, 'disk.img'), 2 ** 31 + 1);
      });
      expect(result).toMatchObject({ code: 0, stdout: '', npm: ['ci --no-audit --no-fund --loglevel=error', BUILD] });
      expect(result.stderr).not.toMatch(/failed|Error/);
    });

    it('runs again after a build that failed', async () => {
      const { tree, run } = await builtOnce();
      writeFileSync(join(tree, 'dist', 'out.js'), 'edited\n');
      const bin = readFileSync(join(tree, '..', 'bin', 'npm'), 'utf8');
      writeFileSync(join(tree, '..', 'bin', 'npm'), bin.replace('exit 0;;\nesac', 'exit 1;;\nesac'));
      expect(await run()).toMatchObject({ code: 1, npm: [BUILD] });
      writeFileSync(join(tree, '..', 'bin', 'npm'), bin);
      // The failed build left its outputs as the passing one does: its stamp is gone all the same.
      expect(await run()).toMatchObject({ code: 0, npm: [BUILD] });
    });
  });

  // What the build prints as another user than root (the checkout root's): under `npm run
  // --silent`, as scripts/setup ran it and the build runs build:native, node-gyp said nothing.
  it('npm run --silent build:native as nobody says why it fails (node-gyp\'s error), where it said nothing', async () => {
    if (!existsSync(join(ROOT, 'build', 'Makefile'))) throw new Error('the checkout is not built (npm run build)');
    const home = tempDir('sn-setup-home-');
    chmodSync(home, 0o777);
    const result = await runFile('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'npm', 'run', '--silent', 'build:native'], { cwd: ROOT, env: { ...process.env, HOME: home, npm_config_update_notifier: 'false' } });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/gyp ERR! [^\n]*EACCES/);
  });
});
