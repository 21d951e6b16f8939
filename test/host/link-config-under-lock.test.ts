// A `link` that waits for another run's state lock links the config as it is once it holds the
// lock, not as it was when it started waiting (up to --lock-wait, 600 s by default): a provider
// dropped meanwhile is not linked, with --keep-going as without. The built bin, in a test namespace.
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns, eventually } from '../harness/index.js';
import { LINK_BIN, devices, withWorldOptions } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';

const FIXTURE = join(import.meta.dirname, '..', '..', 'dist', 'test', 'host', 'fixtures', 'allocate.js');

describeNetns('link reads the config under the state lock', () => {
  const world = linkWorldPerSuite('lockcfg');

  it.each([[[]], [['--keep-going']]] as const)('link appvm-lynx %j, waiting for the lock while netvm is dropped from its providers: links nothing, makes nothing', async (extra) => {
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
    const provider = join(world().configDir, 'appvm-lynx', 'providers', 'net', 'netvm');
    const holder = world().host.spawn([process.execPath, FIXTURE, 'hold', world().stateDir]);
    try {
      await holder.waitForOutput(/locked/);
      const run = world().host.spawn(['node', LINK_BIN, ...withWorldOptions(['link', 'appvm-lynx', ...extra, '--attach', 'netns', '--lock-wait', '120'], world())], { enter: 'nsenter' });
      try {
        // It says it waits once it has waited a second: whatever it reads before the lock is read by then.
        await eventually('the run to say it waits for the lock', async () => run.stderr.includes('waiting for another spectrum-link'), 30_000);
        await rm(provider);
        await holder.kill('SIGKILL');
        const exit = await run.wait();
        await run.waitClosed();
        const records = run.stderr.split('\n').filter((line) => line !== '').map((line) => (JSON.parse(line) as { msg: string }).msg);
        expect({ exit, stdout: run.stdout, said: records.filter((msg) => !msg.startsWith('waiting for another spectrum-link')) }).toEqual({
          exit: { code: 0, signal: null },
          stdout: 'appvm-lynx: no providers, nothing to link\n',
          said: [],
        });
      } finally {
        if (run.exit === undefined) await run.kill('SIGKILL');
      }
      // No link recorded (a run that records nothing writes no state file).
      const statePath = join(world().stateDir, 'links.json');
      expect(existsSync(statePath) ? (JSON.parse(await readFile(statePath, 'utf8')) as { links: unknown[] }).links : []).toEqual([]);
      expect([...(await devices(world().host)).keys()].filter((name) => /^sn[bcp][0-9]/.test(name))).toEqual([]);
    } finally {
      if (holder.exit === undefined) await holder.kill('SIGKILL');
      await writeFile(provider, '');
    }
  });
});
