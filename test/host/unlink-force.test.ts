// `unlink --force` end to end: a VMM hosting an untrusted guest can refuse or stall the detach of
// its NIC; plain unlink then stops with the devices (and the VM's network) left as they were, and
// says --force; unlink --force deletes the devices all the same, updates the state, and exits 1
// with a line per VMM that did not detach. A scripted QMP server (vmm/scripted-qemu.ts) and the
// spec-exact fake cloud-hypervisor play the VMMs; the built spectrum-link runs in a test namespace.
// `link` taking down a link to a provider the config no longer names does the same as --force.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness, jsonErrorOf, splitJsonError } from '../harness/index.js';
import { TapFd } from '../../host/vmm/tap-fd.js';
import { shellWord } from '../../host/printed-command.js';
import { LINK_BIN, type LinkJson as LinkFields, type LinkWorld, devices, makeLinkWorld, runPrinted, withWorldOptions } from './link-fixture.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

type Link = LinkFields;

interface UnlinkJson {
  vm: string;
  unlinked: (Link & { vmmFailures?: { vm: string; vmm: string; nic: string; error: string }[] })[];
  forgotten: boolean;
}

interface LinkJson {
  vm: string;
  links: Link[];
  unlinked?: UnlinkJson['unlinked'];
}

interface ListedJson extends Link {
  present: boolean;
}

const stderrLines = (stderr: string): string[] => stderr.split('\n').filter((line) => line !== '');
/** A failed --json run's stdout less the error object it ends with, which says its stderr lines and exit code. */
function printedOf(result: { code: number | null; stdout: string; stderr: string }): string {
  const { printed, error } = splitJsonError(result.stdout);
  const [first = '', ...more] = stderrLines(result.stderr);
  expect(error).toEqual(jsonErrorOf(first, expect.stringMatching(/^[a-z-]+$/), result.code ?? -1, more.length === 0 ? undefined : more.map((line) => line.replace(/^spectrum-link: /, ''))));
  return printed;
}
const escaped = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The unlink a line offers to detach a NIC a VMM did not give back, to its end: from `spectrum-link unlink`, or from `cd DIR && ` where a socket template made absolute would be too long. */
const offeredUnlink = (line: string): string | undefined => /, or ((?:cd \S+ && )?spectrum-link unlink .*?) detaches it;/.exec(line)?.[1];

