// `spectrum-link link --keep-going` end to end (as `make -k`): each VM its own transaction, so that
// a VM whose config is invalid, or whose VMM refuses its NIC, is undone and reported alone while
// every other VM is linked; a re-run after the fix links it, the others keeping their ids.
// Without --keep-going the same runs link nothing (one transaction, as before).
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAttachChoice } from '../../host/attach-mode.js';
import { DEFAULT_DEVICE_PREFIX, devicePrefix } from '../../host/device-names.js';
import { stepsStillLeft } from '../../host/link-keep-going.js';
import { preferredId } from '../../host/link-state.js';
import { type LinkReport, type UndoStepFailure, linkReport } from '../../host/linker-types.js';
import { vmName } from '../../host/vm-name.js';
import { describeNetns, jsonErrorOf, trackTempDir } from '../harness/index.js';
import { type LinkJson, devices } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

type Link = LinkJson;

interface LinkLine {
  vm: string;
  links: Link[];
  error?: string;
}

interface Listed extends Link {
  present: boolean;
}

const lines = (text: string): string[] => text.split('\n').filter((line) => line !== '');
const jsonLines = (stdout: string): LinkLine[] => lines(stdout).map((line) => JSON.parse(line) as LinkLine);

describeNetns('link --keep-going: a VM whose config is invalid', () => {
  const world = linkWorldPerSuite('linkkeep', 3);
  const statePath = (): string => join(world().stateDir, 'links.json');
  const listed = async (): Promise<Listed[]> => JSON.parse((await world().link(['list', '--json'])).stdout) as Listed[];
  const idsOf = (entries: readonly Link[]): Map<string, number> => new Map(entries.map((link) => [`${link.vm} -> ${link.provider}`, link.id]));
  const GOOD = ['appvm-0', 'appvm-1', 'appvm-2', 'appvm-lynx'];

  it('links the other VMs (exit 1, a line naming the bad one, its own links left as they were), where one transaction links nothing; a --json line per failed VM; a re-run after the fix links it, the others keeping their ids', async () => {
    // appvm-catgirl linked while it was valid: that link is recorded and up.
    const catgirl = jsonLines((await world().link(['link', 'appvm-catgirl', '--attach', 'netns', '--json'])).stdout)[0]!.links[0]!;
    const bad = join(world().configDir, 'appvm-catgirl', 'providers', 'net', 'nosuchvm');
    await writeFile(bad, '');
    try {
      // One transaction: nothing linked, the state as it was.
      const stateBefore = await readFile(statePath(), 'utf8');
      const devicesBefore = [...(await devices(world().host)).keys()].sort();
      const whole = await world().link(['link', '--all', '--attach', 'netns']);
      expect(whole.code).toBe(1);
      expect(whole.stdout).toBe('');
      expect(lines(whole.stderr)).toEqual([expect.stringMatching(/^spectrum-link: VM appvm-catgirl .* is not valid .*nosuchvm/)]);
      expect(await readFile(statePath(), 'utf8')).toBe(stateBefore);
      expect([...(await devices(world().host)).keys()].sort()).toEqual(devicesBefore);

      // --keep-going: every other VM linked, a line for the bad one.
      const kept = await world().link(['link', '--all', '--attach', 'netns', '--keep-going']);
      expect(kept.code).toBe(1);
      expect(lines(kept.stderr)).toEqual([
        `spectrum-link: link appvm-catgirl failed: VM appvm-catgirl in ${world().configDir} is not valid (1 problem): appvm-catgirl: provider "nosuchvm" (${world().configDir}/appvm-catgirl/providers/net/nosuchvm) has no VM directory ${world().configDir}/nosuchvm; create that VM or remove the file`,
      ]);
      expect(lines(kept.stdout).map((line) => line.split(' ')[0])).toEqual(GOOD);
      const afterKept = await listed();
      for (const vm of GOOD) expect(afterKept.filter((link) => link.vm === vm && link.present)).toHaveLength(1);
      // The bad VM's own links were neither undone nor taken down: its link to netvm is as it was.
      expect(afterKept.filter((link) => link.vm === 'appvm-catgirl')).toEqual([expect.objectContaining({ id: catgirl.id, present: true })]);
      const host = await devices(world().host);
      for (const link of afterKept) for (const device of [link.bridge, link.clientDevice, link.providerDevice]) expect(host.has(device)).toBe(true);
      const ids = idsOf(afterKept);

      // --json: the linked VMs' lines as ever, and one per failed VM; stderr says it too.
      const json = await world().link(['link', '--all', '--attach', 'netns', '--keep-going', '--json']);
      expect(json.code).toBe(1);
      expect(lines(json.stderr)).toEqual([expect.stringMatching(/^spectrum-link: link appvm-catgirl failed: VM appvm-catgirl .*nosuchvm/)]);
      const outputs = jsonLines(json.stdout);
      expect(outputs.map((output) => output.vm)).toEqual([...GOOD, 'appvm-catgirl']);
      expect(outputs[GOOD.length]).toEqual({ vm: 'appvm-catgirl', links: [], error: expect.stringMatching(/^VM appvm-catgirl in .* is not valid \(1 problem\): .*nosuchvm/) });
      expect(idsOf(outputs.slice(0, GOOD.length).flatMap((output) => output.links))).toEqual(new Map([...ids].filter(([pair]) => !pair.startsWith('appvm-catgirl '))));

      // Named VMs too, one of them no VM at all.
      const named = await world().link(['link', 'appvm-lynx', 'appvm-missing', '--attach', 'netns', '--keep-going', '--json']);
      expect(named.code).toBe(1);
      expect(jsonLines(named.stdout)).toEqual([
        expect.objectContaining({ vm: 'appvm-lynx', links: [expect.objectContaining({ id: ids.get('appvm-lynx -> netvm') })] }),
        { vm: 'appvm-missing', links: [], error: expect.stringContaining(`no VM directory ${world().configDir}/appvm-missing`) },
      ]);
      expect(lines(named.stderr)).toEqual([expect.stringMatching(/^spectrum-link: link appvm-missing failed: /)]);
    } finally {
      await rm(bad, { force: true });
    }

    // Fixed: a re-run links it (a link more), exit 0, and every VM keeps its id.
    const fixed = await world().link(['link', '--all', '--attach', 'netns', '--keep-going', '--json']);
    expect([fixed.code, fixed.stderr]).toEqual([0, '']);
    expect(jsonLines(fixed.stdout).map((output) => output.vm)).toEqual(['appvm-0', 'appvm-1', 'appvm-2', 'appvm-catgirl', 'appvm-lynx']);
    const afterFix = await listed();
    expect(afterFix.every((link) => link.present)).toBe(true);
    expect(afterFix.find((link) => link.vm === 'appvm-catgirl')?.id).toBe(catgirl.id);
    expect(afterFix).toHaveLength(5);
  });
});

