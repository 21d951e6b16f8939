// A chain appvm-lynx -> vpnvm -> netvm: a refused switch of the middle VM's side prints `unlink
// vpnvm --force`, then a link. That unlink takes down every link of vpnvm, also appvm-lynx ->
// vpnvm, which it provides; the printed link brings back both, each side in the mode it had. A
// scripted QMP server (vmm/scripted-qemu.ts) plays vpnvm's QEMU, every other side is netns; the
// printed lines run as an operator would (runPrinted: bash, another directory, another shell's
// SPECTRUM_ variables).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHarness, describeNetns, type Harness } from '../harness/index.js';
import { type LinkJson, type LinkWorld, makeLinkWorld, runPrinted } from './link-fixture.js';
import { ScriptedQemu } from './vmm/scripted-qemu.js';

interface ListedJson extends LinkJson {
  readonly id: number;
  readonly linked: boolean;
  readonly present: boolean;
}

/** A VM `vm` in `configDir` whose one provider is `provider`. */
async function writeVm(configDir: string, vm: string, provider: string): Promise<void> {
  const dir = join(configDir, vm);
  await rm(join(dir, 'providers'), { recursive: true, force: true });
  await mkdir(join(dir, 'blk'), { recursive: true });
  await mkdir(join(dir, 'providers', 'net'), { recursive: true });
  await writeFile(join(dir, 'vmlinux'), '');
  await writeFile(join(dir, 'blk', 'root.img'), '');
  await writeFile(join(dir, 'providers', 'net', provider), '');
}

/**
 * The world of a chain test, made before its describe's tests and taken down after: vpnvm a
 * client of netvm, each of `clients` (appvm-lynx and `extraClients` more of makeLinkWorld's) a
 * client of vpnvm, and a scripted QEMU for vpnvm at <socketDir>/vpnvm.qmp.
 */
function chainWorld(name: string, clients: readonly string[], extraClients = 0) {
  const chain = {} as { harness: Harness; world: LinkWorld; socketDir: string; qemu: ScriptedQemu; listed: () => Promise<ListedJson[]>; linkedModes: () => Promise<string[]>; linkMiddle: () => Promise<string> };
  beforeAll(async () => {
    chain.harness = createHarness(name);
    chain.world = await makeLinkWorld(chain.harness, extraClients);
    await writeVm(chain.world.configDir, 'vpnvm', 'netvm');
    for (const vm of clients) await writeVm(chain.world.configDir, vm, 'vpnvm');
    chain.socketDir = await mkdtemp(join(tmpdir(), `spectrum-${name}-`));
    chain.qemu = await ScriptedQemu.start(join(chain.socketDir, 'vpnvm.qmp'));
  });
  afterAll(async () => {
    // No VMM at these paths: whatever is left is taken down as of VMs that are gone.
    const nowhere = ['--qmp-socket', join(chain.socketDir, 'none-{vm}'), '--ch-socket', join(chain.socketDir, 'none-{vm}')];
    if (chain.world !== undefined) for (const vm of [...clients, 'vpnvm']) await chain.world.link(['unlink', vm, '--forget', '--force', ...nowhere]);
    await chain.qemu?.close();
    await chain.world?.dispose();
    await chain.harness?.cleanup();
    if (chain.socketDir !== undefined) await rm(chain.socketDir, { recursive: true, force: true });
  });
  chain.listed = async () => {
    const result = await chain.world.link(['list', '--json']);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as ListedJson[];
  };
  /** The links up, each as `client -> provider clientMode/providerMode`, sorted. */
  chain.linkedModes = async () => (await chain.listed()).filter((link) => link.linked).map((link) => `${link.vm} -> ${link.provider} ${link.clientAttach}/${link.providerAttach}`).sort();
  /** vpnvm linked to netvm, its side qemu (the scripted one) through the socket template returned, netvm's netns. */
  chain.linkMiddle = async () => {
    const template = join(chain.socketDir, '{vm}.qmp');
    const middle = await chain.world.link(['link', 'vpnvm', '--attach', 'vpnvm=qemu', '--attach', 'netvm=netns', '--qmp-socket', template]);
    expect(middle.code, middle.stderr).toBe(0);
    return template;
  };
  return chain;
}

