// The devices each attach mode makes are the link's own, as list, show and link tell them by kind
// (host/link-device-kinds.ts): a tap QEMU holds as a descriptor (real QEMU, QMP), one the
// spec-exact fake cloud-hypervisor holds, a `none` tap, a veth whose far end is in the VM's
// namespace. None of them is foreign: each link is present and linked, recorded or not, and a run
// without --attach keeps every mode. The built bin, in a test namespace.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { describeNetns, eventually, type NetnsProcess } from '../harness/index.js';
import { type LinkJson, devices } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { FakeCloudHypervisor } from './vmm/fake-cloud-hypervisor.js';

type Listed = LinkJson & { id: number; present: boolean; linked: boolean; attachRecorded: boolean; foreign: unknown[]; vmmArguments?: unknown };

describeNetns('list and link take the devices of every attach mode as the link\'s own', () => {
  const world = linkWorldPerSuite('listmodes');
  let qemu: NetnsProcess | undefined;
  let socketDir: string | undefined;
  let ch: FakeCloudHypervisor | undefined;
  afterAll(async () => {
    await qemu?.kill('SIGKILL');
    await ch?.close();
    if (socketDir !== undefined) await rm(socketDir, { recursive: true, force: true });
  });

  it('qemu, cloud-hypervisor, none and netns sides: present and linked with nothing foreign (modes recorded or not); linked again without --attach, every mode is kept', async () => {
    socketDir = await mkdtemp(join(tmpdir(), 'spectrum-list-modes-'));
    const qmpPath = join(socketDir, 'appvm-lynx.qmp');
    qemu = world().host.spawn(['qemu-system-x86_64', '-machine', 'pc', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none', '-qmp', `unix:${qmpPath},server=on,wait=off`]);
    await eventually('QEMU to make its QMP socket', async () => existsSync(qmpPath), 15_000);
    ch = await FakeCloudHypervisor.start('Running');
    const vmms = ['--qmp-socket', join(socketDir, '{vm}.qmp'), '--ch-socket', ch.socketPath];

    const linked = async (args: readonly string[]): Promise<LinkJson> => {
      const result = await world().link([...args, ...vmms, '--json']);
      expect(result.code, result.stderr).toBe(0);
      return (JSON.parse(result.stdout.trim().split('\n')[0]!) as { links: LinkJson[] }).links[0]!;
    };
    const lynx = await linked(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=none']);
    const catgirl = await linked(['link', 'appvm-catgirl', '--attach', 'appvm-catgirl=cloud-hypervisor', '--attach', 'netvm=netns']);
    expect([lynx.clientAttach, lynx.providerAttach, catgirl.clientAttach, catgirl.providerAttach]).toEqual(['qemu', 'none', 'cloud-hypervisor', 'netns']);
    expect(ch.heldTapQueues()).toBe(1);
    // The kinds the kernel gives them: a tap is a tun device, held by a VMM or not.
    const host = await devices(world().host);
    expect([lynx.clientDevice, lynx.providerDevice, catgirl.clientDevice, catgirl.providerDevice, lynx.bridge].map((name) => host.get(name)?.linkinfo?.info_kind)).toEqual(['tun', 'tun', 'tun', 'veth', 'bridge']);

    const listed = async (): Promise<Listed[]> => {
      const result = await world().link(['list', '--json']);
      expect(result.code, result.stderr).toBe(0);
      return (JSON.parse(result.stdout) as Listed[]).sort((a, b) => a.vm.localeCompare(b.vm));
    };
    const shape = (entry: Listed): unknown[] => [entry.vm, entry.clientAttach, entry.providerAttach, entry.attachRecorded, entry.present, entry.linked, entry.foreign];
    expect((await listed()).map(shape)).toEqual([
      ['appvm-catgirl', 'cloud-hypervisor', 'netns', true, true, true, []],
      ['appvm-lynx', 'qemu', 'none', true, true, true, []],
    ]);
    // The `none` side gets its VMM arguments (only a link present has them).
    expect((await listed()).find((entry) => entry.vm === 'appvm-lynx')?.vmmArguments).toMatchObject({ provider: expect.anything() });

    // The same links recorded without attach modes (as spectrum-link wrote them before the state
    // kept them): linked, each mode as its device shows it (a tap tells none).
    const statePath = join(world().stateDir, 'links.json');
    const recorded = await readFile(statePath, 'utf8');
    const state = JSON.parse(recorded) as { links: Record<string, unknown>[] };
    await writeFile(statePath, JSON.stringify({ ...state, links: state.links.map(({ attached: _, ...rest }) => rest) }));
    try {
      expect((await listed()).map(shape)).toEqual([
        ['appvm-catgirl', null, 'netns', false, true, true, []],
        ['appvm-lynx', null, null, false, true, true, []],
      ]);
    } finally {
      await writeFile(statePath, recorded);
    }

    // Up, so kept: no --attach, each side as recorded; nothing changes (the same devices, the NIC still in cloud-hypervisor).
    const before = [...(await devices(world().host))].map(([name, device]) => `${name} ${device.ifindex}`).sort();
    for (const vm of ['appvm-lynx', 'appvm-catgirl']) {
      const again = await world().link(['link', vm, ...vmms, '--json']);
      expect([again.code, again.stderr]).toEqual([0, '']);
    }
    expect([...(await devices(world().host))].map(([name, device]) => `${name} ${device.ifindex}`).sort()).toEqual(before);
    expect((await listed()).map(shape)).toEqual([
      ['appvm-catgirl', 'cloud-hypervisor', 'netns', true, true, true, []],
      ['appvm-lynx', 'qemu', 'none', true, true, true, []],
    ]);
    expect(ch.heldTapQueues()).toBe(1);

    for (const vm of ['appvm-lynx', 'appvm-catgirl']) {
      // QEMU with no guest never says DEVICE_DELETED: a short wait there; the fake cloud-hypervisor
      // answers, but may take longer than that on a loaded machine (the default wait).
      const unlinked = await world().link(['unlink', vm, ...vmms, ...(vm === 'appvm-lynx' ? ['--vmm-timeout', '300'] : []), '--forget']);
      expect(unlinked.code, unlinked.stderr).toBe(0);
    }
    expect(ch.heldTapQueues()).toBe(0);
  });
});