describeNetns('link --keep-going: a state file that cannot be read, after a VM failed', () => {
  const world = linkWorldPerSuite('linkkeepst', 1);

  it('says the state failure (exit 1), then the VM that had failed before it, as where it ends unstopped; with --json also its line on stdout; nothing linked', async () => {
    const bad = join(world().configDir, 'appvm-catgirl', 'providers', 'net', 'nosuchvm');
    const statePath = join(world().stateDir, 'links.json');
    await writeFile(bad, '');
    // A directory in the state file's place: no state can be read.
    await rm(statePath, { force: true });
    await mkdir(join(statePath, 'in-the-way'), { recursive: true });
    try {
      const devicesBefore = [...(await devices(world().host)).keys()].sort();
      const stateLine = `spectrum-link: cannot read state file ${statePath} (not a regular file); check that it is a readable file`;
      const failedLine = `spectrum-link: link appvm-catgirl failed: VM appvm-catgirl in ${world().configDir} is not valid (1 problem): appvm-catgirl: provider "nosuchvm" (${bad}) has no VM directory ${world().configDir}/nosuchvm; create that VM or remove the file`;
      const text = await world().link(['link', '--all', '--attach', 'netns', '--keep-going']);
      expect({ code: text.code, stdout: text.stdout, stderr: lines(text.stderr) }).toEqual({ code: 1, stdout: '', stderr: [stateLine, failedLine] });
      const json = await world().link(['link', '--all', '--attach', 'netns', '--keep-going', '--json']);
      expect({ code: json.code, stdout: jsonLines(json.stdout), stderr: lines(json.stderr) }).toEqual({
        code: 1,
        stdout: [
          { vm: 'appvm-catgirl', links: [], error: expect.stringMatching(/^VM appvm-catgirl in .* is not valid \(1 problem\): .*nosuchvm/) },
          // The run's own failure (not its VM's, said in its line): its error object, the VM's line a detail.
          { error: jsonErrorOf(stateLine, 'read-failed', 1, [failedLine.replace(/^spectrum-link: /, '')]) },
        ],
        stderr: [stateLine, failedLine],
      });
      expect([...(await devices(world().host)).keys()].sort()).toEqual(devicesBefore);
    } finally {
      await rm(bad, { force: true });
      await rm(statePath, { recursive: true, force: true });
    }
  });

  it('with no state dir yet, says a state lock that cannot be taken (its dir cannot be made: under /proc), then the VM that had failed before it; with --json also its line on stdout; nothing made', async () => {
    const bad = join(world().configDir, 'appvm-catgirl', 'providers', 'net', 'nosuchvm');
    const unmakeable = '/proc/spectrum-link-test-no-such-dir/state';
    await writeFile(bad, '');
    try {
      const devicesBefore = [...(await devices(world().host)).keys()].sort();
      const lockLine = expect.stringMatching(/^spectrum-link: state dir \/proc\/spectrum-link-test-no-such-dir\/state .*cannot be used/);
      const failedLine = `spectrum-link: link appvm-catgirl failed: VM appvm-catgirl in ${world().configDir} is not valid (1 problem): appvm-catgirl: provider "nosuchvm" (${bad}) has no VM directory ${world().configDir}/nosuchvm; create that VM or remove the file`;
      const text = await world().link(['link', '--all', '--attach', 'netns', '--keep-going', '--state-dir', unmakeable]);
      expect({ code: text.code, stdout: text.stdout, stderr: lines(text.stderr) }).toEqual({ code: 1, stdout: '', stderr: [lockLine, failedLine] });
      const json = await world().link(['link', '--all', '--attach', 'netns', '--keep-going', '--json', '--state-dir', unmakeable]);
      expect({ code: json.code, stdout: jsonLines(json.stdout), stderr: lines(json.stderr) }).toEqual({
        code: 1,
        stdout: [
          { vm: 'appvm-catgirl', links: [], error: expect.stringMatching(/^VM appvm-catgirl in .* is not valid \(1 problem\): .*nosuchvm/) },
          // The run's own failure (not its VM's, said in its line): its error object, the VM's line a detail.
          { error: { kind: 'state-dir-unusable', exitCode: 1, message: expect.stringMatching(/^state dir \/proc\/spectrum-link-test-no-such-dir\/state .*cannot be used/), details: [failedLine.replace(/^spectrum-link: /, '')] } },
        ],
        stderr: [lockLine, failedLine],
      });
      expect([...(await devices(world().host)).keys()].sort()).toEqual(devicesBefore);
    } finally {
      await rm(bad, { force: true });
    }
  });
});

