// `link` bounds each NIC's attach as a whole: a VMM that answers every step just within
// --vmm-timeout (and would then refuse) costs twice --vmm-timeout for the attach, and as much
// again at most to take back what it had asked for, not a --vmm-timeout per step, all under the
// state lock. So does every `unlink`, plain too: a detach given up at twice --vmm-timeout fails as a
// detach the VMM refused. A scripted QMP server plays the slow QEMU; the built spectrum-link runs
// in a test namespace.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeNetns, trackTempDir } from '../harness/index.js';
import { shellWord } from '../../host/printed-command.js';
import { devices, runPrinted } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

const lines = (text: string): string[] => text.split('\n').filter((line) => line !== '');

interface QemuLink {
  readonly id: number;
  readonly clientDevice: string;
  readonly bridge: string;
  readonly providerDevice: string;
}

/** Where an unlink test runs: a scripted QEMU holding appvm-lynx's NIC, linked with a 3 s --vmm-timeout. */
interface LinkedQemu {
  readonly sockets: string;
  readonly qemu: ScriptedQemu;
  readonly timeoutMs: number;
  readonly vmmArgs: readonly string[];
  readonly link: QemuLink;
}

describeNetns('link and unlink: a VMM answering each step just in time', () => {
  const world = linkWorldPerSuite('linkdeadline');

  /** Links appvm-lynx to a scripted QEMU (answering at once), runs `test`, then closes the QEMU and its dir. */
  async function withLinkedQemu(dirPrefix: string, test: (setup: LinkedQemu) => Promise<void>): Promise<void> {
    const sockets = await mkdtemp(join(tmpdir(), dirPrefix));
    trackTempDir(sockets);
    const timeoutMs = 3000;
    const qemu = await ScriptedQemu.start(join(sockets, 'appvm-lynx.qmp'));
    const vmmArgs = ['--qmp-socket', join(sockets, '{vm}.qmp'), '--vmm-timeout', String(timeoutMs)];
    try {
      const made = await world().link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', ...vmmArgs, '--json']);
      expect(made.code, made.stderr).toBe(0);
      const link = (JSON.parse(made.stdout) as { links: QemuLink[] }).links[0]!;
      await test({ sockets, qemu, timeoutMs, vmmArgs, link });
    } finally {
      await qemu.close();
      await rm(sockets, { recursive: true, force: true });
    }
  }

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
            `^spectrum-link: the QEMU of appvm-lynx \\(socket ${sockets}/appvm-lynx\\.qmp\\) did not finish adding NIC snc\\d+ within ${2 * timeoutMs} ms \\(twice --vmm-timeout\\): check that VMM .* or give a larger --vmm-timeout, then run link again$`,
          ),
        ),
      ]);
      // Given up before it got to device_add; then a new session took back the tap's descriptor.
      expect(qemu.commands).not.toContain('device_add');
      expect(qemu.commands).toContain('closefd');
      expect(qemu.connections).toBe(2);
      expect([qemu.devices.size, qemu.netdevs.size]).toEqual([0, 0]);
      // The whole bound is what stopped it before device_add (above: with a bound per step only,
      // every step answered in time and device_add was asked). The time only says it did not hang:
      // some 3 --vmm-timeouts (2 to give up, 0.9 for the closefd, the rest of the run), bounded at
      // 6 so that a loaded machine (a CI run took 14.4 s against a bound of 4, 12 s) does not fail it.
      expect(elapsed).toBeLessThan(6 * timeoutMs);
      // Undone: nothing recorded, no device of ours.
      expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toEqual([]);
      expect([...(await devices(world().host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
    } finally {
      await qemu.close();
      await rm(sockets, { recursive: true, force: true });
    }
  });

  it("plain unlink bounds each NIC's detach as a whole too: given up at twice --vmm-timeout, it fails on one line naming VM, socket and what to check, the link kept", async () => {
    await withLinkedQemu('spectrum-unlink-deadline-', async ({ sockets, qemu, timeoutMs, vmmArgs, link }) => {
      expect(qemu.devices.has(link.clientDevice)).toBe(true);
      // Every detach step answered 0.9 --vmm-timeout late (qom-list, two qom-gets, device_del, the
      // event, netdev_del): some 16 s that would go through, step by step, without a whole bound.
      qemu.stepDelayMs = 0.9 * timeoutMs;
      const started = Date.now();
      const plain = await world().link(['unlink', 'appvm-lynx', ...vmmArgs]);
      const elapsed = Date.now() - started;
      expect(plain.code, plain.stderr).toBe(1);
      expect(plain.stdout).toBe('');
      expect(lines(plain.stderr)).toEqual([
        `spectrum-link: unlink appvm-lynx: the QEMU of appvm-lynx (socket ${sockets}/appvm-lynx.qmp) did not finish removing NIC ${link.clientDevice} within ${2 * timeoutMs} ms (twice --vmm-timeout): ` +
          'check that VMM (overloaded? paused?) or give a larger --vmm-timeout; ' +
          "so no host device was deleted and appvm-lynx's links stay recorded (README: A VMM that does not detach): " +
          // The same unlink with --force, with this run's options: its --vmm-timeout too, as a larger one may be what lets the VMM finish.
          `to delete them anyway, run spectrum-link unlink appvm-lynx --force --state-dir ${world().stateDir} --device-prefix sn --qmp-socket ${shellWord(`${sockets}/{vm}.qmp`)} --vmm-timeout ${timeoutMs}`,
      ]);
      // Given up (2 --vmm-timeouts) before device_del, with room for start-up; far less than a --vmm-timeout per step.
      expect(elapsed).toBeLessThan(3 * timeoutMs);
      expect(qemu.commands).not.toContain('device_del');
      // Kept as a plain unlink that fails keeps it: the link recorded and up, its NIC in QEMU.
      expect(qemu.devices.has(link.clientDevice)).toBe(true);
      expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toMatchObject([{ id: link.id, present: true, clientAttach: 'qemu' }]);
      const host = await devices(world().host);
      expect([link.bridge, link.clientDevice, link.providerDevice].filter((device) => host.has(device))).toHaveLength(3);

      // That unlink --force, run as printed (from the root directory, without this run's
      // environment), is bound by this run's --vmm-timeout too: given up at twice it (the
      // default's would let each step through), the devices deleted, the NIC said left.
      const forcedLine = /run (spectrum-link unlink appvm-lynx --force .*)$/.exec(lines(plain.stderr)[0] ?? '')?.[1] ?? 'false';
      const forcedAt = Date.now();
      const forced = await runPrinted(world().host, forcedLine);
      expect(Date.now() - forcedAt).toBeLessThan(3 * timeoutMs);
      expect(forced.code, forced.stderr).toBe(1);
      expect(lines(forced.stderr)).toEqual([expect.stringMatching(new RegExp(`did not finish removing NIC ${link.clientDevice} within ${2 * timeoutMs} ms .*the host side was removed anyway`))]);
      expect((await devices(world().host)).has(link.clientDevice)).toBe(false);
      // Once QEMU answers in time, the unlink that line offers, run as printed, takes the NIC out.
      qemu.stepDelayMs = 0;
      const offered = /, or (spectrum-link unlink .*?) detaches it;/.exec(lines(forced.stderr)[0] ?? '')?.[1] ?? 'false';
      expect(offered).toBe(`spectrum-link unlink appvm-lynx --state-dir ${world().stateDir} --device-prefix sn --attach appvm-lynx=qemu --qmp-socket ${shellWord(`${sockets}/{vm}.qmp`)} --vmm-timeout ${timeoutMs}`);
      const detached = await runPrinted(world().host, offered);
      expect(detached.code, detached.stderr).toBe(0);
      expect(qemu.devices.size).toBe(0);
      // And the same unlink as at first (its ids forgotten) goes through.
      const retried = await world().link(['unlink', 'appvm-lynx', '--forget', ...vmmArgs]);
      expect(retried.code, retried.stderr).toBe(0);
      expect(qemu.devices.size).toBe(0);
    });
  });

  it('cuts the wait for a guest that does not release the NIC short, so that a slow QEMU still gets its netdev removed within the bound and the unlink goes through', async () => {
    await withLinkedQemu('spectrum-unlink-wait-', async ({ qemu, timeoutMs, vmmArgs, link }) => {
      // Each step a quarter of --vmm-timeout late: device_del is accepted at some 3 s (qom-list,
      // two qom-gets, device_del), and the guest never acknowledges. A full --vmm-timeout of
      // waiting would then reach the bound (6 s) before netdev_del: the detach failed halfway,
      // the NIC unplugged and its netdev left.
      qemu.stepDelayMs = 0.25 * timeoutMs;
      qemu.deviceDel = 'unacked';
      const unlinked = await world().link(['unlink', 'appvm-lynx', ...vmmArgs]);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect(qemu.commands.slice(-2)).toEqual(['device_del', 'netdev_del']);
      expect(qemu.netdevs.size).toBe(0);
      expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toMatchObject([{ id: link.id, present: false }]);
      const host = await devices(world().host);
      expect([link.bridge, link.clientDevice, link.providerDevice].filter((device) => host.has(device))).toEqual([]);
    });
  });
});