describeNetns("the printed unlink and link of a chain's middle VM bring back every link that unlink takes down", () => {
  const chain = chainWorld('relinkchain', ['appvm-lynx']);
  const { listed } = chain;

  it('a refused switch of vpnvm: its unlink --force, then a link naming appvm-lynx too, with its mode pinned; every link up again as it was', async () => {
    const template = await chain.linkMiddle();
    const client = await chain.world.link(['link', 'appvm-lynx', '--attach', 'appvm-lynx=netns', '--attach', 'vpnvm=netns']);
    expect(client.code, client.stderr).toBe(0);
    const before = await listed();
    expect(before).toEqual([
      expect.objectContaining({ vm: 'vpnvm', provider: 'netvm', clientAttach: 'qemu', providerAttach: 'netns', linked: true, present: true }),
      expect.objectContaining({ vm: 'appvm-lynx', provider: 'vpnvm', clientAttach: 'netns', providerAttach: 'netns', linked: true, present: true }),
    ]);

    // vpnvm's side of vpnvm -> netvm to netns: its QEMU refuses to give back the NIC.
    chain.qemu.deviceDel = 'refuse';
    const refused = await chain.world.link(['link', 'vpnvm', '--attach', 'vpnvm=netns', '--qmp-socket', template]);
    expect(refused.code).toBe(1);
    const line = refused.stderr.trim();
    const printed = / run (spectrum-link unlink vpnvm --force .*?), then (spectrum-link link .*?), which brings back vpnvm's own links; that unlink takes down the links vpnvm provides too, to appvm-lynx: to bring back appvm-lynx -> vpnvm as it was, run (spectrum-link link appvm-lynx .*?)$/.exec(line);
    expect(printed, line).not.toBeNull();
    const [, unlinkLine = '', linkLine = '', clientLine = ''] = printed ?? [];
    expect(linkLine).toEqual(expect.stringMatching(/^spectrum-link link vpnvm .*--attach vpnvm=netns .*--attach netvm=netns/));
    expect(clientLine).toEqual(expect.stringMatching(/^spectrum-link link appvm-lynx .*--attach appvm-lynx=netns --attach vpnvm=netns/));

    // As printed: the unlink takes down both links (the NIC reported left), the link brings both back.
    const forced = await runPrinted(chain.world.host, unlinkLine);
    expect(forced.code, forced.stderr).toBe(1);
    expect((await listed()).filter((link) => link.linked)).toEqual([]);
    const relinked = await runPrinted(chain.world.host, linkLine);
    expect(relinked.code, relinked.stderr).toBe(0);
    const clientRelinked = await runPrinted(chain.world.host, clientLine);
    expect(clientRelinked.code, clientRelinked.stderr).toBe(0);
    expect(await listed()).toEqual([
      expect.objectContaining({ id: before[0]?.id, vm: 'vpnvm', provider: 'netvm', clientAttach: 'netns', providerAttach: 'netns', linked: true, present: true }),
      expect.objectContaining({ id: before[1]?.id, vm: 'appvm-lynx', provider: 'vpnvm', clientAttach: 'netns', providerAttach: 'netns', linked: true, present: true }),
    ]);
  });
});

describeNetns('the printed link of a chain names only the clients whose links that unlink takes down and that link brings back', () => {
  // appvm-0 and appvm-1: clients of vpnvm too; appvm-0's link taken down on purpose, appvm-1's VM dir removed.
  const chain = chainWorld('relinkdown', ['appvm-lynx', 'appvm-0', 'appvm-1'], 2);
  const { listed } = chain;

  it('a client whose link is down (unlinked, id kept) or whose VM dir is gone is not named: that link stays down, and the printed link runs', async () => {
    const template = await chain.linkMiddle();
    const clients = await chain.world.link(['link', 'appvm-lynx', 'appvm-0', 'appvm-1', '--attach', 'netns']);
    expect(clients.code, clients.stderr).toBe(0);
    const down = await chain.world.link(['unlink', 'appvm-0']);
    expect(down.code, down.stderr).toBe(0);
    await rm(join(chain.world.configDir, 'appvm-1'), { recursive: true });
    const linkedPairs = async (): Promise<string[]> => (await listed()).filter((link) => link.linked).map((link) => `${link.vm} -> ${link.provider}`).sort();
    expect(await linkedPairs()).toEqual(['appvm-1 -> vpnvm', 'appvm-lynx -> vpnvm', 'vpnvm -> netvm']);

    chain.qemu.deviceDel = 'refuse';
    const refused = await chain.world.link(['link', 'vpnvm', '--attach', 'vpnvm=netns', '--qmp-socket', template]);
    expect(refused.code).toBe(1);
    const line = refused.stderr.trim();
    const printed = / run (spectrum-link unlink vpnvm --force .*?), then (spectrum-link link .*?), which brings back vpnvm's own links; that unlink takes down the links vpnvm provides too, to appvm-lynx: to bring back appvm-lynx -> vpnvm as it was, run (spectrum-link link appvm-lynx .*?)$/.exec(line);
    expect(printed, line).not.toBeNull();
    const [, unlinkLine = '', linkLine = '', clientLine = ''] = printed ?? [];
    expect(linkLine).toEqual(expect.stringMatching(/^spectrum-link link vpnvm --/));

    const forced = await runPrinted(chain.world.host, unlinkLine);
    expect(forced.code, forced.stderr).toBe(1);
    expect(await linkedPairs()).toEqual([]);
    const relinked = await runPrinted(chain.world.host, linkLine);
    expect(relinked.code, relinked.stderr).toBe(0);
    const clientRelinked = await runPrinted(chain.world.host, clientLine);
    expect(clientRelinked.code, clientRelinked.stderr).toBe(0);
    // appvm-0's link down as its unlink left it; appvm-1's, of a VM gone, down with the unlink of its provider.
    expect(await linkedPairs()).toEqual(['appvm-lynx -> vpnvm', 'vpnvm -> netvm']);
  });
});

