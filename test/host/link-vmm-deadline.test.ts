// `link` bounds each NIC's attach as a whole: a VMM that answers every step just within
// --vmm-timeout (and would then refuse) costs twice --vmm-timeout for the attach, and as much
// again at most to take back what it had asked for, not a --vmm-timeout per step, all under the
// state lock. A scripted QMP server plays the slow QEMU; the built spectrum-link runs in a test
// namespace.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns, trackTempDir } from '../harness/index.js';
import { devices } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

const lines = (text: string): string[] => text.split('\n').filter((line) => line !== '');

describeNetns('link: a VMM answering each attach step just in time', () => {
  const world = linkWorldPerSuite('linkdeadline');

  it('gives the attach up at twice --vmm-timeout (one bound for the whole, not one per step), takes back what it had asked for, undoes the run, says so on one line', async () => {
    const sockets = await mkdtemp(join(tmpdir(), 'spectrum-link-deadline-'));
    trackTempDir(sockets);
    // Large enough that start-up and device work under load (about 1 s) stay far inside the bound.
    const timeoutMs = 3000;
    // Greeting and capabilities at once, then every hot-plug step answered 0.9 --vmm-timeout late,
    // device_add refused at the end: some six steps of 2.7 s each (16 s) without a whole bound.
    const qemu = await ScriptedQemu.start(join(sockets, 'appvm-lynx.qmp'));
    qemu.stepDelayMs = 0.9 * timeoutMs;
    qemu.deviceAdd = 'refuse';
    try {
      const args = ['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', join(sockets, '{vm}.qmp'), '--vmm-timeout', String(timeoutMs)];
      const started = Date.now();
      const run = await world().link(args);
      const elapsed = Date.now() - started;
      expect(run.code, run.stderr).toBe(1);
      expect(lines(run.stderr)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^spectrum-link: the QEMU of appvm-lynx \\(socket ${sockets}/appvm-lynx\\.qmp\\) did not finish adding NIC snc\\d+ within ${2 * timeoutMs} ms, twice --vmm-timeout, the bound on one NIC's whole attach .*: check that VMM .*, then run link again$`,
          ),
        ),
      ]);
      // Given up before it got to device_add; then a new session took back the tap's descriptor.
      expect(qemu.commands).not.toContain('device_add');
      expect(qemu.commands).toContain('closefd');
      expect(qemu.connections).toBe(2);
      expect([qemu.devices.size, qemu.netdevs.size]).toEqual([0, 0]);
      // Within the bound, attach and take-back (4 --vmm-timeouts; some 2.9 here: 2 to give up, 0.9 for the closefd), with room for the
      // rest of the run; far less than a --vmm-timeout per step.
      expect(elapsed).toBeLessThan(4 * timeoutMs);
      // Undone: nothing recorded, no device of ours.
      expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toEqual([]);
      expect([...(await devices(world().host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
    } finally {
      await qemu.close();
      await rm(sockets, { recursive: true, force: true });
    }
  });
});