describeNetns('unlink --force: a VMM that does not detach cannot keep its VM connected', () => {
  let harness: Harness;
  let world: LinkWorld;
  let socketDir: string;
  let qemu: ScriptedQemu;
  let qmpTemplate: string;
  const fakes: FakeCloudHypervisor[] = [];

  beforeAll(async () => {
    harness = createHarness('ulforce');
    world = await makeLinkWorld(harness);
    socketDir = await mkdtemp(join(tmpdir(), 'spectrum-unlink-force-'));
    qmpTemplate = join(socketDir, '{vm}.qmp');
    qemu = await ScriptedQemu.start(join(socketDir, 'appvm-lynx.qmp'));
  });
  afterEach(async () => {
    for (const fake of fakes.splice(0)) await fake.close();
    // Every test starts from a QEMU without NICs, cooperating, and no links up.
    qemu.deviceDel = 'ok';
    qemu.delayMs = 0;
    qemu.eventDelayMs = 0;
    qemu.devices.clear();
    qemu.netdevs.clear();
    // No VMM at these paths: whatever is left is taken down as of VMs that are gone.
    const nowhere = ['--qmp-socket', join(socketDir, 'none-{vm}'), '--ch-socket', join(socketDir, 'none-{vm}')];
    await world.link(['unlink', 'appvm-lynx', '--forget', ...nowhere]);
    await world.link(['unlink', 'appvm-catgirl', '--forget', ...nowhere]);
  });
  afterAll(async () => {
    await qemu?.close();
    await world?.dispose();
    await harness?.cleanup();
    if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
  });

  const linkDevicesOf = async (link: Link): Promise<string[]> => {
    const host = await devices(world.host);
    return [link.bridge, link.clientDevice, link.providerDevice].filter((device) => host.has(device));
  };
  const listed = async (): Promise<ListedJson[]> => JSON.parse((await world.link(['list', '--json'])).stdout) as ListedJson[];
  const linkLynx = async (extra: readonly string[] = []): Promise<Link> => {
    const result = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate, ...extra, '--json']);
    expect(result.code, result.stderr).toBe(0);
    return (JSON.parse(result.stdout) as { links: Link[] }).links[0]!;
  };

  it('QEMU refusing device_del: unlink stops and says --force; unlink --force deletes the devices, clears the attachment, exits 1 with one line; the next link reports the NIC left on a deleted tap', async () => {
    const link = await linkLynx();
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
    qemu.deviceDel = 'refuse';

    const plain = await world.link(['unlink', 'appvm-lynx', '--qmp-socket', qmpTemplate]);
    expect(plain.code).toBe(1);
    expect(stderrLines(plain.stderr)).toHaveLength(1);
    // The same unlink with --force, with this run's options (the world gave it --state-dir; its --device-prefix, the default, named too).
    expect(plain.stderr).toMatch(
      new RegExp(
        "^spectrum-link: unlink appvm-lynx: QEMU refused device_del: .*does not support hotplugging .*; so no host device was deleted and appvm-lynx's links stay recorded \\(README: A VMM that does not detach\\): " +
          `to delete them anyway, run ${escaped(`spectrum-link unlink appvm-lynx --force --state-dir ${world.stateDir} --device-prefix sn --qmp-socket ${shellWord(qmpTemplate)}`)}\\n$`,
      ),
    );
    expect(await linkDevicesOf(link)).toHaveLength(3);
    expect(await listed()).toMatchObject([{ id: link.id, present: true, clientAttach: 'qemu' }]);

    const forced = await world.link(['unlink', 'appvm-lynx', '--force', '--qmp-socket', qmpTemplate, '--json']);
    expect(forced.code).toBe(1);
    const lines = stderrLines(forced.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^spectrum-link: QEMU of appvm-lynx did not detach NIC ${link.clientDevice} \\(link appvm-lynx -> netvm\\): QEMU refused device_del: .*; ` +
          `the host side was removed anyway \\(tap ${link.clientDevice}, bridge ${link.bridge}\\), but the VMM may still hold the NIC ` +
          `\\(README: A VMM that does not detach\\): once the VMM answers, remove the NIC with QMP at ${join(socketDir, 'appvm-lynx.qmp')}: device_del \\{"id":"${link.clientDevice}"\\}, ` +
          `then, once DEVICE_DELETED says the guest released it, netdev_del \\{"id":"net-${link.clientDevice}"\\}, ` +
          `or ${escaped(`spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --attach appvm-lynx=qemu --qmp-socket ${shellWord(qmpTemplate)}`)} detaches it; or restart appvm-lynx$`,
      ),
    );
    // The JSON says which link went down despite its VMM, and which VMM.
    const json = JSON.parse(printedOf(forced)) as UnlinkJson;
    expect(json).toMatchObject({ vm: 'appvm-lynx', forgotten: false, unlinked: [{ id: link.id, vmmFailures: [{ vm: 'appvm-lynx', vmm: 'qemu', nic: link.clientDevice }] }] });
    expect(json.unlinked[0]?.vmmFailures?.[0]?.error).toMatch(/QEMU refused device_del/);
    // Cut off: every device of the link is gone; the id is kept, the attachment no longer recorded.
    expect(await linkDevicesOf(link)).toEqual([]);
    expect(await listed()).toMatchObject([{ id: link.id, present: false, linked: false, clientAttach: null, providerAttach: null }]);
    // QEMU still shows the NIC (on the tap now deleted).
    expect(qemu.devices.has(link.clientDevice)).toBe(true);

    // Linked again, the NIC on the deleted tap is a conflict, saying what to do; the run is undone.
    const relinked = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate]);
    expect(relinked.code).toBe(1);
    expect(stderrLines(relinked.stderr)).toHaveLength(1);
    expect(relinked.stderr).toMatch(new RegExp(`NIC ${link.clientDevice} with MAC .* but not on tap ${link.clientDevice}: nobody holds that tap, so it was made anew after the NIC's was deleted \\(README: MTU and stale NICs\\); take the link down \\(unlink\\) and link it again, or restart the VM\\n$`));
    expect(await linkDevicesOf(link)).toEqual([]);

    // Once QEMU cooperates, the unlink the line names, run as printed, takes the NIC out; then linking works again.
    qemu.deviceDel = 'ok';
    const retried = await runPrinted(world.host, offeredUnlink(lines[0]!) ?? 'false');
    expect(retried.code, retried.stderr).toBe(0);
    expect(qemu.devices.size).toBe(0);
    await linkLynx();
  });

  it("unlink stopped by the kernel refusing a deletion (a loopback device under the link's bridge name) after its NIC came out of QEMU: one line saying that NIC, the devices deleted and what may still exist, exit 1, the record as it was; that unlink again, run as printed once the name is free, takes the rest down", async () => {
    const link = await linkLynx();
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
    // The kernel deletes no loopback device (EOPNOTSUPP): this namespace's, renamed (it has to be
    // down for that) to the bridge's name, is one the unlink deletes as the link's names' device.
    await world.host.ip(['link', 'del', link.bridge]);
    await world.host.ip(['link', 'set', 'lo', 'down']);
    await world.host.ip(['link', 'set', 'lo', 'name', link.bridge]);
    let stopped: Awaited<ReturnType<LinkWorld['link']>>;
    try {
      stopped = await world.link(['unlink', 'appvm-lynx', '--qmp-socket', qmpTemplate, '--json']);
    } finally {
      await world.host.ip(['link', 'set', link.bridge, 'name', 'lo']);
      await world.host.ip(['link', 'set', 'lo', 'up']);
    }
    // Its --json line says it too: the link, recorded still, with what went of it.
    expect({ code: stopped.code, stdout: JSON.parse(printedOf(stopped)) as unknown }).toEqual({
      code: 1,
      stdout: {
        vm: 'appvm-lynx',
        unlinked: [],
        forgotten: false,
        takeDownStopped: [
          expect.objectContaining({
            id: link.id,
            clientAttach: 'qemu',
            providerAttach: 'netns',
            nicsDetached: [{ vm: 'appvm-lynx', vmm: 'qemu', nic: link.clientDevice }],
            vmmFailures: [],
            devicesDeleted: [link.clientDevice, link.providerDevice],
            devicesLeft: [link.bridge],
          }),
        ],
      },
    });
    const again = `spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --qmp-socket ${shellWord(qmpTemplate)}`;
    expect(stderrLines(stopped.stderr)).toEqual([
      `spectrum-link: unlink appvm-lynx: taking down appvm-lynx -> netvm (id ${link.id}) stopped part-way: removing device ${link.bridge} failed: Operation not supported; ` +
        `by then it had taken NIC ${link.clientDevice} out of the QEMU of appvm-lynx (appvm-lynx no longer has it); ` +
        `it had deleted ${link.clientDevice} ${link.providerDevice} (${link.bridge} may still exist); ` +
        `the state file is as it was (README: An unlink stopped part-way): run ${again} again`,
    ]);
    // As said: the NIC is out of QEMU, the tap and veth gone, the link still recorded as linked.
    expect(qemu.devices.has(link.clientDevice)).toBe(false);
    expect(await linkDevicesOf(link)).toEqual([]);
    expect(await listed()).toMatchObject([{ id: link.id, present: false, linked: true, clientAttach: 'qemu', providerAttach: 'netns' }]);
    // Run as printed: the NIC already out and the devices already gone count as done; recorded.
    const rerun = await runPrinted(world.host, again);
    expect({ code: rerun.code, stdout: rerun.stdout, stderr: rerun.stderr }).toEqual({ code: 0, stdout: `unlinked appvm-lynx -> netvm (id ${link.id}, kept)\n`, stderr: '' });
    expect(await listed()).toMatchObject([{ id: link.id, present: false, linked: false, clientAttach: null, providerAttach: null }]);
  });

  it("unlink stopped by the kernel refusing a deletion where QEMU runs without the link's NIC (the VM restarted), and again: no NIC said taken out (none was); the second time, nothing done, the kernel's line after `unlink <vm>:`, saying so", async () => {
    const link = await linkLynx();
    // The VM restarted: its QEMU runs, without the NIC hot-plugged before.
    qemu.devices.clear();
    qemu.netdevs.clear();
    await world.host.ip(['link', 'del', link.bridge]);
    await world.host.ip(['link', 'set', 'lo', 'down']);
    await world.host.ip(['link', 'set', 'lo', 'name', link.bridge]);
    const runs: Awaited<ReturnType<LinkWorld['link']>>[] = [];
    try {
      for (let run = 0; run < 2; run += 1) runs.push(await world.link(['unlink', 'appvm-lynx', '--qmp-socket', qmpTemplate]));
    } finally {
      await world.host.ip(['link', 'set', link.bridge, 'name', 'lo']);
      await world.host.ip(['link', 'set', 'lo', 'up']);
    }
    const again = `spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --qmp-socket ${shellWord(qmpTemplate)}`;
    expect(runs.map((run) => ({ code: run.code, stdout: run.stdout, stderr: stderrLines(run.stderr) }))).toEqual([
      {
        code: 1,
        stdout: '',
        stderr: [
          `spectrum-link: unlink appvm-lynx: taking down appvm-lynx -> netvm (id ${link.id}) stopped part-way: removing device ${link.bridge} failed: Operation not supported; ` +
            `by then it had deleted ${link.clientDevice} ${link.providerDevice} (${link.bridge} may still exist); ` +
            `the state file is as it was (README: An unlink stopped part-way): run ${again} again`,
        ],
      },
      // Nothing done: the kernel's line, after `unlink <vm>:` as every unlink failure, saying so.
      {
        code: 1,
        stdout: '',
        stderr: [`spectrum-link: unlink appvm-lynx: removing device ${link.bridge} failed: Operation not supported; so nothing was taken down (no NIC detached, no device deleted), the state file as it was`],
      },
    ]);
    expect(await listed()).toMatchObject([{ id: link.id, present: false, linked: true, clientAttach: 'qemu', providerAttach: 'netns' }]);
    const rerun = await runPrinted(world.host, again);
    expect({ code: rerun.code, stdout: rerun.stdout, stderr: rerun.stderr }).toEqual({ code: 0, stdout: `unlinked appvm-lynx -> netvm (id ${link.id}, kept)\n`, stderr: '' });
  });

  it('run from the socket dir with a relative --qmp-socket and $SPECTRUM_LOCK_WAIT: the unlink the --force line offers names that template from anywhere and the lock wait; run as printed from elsewhere, without this environment, it detaches the NIC', async () => {
    const link = await linkLynx();
    qemu.deviceDel = 'refuse';
    const cwd = process.cwd();
    let forced: Awaited<ReturnType<LinkWorld['link']>>;
    try {
      process.chdir(socketDir);
      forced = await world.link(['unlink', 'appvm-lynx', '--force', '--qmp-socket', '{vm}.qmp'], { SPECTRUM_LOCK_WAIT: '7' });
    } finally {
      process.chdir(cwd);
    }
    expect(forced.code).toBe(1);
    const lines = stderrLines(forced.stderr);
    expect(lines).toHaveLength(1);
    // The template made absolute (or, too long so for some VM name, the command run from the socket dir).
    const absolute = `${socketDir}/{vm}.qmp`;
    const fromDir = Buffer.byteLength(absolute.replace('{vm}', 'v'.repeat(64))) > 107;
    const offered = offeredUnlink(lines[0]!);
    expect(offered).toBe(
      `${fromDir ? `cd ${socketDir} && ` : ''}spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --attach appvm-lynx=qemu --qmp-socket ${shellWord(fromDir ? '{vm}.qmp' : absolute)} --lock-wait 7`,
    );
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
    qemu.deviceDel = 'ok';
    const again = await runPrinted(world.host, offered ?? 'false');
    expect(again.code, again.stderr).toBe(0);
    expect(qemu.devices.size).toBe(0);
  });

  it('QEMU never answering device_del: unlink fails in bounded time leaving the devices; --force --forget deletes them and the ids, exits 1 with one line', async () => {
    const link = await linkLynx();
    qemu.deviceDel = 'silent';

    const plain = await world.link(['unlink', 'appvm-lynx', '--qmp-socket', qmpTemplate, '--vmm-timeout', '300']);
    expect(plain.code).toBe(1);
    expect(stderrLines(plain.stderr)).toHaveLength(1);
    expect(plain.stderr).toMatch(
      new RegExp(`no reply to device_del within 300 ms: .*run ${escaped(`spectrum-link unlink appvm-lynx --force --state-dir ${world.stateDir} --device-prefix sn --qmp-socket ${shellWord(qmpTemplate)} --vmm-timeout 300`)}\\n$`),
    );
    expect(await linkDevicesOf(link)).toHaveLength(3);

    const started = Date.now();
    const forced = await world.link(['unlink', 'appvm-lynx', '--force', '--forget', '--qmp-socket', qmpTemplate, '--vmm-timeout', '300']);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(forced.code).toBe(1);
    expect(forced.stdout).toBe(`unlinked appvm-lynx -> netvm (id ${link.id}, forgotten, VMM detach failed)\n`);
    const lines = stderrLines(forced.stderr);
    expect(lines).toHaveLength(1);
    // With the ids forgotten no later unlink reaches that NIC: the line says how to remove it at QEMU's socket, or to restart the VM.
    expect(lines[0]).toMatch(
      new RegExp(
        `QEMU of appvm-lynx did not detach NIC ${link.clientDevice} .*no reply to device_del within 300 ms.*the host side was removed anyway .*\\(README: A VMM that does not detach\\): ` +
          `once the VMM answers, remove the NIC with QMP at ${join(socketDir, 'appvm-lynx.qmp')}: device_del \\{"id":"${link.clientDevice}"\\}, then, .*netdev_del \\{"id":"net-${link.clientDevice}"\\}; or restart appvm-lynx$`,
      ),
    );
    expect(await linkDevicesOf(link)).toEqual([]);
    expect(await listed()).toEqual([]);
  });

  it('--force bounds a whole detach to twice --vmm-timeout (as plain unlink does): a QEMU answering each step just in time cannot stretch it', async () => {
    const link = await linkLynx();
    // Each step answered within its bound (the greeting and capabilities together within theirs),
    // the guest acknowledging the unplug just in time: a detach of some 4 times --vmm-timeout.
    const slow = (): void => {
      qemu.delayMs = 450;
      qemu.eventDelayMs = 900;
    };
    slow();
    const timed = async (args: readonly string[]): Promise<{ code: number | null; stderr: string; ms: number }> => {
      const started = Date.now();
      const result = await world.link(args);
      return { code: result.code, stderr: result.stderr, ms: Date.now() - started };
    };
    const forced = await timed(['unlink', 'appvm-lynx', '--force', '--qmp-socket', qmpTemplate, '--vmm-timeout', '1000']);
    expect(forced.code).toBe(1);
    expect(forced.ms).toBeLessThan(3500);
    expect(stderrLines(forced.stderr)).toHaveLength(1);
    expect(forced.stderr).toMatch(
      /did not detach NIC (\S+) .*: the QEMU of appvm-lynx \(socket \S+\) did not finish removing NIC \1 within 2000 ms \(twice --vmm-timeout\): check that VMM .*; the host side was removed anyway/,
    );
    expect(await linkDevicesOf(link)).toEqual([]);

    // Without --force the same bound holds (link-vmm-deadline.test.ts): the unlink fails, the devices stay.
    qemu.delayMs = 0;
    qemu.eventDelayMs = 0;
    qemu.devices.clear();
    qemu.netdevs.clear();
    const again = await linkLynx();
    slow();
    const plain = await timed(['unlink', 'appvm-lynx', '--qmp-socket', qmpTemplate, '--vmm-timeout', '1000']);
    expect(plain.code).toBe(1);
    expect(plain.ms).toBeLessThan(3500);
    expect(plain.stderr).toMatch(
      new RegExp(
        `^spectrum-link: unlink appvm-lynx: the QEMU of appvm-lynx .* within 2000 ms \\(twice --vmm-timeout\\): .*run ${escaped(`spectrum-link unlink appvm-lynx --force --state-dir ${world.stateDir} --device-prefix sn --qmp-socket ${shellWord(qmpTemplate)} --vmm-timeout 1000`)}\\n$`,
      ),
    );
    expect(await linkDevicesOf(again)).toHaveLength(3);
  });

  it('cloud-hypervisor answering vm.remove-device with 500: unlink stops; --force deletes the devices, exits 1 with one line; the next link reports the NIC left', async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    fakes.push(fake);
    const args = ['--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath];
    const made = await world.link(['link', 'appvm-catgirl', ...args, '--json']);
    expect(made.code, made.stderr).toBe(0);
    const link = (JSON.parse(made.stdout) as { links: Link[] }).links[0]!;

    fake.inject('vm.remove-device', { status: 500, body: 'device busy' });
    const plain = await world.link(['unlink', 'appvm-catgirl', '--ch-socket', fake.socketPath]);
    expect(plain.code).toBe(1);
    expect(stderrLines(plain.stderr)).toHaveLength(1);
    expect(plain.stderr).toMatch(
      new RegExp(`vm\\.remove-device answered 500.*device busy.*no host device was deleted .*${escaped(`spectrum-link unlink appvm-catgirl --force --state-dir ${world.stateDir} --device-prefix sn --ch-socket ${fake.socketPath}`)}\\n$`),
    );
    expect(await linkDevicesOf(link)).toHaveLength(3);
    expect(fake.nets).toHaveLength(1);

    fake.inject('vm.remove-device', { status: 500, body: 'device busy' });
    const forced = await world.link(['unlink', 'appvm-catgirl', '--force', '--ch-socket', fake.socketPath]);
    expect(forced.code).toBe(1);
    expect(forced.stdout).toBe(`unlinked appvm-catgirl -> netvm (id ${link.id}, kept, VMM detach failed)\n`);
    const lines = stderrLines(forced.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^spectrum-link: cloud-hypervisor of appvm-catgirl did not detach NIC ${link.clientDevice} .*answered 500.*the host side was removed anyway.*: once the VMM answers, ` +
          `remove the NIC with ch-remote --api-socket ${fake.socketPath} remove-device ${link.clientDevice} \\(PUT /api/v1/vm\\.remove-device \\{"id":"${link.clientDevice}"\\} on that socket\\), ` +
          `or ${escaped(`spectrum-link unlink appvm-catgirl --state-dir ${world.stateDir} --device-prefix sn --attach appvm-catgirl=cloud-hypervisor --ch-socket ${fake.socketPath}`)} detaches it; or restart appvm-catgirl$`,
      ),
    );
    expect(await linkDevicesOf(link)).toEqual([]);
    expect(await listed()).toMatchObject([{ id: link.id, present: false, linked: false, clientAttach: null }]);
    // The VMM still has the NIC; linking again finds it on a tap deleted since.
    expect(fake.nets).toHaveLength(1);
    const relinked = await world.link(['link', 'appvm-catgirl', ...args]);
    expect(relinked.code).toBe(1);
    expect(stderrLines(relinked.stderr)).toHaveLength(1);
    expect(relinked.stderr).toMatch(/has NIC \S+ with MAC .* but not on tap \S+: nobody held that tap, so it was made anew after the NIC's was deleted \(README: MTU and stale NICs\); take the link down \(unlink\) and link it again\n$/);
    // The unlink the line names, run as printed.
    const retried = await runPrinted(world.host, offeredUnlink(lines[0]!) ?? 'false');
    expect(retried.code, retried.stderr).toBe(0);
    expect(fake.nets).toHaveLength(0);
  });

  it('cloud-hypervisor answering vm.remove-device with 500 to --force --forget: the line names ch-remote remove-device (vm.remove-device) at its socket, which removes the NIC', async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    fakes.push(fake);
    const made = await world.link(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', fake.socketPath, '--json']);
    expect(made.code, made.stderr).toBe(0);
    const link = (JSON.parse(made.stdout) as { links: Link[] }).links[0]!;
    fake.inject('vm.remove-device', { status: 500, body: 'device busy' });
    const forced = await world.link(['unlink', 'appvm-catgirl', '--force', '--forget', '--ch-socket', fake.socketPath]);
    expect(forced.code).toBe(1);
    const nic = link.clientDevice;
    // No record is left for an unlink to reach that NIC by: the line says how to remove it at the VMM's socket.
    expect(stderrLines(forced.stderr)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^spectrum-link: cloud-hypervisor of appvm-catgirl did not detach NIC ${nic} .*answered 500.*the host side was removed anyway.*\\(README: A VMM that does not detach\\): ` +
            `once the VMM answers, remove the NIC with ch-remote --api-socket ${fake.socketPath} remove-device ${nic} \\(PUT /api/v1/vm\\.remove-device \\{"id":"${nic}"\\} on that socket\\); or restart appvm-catgirl$`,
        ),
      ),
    ]);
    expect(await listed()).toEqual([]);
    expect(fake.nets.map((net) => net.id)).toEqual([nic]);
    // The request the line names, as curl sends it, removes the NIC.
    const removed = await world.host.exec(
      ['curl', '--silent', '--show-error', '--unix-socket', fake.socketPath, '-X', 'PUT', '-H', 'Content-Type: application/json', '-d', JSON.stringify({ id: nic }), '-w', '%{http_code}', 'http://localhost/api/v1/vm.remove-device'],
      { enter: 'nsenter' },
    );
    expect(removed.stdout).toBe('204');
    expect(fake.nets).toEqual([]);
  });

  it('--force tries every VMM: a QEMU client refusing and a cloud-hypervisor provider never answering make two lines, both in the JSON, within bounds', async () => {
    const fake = await FakeCloudHypervisor.start('Running');
    fakes.push(fake);
    const made = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=cloud-hypervisor', '--qmp-socket', qmpTemplate, '--ch-socket', fake.socketPath, '--json']);
    expect(made.code, made.stderr).toBe(0);
    const link = (JSON.parse(made.stdout) as { links: Link[] }).links[0]!;
    qemu.deviceDel = 'refuse';
    fake.silent = true;
    const started = Date.now();
    const forced = await world.link(['unlink', 'appvm-lynx', '--force', '--qmp-socket', qmpTemplate, '--ch-socket', fake.socketPath, '--vmm-timeout', '300', '--json']);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(forced.code).toBe(1);
    const lines = stderrLines(forced.stderr);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^spectrum-link: QEMU of appvm-lynx did not detach NIC ${link.clientDevice} .*refused device_del.*host side was removed anyway`));
    expect(lines[1]).toMatch(
      new RegExp(
        `^spectrum-link: cloud-hypervisor of netvm did not detach NIC ${link.providerDevice} .*no answer to GET vm\\.info within 300 ms.*host side was removed anyway.*` +
          `remove the NIC with ch-remote --api-socket ${fake.socketPath} remove-device ${link.providerDevice} .*, ` +
          `or ${escaped(`spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --attach netvm=cloud-hypervisor --qmp-socket ${shellWord(qmpTemplate)} --ch-socket ${fake.socketPath} --vmm-timeout 300`)} detaches it; or restart netvm$`,
      ),
    );
    const json = JSON.parse(printedOf(forced)) as UnlinkJson;
    expect(json.unlinked[0]?.vmmFailures?.map((failure) => [failure.vm, failure.vmm, failure.nic])).toEqual([
      ['appvm-lynx', 'qemu', link.clientDevice],
      ['netvm', 'cloud-hypervisor', link.providerDevice],
    ]);
    expect(await linkDevicesOf(link)).toEqual([]);
  });

  it('link, a provider dropped from the config, QEMU refusing device_del: the devices go and the state follows all the same, exit 1 with one line; the other link stays up', async () => {
    const extraProvider = join(world.configDir, 'appvm-lynx', 'providers', 'net', 'appvm-catgirl');
    const args = ['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--attach', 'appvm-catgirl=netns', '--qmp-socket', qmpTemplate, '--json'];
    let held: TapFd | undefined;
    try {
      await writeFile(extraProvider, '');
      const both = await world.link(args);
      expect(both.code, both.stderr).toBe(0);
      const links = (JSON.parse(both.stdout) as LinkJson).links;
      const dropped = links.find((link) => link.provider === 'appvm-catgirl')!;
      const kept = links.find((link) => link.provider === 'netvm')!;
      expect([...qemu.devices.keys()].sort()).toEqual([dropped.clientDevice, kept.clientDevice].sort());

      // The kept link's NIC holds its tap, as in a real QEMU (the scripted one drops the descriptor
      // it is given), so that linking again finds it attached.
      held = TapFd.open(kept.clientDevice, `/run/netns/${world.host.name}`);
      await rm(extraProvider);
      qemu.deviceDel = 'refuse';
      const relinked = await world.link(args);
      expect(relinked.code).toBe(1);
      const lines = stderrLines(relinked.stderr);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        new RegExp(
          `^spectrum-link: QEMU of appvm-lynx did not detach NIC ${dropped.clientDevice} \\(link appvm-lynx -> appvm-catgirl\\): QEMU refused device_del: .*; ` +
            `the host side was removed anyway \\(tap ${dropped.clientDevice}, bridge ${dropped.bridge}\\), but the VMM may still hold the NIC ` +
            '\\(README: A VMM that does not detach\\): once the VMM answers, ' +
            `${escaped(`spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --attach appvm-lynx=qemu --qmp-socket ${shellWord(qmpTemplate)}`)} detaches it ` +
            `\\(taking appvm-lynx's other links down too: run ${escaped(
              `spectrum-link link appvm-lynx --config-dir ${world.configDir} --state-dir ${world.stateDir} --device-prefix sn --netns-prefix ${world.netnsPrefix} ` +
                `--attach appvm-lynx=qemu --attach netvm=netns --attach appvm-catgirl=netns --qmp-socket ${shellWord(qmpTemplate)}`,
            )} after\\), or restart appvm-lynx$`,
        ),
      );
      // What is linked stays linked; the link taken down says which VMM did not detach it.
      const json = JSON.parse(printedOf(relinked)) as LinkJson;
      expect(json.links.map((link) => link.id)).toEqual([kept.id]);
      expect(json.unlinked).toMatchObject([{ id: dropped.id, vmmFailures: [{ vm: 'appvm-lynx', vmm: 'qemu', nic: dropped.clientDevice }] }]);
      expect(json.unlinked?.[0]?.vmmFailures?.[0]?.error).toMatch(/QEMU refused device_del/);
      // Cut off: the dropped link's devices are gone and its attachment no longer recorded; the
      // other link is as it was.
      expect(await linkDevicesOf(dropped)).toEqual([]);
      expect(await linkDevicesOf(kept)).toHaveLength(3);
      const byId = new Map((await listed()).map((entry) => [entry.id, entry]));
      expect(byId.get(dropped.id)).toMatchObject({ present: false, linked: false, clientAttach: null, providerAttach: null });
      expect(byId.get(kept.id)).toMatchObject({ present: true, clientAttach: 'qemu', providerAttach: 'netns' });
      expect(qemu.devices.has(kept.clientDevice)).toBe(true);

      // Nothing more to take down: the next link of the client succeeds, the other link untouched.
      const again = await world.link(args);
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout)).not.toHaveProperty('unlinked');
      expect(await linkDevicesOf(kept)).toHaveLength(3);
    } finally {
      held?.close();
      await rm(extraProvider, { force: true });
    }
  });

  it('unlink under a --qmp-socket that now gives another path finds the NIC at the socket recorded; --force where that QEMU refuses names that socket in its line, to remove the NIC there or unlink again; that unlink, run as printed, looks there for that NIC alone', async () => {
    const elsewhere = ['--qmp-socket', join(socketDir, 'none-{vm}')];
    const recorded = join(socketDir, 'appvm-lynx.qmp');
    const first = await linkLynx();
    const plain = await world.link(['unlink', 'appvm-lynx', ...elsewhere]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(qemu.devices.has(first.clientDevice)).toBe(false);

    const link = await linkLynx();
    qemu.deviceDel = 'refuse';
    // With an --attach for links recorded without modes (a script passing one set to every call):
    // none here, but given again to the unlink after, it would give netvm's side a mode too.
    const forced = await world.link(['unlink', 'appvm-lynx', '--force', ...elsewhere, '--attach', 'qemu']);
    expect(forced.code).toBe(1);
    const lines = stderrLines(forced.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`remove the NIC with QMP at ${recorded}: device_del {"id":"${link.clientDevice}"}`);
    // The socket recorded in place of this run's template (the world gave it --state-dir; the device prefix named, the default too; --attach not carried over).
    const printed = offeredUnlink(lines[0]!);
    expect(printed).toBe(`spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --attach appvm-lynx=qemu --qmp-socket ${recorded}`);
    // As the line says, once QEMU answers, run as printed.
    qemu.deviceDel = 'ok';
    const connections = qemu.connections;
    const again = await runPrinted(world.host, printed ?? 'false');
    expect(again.code, again.stderr).toBe(0);
    expect(qemu.devices.size).toBe(0);
    // Asked for appvm-lynx's NIC alone: no connection looking there for netvm's.
    expect(qemu.connections - connections).toBe(1);
  });

  it('unlink --force under a --qmp-socket naming the socket recorded by a path too long for a socket: the line names the socket recorded for the unlink after, which, run as printed, detaches the NIC', async () => {
    const recorded = join(socketDir, 'appvm-lynx.qmp');
    // The same socket (its directory resolved), but over 107 bytes: no unlink can use it, the record gone.
    const tooLong = ['--qmp-socket', `${socketDir}/${'./'.repeat(50)}{vm}.qmp`];
    const link = await linkLynx();
    qemu.deviceDel = 'refuse';
    const forced = await world.link(['unlink', 'appvm-lynx', '--force', ...tooLong]);
    expect(forced.code).toBe(1);
    const lines = stderrLines(forced.stderr);
    expect(lines).toHaveLength(1);
    const printed = offeredUnlink(lines[0]!);
    expect(printed).toBe(`spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --attach appvm-lynx=qemu --qmp-socket ${recorded}`);
    qemu.deviceDel = 'ok';
    const again = await runPrinted(world.host, printed ?? 'false');
    expect(again.code, again.stderr).toBe(0);
    expect(qemu.devices.has(link.clientDevice)).toBe(false);
  });

  it('unlink, --force too, under a --qmp-socket too long for a side whose socket the state does not record: bad input, exit 2, one line, before anything (no NIC asked out, no device deleted, the record as it was)', async () => {
    const link = await linkLynx();
    // A record written before sockets were recorded: its detach goes to the template's path.
    const stateFile = join(world.stateDir, 'links.json');
    await writeFile(stateFile, (await readFile(stateFile, 'utf8')).replace(/,"clientSocket":"[^"]*"/, ''));
    const text = await readFile(stateFile, 'utf8');
    expect(text).not.toContain('clientSocket');
    const tooLong = ['--qmp-socket', `${socketDir}/${'./'.repeat(50)}{vm}.qmp`];
    const asked = qemu.commands.length;
    for (const force of [[], ['--force']]) {
      const refused = await world.link(['unlink', 'appvm-lynx', ...force, ...tooLong]);
      expect(refused.code, refused.stderr).toBe(2);
      expect(stderrLines(refused.stderr)).toEqual([expect.stringMatching(/^spectrum-link: --qmp-socket ".*" gives VM appvm-lynx the socket path ".*", \d+ bytes: a Unix socket path has at most 107; use a shorter path$/)]);
      expect(refused.stdout).toBe('');
    }
    expect(qemu.commands.length).toBe(asked);
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
    expect(await linkDevicesOf(link)).toHaveLength(3);
    expect(await readFile(stateFile, 'utf8')).toBe(text);
  });

  it('link taking down a dropped provider whose side the state records no socket for, under a --qmp-socket too long for it: not begun (exit 1, one line), no NIC asked out, its devices and record as they were; link again under a usable one takes it down', async () => {
    const extraProvider = join(world.configDir, 'appvm-lynx', 'providers', 'net', 'appvm-catgirl');
    const catgirl = await ScriptedQemu.start(join(socketDir, 'appvm-catgirl.qmp'));
    // appvm-lynx's side none: a namespace made for it would be left to the tests after.
    const args = ['link', 'appvm-lynx', '--attach', 'appvm-lynx=none', '--attach', 'netvm=netns', '--attach', 'appvm-catgirl=qemu', '--json'];
    try {
      await writeFile(extraProvider, '');
      const both = await world.link([...args, '--qmp-socket', qmpTemplate]);
      expect(both.code, both.stderr).toBe(0);
      const dropped = (JSON.parse(both.stdout) as LinkJson).links.find((link) => link.provider === 'appvm-catgirl')!;
      expect(catgirl.devices.has(dropped.providerDevice)).toBe(true);
      const stateFile = join(world.stateDir, 'links.json');
      await writeFile(stateFile, (await readFile(stateFile, 'utf8')).replace(/,"providerSocket":"[^"]*"/, ''));
      const text = await readFile(stateFile, 'utf8');
      expect(text).not.toContain('providerSocket');
      await rm(extraProvider);
      const asked = catgirl.commands.length;
      const refused = await world.link([...args, '--qmp-socket', `${socketDir}/${'./'.repeat(50)}{vm}.qmp`]);
      expect(refused.code, refused.stderr).toBe(1);
      expect(stderrLines(refused.stderr)).toEqual([
        expect.stringMatching(
          /^spectrum-link: linked, but taking down appvm-lynx -> appvm-catgirl \(no longer among the providers\) was not begun: --qmp-socket ".*" gives VM appvm-catgirl the socket path ".*", \d+ bytes: a Unix socket path has at most 107; use a shorter path; none was taken down \(README: A provider dropped\): run the same link again with that option fixed$/,
        ),
      ]);
      expect(catgirl.commands.length).toBe(asked);
      expect(catgirl.devices.has(dropped.providerDevice)).toBe(true);
      expect(await linkDevicesOf(dropped)).toHaveLength(3);
      expect(await readFile(stateFile, 'utf8')).toBe(text);

      const again = await world.link([...args, '--qmp-socket', qmpTemplate]);
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ unlinked: [{ id: dropped.id }] });
      expect(catgirl.devices.has(dropped.providerDevice)).toBe(false);
      expect(await linkDevicesOf(dropped)).toEqual([]);
    } finally {
      await rm(extraProvider, { force: true });
      await catgirl.close();
    }
  });

  it('--force with VMMs that detach: exit 0, output as a plain unlink (no vmmFailures)', async () => {
    const link = await linkLynx();
    const forced = await world.link(['unlink', 'appvm-lynx', '--force', '--qmp-socket', qmpTemplate, '--json']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toBe('');
    const json = JSON.parse(forced.stdout) as UnlinkJson;
    expect(json.unlinked[0]).not.toHaveProperty('vmmFailures');
    expect(qemu.devices.size).toBe(0);
    expect(await linkDevicesOf(link)).toEqual([]);
  });

  it('a failed link whose undo a VMM does not detach: after the failure, a line for that NIC (plain and --keep-going); the devices and ids are undone all the same', async () => {
    // appvm-lynx's QEMU takes the client NIC and never answers the device_del that takes it back;
    // netvm's QEMU refuses the provider NIC: the run fails, and its undo cannot take the first back.
    qemu.deviceDel = 'silent';
    const provider = await ScriptedQemu.start(join(socketDir, 'netvm.qmp'));
    provider.deviceAdd = 'refuse';
    try {
      const undoLine = (nic: string): RegExp =>
        new RegExp(
          `^spectrum-link: undoing the run, QEMU of appvm-lynx did not detach NIC ${nic} that the run had hot-plugged \\(link appvm-lynx -> netvm\\): .*no reply to device_del within 300 ms.*; ` +
            'the undo went on, so that VMM may still hold it \\(README: What an undo leaves\\): ' +
            // The state no longer records the NIC: the line says how to remove it, over QMP.
            `once it answers, remove it with QMP at ${join(socketDir, 'appvm-lynx.qmp')}: device_del \\{"id":"${nic}"\\}, ` +
            `then, once DEVICE_DELETED says the guest released it, netdev_del \\{"id":"net-${nic}"\\}; or restart appvm-lynx$`,
        );
      const args = ['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=qemu', '--qmp-socket', qmpTemplate, '--vmm-timeout', '300'];
      for (const extra of [[], ['--keep-going']]) {
        qemu.devices.clear();
        qemu.netdevs.clear();
        const run = await world.link([...args, ...extra]);
        expect(run.code, run.stderr).toBe(1);
        const [nic] = [...qemu.devices.keys()];
        expect(nic, 'the client NIC QEMU still holds').toMatch(/^snc\d+$/);
        expect(stderrLines(run.stderr), extra.join(' ')).toEqual([
          expect.stringMatching(new RegExp(`^spectrum-link: ${extra.length > 0 ? 'link appvm-lynx failed: ' : ''}QEMU refused to add NIC snp\\d+ .*No free slot on bus pcie\\.0`)),
          expect.stringMatching(undoLine(nic!)),
        ]);
        // The ids the line names are QEMU's: the device, and its netdev (left, as device_del had no answer).
        expect([...qemu.netdevs]).toEqual([`net-${nic!}`]);
        // Undone all the same: nothing recorded, no device of the link.
        expect(await listed()).toEqual([]);
        expect([...(await devices(world.host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
      }
    } finally {
      await provider.close();
    }
  });

  it('a failed link whose undo cloud-hypervisor does not detach: the line for that NIC names ch-remote remove-device (vm.remove-device) at its socket, which removes it', async () => {
    // appvm-catgirl's cloud-hypervisor takes the client NIC and answers the vm.remove-device that
    // takes it back with 500; netvm's QEMU refuses the provider NIC.
    const fake = await FakeCloudHypervisor.start('Running');
    fakes.push(fake);
    const provider = await ScriptedQemu.start(join(socketDir, 'netvm.qmp'));
    provider.deviceAdd = 'refuse';
    try {
      fake.inject('vm.remove-device', { status: 500, body: 'device busy' });
      const run = await world.link(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=qemu', '--ch-socket', fake.socketPath, '--qmp-socket', qmpTemplate]);
      expect(run.code, run.stderr).toBe(1);
      const [nic] = fake.nets.map((net) => net.id);
      expect(nic, 'the client NIC cloud-hypervisor still holds').toMatch(/^snc\d+$/);
      expect(stderrLines(run.stderr)).toEqual([
        expect.stringMatching(/^spectrum-link: QEMU refused to add NIC snp\d+ .*No free slot on bus pcie\.0/),
        expect.stringMatching(
          new RegExp(
            `^spectrum-link: undoing the run, cloud-hypervisor of appvm-catgirl did not detach NIC ${nic} that the run had hot-plugged .*vm\\.remove-device answered 500.*; the undo went on, .*: ` +
              `once it answers, remove it with ch-remote --api-socket ${fake.socketPath} remove-device ${nic} \\(PUT /api/v1/vm\\.remove-device \\{"id":"${nic}"\\} on that socket\\); or restart appvm-catgirl$`,
          ),
        ),
      ]);
      // The request the line names, as curl sends it, removes the NIC.
      const removed = await world.host.exec(
        ['curl', '--silent', '--show-error', '--unix-socket', fake.socketPath, '-X', 'PUT', '-H', 'Content-Type: application/json', '-d', JSON.stringify({ id: nic }), '-w', '%{http_code}', 'http://localhost/api/v1/vm.remove-device'],
        { enter: 'nsenter' },
      );
      expect(removed.stdout).toBe('204');
      expect(fake.nets).toEqual([]);
    } finally {
      await provider.close();
    }
  });

  it('a failed link whose undo cannot delete the namespace it made (the kernel refuses: its file still a mount point): the failure first, exit 1, then a line naming it and what to run; the rest is undone (plain and --keep-going)', async () => {
    // appvm-lynx (netns) gets a namespace this run makes; netvm's cloud-hypervisor refuses the
    // provider NIC, and as it does, the namespace's file is bind-mounted over itself: `ip netns
    // delete` unmounts one of the two and the kernel refuses to remove a mount point (EBUSY).
    const netns = `${world.netnsPrefix}appvm-lynx`;
    const file = `/run/netns/${netns}`;
    const fake = await FakeCloudHypervisor.start('Running');
    fakes.push(fake);
    let mounted = false;
    fake.refuse.set('vm.add-net', () => {
      execFileSync('mount', ['--bind', file, file]);
      mounted = true;
      return { status: 500, body: 'no free PCI slot' };
    });
    const args = ['link', 'appvm-lynx', '--attach', 'appvm-lynx=netns', '--attach', 'netvm=cloud-hypervisor', '--ch-socket', fake.socketPath];
    try {
      for (const extra of [[], ['--keep-going']]) {
        expect(existsSync(file), 'the namespace is to be made by the run').toBe(false);
        const run = await world.link([...args, ...extra]);
        expect(run.code, run.stderr).toBe(1);
        expect(mounted).toBe(true);
        expect(stderrLines(run.stderr), extra.join(' ')).toEqual([
          expect.stringMatching(new RegExp(`^spectrum-link: ${extra.length > 0 ? 'link appvm-lynx failed: ' : ''}cloud-hypervisor at .* failed to add NIC snp\\d+ .*no free PCI slot`)),
          `spectrum-link: undoing the run, deleting network namespace ${netns}, which the run had made, failed: Cannot remove namespace file "${file}": Device or resource busy; ` +
            `it may be left (README: What an undo leaves): check what holds it (findmnt ${file}; ip netns pids ${netns}), then ip netns delete ${netns}`,
        ]);
        // The rest of the undo was done: no device of the run, its id given back.
        expect([...(await devices(world.host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
        expect(await listed()).toEqual([]);
        // The namespace is left, as said; once its second mount is gone, the command the line names deletes it.
        expect(existsSync(file)).toBe(true);
        execFileSync('umount', [file]);
        mounted = false;
        await world.host.exec(['ip', 'netns', 'delete', netns], { enter: 'nsenter' });
        expect(existsSync(file)).toBe(false);
      }
    } finally {
      if (mounted) execFileSync('umount', [file]);
    }
  });

  it('a failed link whose undo cannot write the state file back (a full disk): the failure\'s line first, exit 1, then a line saying what the file still records and what to run', async () => {
    // The state dir on a tmpfs of two pages, in a mount namespace of its own: the lock holder's
    // file and the run's one write of its ids fit; the undo's write back does not (ENOSPC).
    // appvm-lynx's QEMU refuses its NIC, so the run fails after its ids are recorded.
    const mountPoint = await mkdtemp(join(tmpdir(), 'spectrum-full-state-'));
    qemu.deviceAdd = 'refuse';
    try {
      const args = withWorldOptions(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate, '--state-dir', mountPoint], world);
      const script = 'mount -t tmpfs -o size=8k tmpfs "$0" && { "$@"; code=$?; echo "--- state"; cat "$0/links.json"; exit $code; }';
      const run = await world.host.exec(['unshare', '-m', 'sh', '-c', script, mountPoint, 'node', LINK_BIN, ...args], { enter: 'nsenter', allowFailure: true });
      expect(run.code, run.stderr).toBe(1);
      const [, stateText = ''] = run.stdout.split('--- state\n');
      // What the file still records: the run's link, its attach modes (and its QEMU's socket).
      const state = JSON.parse(stateText) as { links: { client: string; provider: string; id: number; attached?: unknown }[] };
      expect(state.links).toEqual([
        { client: 'appvm-lynx', provider: 'netvm', id: expect.any(Number), attached: { client: 'qemu', provider: 'netns', clientSocket: join(socketDir, 'appvm-lynx.qmp') } },
      ]);
      const id = state.links[0]!.id;
      expect(stderrLines(run.stderr)).toEqual([
        // The failure undone stays the first line.
        expect.stringMatching(/^spectrum-link: QEMU refused to add NIC snc\d+ .*No free slot on bus pcie\.0/),
        `spectrum-link: undoing the run, the state file could not be written back: cannot write state file ${mountPoint}/links.json (ENOSPC); check the state dir's permissions and free space; ` +
          `it still records appvm-lynx -> netvm (id ${id}) as this run made them, whose devices are deleted (README: What an undo leaves): ` +
          `once it can be written, run spectrum-link link appvm-lynx --config-dir ${world.configDir} --state-dir ${mountPoint} --device-prefix sn --netns-prefix ${world.netnsPrefix} ` +
          `--attach appvm-lynx=qemu --attach netvm=netns --qmp-socket ${shellWord(qmpTemplate)}`,
      ]);
      // The devices are deleted, as said; the tmpfs stayed in that mount namespace.
      expect([...(await devices(world.host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
      expect(await readFile('/proc/self/mountinfo', 'utf8')).not.toContain(mountPoint);
    } finally {
      qemu.deviceAdd = 'ok';
      await rm(mountPoint, { recursive: true, force: true });
    }
  });
});