describeNetns("the printed links of a chain's clients carry not the run's --attach, and pin each link as recorded", () => {
  // appvm-lynx: a client of netvm too; appvm-0 a client of vpnvm, whose side of it is none (netns of appvm-lynx's).
  const chain = chainWorld('relinkpin', ['appvm-lynx', 'appvm-0'], 1);
  const { listed } = chain;

  it("after a refused `link vpnvm --attach netns`: appvm-lynx -> netvm, left up by the unlink, stays none; vpnvm's provider sides come back as they were, netns and none", async () => {
    const template = join(chain.socketDir, '{vm}.qmp');
    await writeFile(join(chain.world.configDir, 'appvm-lynx', 'providers', 'net', 'netvm'), '');
    const made = [
      ['vpnvm', '--attach', 'vpnvm=qemu', '--attach', 'netvm=netns', '--qmp-socket', template],
      ['appvm-lynx', '--attach', 'appvm-lynx=none', '--attach', 'vpnvm=netns', '--attach', 'netvm=none'],
      ['appvm-0', '--attach', 'none'],
    ];
    for (const words of made) {
      const result = await chain.world.link(['link', ...words]);
      expect(result.code, result.stderr).toBe(0);
    }
    const modes = async (): Promise<string[]> =>
      (await listed()).filter((link) => link.linked).map((link) => `${link.vm} -> ${link.provider} ${link.clientAttach}/${link.providerAttach} #${link.id}`).sort();
    const before = await modes();
    expect(before).toEqual([
      expect.stringMatching(/^appvm-0 -> vpnvm none\/none #/),
      expect.stringMatching(/^appvm-lynx -> netvm none\/none #/),
      expect.stringMatching(/^appvm-lynx -> vpnvm none\/netns #/),
      expect.stringMatching(/^vpnvm -> netvm qemu\/netns #/),
    ]);

    // Every side to netns: vpnvm's QEMU refuses to give back its NIC.
    chain.qemu.deviceDel = 'refuse';
    const refused = await chain.world.link(['link', 'vpnvm', '--attach', 'netns', '--qmp-socket', template]);
    expect(refused.code).toBe(1);
    const line = refused.stderr.trim();
    const printed = / run (spectrum-link unlink vpnvm --force .*?), then (spectrum-link link vpnvm .*?), which brings back vpnvm's own links; that unlink takes down the links vpnvm provides too, to (.*?): (.*)$/.exec(line);
    expect(printed, line).not.toBeNull();
    const [, unlinkLine = '', linkLine = '', clients = '', relinks = ''] = printed ?? [];
    expect(clients.split(', ').sort()).toEqual(['appvm-0', 'appvm-lynx']);
    const clientLines = [...relinks.matchAll(/to bring back (\S+) -> vpnvm as it was, run (spectrum-link link \1 .*?)(?=; to bring back |$)/g)].map((found) => found[2] ?? '');
    expect(clientLines).toHaveLength(2);
    // The run's --attach netns only in vpnvm's own link.
    expect(linkLine).toEqual(expect.stringMatching(/ --attach netns /));
    for (const clientLine of clientLines) expect(clientLine).not.toEqual(expect.stringMatching(/ --attach netns /));

    const forced = await runPrinted(chain.world.host, unlinkLine);
    expect(forced.code, forced.stderr).toBe(1);
    for (const command of [linkLine, ...clientLines]) {
      const result = await runPrinted(chain.world.host, command);
      expect(result.code, `${command}: ${result.stderr}`).toBe(0);
    }
    // vpnvm's own link as the run asked; every other as it was, each with its id.
    expect(await modes()).toEqual(before.map((link) => link.replace(/^vpnvm -> netvm qemu\/netns /, 'vpnvm -> netvm netns/netns ')));
  });
});

describeNetns('the printed link of a run naming other VMs too pins a VM only where every link that link makes has its mode', () => {
  // appvm-0: a client of netvm, whose side of it is none there (netns in vpnvm -> netvm).
  const chain = chainWorld('relinkrun', ['appvm-lynx'], 1);
  const { listed } = chain;

  it('after a refused `link vpnvm appvm-0 --attach vpnvm=netns`: appvm-0 -> netvm, which that run keeps, is not switched by a pin of netvm', async () => {
    const template = await chain.linkMiddle();
    for (const words of [['appvm-lynx', '--attach', 'netns'], ['appvm-0', '--attach', 'none']]) {
      const result = await chain.world.link(['link', ...words]);
      expect(result.code, result.stderr).toBe(0);
    }
    const modes = chain.linkedModes;
    expect(await modes()).toEqual(['appvm-0 -> netvm none/none', 'appvm-lynx -> vpnvm netns/netns', 'vpnvm -> netvm qemu/netns']);

    chain.qemu.deviceDel = 'refuse';
    const refused = await chain.world.link(['link', 'vpnvm', 'appvm-0', '--attach', 'vpnvm=netns', '--qmp-socket', template]);
    expect(refused.code).toBe(1);
    const line = refused.stderr.trim();
    const printed = / run (spectrum-link unlink vpnvm --force .*?), then (spectrum-link link vpnvm appvm-0 .*?), which brings back vpnvm's own links; .*?, run (spectrum-link link appvm-lynx .*?)$/.exec(line);
    expect(printed, line).not.toBeNull();
    const [, unlinkLine = '', linkLine = '', clientLine = ''] = printed ?? [];
    expect(linkLine).not.toContain('netvm=');
    expect((await runPrinted(chain.world.host, unlinkLine)).code).toBe(1);
    for (const command of [linkLine, clientLine]) {
      const result = await runPrinted(chain.world.host, command);
      expect(result.code, `${command}: ${result.stderr}`).toBe(0);
    }
    // netvm's side of vpnvm -> netvm keeps the netns the unlink took down (not the none of its links up).
    expect(await modes()).toEqual(['appvm-0 -> netvm none/none', 'appvm-lynx -> vpnvm netns/netns', 'vpnvm -> netvm netns/netns']);
  });
});

describeNetns('the printed link --all of a chain pins the sides of the clients it brings back as recorded', () => {
  // appvm-0 and appvm-catgirl: clients of netvm, its side none there.
  const chain = chainWorld('relinkall', ['appvm-lynx'], 1);
  const { listed } = chain;

  it('after a refused `link --all --attach vpnvm=netns`: appvm-lynx -> vpnvm comes back netns on its side too, as recorded', async () => {
    const template = await chain.linkMiddle();
    for (const words of [['appvm-lynx', '--attach', 'netns'], ['appvm-0', 'appvm-catgirl', '--attach', 'none']]) {
      const result = await chain.world.link(['link', ...words]);
      expect(result.code, result.stderr).toBe(0);
    }
    const modes = chain.linkedModes;
    const others = ['appvm-0 -> netvm none/none', 'appvm-catgirl -> netvm none/none'];
    expect(await modes()).toEqual([...others, 'appvm-lynx -> vpnvm netns/netns', 'vpnvm -> netvm qemu/netns']);

    chain.qemu.deviceDel = 'refuse';
    const refused = await chain.world.link(['link', '--all', '--attach', 'vpnvm=netns', '--qmp-socket', template]);
    expect(refused.code).toBe(1);
    const line = refused.stderr.trim();
    const printed = / run (spectrum-link unlink vpnvm --force .*?), then (spectrum-link link --all .*?) \(that unlink takes down the links vpnvm provides too, to appvm-lynx: that link brings them back too, naming their clients\)$/.exec(line);
    expect(printed, line).not.toBeNull();
    const [, unlinkLine = '', linkLine = ''] = printed ?? [];
    expect(linkLine).toContain('--attach appvm-lynx=netns');
    expect((await runPrinted(chain.world.host, unlinkLine)).code).toBe(1);
    const relinked = await runPrinted(chain.world.host, linkLine);
    expect(relinked.code, relinked.stderr).toBe(0);
    // netvm's side of vpnvm -> netvm keeps the netns the unlink took down (not the none of its links up).
    expect(await modes()).toEqual([...others, 'appvm-lynx -> vpnvm netns/netns', 'vpnvm -> netvm netns/netns']);
  });
});

describeNetns("the printed link of a chain's middle VM pins a provider's side none where that provider's other links are up another way", () => {
  // appvm-0: a client of netvm, netns on netvm's side; vpnvm -> netvm none on it.
  const chain = chainWorld('relinknone', ['appvm-lynx'], 1);
  const { listed } = chain;

  it("after a refused `link vpnvm --attach vpnvm=netns`: netvm's side of vpnvm -> netvm comes back none, not netns as in appvm-0 -> netvm", async () => {
    const template = join(chain.socketDir, '{vm}.qmp');
    for (const words of [['vpnvm', '--attach', 'vpnvm=qemu', '--attach', 'netvm=none', '--qmp-socket', template], ['appvm-0', '--attach', 'netns']]) {
      const result = await chain.world.link(['link', ...words]);
      expect(result.code, result.stderr).toBe(0);
    }
    const modes = chain.linkedModes;
    expect(await modes()).toEqual(['appvm-0 -> netvm netns/netns', 'vpnvm -> netvm qemu/none']);

    chain.qemu.deviceDel = 'refuse';
    const refused = await chain.world.link(['link', 'vpnvm', '--attach', 'vpnvm=netns', '--qmp-socket', template]);
    expect(refused.code).toBe(1);
    const line = refused.stderr.trim();
    const printed = / run (spectrum-link unlink vpnvm --force .*?), then (spectrum-link link vpnvm .*)$/.exec(line);
    expect(printed, line).not.toBeNull();
    const [, unlinkLine = '', linkLine = ''] = printed ?? [];
    expect((await runPrinted(chain.world.host, unlinkLine)).code).toBe(1);
    const relinked = await runPrinted(chain.world.host, linkLine);
    expect(relinked.code, relinked.stderr).toBe(0);
    expect(await modes()).toEqual(['appvm-0 -> netvm netns/netns', 'vpnvm -> netvm netns/none']);
  });
});

describeNetns('the printed link of a run naming a client of the chain\'s middle VM too brings that client back as the run asks', () => {
  // appvm-lynx: a client of netvm too.
  const chain = chainWorld('relinknamed', ['appvm-lynx'], 0);
  const { listed } = chain;

  it('after a refused `link vpnvm appvm-lynx --attach netns`: no link of appvm-lynx alone pins its links back as they were; each printed command run, every link is netns', async () => {
    const template = await chain.linkMiddle();
    await writeFile(join(chain.world.configDir, 'appvm-lynx', 'providers', 'net', 'netvm'), '');
    const client = await chain.world.link(['link', 'appvm-lynx', '--attach', 'none']);
    expect(client.code, client.stderr).toBe(0);
    const modes = chain.linkedModes;
    expect(await modes()).toEqual(['appvm-lynx -> netvm none/none', 'appvm-lynx -> vpnvm none/none', 'vpnvm -> netvm qemu/netns']);

    chain.qemu.deviceDel = 'refuse';
    const refused = await chain.world.link(['link', 'vpnvm', 'appvm-lynx', '--attach', 'netns', '--qmp-socket', template]);
    expect(refused.code).toBe(1);
    const line = refused.stderr.trim();
    expect(line).toContain('that unlink takes down the links vpnvm provides too, to appvm-lynx: that link brings them back too, naming their clients');
    // Every command the line gives, in its order.
    const commands = [...line.matchAll(/(?:run|then) (spectrum-link (?:un)?link .*?)(?=, then |, which |; to bring back | \(that unlink|$)/g)].map((found) => found[1] ?? '');
    expect(commands).toEqual([expect.stringMatching(/^spectrum-link unlink vpnvm --force /), expect.stringMatching(/^spectrum-link link vpnvm appvm-lynx .*--attach netns /)]);
    for (const command of commands) {
      const result = await runPrinted(chain.world.host, command);
      expect(result.code, `${command}: ${result.stderr}`).toBe(command.includes(' unlink ') ? 1 : 0);
    }
    expect(await modes()).toEqual(['appvm-lynx -> netvm netns/netns', 'appvm-lynx -> vpnvm netns/netns', 'vpnvm -> netvm netns/netns']);
  });
});