describeNetns('link --keep-going: a VMM that refuses a NIC', () => {
  const world = linkWorldPerSuite('linkkeepvmm');
  const fakes: FakeCloudHypervisor[] = [];

  it('undoes that VM alone (its devices, the NIC it took, the id allocated for it; its recorded id stays) and links and attaches the others; a re-run once the VMM takes NICs again links it', async () => {
    const configDir = world().configDir;
    // A second provider, netvm2, which appvm-catgirl uses too: two links, two NICs for its VMM.
    await cp(join(configDir, 'netvm'), join(configDir, 'netvm2'), { recursive: true });
    // appvm-catgirl's link to netvm recorded (id kept), its devices down.
    const earlier = jsonLines((await world().link(['link', 'appvm-catgirl', '--attach', 'netns', '--json'])).stdout)[0]!.links[0]!;
    expect((await world().link(['unlink', 'appvm-catgirl'])).code).toBe(0);
    await writeFile(join(configDir, 'appvm-catgirl', 'providers', 'net', 'netvm2'), '');

    // A cloud-hypervisor per client VM, reached through a directory per VM (a symlink to the
    // fake's: a directory above the socket may be one). appvm-catgirl's takes one NIC, refuses the next.
    const lynx = await FakeCloudHypervisor.start('Running');
    const catgirl = await FakeCloudHypervisor.start('Running');
    fakes.push(lynx, catgirl);
    catgirl.refuse.set('vm.add-net', () => (catgirl.nets.length >= 1 ? { status: 500, body: 'no free PCI slot' } : undefined));
    const sockets = await mkdtemp(join(tmpdir(), 'spectrum-keep-going-'));
    trackTempDir(sockets);
    await symlink(dirname(lynx.socketPath), join(sockets, 'appvm-lynx'));
    await symlink(dirname(catgirl.socketPath), join(sockets, 'appvm-catgirl'));
    const args = ['--attach', 'netns', '--attach', 'appvm-lynx=cloud-hypervisor', '--attach', 'appvm-catgirl=cloud-hypervisor', '--ch-socket', join(sockets, '{vm}', 'api.sock')];
    const stateOf = async (): Promise<Listed[]> => JSON.parse((await world().link(['list', '--json'])).stdout) as Listed[];
    const snDevices = async (): Promise<string[]> => [...(await devices(world().host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name)).sort();
    try {
      // One transaction: nothing linked, nothing left in either VMM.
      const stateBefore = await stateOf();
      const whole = await world().link(['link', '--all', ...args]);
      expect(whole.code).toBe(1);
      expect(await stateOf()).toEqual(stateBefore);
      expect(await snDevices()).toEqual([]);
      expect([lynx.nets.length, catgirl.nets.length]).toEqual([0, 0]);

      const removedBefore = catgirl.requests.filter((request) => request.path === '/api/v1/vm.remove-device').length;
      const kept = await world().link(['link', '--all', ...args, '--keep-going', '--json']);
      expect(kept.code).toBe(1);
      expect(lines(kept.stderr)).toEqual([expect.stringMatching(/^spectrum-link: link appvm-catgirl failed: cloud-hypervisor at .*appvm-catgirl\/api\.sock failed to add NIC snc\d+ \(tap snc\d+\): "no free PCI slot": see the VMM.s log$/)]);
      const outputs = jsonLines(kept.stdout);
      expect(outputs.map((output) => output.vm)).toEqual(['appvm-lynx', 'appvm-catgirl']);
      expect(outputs[1]).toEqual({ vm: 'appvm-catgirl', links: [], error: expect.stringContaining('no free PCI slot') });
      const lynxLink = outputs[0]!.links[0]!;
      // appvm-lynx linked and attached: its VMM holds its tap.
      expect(lynx.nets.map((net) => net.id)).toEqual([lynxLink.clientDevice]);
      expect(lynx.heldTapQueues()).toBe(1);
      expect(await snDevices()).toEqual([lynxLink.bridge, lynxLink.clientDevice, lynxLink.providerDevice].sort());
      // appvm-catgirl: the NIC its VMM took was taken back, once (the one transaction made ids and
      // devices only; NICs went in VM by VM, and its undo was its own), its new link's id
      // released; the id recorded before stays.
      expect(catgirl.nets).toEqual([]);
      expect(catgirl.heldTapQueues()).toBe(0);
      expect(catgirl.requests.filter((request) => request.path === '/api/v1/vm.remove-device').length - removedBefore).toBe(1);
      const state = await stateOf();
      expect(state.filter((link) => link.vm === 'appvm-catgirl')).toEqual([expect.objectContaining({ provider: 'netvm', id: earlier.id, present: false })]);
      expect(state.filter((link) => link.vm === 'appvm-lynx')).toEqual([expect.objectContaining({ id: lynxLink.id, present: true })]);

      // Its VMM takes NICs again: the re-run links it (with its id), appvm-lynx keeps its own.
      catgirl.refuse.clear();
      const fixed = await world().link(['link', '--all', ...args, '--keep-going', '--json']);
      expect([fixed.code, fixed.stderr]).toEqual([0, '']);
      const relinked = jsonLines(fixed.stdout);
      expect(relinked.find((output) => output.vm === 'appvm-lynx')?.links.map((link) => link.id)).toEqual([lynxLink.id]);
      const catgirlLinks = relinked.find((output) => output.vm === 'appvm-catgirl')?.links ?? [];
      expect(catgirlLinks.map((link) => link.provider)).toEqual(['netvm', 'netvm2']);
      expect(catgirlLinks[0]?.id).toBe(earlier.id);
      expect(catgirl.nets).toHaveLength(2);
      expect(lynx.nets).toHaveLength(1);
      for (const vm of ['appvm-lynx', 'appvm-catgirl']) expect((await world().link(['unlink', vm, ...args.slice(-2)])).code).toBe(0);
      expect([lynx.heldTapQueues(), catgirl.heldTapQueues()]).toEqual([0, 0]);
    } finally {
      for (const fake of fakes.splice(0)) await fake.close();
      await rm(sockets, { recursive: true, force: true });
    }
  });
});

describeNetns('link --keep-going: a provider whose VMM does not answer', () => {
  const world = linkWorldPerSuite('linkkeepstall', 4);

  it('asks that VMM once in the run, not once for each of its clients: every client fails with a line, the run ends in a few --vmm-timeouts', async () => {
    // netvm under a cloud-hypervisor that takes requests and never answers; its six clients in
    // namespaces. Every client link has a NIC for netvm's VMM, so every client fails.
    const stalled = await FakeCloudHypervisor.start('Running');
    stalled.silent = true;
    try {
      const args = ['link', '--all', '--keep-going', '--attach', 'netns', '--attach', 'netvm=cloud-hypervisor', '--ch-socket', stalled.socketPath, '--vmm-timeout', '300'];
      const run = await world().link(args);
      expect(run.code).toBe(1);
      const clients = ['appvm-0', 'appvm-1', 'appvm-2', 'appvm-3', 'appvm-catgirl', 'appvm-lynx'];
      expect(lines(run.stderr).map((line) => /^spectrum-link: link (\S+) failed: /.exec(line)?.[1])).toEqual(clients);
      // The first client's NIC asked it, and nothing after: a VMM that did not answer in time is
      // not asked again in the same run (the README: it "costs its --vmm-timeout once"), where
      // each client would ask it again, a --vmm-timeout (and a take-back) each.
      expect(stalled.requests.filter((request) => request.path === '/api/v1/vm.add-net')).toHaveLength(1);
      const [first, ...rest] = lines(run.stderr);
      expect(first).toMatch(/^spectrum-link: link appvm-0 failed: cloud-hypervisor at .*: no answer to PUT vm\.add-net within 300 ms/);
      expect(rest.every((line) => line.includes('did not answer in time earlier in this run'))).toBe(true);
      // Nothing left: no link recorded, no device.
      expect(JSON.parse((await world().link(['list', '--json'])).stdout)).toEqual([]);
      expect([...(await devices(world().host)).keys()].filter((name) => /^sn[bcp]\d+$/.test(name))).toEqual([]);
    } finally {
      await stalled.close();
    }
  });
});

describeNetns('link --keep-going: a QEMU guest that does not release a NIC in time', () => {
  const world = linkWorldPerSuite('linkkeepunplug');

  // The one transaction makes ids and devices only, and NICs go in VM by VM, a VM whose VMM fails
  // undone alone: no healthy VM's NIC is unplugged because another VM failed. (Were it unplugged,
  // a QEMU guest that does not acknowledge that within --vmm-timeout, still booting at
  // `link --all --keep-going` on boot, native PCIe hot-plug's 5 s attention delay, or uncooperative,
  // would keep the device, its netdev removed, and fail when linked again: 'unplug-pending'.)
  it('links a healthy QEMU VM, hot-plugged before another VM failed, without unplugging its NIC', async () => {
    const sockets = await mkdtemp(join(tmpdir(), 'spectrum-keep-going-unplug-'));
    trackTempDir(sockets);
    // appvm-catgirl under QEMU, whose guest never acknowledges an unplug; appvm-lynx (linked after
    // it) under a cloud-hypervisor that refuses its NIC.
    const qemu = await ScriptedQemu.start(join(sockets, 'appvm-catgirl.qmp'));
    qemu.deviceDel = 'unacked';
    const refusing = await FakeCloudHypervisor.start('Running');
    refusing.refuse.set('vm.add-net', () => ({ status: 500, body: 'no free PCI slot' }));
    try {
      const args = ['link', '--all', '--keep-going', '--json', '--attach', 'netns', '--attach', 'appvm-catgirl=qemu', '--attach', 'appvm-lynx=cloud-hypervisor'];
      const run = await world().link([...args, '--qmp-socket', join(sockets, '{vm}.qmp'), '--ch-socket', refusing.socketPath, '--vmm-timeout', '300']);
      expect(run.code).toBe(1);
      // Only appvm-lynx failed.
      expect(lines(run.stderr), run.stderr).toEqual([expect.stringMatching(/^spectrum-link: link appvm-lynx failed: .*no free PCI slot/)]);
      expect(jsonLines(run.stdout).find((output) => output.vm === 'appvm-catgirl')?.links).toHaveLength(1);
      // Its NIC went in once and stays: nothing was unplugged.
      expect(qemu.commands.filter((command) => command === 'device_add')).toHaveLength(1);
      expect(qemu.commands).not.toContain('device_del');
      expect(qemu.devices.size).toBe(1);
    } finally {
      await qemu.close();
      await refusing.close();
      await rm(sockets, { recursive: true, force: true });
    }
  });
});

describeNetns('link: a failed run that had replaced the devices of an earlier link', () => {
  const world = linkWorldPerSuite('linkkeepremade');
  const listed = async (): Promise<Listed[]> => JSON.parse((await world().link(['list', '--json'])).stdout) as Listed[];
  const downLine = (id: number): string =>
    `spectrum-link: appvm-catgirl -> netvm (id ${id}) is down: this run replaced its devices to attach it another way, and undoing the run deleted the new ones (the old ones cannot be brought back): link appvm-catgirl again`;
  let refusing: FakeCloudHypervisor;
  const toCloudHypervisor = (): string[] => ['--attach', 'netns', '--attach', 'appvm-catgirl=cloud-hypervisor', '--ch-socket', refusing.socketPath];
  beforeAll(async () => {
    refusing = await FakeCloudHypervisor.start('Running');
    refusing.refuse.set('vm.add-net', () => ({ status: 500, body: 'no free PCI slot' }));
  });
  afterAll(async () => {
    await refusing?.close();
  });

  // A run that changes how a link is attached deletes its old devices to make new ones; undone,
  // it deletes the new ones and cannot bring the old back: the earlier link is down, and said so.
  it('--keep-going: a line after the failed VM\'s says its earlier link is down (list: not present, its record as it was); the other VM is linked; a re-run brings it up', async () => {
    const earlier = jsonLines((await world().link(['link', 'appvm-catgirl', '--attach', 'netns', '--json'])).stdout)[0]!.links[0]!;
    const run = await world().link(['link', 'appvm-catgirl', 'appvm-lynx', '--keep-going', ...toCloudHypervisor()]);
    expect(run.code).toBe(1);
    expect(lines(run.stderr)).toEqual([expect.stringMatching(/^spectrum-link: link appvm-catgirl failed: .*no free PCI slot/), downLine(earlier.id)]);
    expect(lines(run.stdout).map((line) => line.split(' ')[0])).toEqual(['appvm-lynx']);
    const after = await listed();
    expect(after.find((link) => link.vm === 'appvm-catgirl')).toMatchObject({ id: earlier.id, present: false, clientAttach: 'netns', providerAttach: 'netns' });
    expect(after.find((link) => link.vm === 'appvm-lynx')).toMatchObject({ present: true });

    const again = await world().link(['link', 'appvm-catgirl', '--attach', 'netns']);
    expect([again.code, again.stderr]).toEqual([0, '']);
    expect((await listed()).find((link) => link.vm === 'appvm-catgirl')).toMatchObject({ id: earlier.id, present: true });
  });

  it('plain link: the error, then the same line; a link already down when the run began is not said to be', async () => {
    const earlier = jsonLines((await world().link(['link', 'appvm-catgirl', '--attach', 'netns', '--json'])).stdout)[0]!.links[0]!;
    const run = await world().link(['link', 'appvm-catgirl', ...toCloudHypervisor()]);
    expect(run.code).toBe(1);
    expect(lines(run.stderr)).toEqual([expect.stringMatching(/^spectrum-link: cloud-hypervisor at .* failed to add NIC .*no free PCI slot/), downLine(earlier.id)]);
    expect((await listed()).find((link) => link.vm === 'appvm-catgirl')).toMatchObject({ id: earlier.id, present: false });

    // Down already: the same run fails as before, and has nothing to add.
    const same = await world().link(['link', 'appvm-catgirl', ...toCloudHypervisor()]);
    expect(same.code).toBe(1);
    expect(lines(same.stderr)).toEqual([expect.stringMatching(/^spectrum-link: cloud-hypervisor at .*no free PCI slot/)]);
  });

  it('plain link: a kernel refusal earlier in the same plan leaves up an earlier link whose devices it had not yet replaced', async () => {
    // appvm-lynx's id, then its bridge's name held by another device (as an altname): the kernel
    // refuses to make that bridge, the first step of the run's one plan.
    const lynx = jsonLines((await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json'])).stdout)[0]!.links[0]!;
    expect((await world().link(['unlink', 'appvm-lynx'])).code).toBe(0);
    const earlier = jsonLines((await world().link(['link', 'appvm-catgirl', '--attach', 'netns', '--json'])).stdout)[0]!.links[0]!;
    await world().host.ip(['link', 'add', 'blocker', 'type', 'bridge']);
    await world().host.ip(['link', 'property', 'add', 'dev', 'blocker', 'altname', lynx.bridge]);
    try {
      // appvm-catgirl's link to be remade as taps, after appvm-lynx's in the same plan.
      const run = await world().link(['link', 'appvm-lynx', 'appvm-catgirl', '--attach', 'none']);
      expect(run.code).toBe(1);
      // The failing step came before any of appvm-catgirl's: its veths were never replaced, and
      // the undo must not delete them (it did: `creates` names them, the taps to be).
      expect((await listed()).find((link) => link.vm === 'appvm-catgirl'), run.stderr).toMatchObject({ id: earlier.id, present: true });
      expect(lines(run.stderr), run.stderr).toHaveLength(1);
    } finally {
      await world().host.ip(['link', 'del', 'dev', 'blocker']);
    }
  });
});

describeNetns('link --keep-going: a VM that is a client and a provider in the same run', () => {
  const world = linkWorldPerSuite('linkkeepchain');

  it("charges a link whose provider-side NIC is refused to its client: the provider links its own links; the client is undone alone, the VM namespace made for it deleted, the provider's kept", async () => {
    const configDir = world().configDir;
    // netvm2: a client of netvm and a provider of appvm-catgirl, under a cloud-hypervisor that
    // takes its own (client-side) NIC and refuses the provider side of appvm-catgirl's link.
    await cp(join(configDir, 'netvm'), join(configDir, 'netvm2'), { recursive: true });
    await mkdir(join(configDir, 'netvm2', 'providers', 'net'), { recursive: true });
    await writeFile(join(configDir, 'netvm2', 'providers', 'net', 'netvm'), '');
    await writeFile(join(configDir, 'appvm-catgirl', 'providers', 'net', 'netvm2'), '');
    const ch = await FakeCloudHypervisor.start('Running');
    const nicId = (body: unknown): string => String((body as { id?: unknown } | null)?.id);
    ch.refuse.set('vm.add-net', (request) => (nicId(request.body).startsWith('snp') ? { status: 500, body: 'no free PCI slot' } : undefined));
    const namespaces = async (): Promise<string[]> =>
      (await world().host.exec(['ip', 'netns', 'list'], { enter: 'nsenter' })).stdout
        .split('\n')
        .map((line) => line.split(' ')[0] ?? '')
        .filter((name) => name.startsWith(world().netnsPrefix))
        .map((name) => name.slice(world().netnsPrefix.length))
        .sort();
    try {
      const run = await world().link(['link', '--all', '--keep-going', '--json', '--attach', 'netns', '--attach', 'netvm2=cloud-hypervisor', '--ch-socket', ch.socketPath]);
      expect(run.code).toBe(1);
      expect(lines(run.stderr)).toEqual([expect.stringMatching(/^spectrum-link: link appvm-catgirl failed: cloud-hypervisor at .* failed to add NIC snp\d+ .*no free PCI slot/)]);
      const outputs = jsonLines(run.stdout);
      expect(outputs.map((output) => [output.vm, output.links.map((link) => link.provider)])).toEqual([
        ['appvm-lynx', ['netvm']],
        ['netvm2', ['netvm']],
        ['appvm-catgirl', []],
      ]);
      // netvm2's VMM holds its own NIC only.
      expect(ch.nets.map((net) => net.id)).toEqual([outputs[1]!.links[0]!.clientDevice]);
      // appvm-catgirl's ids released, its namespace (made by this run) deleted; netvm's, which
      // the others' links use, kept.
      const after = JSON.parse((await world().link(['list', '--json'])).stdout) as Listed[];
      expect(after.map((link) => [link.vm, link.provider, link.present])).toEqual(
        expect.arrayContaining([
          ['appvm-lynx', 'netvm', true],
          ['netvm2', 'netvm', true],
        ]),
      );
      expect(after).toHaveLength(2);
      expect(await namespaces()).toEqual(['appvm-lynx', 'netvm']);
      const gc = await world().link(['gc', '--json']);
      expect([gc.code, gc.stdout]).toEqual([0, `${JSON.stringify({ removed: [] })}\n`]);
    } finally {
      await ch.close();
    }
  });
});

describeNetns('link --keep-going: a VM that fails by bad input', () => {
  const world = linkWorldPerSuite('linkkeepusage', 1);

  it('links the others and exits 2, as plain link does for that input, with one line naming the VM (also with a runtime failure beside it, and with --json)', async () => {
    // A QMP socket template that gives appvm-catgirl (the one VM under QEMU) a path too long to be
    // a Unix socket's: bad input, which plain link exits 2 on.
    const template = `/${'x'.repeat(120)}/{vm}.qmp`;
    const args = ['--attach', 'netns', '--attach', 'appvm-catgirl=qemu', '--qmp-socket', template];
    const plain = await world().link(['link', 'appvm-catgirl', ...args]);
    expect([plain.code, lines(plain.stderr)]).toEqual([2, [expect.stringMatching(/^spectrum-link: --qmp-socket .* gives VM appvm-catgirl the socket path .* a Unix socket path has at most 107/)]]);

    const usageLine = expect.stringMatching(/^spectrum-link: link appvm-catgirl failed: --qmp-socket "\/x+\/\{vm\}\.qmp" gives VM appvm-catgirl the socket path "\/x+\/appvm-catgirl\.qmp", \d+ bytes: a Unix socket path has at most 107; use a shorter path$/);
    const kept = await world().link(['link', '--all', '--keep-going', ...args]);
    expect(kept.code, kept.stderr).toBe(2);
    expect(lines(kept.stderr)).toEqual([usageLine]);
    expect(lines(kept.stdout).map((line) => line.split(' ')[0])).toEqual(['appvm-0', 'appvm-lynx']);
    const listed = JSON.parse((await world().link(['list', '--json'])).stdout) as Listed[];
    expect(listed.filter((link) => link.present).map((link) => link.vm).sort()).toEqual(['appvm-0', 'appvm-lynx']);
    expect(listed.map((link) => link.vm)).not.toContain('appvm-catgirl');

    // Beside a VM that fails at run time (an invalid config: exit 1 alone), bad input still makes it 2.
    const bad = join(world().configDir, 'appvm-lynx', 'providers', 'net', 'nosuchvm');
    await writeFile(bad, '');
    try {
      const both = await world().link(['link', '--all', '--keep-going', '--json', ...args]);
      expect(both.code, both.stderr).toBe(2);
      expect(lines(both.stderr)).toEqual([usageLine, expect.stringMatching(/^spectrum-link: link appvm-lynx failed: VM appvm-lynx .*nosuchvm/)]);
      const outputs = jsonLines(both.stdout) as (LinkLine & { badInput?: boolean })[];
      expect(outputs.map((output) => [output.vm, output.links.length, output.badInput])).toEqual([
        ['appvm-0', 1, undefined],
        ['appvm-catgirl', 0, true],
        ['appvm-lynx', 0, undefined],
      ]);
      // Without the bad input, the runtime failure alone exits 1.
      const runtime = await world().link(['link', 'appvm-0', 'appvm-lynx', '--keep-going', '--json', ...args]);
      expect(runtime.code, runtime.stderr).toBe(1);
      expect(jsonLines(runtime.stdout).find((output) => output.vm === 'appvm-lynx')).toEqual({ vm: 'appvm-lynx', links: [], error: expect.stringContaining('nosuchvm') });
    } finally {
      await rm(bad, { force: true });
    }
  });
});

describe('link --keep-going: an MTU an undo could not put back, said at the end', () => {
  it('names the links of VMs the run did not link at last, not only where none of its links was linked again', () => {
    // The whole transaction's undo could not put back the MTU of two links that were up; then, VM
    // by VM, appvm-lynx was linked (its record and devices at the run's MTU now) and
    // appvm-catgirl failed again (its record back at the MTU before, its devices not).
    const options = { devicePrefix: devicePrefix(DEFAULT_DEVICE_PREFIX), attach: parseAttachChoice(['netns']) };
    const linkOf = (client: string): LinkReport => {
      const pair = { client: vmName(client), provider: vmName('netvm') };
      return linkReport({ ...pair, id: preferredId(pair) }, options);
    };
    const [lynx, catgirl] = [linkOf('appvm-lynx'), linkOf('appvm-catgirl')];
    const devices = (link: LinkReport): string[] => [link.bridge, link.clientDevice, link.providerDevice];
    const failure: UndoStepFailure = { step: 'mtu', error: 'No such device', left: [{ link: lynx, devices: devices(lynx) }, { link: catgirl, devices: devices(catgirl) }] };
    expect(stepsStillLeft([failure], new Map([[vmName('appvm-lynx'), [lynx]]]), 'vm-')).toEqual([{ ...failure, left: [{ link: catgirl, devices: devices(catgirl) }] }]);
    // Both linked again: nothing left; neither: the line as it was.
    expect(stepsStillLeft([failure], new Map([[vmName('appvm-lynx'), [lynx]], [vmName('appvm-catgirl'), [catgirl]]]), 'vm-')).toEqual([]);
    expect(stepsStillLeft([failure], new Map(), 'vm-')).toEqual([failure]);
  });
});
