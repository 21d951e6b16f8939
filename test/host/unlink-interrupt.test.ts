// spectrum-link unlink interrupted once it holds the state lock: its work cannot be stopped at a
// safe point (a kernel bulk delete goes on without it), so the signal ends it at once, exit
// 128 + the signal's number, but with one line saying what may be partly done and what to run: the
// same unlink, which then finishes it. A scripted QEMU that never answers device_del holds the
// unlink under the lock (in its VMM detach) long enough to signal it there, every time.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns, eventually, trackTempDir } from '../harness/index.js';
import { shellWord } from '../../host/printed-command.js';
import { LINK_BIN, devices, runPrinted, withWorldOptions } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

const lines = (text: string): string[] => text.split('\n').filter((line) => line !== '');

describeNetns('unlink interrupted once it holds the lock', () => {
  const world = linkWorldPerSuite('unlinkint');

  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`${signal}: exit ${code}, one line saying what may be partly done and the same unlink to run; that unlink finishes it`, async () => {
      const sockets = await mkdtemp(join(tmpdir(), 'spectrum-unlink-int-'));
      trackTempDir(sockets);
      const qemu = await ScriptedQemu.start(join(sockets, 'appvm-lynx.qmp'));
      // Long enough that the detach is still waiting when the signal comes.
      const vmmArgs = ['--qmp-socket', join(sockets, '{vm}.qmp'), '--vmm-timeout', '30000'];
      try {
        const made = await world().link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', ...vmmArgs, '--json']);
        expect(made.code, made.stderr).toBe(0);
        const statePath = join(world().stateDir, 'links.json');
        const stateBefore = await readFile(statePath, 'utf8');
        qemu.deviceDel = 'silent';
        const run = world().host.spawn(['node', LINK_BIN, ...withWorldOptions(['unlink', 'appvm-lynx', '--forget', ...vmmArgs], world())], { enter: 'nsenter' });
        try {
          // Under the lock, in its detach: QEMU was asked to remove the NIC.
          await eventually('QEMU asked to remove the NIC', async () => qemu.commands.includes('device_del'), 20_000);
          const exit = await run.kill(signal, 10_000);
          await run.waitClosed();
          expect(exit, run.stderr).toEqual({ code, signal: null });
          expect(run.stdout).toBe('');
          const command = `spectrum-link unlink appvm-lynx --forget --state-dir ${world().stateDir} --device-prefix sn --qmp-socket ${shellWord(`${sockets}/{vm}.qmp`)} --vmm-timeout 30000`;
          expect(lines(run.stderr)).toEqual([
            `spectrum-link: unlink interrupted by ${signal}: its take-down may be partly done (NICs detached, devices deleted, the kernel finishing a deletion begun) ` +
              `while the state may still record appvm-lynx's links as before: run ${command} again to finish it`,
          ]);
          // Not recorded: the state is as it was.
          expect(await readFile(statePath, 'utf8')).toBe(stateBefore);
          // The line's unlink, run as printed, finishes it.
          qemu.deviceDel = 'ok';
          const again = await runPrinted(world().host, /run (spectrum-link unlink .*) again to finish it$/.exec(lines(run.stderr)[0] ?? '')?.[1] ?? 'false');
          expect(again.code, again.stderr).toBe(0);
          expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toEqual([]);
          expect([...(await devices(world().host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
        } finally {
          if (run.exit === undefined) await run.kill('SIGKILL');
          await run.waitClosed();
        }
      } finally {
        await qemu.close();
        await rm(sockets, { recursive: true, force: true });
      }
    });
  }
});
