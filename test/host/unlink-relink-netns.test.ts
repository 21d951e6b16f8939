// `unlink` then `link` without --attach, end to end in namespaces: unlink keeps each link's modes
// and MTU (the state's "unlinked"), so that the next link brings a `netns` side back as `netns`
// (its namespace made again, under the netns prefix the state keeps for it), as after a reboot,
// on the client's side and on the provider's; list, show and gc still take such a link as down;
// a state file written before the modes were kept reads as before (the side gets the VM's mode).
// A `qemu` side (a scripted QEMU) comes back as `none` (its VMM may not run yet), its NIC not
// taken out again, and `link` warns of the change, naming the --attach that restores it.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeNetns } from '../harness/index.js';
import { type LinkJson, warningMessages } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

interface ListedJson extends LinkJson {
  readonly linked: boolean;
  readonly present: boolean;
  readonly attachRecorded: boolean;
  readonly mtu?: number;
}

describeNetns('unlink then link keeps the attach modes unlink took down', () => {
  const world = linkWorldPerSuite('relinkmode');
  const stateFile = (): string => join(world().stateDir, 'links.json');
  beforeEach(async () => {
    for (const vm of ['appvm-lynx', 'appvm-catgirl']) await world().link(['unlink', vm, '--forget']);
  });

  const run = async (args: readonly string[]): Promise<string> => {
    const result = await world().link(args);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout;
  };
  const listed = async (): Promise<ListedJson[]> => JSON.parse(await run(['list', '--json'])) as ListedJson[];
  const modes = async (): Promise<string[]> => (await listed()).map((link) => `${link.vm} -> ${link.provider} ${link.linked ? `${link.clientAttach}/${link.providerAttach}` : 'down'}`);
  const linkedOf = (stdout: string): LinkJson[] => stdout.trim().split('\n').flatMap((line) => (JSON.parse(line) as { links: LinkJson[] }).links);

  it("brings a client's netns side back as netns after unlink of that client (not none), its MTU with it", async () => {
    await run(['link', '--all', '--attach', 'netns', '--mtu', '9000']);
    await run(['unlink', 'appvm-lynx']);
    expect(await modes()).toEqual(['appvm-catgirl -> netvm netns/netns', 'appvm-lynx -> netvm down']);
    const [again] = linkedOf(await run(['link', 'appvm-lynx', '--json']));
    expect(again).toMatchObject({ vm: 'appvm-lynx', provider: 'netvm', clientAttach: 'netns', providerAttach: 'netns', mtu: 9000 });
    expect(await modes()).toEqual(['appvm-catgirl -> netvm netns/netns', 'appvm-lynx -> netvm netns/netns']);
    // Its far end in its namespace again, at the MTU kept.
    const inVm = await world().vmNetns('appvm-lynx').exec(['ip', '-j', 'link', 'show', 'dev', again?.clientDevice ?? '']);
    expect(JSON.parse(inVm.stdout)).toEqual([expect.objectContaining({ ifname: again?.clientDevice, mtu: 9000 })]);
  });

  it("brings a provider's netns side back as netns after unlink of the provider took down all its links (and the netns prefix stays recorded)", async () => {
    await run(['link', '--all', '--attach', 'netns']);
    await run(['unlink', 'netvm']);
    expect(await modes()).toEqual(['appvm-catgirl -> netvm down', 'appvm-lynx -> netvm down']);
    // No link is up in netns mode, but the state keeps its prefix for those unlink took down.
    const written = JSON.parse(await readFile(stateFile(), 'utf8')) as { version: number; netnsPrefix?: string };
    expect(written).toMatchObject({ version: 3, netnsPrefix: world().netnsPrefix });
    await run(['link', '--all']);
    expect(await modes()).toEqual(['appvm-catgirl -> netvm netns/netns', 'appvm-lynx -> netvm netns/netns']);
    // Forgotten, nothing is kept: the state is version 2 again.
    for (const vm of ['appvm-lynx', 'appvm-catgirl']) await run(['unlink', vm, '--forget']);
    expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toMatchObject({ version: 2, links: [] });
  });

  it('list, show and gc take a link unlink took down as down (its modes kept in the state, not shown as attached)', async () => {
    await run(['link', 'appvm-lynx', '--attach', 'netns']);
    await run(['unlink', 'appvm-lynx']);
    const [entry] = await listed();
    expect(entry).toMatchObject({ vm: 'appvm-lynx', linked: false, present: false, attachRecorded: false, clientAttach: null, providerAttach: null });
    expect(await run(['list'])).toEqual(expect.stringMatching(/appvm-lynx -> netvm .*\(-\).*\(-\).* unlinked \(id kept\)\n$/));
    const [shown] = JSON.parse(await run(['show', 'appvm-lynx', '--json'])) as ListedJson[];
    expect(shown).toMatchObject({ linked: false, attachRecorded: false, clientAttach: null });
    expect((await run(['gc'])).trim()).toBe('nothing to collect');
    // unlink again: nothing to take out, the modes still kept.
    await run(['unlink', 'appvm-lynx']);
    const written = JSON.parse(await readFile(stateFile(), 'utf8')) as { links: Record<string, unknown>[] };
    expect(written.links).toEqual([expect.objectContaining({ client: 'appvm-lynx', unlinked: { client: 'netns', provider: 'netns' } })]);
    expect(written.links[0]).not.toHaveProperty('attached');
  });

  it('a link given another netns prefix (no link up in netns mode) that fails and is undone leaves the state file as it was: the prefix kept for the link unlink took down with it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spectrum-relinkmode-'));
    const qemu = await ScriptedQemu.start(join(dir, 'appvm-lynx.qmp'));
    qemu.deviceAdd = 'refuse';
    try {
      await run(['link', 'appvm-lynx', '--attach', 'netns']);
      await run(['unlink', 'appvm-lynx']);
      const before = await readFile(stateFile(), 'utf8');
      // netvm's side comes back netns (kept), under the other prefix; appvm-lynx's NIC is refused: undone.
      const failed = await world().link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--qmp-socket', join(dir, '{vm}.qmp'), '--netns-prefix', `${world().netnsPrefix}o-`]);
      expect(failed.code, failed.stderr).not.toBe(0);
      expect(await readFile(stateFile(), 'utf8')).toBe(before);
      // So with --keep-going, appvm-catgirl linked (none: it uses no prefix), appvm-lynx undone alone.
      const partly = await world().link(['link', 'appvm-lynx', 'appvm-catgirl', '--keep-going', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=none', '--qmp-socket', join(dir, '{vm}.qmp'), '--netns-prefix', `${world().netnsPrefix}o-`]);
      expect(partly.code, partly.stderr).not.toBe(0);
      expect(await modes()).toEqual(['appvm-catgirl -> netvm none/none', 'appvm-lynx -> netvm down']);
      expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toMatchObject({ netnsPrefix: world().netnsPrefix });
      // So the link brings it back under the prefix it was linked with.
      await run(['link', 'appvm-lynx']);
      expect(JSON.parse(await readFile(stateFile(), 'utf8'))).toMatchObject({ netnsPrefix: world().netnsPrefix });
      expect(await modes()).toEqual(['appvm-catgirl -> netvm none/none', 'appvm-lynx -> netvm netns/netns']);
    } finally {
      await qemu.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads a state file written before unlink kept modes: the link comes back in its VM mode, none with no link of it up', async () => {
    await run(['link', 'appvm-lynx', '--attach', 'netns']);
    await run(['unlink', 'appvm-lynx']);
    // As an older spectrum-link wrote it: version 2, the link with no modes.
    const older = JSON.parse(await readFile(stateFile(), 'utf8')) as { links: Record<string, unknown>[] };
    const links = older.links.map(({ unlinked: _dropped, ...link }) => link);
    await writeFile(stateFile(), `${JSON.stringify({ ...older, version: 2, links })}\n`);
    const [again] = linkedOf(await run(['link', 'appvm-lynx', '--json']));
    expect(again).toMatchObject({ clientAttach: 'none', providerAttach: 'none' });
  });

  it("a qemu side unlink took down comes back none, its NIC not taken out again, with one warning naming the VM, both modes and the --attach that restores it; given that, qemu again", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spectrum-relinkmode-'));
    const qemu = await ScriptedQemu.start(join(dir, 'appvm-lynx.qmp'));
    const socket = ['--qmp-socket', join(dir, '{vm}.qmp')];
    try {
      await run(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', ...socket]);
      expect(qemu.devices.size).toBe(1);
      await run(['unlink', 'appvm-lynx', ...socket]);
      expect(qemu.devices.size).toBe(0);
      const asked = qemu.commands.length;
      const relinked = await world().link(['link', 'appvm-lynx', '--json', ...socket]);
      expect(relinked.code, relinked.stderr).toBe(0);
      expect(linkedOf(relinked.stdout)).toEqual([expect.objectContaining({ clientAttach: 'none', providerAttach: 'netns' })]);
      // Its QEMU not asked anything (the NIC came out with the unlink), and the change said once.
      expect(qemu.commands.slice(asked)).toEqual([]);
      expect(warningMessages(relinked.stderr)).toEqual([
        "appvm-lynx's side of appvm-lynx -> netvm was qemu and is none now (a link not up, after unlink or a reboot, gets the mode of the VM's links up, none where none is up); to attach it as before: link with --attach appvm-lynx=qemu",
      ]);
      // Linked again as it is: nothing changes, nothing said.
      const again = await world().link(['link', 'appvm-lynx', ...socket]);
      expect([again.code, warningMessages(again.stderr)]).toEqual([0, []]);
      // As the warning says: qemu again, said of nothing.
      const restored = await world().link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--json', ...socket]);
      expect([restored.code, warningMessages(restored.stderr)]).toEqual([0, []]);
      expect(linkedOf(restored.stdout)).toEqual([expect.objectContaining({ clientAttach: 'qemu', providerAttach: 'netns' })]);
      expect(qemu.devices.size).toBe(1);
      await run(['unlink', 'appvm-lynx', '--forget', ...socket]);
    } finally {
      await qemu.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a qemu side whose devices are gone (a reboot) comes back none with the same warning, also with --keep-going', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spectrum-relinkmode-'));
    const qemu = await ScriptedQemu.start(join(dir, 'appvm-lynx.qmp'));
    const socket = ['--qmp-socket', join(dir, '{vm}.qmp')];
    try {
      const [made] = linkedOf(await run(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', '--attach', 'netvm=netns', '--json', ...socket]));
      for (const keepGoing of [[], ['--keep-going']]) {
        // As after a reboot: the host devices gone (the namespace's veth end with them), the state as it was.
        for (const device of [made?.bridge, made?.clientDevice, made?.providerDevice]) await world().host.exec(['ip', 'link', 'delete', device ?? ''], { allowFailure: true });
        const relinked = await world().link(['link', 'appvm-lynx', ...keepGoing, ...socket]);
        expect(relinked.code, relinked.stderr).toBe(0);
        expect(warningMessages(relinked.stderr)).toEqual([expect.stringMatching(/^appvm-lynx's side of appvm-lynx -> netvm was qemu and is none now .*link with --attach appvm-lynx=qemu$/)]);
        // Back to qemu for the next round.
        qemu.devices.clear();
        qemu.netdevs.clear();
        await run(['link', 'appvm-lynx', '--attach', 'appvm-lynx=qemu', ...socket]);
      }
      await run(['unlink', 'appvm-lynx', '--forget', ...socket]);
    } finally {
      await qemu.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
