// `link` of a side up as a VMM attached it (qemu, cloud-hypervisor) to another mode: the NIC comes
// out of that VMM first, as unlink takes it out, so that the guest keeps no NIC the state no longer
// records. A VMM that runs no more (its socket gone) holds none: the run goes on. One that refuses
// or stalls stops the run before anything is made, as it stops a plain unlink. A run that fails
// after a NIC came out says that link is down. A real QEMU (paused, QMP only), a scripted QMP
// server (vmm/scripted-qemu.ts) and the spec-exact fake cloud-hypervisor play the VMMs; the built
// spectrum-link runs in a test namespace.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { QmpClient } from '../../host/vmm/qmp.js';
import { TapFd } from '../../host/vmm/tap-fd.js';
import { createHarness, describeNetns, eventually, type Harness, jsonErrorOf, type NetnsProcess, splitJsonError } from '../harness/index.js';
import { LINK_BIN, type LinkJson, type LinkWorld, devices, makeLinkWorld, runPrinted, withWorldOptions } from './link-fixture.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

const stderrLines = (stderr: string): string[] => stderr.split('\n').filter((line) => line !== '');
const escaped = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describeNetns('link to another attach mode takes the NIC out of the VMM the state records first', () => {
  let harness: Harness;
  let world: LinkWorld;
  let socketDir: string;
  let qmpTemplate: string;
  let qemu: ScriptedQemu;
  const fakes: FakeCloudHypervisor[] = [];

  beforeAll(async () => {
    harness = createHarness('vmmswitch');
    world = await makeLinkWorld(harness);
    socketDir = await mkdtemp(join(tmpdir(), 'spectrum-vmm-switch-'));
    qmpTemplate = join(socketDir, '{vm}.qmp');
    qemu = await ScriptedQemu.start(join(socketDir, 'appvm-lynx.qmp'));
  });
  afterEach(async () => {
    for (const fake of fakes.splice(0)) await fake.close();
    qemu.deviceDel = 'ok';
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

  const fake = async (): Promise<FakeCloudHypervisor> => {
    const started = await FakeCloudHypervisor.start('Running');
    fakes.push(started);
    return started;
  };
  const linked = async (args: readonly string[]): Promise<LinkJson> => {
    const result = await world.link([...args, '--json']);
    expect(result.code, result.stderr).toBe(0);
    return (JSON.parse(result.stdout.trim().split('\n')[0]!) as { links: LinkJson[] }).links[0]!;
  };
  const lynxAsQemu = (): Promise<LinkJson> => linked(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate]);
  const listed = async (): Promise<string> => (await world.link(['list', '--json'])).stdout;
  /** Each of the link's host devices with its kind and ifindex: the same after a run that changed nothing. */
  const linkDevices = async (link: LinkJson): Promise<string[]> => {
    const host = await devices(world.host);
    return [link.bridge, link.clientDevice, link.providerDevice].map((name) => `${name} ${host.get(name)?.linkinfo?.info_kind} ${host.get(name)?.ifindex}`);
  };

  it('qemu to none, in a real QEMU: its netdev is removed (the tap, kept for the VMM arguments, loses its carrier), recorded none; unlink then asks QEMU nothing', async () => {
    // A QEMU of its own, paused, with QMP only (no guest: device_del is never acknowledged, and
    // the netdev is removed after --vmm-timeout all the same, as unlink does).
    const realDir = await mkdtemp(join(tmpdir(), 'spectrum-vmm-switch-real-'));
    const qmpPath = join(realDir, 'appvm-lynx.qmp');
    let real: NetnsProcess | undefined;
    try {
      real = world.host.spawn(['qemu-system-x86_64', '-machine', 'pc', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none', '-qmp', `unix:${qmpPath},server=on,wait=off`]);
      await eventually('QEMU to make its QMP socket', async () => existsSync(qmpPath), 15_000);
      const realTemplate = join(realDir, '{vm}.qmp');
      const qmp = async <T>(fn: (client: QmpClient) => Promise<T>): Promise<T> => {
        const client = await QmpClient.connect(qmpPath, { timeoutMs: 5000 });
        try {
          return await fn(client);
        } finally {
          client.close();
        }
      };
      const link = await linked(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--qmp-socket', realTemplate]);
      const carrier = async (): Promise<boolean> => (await devices(world.host)).get(link.clientDevice)?.flags.includes('LOWER_UP') === true;
      await eventually('the tap QEMU holds to get a carrier', carrier, 5000);
      const tapBefore = (await devices(world.host)).get(link.clientDevice)?.ifindex;

      const switched = await linked(['link', 'appvm-lynx', '--attach', 'appvm-lynx=none', '--qmp-socket', realTemplate, '--vmm-timeout', '300']);
      expect(switched).toMatchObject({ id: link.id, clientAttach: 'none' });
      // The same tap (a `none` side is a tap too), no longer held by QEMU.
      expect((await devices(world.host)).get(link.clientDevice)?.ifindex).toBe(tapBefore);
      await eventually('the tap to lose its carrier', async () => !(await carrier()), 5000);
      // QEMU's netdev of the NIC is gone: one of its id can be added again.
      expect(await qmp(async (client) => (await client.execute('netdev_add', { type: 'user', id: `net-${link.clientDevice}` }), 'added'))).toBe('added');
      expect(JSON.parse(await listed())).toMatchObject([{ id: link.id, clientAttach: 'none', present: true }]);
    } finally {
      await real?.kill('SIGKILL');
      await rm(realDir, { recursive: true, force: true });
    }
  });

  it('qemu kept, its --qmp-socket moved to another QEMU, in real QEMUs: the first\'s netdev is removed, the second gets the NIC; unlink under a socket leading nowhere takes it out of the second, as recorded', async () => {
    // Two QEMUs of their own, paused, with QMP only (no guest: device_del is never acknowledged,
    // and the netdev is removed after --vmm-timeout all the same).
    const realDir = await mkdtemp(join(tmpdir(), 'spectrum-vmm-moved-real-'));
    const qemus: NetnsProcess[] = [];
    try {
      const qmpPaths = ['a', 'b'].map((name) => join(realDir, `${name}-appvm-lynx.qmp`));
      for (const qmpPath of qmpPaths) {
        qemus.push(world.host.spawn(['qemu-system-x86_64', '-machine', 'pc', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none', '-qmp', `unix:${qmpPath},server=on,wait=off`]));
        await eventually('QEMU to make its QMP socket', async () => existsSync(qmpPath), 15_000);
      }
      const [first, second] = qmpPaths as [string, string];
      const netdevAddable = async (qmpPath: string, id: string): Promise<boolean> => {
        const client = await QmpClient.connect(qmpPath, { timeoutMs: 5000 });
        try {
          await client.execute('netdev_add', { type: 'user', id });
          await client.execute('netdev_del', { id });
          return true;
        } catch {
          return false;
        } finally {
          client.close();
        }
      };
      const link = await linked(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--qmp-socket', join(realDir, 'a-{vm}.qmp')]);
      const netdev = `net-${link.clientDevice}`;
      expect([await netdevAddable(first, netdev), await netdevAddable(second, netdev)]).toEqual([false, true]);

      const moved = await linked(['link', 'appvm-lynx', '--qmp-socket', join(realDir, 'b-{vm}.qmp'), '--vmm-timeout', '300']);
      expect(moved).toMatchObject({ id: link.id, clientAttach: 'qemu' });
      expect([await netdevAddable(first, netdev), await netdevAddable(second, netdev)]).toEqual([true, false]);
      const carrier = async (): Promise<boolean> => (await devices(world.host)).get(link.clientDevice)?.flags.includes('LOWER_UP') === true;
      await eventually('the tap the second QEMU holds to have a carrier', carrier, 5000);
      expect(JSON.parse(await listed())).toMatchObject([{ id: link.id, clientSocket: second }]);

      const unlinked = await world.link(['unlink', 'appvm-lynx', '--qmp-socket', join(socketDir, 'none-{vm}'), '--vmm-timeout', '300']);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect(await netdevAddable(second, netdev)).toBe(true);
    } finally {
      for (const real of qemus) await real.kill('SIGKILL');
      await rm(realDir, { recursive: true, force: true });
    }
  });

  it('cloud-hypervisor to netns: vm.remove-device before the veth replaces the tap; the VMM holds no tap queue', async () => {
    const ch = await fake();
    const link = await linked(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns', '--ch-socket', ch.socketPath]);
    expect(ch.nets).toHaveLength(1);
    const switched = await linked(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=netns', '--attach', 'netvm=netns', '--ch-socket', ch.socketPath]);
    expect(switched).toMatchObject({ id: link.id, clientAttach: 'netns' });
    expect(ch.requests.filter((request) => request.path === '/api/v1/vm.remove-device')).toMatchObject([{ method: 'PUT', body: { id: link.clientDevice } }]);
    expect([ch.nets.length, ch.heldTapQueues()]).toEqual([0, 0]);
    expect((await devices(world.host)).get(link.clientDevice)?.linkinfo?.info_kind).toBe('veth');
  });

  it('qemu to cloud-hypervisor: out of QEMU (device_del, netdev_del), into cloud-hypervisor, on the same tap', async () => {
    const ch = await fake();
    const link = await lynxAsQemu();
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
    const switched = await linked(['link', 'appvm-lynx', '--attach', 'appvm-lynx=cloud-hypervisor', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate, '--ch-socket', ch.socketPath]);
    expect(switched).toMatchObject({ id: link.id, clientAttach: 'cloud-hypervisor' });
    expect([qemu.devices.size, qemu.netdevs.size]).toEqual([0, 0]);
    expect(qemu.commands).toContain('device_del');
    expect(ch.requests.find((request) => request.path === '/api/v1/vm.add-net')).toMatchObject({ body: { id: link.clientDevice }, taps: [link.clientDevice] });
  });

  it('a VMM no longer running (nothing at its socket: the VM stopped) holds no NIC: the run goes on, saying so at level info', async () => {
    const stoppedDir = await mkdtemp(join(tmpdir(), 'spectrum-vmm-switch-stopped-'));
    try {
      const stopped = await ScriptedQemu.start(join(stoppedDir, 'appvm-lynx.qmp'));
      const template = join(stoppedDir, '{vm}.qmp');
      const link = await linked(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--qmp-socket', template]);
      await stopped.close();
      await rm(join(stoppedDir, 'appvm-lynx.qmp'), { force: true });
      const result = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=none', '--attach', 'netvm=netns', '--qmp-socket', template, '--json'], { SPECTRUM_LOG_LEVEL: 'info' });
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toContain(`no QEMU socket at ${join(stoppedDir, 'appvm-lynx.qmp')}: appvm-lynx taken as not running, and its NIC ${link.clientDevice} as gone with it (not detached)`);
      expect(JSON.parse(await listed())).toMatchObject([{ id: link.id, clientAttach: 'none', present: true }]);
    } finally {
      await rm(stoppedDir, { recursive: true, force: true });
    }
  });

  it('a VMM refusing or never answering stops the run as it stops a plain unlink: one line, the link, its devices and record as they were, the NIC still in; unlink --force, then link, run as the line prints them from elsewhere, do what it says', async () => {
    const link = await lynxAsQemu();
    const before = { list: await listed(), devices: await linkDevices(link), state: await readFile(join(world.stateDir, 'links.json'), 'utf8') };
    // From the socket dir, its --qmp-socket relative to it, with a --vmm-timeout of its own.
    const toNone = ['link', 'appvm-lynx', '--attach', 'appvm-lynx=none', '--attach', 'netvm=netns', '--qmp-socket', '{vm}.qmp', '--vmm-timeout', '300'];
    const fromSocketDir = async (args: readonly string[]): Promise<Awaited<ReturnType<LinkWorld['link']>>> => {
      const cwd = process.cwd();
      process.chdir(socketDir);
      try {
        return await world.link(args);
      } finally {
        process.chdir(cwd);
      }
    };
    const unchanged = async (): Promise<void> => {
      expect(await listed()).toBe(before.list);
      expect(await linkDevices(link)).toEqual(before.devices);
      expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(before.state);
      expect(qemu.devices.has(link.clientDevice)).toBe(true);
    };

    qemu.deviceDel = 'refuse';
    const refused = await fromSocketDir(toNone);
    expect(refused.code).toBe(1);
    expect(stderrLines(refused.stderr)).toHaveLength(1);
    // The unlink with this run's options an unlink takes (not link's others, which it refuses), the
    // link with this run's; the template made absolute (or, too long so for some VM, the commands
    // run from the socket dir), its --vmm-timeout carried over.
    const absolute = `${socketDir}/{vm}.qmp`;
    const cd = Buffer.byteLength(absolute.replace('{vm}', 'v'.repeat(64))) > 107 ? `cd ${socketDir} && ` : '';
    const template = cd === '' ? `'${absolute}'` : "'{vm}.qmp'";
    const unlinkLine = `${cd}spectrum-link unlink appvm-lynx --force --state-dir ${world.stateDir} --device-prefix sn --qmp-socket ${template} --vmm-timeout 300`;
    const linkLine =
      `${cd}spectrum-link link appvm-lynx --config-dir ${world.configDir} --state-dir ${world.stateDir} --device-prefix sn --netns-prefix ${world.netnsPrefix} ` +
      `--attach appvm-lynx=none --attach netvm=netns --qmp-socket ${template} --vmm-timeout 300`;
    expect(refused.stderr).toMatch(
      new RegExp(
        `^spectrum-link: appvm-lynx's side of appvm-lynx -> netvm was not attached as none: the QEMU of appvm-lynx did not take out NIC ${link.clientDevice}: QEMU refused device_del: .*; ` +
          'nothing was made, the link is as it was \\(README: Modes kept and switched\\): ' +
          `to attach it anyway, run ${escaped(unlinkLine)}, then ${escaped(linkLine)}\\n$`,
      ),
    );
    await unchanged();

    // Given up at the request's own bound (--vmm-timeout, said in the line), asked nothing after:
    // no wall-clock bound here, which a loaded machine would make flaky (speed is for benchmarks).
    qemu.deviceDel = 'silent';
    const asked = qemu.commands.length;
    const stalled = await fromSocketDir(toNone);
    expect(qemu.commands.slice(asked).filter((command) => command === 'device_del' || command === 'netdev_del')).toEqual(['device_del']);
    expect(stalled.code).toBe(1);
    expect(stderrLines(stalled.stderr)).toHaveLength(1);
    expect(stalled.stderr).toMatch(/was not attached as none: the QEMU of appvm-lynx did not take out NIC \S+: .*no reply to device_del within 300 ms/);
    await unchanged();

    // As the line says, run as printed from the root directory without this run's environment:
    // unlink --force cuts it off (the NIC reported left), then the link is made as asked.
    qemu.deviceDel = 'refuse';
    const forced = await runPrinted(world.host, unlinkLine);
    expect(forced.code, forced.stderr).toBe(1);
    expect(forced.stdout).toBe(`unlinked appvm-lynx -> netvm (id ${link.id}, kept, VMM detach failed)\n`);
    const relinked = await runPrinted(world.host, `${linkLine} --json`);
    expect(relinked.code, relinked.stderr).toBe(0);
    expect((JSON.parse(relinked.stdout) as { links: LinkJson[] }).links).toMatchObject([{ id: link.id, clientAttach: 'none', providerAttach: 'netns' }]);
  });

  it('a run that fails after a NIC came out undoes itself, and says that link is down (its record as before); link again attaches it back as recorded', async () => {
    const link = await lynxAsQemu();
    const state = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    // appvm-lynx to none (its NIC comes out of QEMU), appvm-catgirl to qemu, whose QEMU is nowhere: its hot-plug fails the run.
    const failed = await world.link(['link', 'appvm-lynx', 'appvm-catgirl', '--attach', 'appvm-lynx=none', '--attach', 'appvm-catgirl=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate]);
    expect(failed.code).toBe(1);
    const lines = stderrLines(failed.stderr);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/appvm-catgirl\.qmp/);
    expect(lines[1]).toBe(
      `spectrum-link: appvm-lynx -> netvm (id ${link.id}) is down: this run took its NIC ${link.clientDevice} out of the QEMU of appvm-lynx and cannot put it back; ` +
        'its record is as before (README: What an undo leaves): link appvm-lynx again',
    );
    expect(qemu.devices.has(link.clientDevice)).toBe(false);
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(state);

    const again = await linked(['link', 'appvm-lynx', '--qmp-socket', qmpTemplate]);
    expect(again).toMatchObject({ id: link.id, clientAttach: 'qemu', providerAttach: 'netns' });
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
  });

  it('--keep-going, a signal while it takes NICs out: the VMs that had failed there are said (stderr, and stdout with --json) before the interruption exits 130', async () => {
    const catgirlQemu = await ScriptedQemu.start(join(socketDir, 'appvm-catgirl.qmp'));
    try {
      const lynx = await lynxAsQemu();
      const catgirl = await linked(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=qemu', '--attach', 'netvm=netns', '--qmp-socket', qmpTemplate]);
      // appvm-lynx's QEMU refuses its NIC back (it fails alone); appvm-catgirl's gives it back,
      // slowly: the SIGINT comes meanwhile, and stops the run at its next safe point.
      qemu.deviceDel = 'refuse';
      catgirlQemu.stepDelayMs = 400;
      const args = ['link', 'appvm-lynx', 'appvm-catgirl', '--keep-going', '--attach', 'none', '--qmp-socket', qmpTemplate, '--json'];
      const run = world.host.spawn(['node', LINK_BIN, ...withWorldOptions(args, world)], { enter: 'nsenter' });
      await eventually('appvm-catgirl\'s QEMU to be asked for its NIC', async () => catgirlQemu.commands.includes('device_del'), 30_000);
      const exit = await run.kill('SIGINT', 30_000);
      await run.waitClosed();
      expect(exit, run.stderr).toEqual({ code: 130, signal: null });
      const said = splitJsonError(run.stdout);
      expect(said.printed.trim().split('\n').map((line) => JSON.parse(line) as unknown)).toEqual([
        { vm: 'appvm-lynx', links: [], error: expect.stringMatching(/^appvm-lynx's side of appvm-lynx -> netvm .*QEMU refused device_del/) },
      ]);
      // Then the interruption's error object, its further lines stderr's.
      const [first = '', ...more] = stderrLines(run.stderr);
      expect(said.error).toEqual(jsonErrorOf(first, 'interrupted', 130, more.map((line) => line.replace(/^spectrum-link: /, ''))));
      expect(stderrLines(run.stderr)).toEqual([
        'spectrum-link: link interrupted by SIGINT: undid what this run had made (its devices, the NICs it hot-plugged, the ids it allocated); links made before it are as they were',
        expect.stringMatching(new RegExp(`^spectrum-link: link appvm-lynx failed: ${escaped(`appvm-lynx's side of appvm-lynx -> netvm was not attached as none: the QEMU of appvm-lynx did not take out NIC ${lynx.clientDevice}`)}: QEMU refused device_del`)),
        expect.stringMatching(new RegExp(`^spectrum-link: ${escaped(`appvm-catgirl -> netvm (id ${catgirl.id}) is down: this run took its NIC ${catgirl.clientDevice} out of the QEMU of appvm-catgirl`)}`)),
      ]);
      expect(qemu.devices.has(lynx.clientDevice)).toBe(true);
    } finally {
      await catgirlQemu.close();
    }
  });

  it('--keep-going: a VM whose VMM does not give its NIC back fails alone, nothing made for it, its link as it was; the others are linked', async () => {
    const link = await lynxAsQemu();
    const lynxDevices = await linkDevices(link);
    qemu.deviceDel = 'refuse';
    const result = await world.link(['link', 'appvm-lynx', 'appvm-catgirl', '--keep-going', '--attach', 'none', '--qmp-socket', qmpTemplate, '--json']);
    expect(result.code).toBe(1);
    const printed = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as { vm: string; links: LinkJson[]; error?: string });
    expect(printed.map(({ vm, links }) => [vm, links.map((one) => one.clientAttach)])).toEqual([
      ['appvm-catgirl', ['none']],
      ['appvm-lynx', []],
    ]);
    expect(printed[1]?.error).toMatch(new RegExp(`^appvm-lynx's side of appvm-lynx -> netvm was not attached as none: the QEMU of appvm-lynx did not take out NIC ${link.clientDevice}: QEMU refused device_del`));
    expect(stderrLines(result.stderr)).toEqual([expect.stringMatching(new RegExp(`^spectrum-link: link appvm-lynx failed: ${escaped("appvm-lynx's side of appvm-lynx -> netvm")}`))]);
    expect(await linkDevices(link)).toEqual(lynxDevices);
    expect(JSON.parse(await listed())).toEqual(
      expect.arrayContaining([expect.objectContaining({ vm: 'appvm-lynx', clientAttach: 'qemu' }), expect.objectContaining({ vm: 'appvm-catgirl', clientAttach: 'none' })]),
    );
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
  });

  it('a side kept as qemu whose --qmp-socket now gives another path: its NIC comes out of the QEMU at the socket recorded first, then goes into the one at the new path; list and show say the socket; unlink finds it there', async () => {
    const movedDir = await mkdtemp(join(tmpdir(), 'spectrum-vmm-moved-'));
    const moved = await ScriptedQemu.start(join(movedDir, 'appvm-lynx.qmp'));
    try {
      const link = await lynxAsQemu();
      const recorded = join(socketDir, 'appvm-lynx.qmp');
      const [entry] = JSON.parse(await listed()) as Record<string, unknown>[];
      expect(entry).toMatchObject({ id: link.id, clientAttach: 'qemu', clientSocket: recorded });
      expect(entry).not.toHaveProperty('providerSocket');

      const again = await linked(['link', 'appvm-lynx', '--qmp-socket', join(movedDir, '{vm}.qmp')]);
      expect(again).toMatchObject({ id: link.id, clientAttach: 'qemu', providerAttach: 'netns' });
      expect(qemu.devices.has(link.clientDevice)).toBe(false);
      expect(moved.devices.has(link.clientDevice)).toBe(true);
      const now = join(movedDir, 'appvm-lynx.qmp');
      expect(JSON.parse(await listed())).toMatchObject([{ id: link.id, clientSocket: now }]);
      expect(JSON.parse((await world.link(['show', 'appvm-lynx', '--json'])).stdout)).toMatchObject([{ id: link.id, clientSocket: now }]);
      const text = (await world.link(['list'])).stdout;
      expect(text).toContain(`client ${link.clientDevice} `);
      expect(text).toContain(`(qemu, socket ${now})`);
      expect(text).toContain('(netns)');

      // The old socket's QEMU refusing its NIC back: the run stops as a switch does, nothing made.
      const back = await linked(['link', 'appvm-lynx', '--qmp-socket', qmpTemplate]);
      expect(back).toMatchObject({ id: link.id, clientAttach: 'qemu' });
      expect([qemu.devices.has(link.clientDevice), moved.devices.has(link.clientDevice)]).toEqual([true, false]);
      qemu.deviceDel = 'refuse';
      const refused = await world.link(['link', 'appvm-lynx', '--qmp-socket', join(movedDir, '{vm}.qmp')]);
      expect(refused.code).toBe(1);
      expect(stderrLines(refused.stderr)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^spectrum-link: ${escaped(`appvm-lynx's side of appvm-lynx -> netvm was not attached as qemu through socket ${now}: the QEMU of appvm-lynx at ${recorded} (recorded) did not take out NIC ${link.clientDevice}: QEMU refused device_del`)}`,
          ),
        ),
      ]);
      expect([qemu.devices.has(link.clientDevice), moved.devices.has(link.clientDevice)]).toEqual([true, false]);
      qemu.deviceDel = 'ok';

      // unlink with a --qmp-socket that leads nowhere: the NIC comes out at the socket recorded.
      const unlinked = await world.link(['unlink', 'appvm-lynx', '--qmp-socket', join(socketDir, 'none-{vm}')]);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect(qemu.devices.has(link.clientDevice)).toBe(false);
    } finally {
      await moved.close();
      await rm(movedDir, { recursive: true, force: true });
    }
  });

  it('a side kept as qemu under a --qmp-socket leading where no QEMU runs, its QEMU running at the socket recorded: refused before its NIC comes out (one line naming both, exit 1), the link as it was; the same socket spelled from the working directory is no move', async () => {
    const link = await lynxAsQemu();
    const stateFile = join(world.stateDir, 'links.json');
    const text = await readFile(stateFile, 'utf8');
    const asked = qemu.commands.length;
    const nowhere = join(socketDir, 'none-appvm-lynx');
    const refused = await world.link(['link', 'appvm-lynx', '--qmp-socket', join(socketDir, 'none-{vm}')]);
    expect(refused.code).toBe(1);
    expect(stderrLines(refused.stderr)).toEqual([
      `spectrum-link: appvm-lynx's NIC ${link.clientDevice} (link appvm-lynx -> netvm) was not moved to socket ${nowhere}: no QEMU answers there (nothing is at that path), ` +
        `and the one at ${qemu.path} holds it; nothing changed (README: Modes kept and switched): give the --qmp-socket appvm-lynx runs with`,
    ]);
    expect(qemu.commands.slice(asked)).toEqual([]);
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
    expect(await readFile(stateFile, 'utf8')).toBe(text);

    // The same socket, relative to the working directory (the socket dir: a short path, as the
    // state records at most 107 bytes) and through `./`: nothing comes out; recorded as now spelled.
    // (The tap held here, as the QEMU holding the NIC would: the scripted one only says it has it.)
    const held = TapFd.open(link.clientDevice, `/run/netns/${world.host.name}`);
    const cwd = process.cwd();
    let again: LinkJson;
    try {
      process.chdir(socketDir);
      again = await linked(['link', 'appvm-lynx', '--qmp-socket', './{vm}.qmp']);
    } finally {
      process.chdir(cwd);
      held.close();
    }
    expect(again).toMatchObject({ id: link.id, clientAttach: 'qemu' });
    expect(qemu.commands.slice(asked).filter((command) => command === 'device_del')).toEqual([]);
    expect(qemu.devices.has(link.clientDevice)).toBe(true);
    expect(JSON.parse(await listed())).toMatchObject([{ id: link.id, clientSocket: `${socketDir}/./appvm-lynx.qmp` }]);
  });

  it('a side kept as qemu under a relative --qmp-socket that, from a deep working directory, makes a path over 107 bytes: another socket is refused as bad input before its NIC comes out (exit 2, one line, nothing changed; --keep-going: that VM fails alone); the same socket is no move, the socket recorded kept; for a VM that runs at the new path, the unlink and link the line prints, run as printed from elsewhere, attach it there', async () => {
    const link = await lynxAsQemu();
    const stateFile = join(world.stateDir, 'links.json');
    const text = await readFile(stateFile, 'utf8');
    // A relative template short itself (connect takes it as it is) but over 107 bytes made absolute.
    const deep = join(socketDir, 'd'.repeat(60), 'e'.repeat(60));
    await mkdir(deep, { recursive: true });
    await mkdir(join(socketDir, 'moved'));
    const moved = await ScriptedQemu.start(join(socketDir, 'moved', 'appvm-lynx.qmp'));
    const asked = qemu.commands.length;
    const path = `${deep}/../../moved/appvm-lynx.qmp`;
    const cwd = process.cwd();
    try {
      process.chdir(deep);
      const refused = await world.link(['link', 'appvm-lynx', '--qmp-socket', '../../moved/{vm}.qmp']);
      expect(refused.code, refused.stderr).toBe(2);
      // For a VM that runs at the new path: an unlink of the client, then the link with the modes
      // the unlink takes away, each with this run's options it takes; the template too long made
      // absolute, so each from the working directory.
      const unlinkLine = `cd ${deep} && spectrum-link unlink appvm-lynx --state-dir ${world.stateDir} --device-prefix sn --qmp-socket '../../moved/{vm}.qmp'`;
      const linkLine =
        `cd ${deep} && spectrum-link link appvm-lynx --config-dir ${world.configDir} --state-dir ${world.stateDir} --device-prefix sn --netns-prefix ${world.netnsPrefix} ` +
        "--attach appvm-lynx=qemu --attach netvm=netns --qmp-socket '../../moved/{vm}.qmp'";
      expect(stderrLines(refused.stderr)).toEqual([
        `spectrum-link: appvm-lynx's NIC ${link.clientDevice} (link appvm-lynx -> netvm) was not moved to socket ${path}, ` +
          `a path the state cannot record (it is ${Buffer.byteLength(path)} bytes long, and a Unix socket path at most 107); ` +
          `it stays at ${qemu.path} (README: Modes kept and switched): give a --qmp-socket the state can record, ` +
          `or if appvm-lynx runs there, run ${unlinkLine}, then ${linkLine}`,
      ]);
      const keepGoing = await world.link(['link', 'appvm-lynx', '--keep-going', '--json', '--qmp-socket', '../../moved/{vm}.qmp']);
      expect(keepGoing.code, keepGoing.stderr).toBe(2);
      expect(JSON.parse(keepGoing.stdout)).toMatchObject({ vm: 'appvm-lynx', links: [], badInput: true, error: expect.stringContaining('a path the state cannot record') });
      expect(qemu.commands.slice(asked)).toEqual([]);
      expect(moved.connections).toBe(0);
      expect(await readFile(stateFile, 'utf8')).toBe(text);

      // The same socket so spelled: nothing comes out, and the socket recorded stays recorded.
      // (The tap held here, as the QEMU holding the NIC would: the scripted one only says it has it.)
      const held = TapFd.open(link.clientDevice, `/run/netns/${world.host.name}`);
      try {
        const again = await linked(['link', 'appvm-lynx', '--qmp-socket', '../../{vm}.qmp']);
        expect(again).toMatchObject({ id: link.id, clientAttach: 'qemu' });
      } finally {
        held.close();
      }
      expect(qemu.commands.slice(asked).filter((command) => command === 'device_del')).toEqual([]);
      expect(qemu.devices.has(link.clientDevice)).toBe(true);
      expect(JSON.parse(await listed())).toMatchObject([{ id: link.id, clientSocket: qemu.path }]);

      // The VM runs at the new path: the unlink and link printed, run as printed from the root
      // directory without this run's environment, take the NIC out at the socket recorded and put
      // it in the QEMU at the new path, its socket not recorded, netvm's side as it was.
      const unlinked = await runPrinted(world.host, unlinkLine);
      expect(unlinked.code, unlinked.stderr).toBe(0);
      expect(qemu.devices.has(link.clientDevice)).toBe(false);
      const relinked = await runPrinted(world.host, `${linkLine} --json`);
      expect(relinked.code, relinked.stderr).toBe(0);
      expect((JSON.parse(relinked.stdout) as { links: LinkJson[] }).links).toMatchObject([{ id: link.id, clientAttach: 'qemu', providerAttach: 'netns' }]);
      expect(moved.devices.has(link.clientDevice)).toBe(true);
      const [entry] = JSON.parse(await listed()) as Record<string, unknown>[];
      expect(entry).toMatchObject({ id: link.id, clientAttach: 'qemu', present: true });
      expect(entry).not.toHaveProperty('clientSocket');
    } finally {
      process.chdir(cwd);
      await moved.close();
    }
  });

  it('link under a --qmp-socket that leads nowhere now: a side switched and a provider dropped come out of the QEMU at the sockets recorded', async () => {
    const extraProvider = join(world.configDir, 'appvm-lynx', 'providers', 'net', 'appvm-catgirl');
    try {
      await writeFile(extraProvider, '');
      const both = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--attach', 'appvm-catgirl=netns', '--qmp-socket', qmpTemplate, '--json']);
      expect(both.code, both.stderr).toBe(0);
      const links = (JSON.parse(both.stdout) as { links: LinkJson[] }).links;
      expect(qemu.devices.size).toBe(2);
      await rm(extraProvider);
      const nowhere = join(socketDir, 'none-{vm}');
      const asked = qemu.commands.length;
      const result = await world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=none', '--qmp-socket', nowhere, '--json']);
      expect(result.code, result.stderr).toBe(0);
      expect(qemu.devices.size).toBe(0);
      expect(qemu.commands.slice(asked).filter((command) => command === 'device_del')).toHaveLength(2);
      const printed = JSON.parse(result.stdout) as { links: LinkJson[]; unlinked?: LinkJson[] };
      expect(printed.links).toMatchObject([{ provider: 'netvm', clientAttach: 'none' }]);
      expect(printed.unlinked).toMatchObject([{ id: links.find((link) => link.provider === 'appvm-catgirl')!.id }]);
    } finally {
      await rm(extraProvider, { force: true });
      // Not recorded as linked any more: the afterEach's unlink has nothing of it to take down.
      await world.link(['unlink', 'appvm-lynx', '--forget', '--qmp-socket', join(socketDir, 'none-{vm}')]);
    }
  });
});
