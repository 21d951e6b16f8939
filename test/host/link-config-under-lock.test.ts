// A `link` that waits for another run's state lock links the config as it is once it holds the
// lock, not as it was when it started waiting (up to --lock-wait, 600 s by default): a provider
// dropped meanwhile is not linked, with --keep-going as without; `link --all` links the config
// dir as it is then (a VM dropped, one added, one misnamed, each as they are then). The built bin,
// in a test namespace.
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns, eventually } from '../harness/index.js';
import { EXAMPLES, LINK_BIN, devices, withWorldOptions } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';

const FIXTURE = join(import.meta.dirname, '..', '..', 'dist', 'test', 'host', 'fixtures', 'allocate.js');

describeNetns('link reads the config under the state lock', () => {
  const world = linkWorldPerSuite('lockcfg');

  /**
   * Run `link ARGS` while another run holds the state lock; once it says it waits, do
   * `meanwhile`, then let the lock go. Its exit, stdout and what it said on stderr (the log
   * records' messages, but for that it waits, and a failure's line).
   */
  const linkWaitingForLock = async (args: readonly string[], meanwhile: () => Promise<void>): Promise<{ exit: unknown; stdout: string; said: string[] }> => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
    const holder = world().host.spawn([process.execPath, FIXTURE, 'hold', world().stateDir]);
    try {
      await holder.waitForOutput(/locked/);
      const run = world().host.spawn(['node', LINK_BIN, ...withWorldOptions(['link', ...args, '--lock-wait', '120'], world())], { enter: 'nsenter' });
      try {
        // It says it waits once it has waited a second: whatever it reads before the lock is read by then.
        await eventually('the run to say it waits for the lock', async () => run.stderr.includes('waiting for another spectrum-link'), 30_000);
        await meanwhile();
        await holder.kill('SIGKILL');
        const exit = await run.wait();
        await run.waitClosed();
        // Log records are JSON; the line of a failure is not (`spectrum-link: ...`).
        const records = run.stderr
          .split('\n')
          .filter((line) => line !== '')
          .map((line) => (line.startsWith('{') ? (JSON.parse(line) as { msg: string }).msg : line));
        return { exit, stdout: run.stdout, said: records.filter((msg) => !msg.startsWith('waiting for another spectrum-link')) };
      } finally {
        if (run.exit === undefined) await run.kill('SIGKILL');
      }
    } finally {
      if (holder.exit === undefined) await holder.kill('SIGKILL');
    }
  };

  /** The links the state records (a run that records nothing writes no state file), as `client -> provider`. */
  const recorded = async (): Promise<string[]> => {
    const statePath = join(world().stateDir, 'links.json');
    const links = existsSync(statePath) ? (JSON.parse(await readFile(statePath, 'utf8')) as { links: { client: string; provider: string }[] }).links : [];
    return links.map((link) => `${link.client} -> ${link.provider}`).sort();
  };
  /** A VM directory whose only provider is netvm. */
  const addVm = async (dir: string): Promise<void> => {
    await mkdir(join(dir, 'blk'), { recursive: true });
    await mkdir(join(dir, 'providers', 'net'), { recursive: true });
    await writeFile(join(dir, 'vmlinux'), '');
    await writeFile(join(dir, 'blk', 'root.img'), '');
    await writeFile(join(dir, 'providers', 'net', 'netvm'), '');
  };
  const linkDevices = async (): Promise<string[]> => [...(await devices(world().host)).keys()].filter((name) => /^sn[bcp][0-9]/.test(name)).sort();

  it.each([[[]], [['--keep-going']]] as const)('link appvm-lynx %j, waiting for the lock while netvm is dropped from its providers: links nothing, makes nothing', async (extra) => {
    const provider = join(world().configDir, 'appvm-lynx', 'providers', 'net', 'netvm');
    try {
      const result = await linkWaitingForLock(['appvm-lynx', ...extra, '--attach', 'netns'], () => rm(provider));
      expect(result).toEqual({ exit: { code: 0, signal: null }, stdout: 'appvm-lynx: no providers, nothing to link\n', said: [] });
      expect(await recorded()).toEqual([]);
      expect(await linkDevices()).toEqual([]);
    } finally {
      await writeFile(provider, '');
    }
  });

  it.each([[[]], [['--keep-going']]] as const)(
    'link --all %j, waiting for the lock while appvm-lynx drops netvm, appvm-catgirl goes, appvm-newt comes and appvm+newt (no VM name) comes: links appvm-newt alone, warns of appvm+newt',
    async (extra) => {
      const config = world().configDir;
      const provider = join(config, 'appvm-lynx', 'providers', 'net', 'netvm');
      const [catgirl, newt, misnamed] = [join(config, 'appvm-catgirl'), join(config, 'appvm-newt'), join(config, 'appvm+newt')];
      try {
        const result = await linkWaitingForLock(['--all', ...extra, '--attach', 'none', '--json'], async () => {
          await rm(provider);
          await rm(catgirl, { recursive: true });
          await addVm(newt);
          await addVm(misnamed);
        });
        const lines = result.stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as { vm: string; links: { provider: string }[]; invalidName?: string });
        expect({ ...result, stdout: lines.map(({ vm, links, invalidName }) => ({ vm, providers: links.map((link) => link.provider), invalidName: invalidName !== undefined })) }).toEqual({
          exit: { code: 0, signal: null },
          stdout: [
            { vm: 'appvm-newt', providers: ['netvm'], invalidName: false },
            { vm: 'appvm+newt', providers: [], invalidName: true },
          ],
          said: [expect.stringMatching(/appvm\+newt.* has a providers\/net but no VM name, so it is not linked/)],
        });
        expect(await recorded()).toEqual(['appvm-newt -> netvm']);
        expect(await linkDevices()).toHaveLength(3);
      } finally {
        await world().link(['unlink', 'appvm-newt', '--forget']);
        await rm(newt, { recursive: true, force: true });
        await rm(misnamed, { recursive: true, force: true });
        if (!existsSync(catgirl)) await cp(join(EXAMPLES, 'appvm-catgirl'), catgirl, { recursive: true });
        await writeFile(provider, '');
      }
      expect(await linkDevices()).toEqual([]);
    },
  );

  it('link --all --attach netns --attach appvm-newt=none --mtu 65535, waiting for the lock while appvm-newt comes (a tap cannot take that MTU): refused once it holds it, exit 2, one line, nothing made', async () => {
    const newt = join(world().configDir, 'appvm-newt');
    try {
      const result = await linkWaitingForLock(['--all', '--attach', 'netns', '--attach', 'appvm-newt=none', '--mtu', '65535'], () => addVm(newt));
      expect(result).toEqual({ exit: { code: 2, signal: null }, stdout: '', said: [expect.stringMatching(/^spectrum-link: .*--mtu 65535 is more than a tap takes \(65521.*appvm-newt/)] });
      expect(await recorded()).toEqual([]);
      expect(await linkDevices()).toEqual([]);
    } finally {
      await rm(newt, { recursive: true, force: true });
    }
  });
});
