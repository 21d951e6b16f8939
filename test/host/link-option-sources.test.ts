// spectrum-link's path and prefix options as the installed bin takes them, from the command line
// or from their environment variables: a relative path where the working directory has been
// deleted, and a bad value, are each one line that names where the value came from, and nothing
// is made or recorded.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { type ExecResult, type Harness, type Netns, createHarness, describeNetns, jsonErrorOf, trackTempDir } from '../harness/index.js';
import { DEFAULT_CONFIG_DIR } from '../../host/config.js';
import { EXAMPLES, LINK_BIN, requireBuild } from './link-fixture.js';

const VARIABLES = ['SPECTRUM_STATE_DIR', 'SPECTRUM_CONFIG_DIR', 'SPECTRUM_DEVICE_PREFIX', 'SPECTRUM_NETNS_PREFIX', 'SPECTRUM_LOCK_WAIT'];
/** An absolute state dir that no run below may make: each is refused before it would. */
const ABSENT = `/tmp/spectrum-optsrc-absent-${process.pid}`;

describeNetns('spectrum-link option sources', () => {
  let harness: Harness;
  let host: Netns;
  let scratch: string;

  beforeAll(async () => {
    requireBuild();
    harness = createHarness('optsrc');
    scratch = await mkdtemp(join(tmpdir(), 'spectrum-optsrc-'));
    trackTempDir(scratch);
  });
  // Each test starts without it, and in a namespace of its own, whatever one before it did.
  let made = 0;
  beforeEach(async () => {
    await rm(ABSENT, { recursive: true, force: true });
    made += 1;
    host = await harness.namespace(`host${made}`);
  });
  afterAll(async () => {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    await rm(ABSENT, { recursive: true, force: true });
    await harness?.cleanup();
  });

  /** The environment of a run: ours without the variables under test, plus `env`. */
  const environment = (env: Record<string, string>): NodeJS.ProcessEnv => ({
    ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !VARIABLES.includes(name))),
    ...env,
  });

  /** Run the bin in the test namespace from a working directory that the shell removes first (`gone`), or from the scratch dir. */
  async function spectrumLink(args: readonly string[], options: { env?: Record<string, string>; cwd: 'gone' | 'scratch' }): Promise<ExecResult> {
    const cwd = options.cwd === 'gone' ? await mkdtemp(join(scratch, 'cwd-')) : scratch;
    const remove = options.cwd === 'gone' ? 'rmdir "$1" && ' : '';
    const script = `cd "$1" && ${remove}shift && exec node "$@"`;
    return host.exec(['sh', '-c', script, 'sh', cwd, LINK_BIN, ...args], { enter: 'nsenter', allowFailure: true, env: environment(options.env ?? {}) });
  }

  /** Only the loopback device: no command made one. */
  async function devicesMade(): Promise<string[]> {
    const { stdout } = await host.exec(['ip', '-o', 'link', 'show'], { enter: 'nsenter' });
    return stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => line.split(': ')[1] ?? '')
      .filter((name) => name !== 'lo');
  }

  const gone = (source: string, path: string, fix = 'give an absolute path'): string =>
    `spectrum-link: the working directory is gone, so ${source} "${path}", a relative path, cannot be resolved: ${fix}\n`;
  const fromVariable = 'set it to an absolute path';

  it.each([
    [['link', 'appvm-lynx', '--config-dir', EXAMPLES, '--state-dir', 'state'], {}, gone('--state-dir', 'state')],
    [['unlink', 'appvm-lynx', '--state-dir', 'state'], {}, gone('--state-dir', 'state')],
    [['list', '--state-dir', 'state'], {}, gone('--state-dir', 'state')],
    [['gc', '--state-dir', 'state'], {}, gone('--state-dir', 'state')],
    [['list'], { SPECTRUM_STATE_DIR: 'state' }, gone('environment variable SPECTRUM_STATE_DIR', 'state', fromVariable)],
    [['link', 'appvm-lynx', '--config-dir', 'config', '--state-dir', ABSENT], {}, gone('--config-dir', 'config')],
    [['show', 'appvm-lynx', '--config-dir', 'config', '--state-dir', ABSENT], {}, gone('--config-dir', 'config')],
    [['link', 'appvm-lynx', '--state-dir', ABSENT], { SPECTRUM_CONFIG_DIR: 'config' }, gone('environment variable SPECTRUM_CONFIG_DIR', 'config', fromVariable)],
    [['check', 'appvm-lynx', '--config-dir', 'config'], {}, gone('--config-dir', 'config')],
    [['check', 'appvm-lynx'], { SPECTRUM_CONFIG_DIR: 'config' }, gone('environment variable SPECTRUM_CONFIG_DIR', 'config', fromVariable)],
    [['link', 'appvm-lynx', '--config-dir', EXAMPLES, '--state-dir', ABSENT, '--qmp-socket', 'run/{vm}.qmp'], {}, gone('--qmp-socket', 'run/{vm}.qmp')],
    [['unlink', 'appvm-lynx', '--state-dir', ABSENT, '--ch-socket', 'run/{vm}.ch'], {}, gone('--ch-socket', 'run/{vm}.ch')],
  ] as const)('from a deleted working directory, refuses %j (env %j) in one line naming the source, exit 1, making nothing', async (args, env, line) => {
    const result = await spectrumLink(args, { env, cwd: 'gone' });
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 1, stdout: '', stderr: line });
    expect(await readdir(scratch)).toEqual([]);
    expect(existsSync(ABSENT)).toBe(false);
    expect(await devicesMade()).toEqual([]);
  });

  it('takes those relative paths from a working directory that exists', async () => {
    await mkdir(join(scratch, 'state'));
    try {
      const listed = await spectrumLink(['list', '--state-dir', 'state'], { env: { SPECTRUM_CONFIG_DIR: 'config' }, cwd: 'scratch' });
      expect({ code: listed.code, stdout: listed.stdout, stderr: listed.stderr }).toEqual({ code: 0, stdout: 'no links recorded\n', stderr: '' });
    } finally {
      await rm(join(scratch, 'state'), { recursive: true });
    }
    const checked = await spectrumLink(['check', 'appvm-lynx'], { env: { SPECTRUM_CONFIG_DIR: 'config' }, cwd: 'scratch' });
    expect(checked.code).toBe(2);
    expect(checked.stderr).toBe(
      'spectrum-link: config dir config (from environment variable SPECTRUM_CONFIG_DIR) does not exist; check SPECTRUM_CONFIG_DIR: it must be the directory holding the VM directories (or pass --config-dir, which overrides it)\n',
    );
  });

  const configFix = {
    option: 'check --config-dir: it must be the directory holding the VM directories',
    variable: 'check SPECTRUM_CONFIG_DIR: it must be the directory holding the VM directories (or pass --config-dir, which overrides it)',
  };
  const stateFix = {
    option: 'check --state-dir: it must be a writable directory',
    variable: 'check SPECTRUM_STATE_DIR: it must be a writable directory (or pass --state-dir, which overrides it)',
  };
  const missing = `/tmp/spectrum-optsrc-missing-${process.pid}`;
  /** A file where a state dir is to be: no state dir can be made there. */
  const file = (): string => join(scratch, 'a-file');

  it.each([
    [['list', '--state-dir', 'FILE'], { SPECTRUM_STATE_DIR: ABSENT }, `state dir FILE (from --state-dir) cannot be used (it is not a directory); ${stateFix.option}`],
    [['link', 'appvm-lynx', '--config-dir', EXAMPLES], { SPECTRUM_STATE_DIR: 'FILE' }, `state dir FILE (from environment variable SPECTRUM_STATE_DIR) cannot be used (it is not a directory); ${stateFix.variable}`],
    [['unlink', 'appvm-lynx'], { SPECTRUM_STATE_DIR: 'FILE/below' }, `state dir FILE/below (from environment variable SPECTRUM_STATE_DIR) cannot be used (a path above it is not a directory); ${stateFix.variable}`],
    [['gc', '--state-dir', 'FILE'], {}, `state dir FILE (from --state-dir) cannot be used (it is not a directory); ${stateFix.option}`],
  ] as const)('says where a dir that cannot be used came from and what to check of it, in one line, exit 1, making nothing: %j (env %j)', async (args, env, said) => {
    await writeFile(file(), '');
    const withFile = (text: string): string => text.replaceAll('FILE', file()).replaceAll('SCRATCH', scratch);
    try {
      const result = await spectrumLink(args.map(withFile), { env: Object.fromEntries(Object.entries(env).map(([name, value]) => [name, withFile(value)])), cwd: 'scratch' });
      expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 1, stdout: '', stderr: `spectrum-link: ${withFile(said)}\n` });
      expect(await readdir(scratch)).toEqual(['a-file']);
    } finally {
      // Also where it failed: each test after it starts with an empty scratch dir.
      await rm(file());
    }
    expect(existsSync(ABSENT)).toBe(false);
    expect(existsSync(missing)).toBe(false);
    expect(await devicesMade()).toEqual([]);
  });

  it.each([
    [['show', 'appvm-lynx', '--config-dir', missing, '--state-dir', 'SCRATCH'], {}, `config dir ${missing} (from --config-dir) does not exist; ${configFix.option}`],
    [['show', 'appvm-lynx', '--state-dir', 'SCRATCH'], { SPECTRUM_CONFIG_DIR: missing }, `config dir ${missing} (from environment variable SPECTRUM_CONFIG_DIR) does not exist; ${configFix.variable}`],
  ] as const)('show of a VM with no links, the config dir named not there: bad input, exit 2, as for link and check, in one line: %j (env %j)', async (args, env, said) => {
    const result = await spectrumLink(
      args.map((arg) => arg.replaceAll('SCRATCH', scratch)),
      { env, cwd: 'scratch' },
    );
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({
      code: 2,
      stdout: '',
      stderr: `spectrum-link: show: no links recorded for appvm-lynx in state dir ${scratch} (from --state-dir) and ${said}\n`,
    });
    expect(await readdir(scratch)).toEqual([]);
    expect(existsSync(missing)).toBe(false);
  });

  const configWant = 'the directory holding the VM directories';
  it.each([
    [['check', 'appvm-lynx', '--config-dir', missing], {}, 2, `config dir ${missing} (from --config-dir) does not exist; ${configFix.option}`],
    [['check', 'appvm-lynx'], { SPECTRUM_CONFIG_DIR: missing }, 2, `config dir ${missing} (from environment variable SPECTRUM_CONFIG_DIR) does not exist; ${configFix.variable}`],
    [['link', 'appvm-lynx', '--config-dir', missing, '--state-dir', 'STATE'], {}, 2, `config dir ${missing} (from --config-dir) does not exist; ${configFix.option}`],
    [['link', 'appvm-lynx', '--state-dir', 'STATE'], { SPECTRUM_CONFIG_DIR: missing }, 2, `config dir ${missing} (from environment variable SPECTRUM_CONFIG_DIR) does not exist; ${configFix.variable}`],
    [['link', '--all', '--config-dir', missing, '--state-dir', 'STATE'], {}, 2, `config dir ${missing} (from --config-dir) does not exist; ${configFix.option}`],
    [['link', '--all', '--state-dir', 'STATE'], { SPECTRUM_CONFIG_DIR: missing }, 2, `config dir ${missing} (from environment variable SPECTRUM_CONFIG_DIR) does not exist; ${configFix.variable}`],
    [['link', 'appvm-lynx', 'appvm-catgirl', '--keep-going', '--config-dir', missing, '--state-dir', 'STATE'], {}, 2, `config dir ${missing} (from --config-dir) does not exist; ${configFix.option}`],
    [['link', '--all', '--keep-going', '--config-dir', missing, '--state-dir', 'STATE'], {}, 2, `config dir ${missing} (from --config-dir) does not exist; ${configFix.option}`],
    // The default missing: the host lacks Spectrum's config dir, nothing typed is wrong (a test machine has none: check-command.test.ts).
    [['link', 'appvm-lynx', '--state-dir', 'STATE'], {}, 1, `config dir ${DEFAULT_CONFIG_DIR} (the default) does not exist; pass --config-dir or set SPECTRUM_CONFIG_DIR to ${configWant}`],
    // A symlink to nothing is no typo: it cannot be used, as a state dir there cannot.
    [['link', '--all', '--config-dir', 'LINK', '--state-dir', 'STATE'], {}, 1, `config dir LINK (from --config-dir) cannot be used (LINK is a symlink to NOWHERE, which does not exist); ${configFix.option}`],
    [['check', 'appvm-lynx'], { SPECTRUM_CONFIG_DIR: 'LINK/vms' }, 1, `config dir LINK/vms (from environment variable SPECTRUM_CONFIG_DIR) cannot be used (LINK is a symlink to NOWHERE, which does not exist); ${configFix.variable}`],
    // Nor is a loop of symlinks: said as a loop, of a class with a symlink to nothing.
    [['link', 'appvm-lynx', '--config-dir', 'CYCLE', '--state-dir', 'STATE'], {}, 1, `config dir CYCLE (from --config-dir) cannot be used (CYCLE is a symlink to CYCLE, which loops (ELOOP: too many levels of symbolic links)); ${configFix.option}`],
    [['check', 'appvm-lynx'], { SPECTRUM_CONFIG_DIR: 'CYCLE/vms' }, 1, `config dir CYCLE/vms (from environment variable SPECTRUM_CONFIG_DIR) cannot be used (CYCLE is a symlink to CYCLE, which loops (ELOOP: too many levels of symbolic links)); ${configFix.variable}`],
  ] as const)('says a config dir that does not exist or cannot be used, and where it came from, in one line, making nothing (named and missing: bad input, exit 2): %j (env %j) exits %d', async (args, env, code, said) => {
    const [link, target, loop, state] = [join(scratch, 'a-link'), join(scratch, 'nowhere'), join(scratch, 'a-loop'), join(scratch, 'state')];
    await symlink(target, link);
    await symlink(loop, loop);
    const withPaths = (text: string): string => text.replaceAll('LINK', link).replaceAll('NOWHERE', target).replaceAll('CYCLE', loop).replaceAll('STATE', state);
    const run = (): Promise<ExecResult> => spectrumLink(args.map(withPaths), { env: Object.fromEntries(Object.entries(env).map(([name, value]) => [name, withPaths(value)])), cwd: 'scratch' });
    try {
      // The state dir not made yet (link makes it as it records the first link): refused before
      // it is made. Then with it there: left as it was.
      for (const stateDir of ['absent', 'there'] as const) {
        if (stateDir === 'there') await mkdir(state);
        const result = await run();
        expect({ stateDir, code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ stateDir, code, stdout: '', stderr: `spectrum-link: ${withPaths(said)}\n` });
        expect((await readdir(scratch)).sort()).toEqual(stateDir === 'there' ? ['a-link', 'a-loop', 'state'] : ['a-link', 'a-loop']);
        if (stateDir === 'there') expect(await readdir(state)).toEqual([]);
      }
    } finally {
      await rm(link);
      await rm(loop);
      await rm(state, { recursive: true, force: true });
    }
    expect(existsSync(missing)).toBe(false);
    expect(await devicesMade()).toEqual([]);
  });

  // A symlink to nothing is no typo, and no directory can be made there (link says so): every
  // command says it as link does, exit 1, rather than that the dir does not exist (exit 2, "link makes it").
  it.each([
    [['list', '--state-dir', 'LINK'], {}, 'LINK', 'option'],
    [['show', 'appvm-lynx', '--config-dir', EXAMPLES], { SPECTRUM_STATE_DIR: 'LINK' }, 'LINK', 'variable'],
    [['unlink', 'appvm-lynx', '--state-dir', 'LINK/below'], {}, 'LINK/below', 'option'],
    [['gc'], { SPECTRUM_STATE_DIR: 'LINK' }, 'LINK', 'variable'],
    [['link', 'appvm-lynx', '--config-dir', EXAMPLES, '--state-dir', 'LINK'], {}, 'LINK', 'option'],
  ] as const)('says a state dir that is a symlink to nothing (or under one) cannot be used, as link says it, in one line, exit 1, making nothing: %j (env %j)', async (args, env, named, source) => {
    const link = join(scratch, 'a-link');
    const target = join(scratch, 'nowhere');
    await symlink(target, link);
    const withLink = (text: string): string => text.replaceAll('LINK', link);
    try {
      const result = await spectrumLink(args.map(withLink), { env: Object.fromEntries(Object.entries(env).map(([name, value]) => [name, withLink(value)])), cwd: 'scratch' });
      const said = `state dir ${withLink(named)} (from ${source === 'option' ? '--state-dir' : 'environment variable SPECTRUM_STATE_DIR'}) cannot be used (${link} is a symlink to ${target}, which does not exist); ${stateFix[source]}`;
      expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 1, stdout: '', stderr: `spectrum-link: ${said}\n` });
      expect(await readdir(scratch)).toEqual(['a-link']);
    } finally {
      await rm(link);
    }
    expect(await devicesMade()).toEqual([]);
  });

  const missingStateDir = (source: 'option' | 'variable'): string =>
    source === 'option'
      ? `spectrum-link: state dir ${ABSENT} (from --state-dir) does not exist; check --state-dir: it must be the directory the links are recorded in (spectrum-link link makes it as it records the first)\n`
      : `spectrum-link: state dir ${ABSENT} (from environment variable SPECTRUM_STATE_DIR) does not exist; check SPECTRUM_STATE_DIR: it must be the directory the links are recorded in (spectrum-link link makes it as it records the first) (or pass --state-dir, which overrides it)\n`;

  it.each([
    [['list', '--state-dir', ABSENT], {}, 'option'],
    [['list', '--json'], { SPECTRUM_STATE_DIR: ABSENT }, 'variable'],
    [['show', 'appvm-lynx', '--config-dir', EXAMPLES, '--state-dir', ABSENT], {}, 'option'],
    [['show', 'appvm-lynx', '--config-dir', EXAMPLES], { SPECTRUM_STATE_DIR: ABSENT }, 'variable'],
    [['unlink', 'appvm-lynx', '--state-dir', ABSENT], {}, 'option'],
    [['unlink', 'appvm-lynx', '--forget'], { SPECTRUM_STATE_DIR: ABSENT }, 'variable'],
    [['gc', '--state-dir', ABSENT], {}, 'option'],
    [['gc'], { SPECTRUM_STATE_DIR: ABSENT }, 'variable'],
  ] as const)('refuses %j (env %j) where the state dir it names does not exist (a typo, not a host with nothing linked): one line naming where it came from, exit 2, making nothing', async (args, env, source) => {
    const result = await spectrumLink(args, { env, cwd: 'scratch' });
    // stdout: nothing, but with --json the failure's error object.
    const stdout = (args as readonly string[]).includes('--json') ? `${JSON.stringify({ error: jsonErrorOf(missingStateDir(source), 'state-dir-missing', 2) })}\n` : '';
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 2, stdout, stderr: missingStateDir(source) });
    expect(existsSync(ABSENT)).toBe(false);
    expect(await readdir(scratch)).toEqual([]);
    expect(await devicesMade()).toEqual([]);
  });

  it('link makes a state dir it is given that does not exist, and records there: then list, show, unlink and gc take it', async () => {
    const linked = await spectrumLink(['link', 'appvm-lynx', '--config-dir', EXAMPLES, '--attach', 'none', '--json'], { env: { SPECTRUM_STATE_DIR: ABSENT }, cwd: 'scratch' });
    expect(linked.code, linked.stderr).toBe(0);
    expect(existsSync(join(ABSENT, 'links.json'))).toBe(true);
    for (const args of [['list'], ['show', 'appvm-lynx', '--config-dir', EXAMPLES], ['gc'], ['unlink', 'appvm-lynx']]) {
      const result = await spectrumLink([...args, '--state-dir', ABSENT], { cwd: 'scratch' });
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(0);
    }
    expect(await devicesMade()).toEqual([]);
  });

  it('takes the default state dir missing (/var/lib/spectrum-link, in a mount namespace of its own where /var/lib is empty) as a host with nothing linked yet: list says so, exit 0', async () => {
    const script = 'mount -t tmpfs spectrum-test /var/lib && exec "$@"';
    const result = await host.exec(['unshare', '-m', 'sh', '-c', script, 'sh', 'node', LINK_BIN, 'list'], { enter: 'nsenter', allowFailure: true, env: environment({}) });
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 0, stdout: 'no links recorded\n', stderr: '' });
  });

  /**
   * spectrum-link `args` run twice in a mount namespace of its own: first with /var/lib empty
   * (the default state dir missing), then with the state dir made there. Each run's exit code and
   * output (one line: stdout and stderr together), and what the first left in /var/lib.
   */
  async function missingThenThere(args: readonly string[]): Promise<{ missing: string; left: string | undefined; there: string | undefined }> {
    const script = [
      'mount -t tmpfs spectrum-test /var/lib || exit 99',
      'missing=$("$@" 2>&1); missing_code=$?',
      'left=$(ls -A /var/lib)',
      'mkdir /var/lib/spectrum-link',
      'there=$("$@" 2>&1); there_code=$?',
      'printf "%s\\n" "$missing_code $missing" "left:$left" "$there_code $there"',
    ].join('\n');
    const result = await host.exec(['unshare', '-m', 'sh', '-c', script, 'sh', 'node', LINK_BIN, ...args], { enter: 'nsenter', allowFailure: true, env: environment({}) });
    expect(result.code, result.stderr).toBe(0);
    const [missing = '', left, there] = result.stdout.split('\n');
    return { missing, left, there };
  }

  it.each([
    [['unlink', 'appvm-lynx'], 1, 'spectrum-link: appvm-lynx has no recorded links in state dir /var/lib/spectrum-link (the default); check the name and the state dir (--state-dir or SPECTRUM_STATE_DIR)'],
    // No device named as a link with the prefix there: nothing any state dir's gc would delete.
    [['gc'], 0, 'nothing to collect'],
    [['gc', '--json'], 0, '{"removed":[]}'],
  ] as const)('on a fresh host (the default state dir missing: /var/lib empty, in a mount namespace of its own), %j says there is nothing, exit %i, as with the dir there and empty, and makes nothing', async (args, code, said) => {
    // Run first with /var/lib empty, then with the state dir made there: the same line both times,
    // and nothing made by the first.
    const { missing, left, there } = await missingThenThere(args);
    expect(missing.startsWith(`${code} ${said}`), missing).toBe(true);
    expect(left).toBe('left:');
    expect(there).toBe(missing);
  });

  it('on a fresh host with devices named as links with the prefix (another state dir\'s, say), gc refuses the default state dir missing, or there with no state file: exit 2, nothing deleted, no dir made', async () => {
    await host.exec(['ip', 'link', 'add', 'snb7', 'type', 'bridge'], { enter: 'nsenter' });
    const { missing, left, there } = await missingThenThere(['gc']);
    // gc's refusal of a state dir with no state file is bad input, as link's of a state that records no prefix (exit-codes.ts).
    expect(missing.startsWith('2 spectrum-link: gc: no state file /var/lib/spectrum-link/links.json (the state dir is the default), so every snb/snc/snp device would go: nothing deleted'), missing).toBe(true);
    expect(left).toBe('left:');
    expect(there).toBe(missing);
    expect(await devicesMade()).toEqual(['snb7']);
  });

  const badNetnsPrefix = (source: string): string => `spectrum-link: ${source} "../x" is not valid: up to 32 of A-Z a-z 0-9 . _ -\n`;
  const badDevicePrefix = (source: string): string =>
    `spectrum-link: ${source}: device prefix "Abc" is not valid: a device prefix is 1 to 9 characters: lower-case letters, digits, '_' and '-', starting with a letter\n`;
  const badLockWait = (source: string, value: string): string => `spectrum-link: ${source} ${JSON.stringify(value)} is not valid: give seconds from 0 to 3600\n`;
  const link = ['link', 'appvm-lynx', '--config-dir', EXAMPLES];
  const badMtu = "spectrum-link: --mtu 65535 is more than a tap takes (65521, Linux's tun driver), and appvm-lynx is attached with none (a tap): give --mtu 65521 or less; only netns links take more\n";

  it.each([
    [link, { SPECTRUM_NETNS_PREFIX: '../x' }, badNetnsPrefix('environment variable SPECTRUM_NETNS_PREFIX')],
    [[...link, '--netns-prefix', '../x'], {}, badNetnsPrefix('--netns-prefix')],
    [[...link, '--netns-prefix', '../x'], { SPECTRUM_NETNS_PREFIX: 'vm-' }, badNetnsPrefix('--netns-prefix')],
    [['list'], { SPECTRUM_DEVICE_PREFIX: 'Abc' }, badDevicePrefix('environment variable SPECTRUM_DEVICE_PREFIX')],
    [['list', '--device-prefix', 'Abc'], {}, badDevicePrefix('--device-prefix')],
    [['gc', '--device-prefix', 'Abc'], { SPECTRUM_DEVICE_PREFIX: 'sn' }, badDevicePrefix('--device-prefix')],
    [link, { SPECTRUM_DEVICE_PREFIX: 'Abc' }, badDevicePrefix('environment variable SPECTRUM_DEVICE_PREFIX')],
    [[...link, '--lock-wait', '3601'], {}, badLockWait('--lock-wait', '3601')],
    [[...link, '--lock-wait', '-1'], {}, badLockWait('--lock-wait', '-1')],
    [link, { SPECTRUM_LOCK_WAIT: '1.5' }, badLockWait('environment variable SPECTRUM_LOCK_WAIT', '1.5')],
    [['unlink', 'appvm-lynx', '--lock-wait', '60s'], {}, badLockWait('--lock-wait', '60s')],
    [['unlink', 'appvm-lynx'], { SPECTRUM_LOCK_WAIT: '86400' }, badLockWait('environment variable SPECTRUM_LOCK_WAIT', '86400')],
    [['gc', '--lock-wait', ''], { SPECTRUM_LOCK_WAIT: '5' }, badLockWait('--lock-wait', '')],
    // Bad input found only once the state says what the run keeps (none of it, the state dir not
    // made yet): refused before the lock would make the dir.
    [[...link, '--mtu', '65535'], {}, badMtu],
  ] as const)('refuses %j with env %j in one line naming where the bad value came from, exit 2, making nothing', async (args, env, line) => {
    const result = await spectrumLink([...args, '--state-dir', ABSENT], { env, cwd: 'scratch' });
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 2, stdout: '', stderr: line });
    expect(await readdir(scratch)).toEqual([]);
    expect(existsSync(ABSENT)).toBe(false);
    expect(await devicesMade()).toEqual([]);
  });
});
