// A device under one of a link's names but of another kind than the link makes there (a vxlan or
// an ifb left under its bridge's name, say) is none of the link's: it makes no link present in
// `list` and `show` (which say it is foreign), none linked or up where the record has no attach
// modes (list, show, unlink, link taking down a dropped provider), and no recorded link's devices
// there (link keeps no mode of a link whose devices are all gone). unlink deletes it with the
// link's devices, as the plan of a link replaces it; gc leaves it, its id owned. The built bin, in
// a test namespace.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { describeNetns, eventually } from '../harness/index.js';
import { LINK_BIN, type LinkJson, ROOT, devices, lynxDeviceNames, oneLineError, warningMessages } from './link-fixture.js';
import { linkWorldPerSuite } from './link-world-suite.js';

type Attached = { client: string; provider: string } | undefined;

describeNetns('list, show, unlink and link tell a link\'s devices by kind', () => {
  const world = linkWorldPerSuite('listkind');
  const names = lynxDeviceNames();
  const statePath = (): string => join(world().stateDir, 'links.json');

  afterEach(async () => {
    for (const vm of ['appvm-lynx', 'appvm-catgirl']) await world().link(['unlink', vm, '--forget']);
    const host = await devices(world().host);
    for (const name of [names.bridge, names.client, names.provider]) if (host.has(name)) await world().host.ip(['link', 'del', 'dev', name]);
  });

  /** Rewrite link `id`'s attach modes in the state file (undefined: none, as spectrum-link wrote it before the state kept them). */
  const recordAttached = async (id: number, attached: Attached): Promise<void> => {
    const state = JSON.parse(await readFile(statePath(), 'utf8')) as { links: { id: number; attached?: unknown }[] };
    const links = state.links.map((entry) => {
      if (entry.id !== id) return entry;
      const { attached: _, ...rest } = entry;
      return attached === undefined ? rest : { ...rest, attached };
    });
    await writeFile(statePath(), JSON.stringify({ ...state, links }));
  };

  const linkJson = async (args: readonly string[]): Promise<LinkJson & Record<string, unknown>> => {
    const result = await world().link([...args, '--json']);
    expect(result.code, result.stderr).toBe(0);
    const { vmmArguments: _, ...link } = (JSON.parse(result.stdout.trim().split('\n')[0] ?? '') as { links: (LinkJson & Record<string, unknown>)[] }).links[0]!;
    return link;
  };

  /** Delete the link's devices, then make `made` under its names (each an `ip` command line). */
  const replaceDevices = async (made: readonly (readonly string[])[]): Promise<void> => {
    const host = await devices(world().host);
    for (const name of [names.bridge, names.client, names.provider]) if (host.has(name)) await world().host.ip(['link', 'del', 'dev', name]);
    for (const args of made) await world().host.ip(args);
  };
  const vxlanAtBridge = ['link', 'add', 'dev', names.bridge, 'type', 'vxlan', 'id', '7', 'dstport', '4789'];
  const ifbAtClient = ['link', 'add', 'dev', names.client, 'type', 'ifb'];


  /** `list` or `show` of the link: its JSON entry, and its text lines (the link's and those under it). */
  const shown = async (args: readonly string[], id: number): Promise<{ json: unknown; lines: string[] }> => {
    const json = await world().link([...args, '--json']);
    const text = await world().link(args);
    expect([json.code, json.stderr, text.code, text.stderr]).toEqual([0, '', 0, '']);
    const lines = text.stdout.trimEnd().split('\n');
    const start = lines.findIndex((line) => line.startsWith(`appvm-lynx -> netvm  id ${id} `));
    const end = lines.findIndex((line, index) => index > start && !line.startsWith('  '));
    return { json: (JSON.parse(json.stdout) as { id: number }[]).find((entry) => entry.id === id), lines: lines.slice(start, end < 0 ? undefined : end) };
  };
  const lineOf = (link: LinkJson & Record<string, unknown>, client: string, provider: string, state: string): string =>
    `appvm-lynx -> netvm  id ${link.id}  ip ${String(link.clientIp)}  client ${link.clientDevice} ${String(link.clientMac)} (${client})  provider ${link.providerDevice} ${String(link.providerMac)} (${provider})  bridge ${link.bridge}  ${state}`;

  /** The line under a netns link of list and show for its veth `device` whose far end is not where the link has it. */
  const farEndLine = (device: string, netns: string): string => `  ${device} is a veth whose far end is not ${device} in network namespace ${netns} (link makes the pair anew)`;

  it('a recorded link whose bridge is a vxlan is not present: list and show say its bridge is foreign (JSON `foreign`, a line under it)', async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    expect(link.bridge).toBe(names.bridge);
    // Up: nothing foreign.
    expect((await shown(['list'], link.id)).json).toMatchObject({ ...link, attachRecorded: true, present: true, linked: true, foreign: [] });
    await world().host.ip(['link', 'del', 'dev', names.bridge]);
    await world().host.ip(vxlanAtBridge);
    for (const command of [['list'], ['show', 'appvm-lynx'], ['show', 'netvm']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...link, attachRecorded: true, present: false, linked: true, foreign: [{ device: names.bridge, kind: 'vxlan', expected: ['bridge'] }] },
        lines: [lineOf(link, 'none', 'none', 'devices missing'), `  ${names.bridge} is a device of kind vxlan, not this link's bridge`],
      });
    }
    // A port's name on a bridge, a netns side's on a tap: foreign too.
    await replaceDevices([
      ['link', 'add', 'dev', names.bridge, 'type', 'bridge'],
      ['link', 'add', 'dev', names.client, 'type', 'bridge'],
      ['tuntap', 'add', 'dev', names.provider, 'mode', 'tap'],
    ]);
    await recordAttached(link.id, { client: 'none', provider: 'netns' });
    expect(await shown(['list'], link.id)).toEqual({
      json: {
        ...link,
        providerAttach: 'netns',
        attachRecorded: true,
        present: false,
        linked: true,
        foreign: [
          { device: names.client, kind: 'bridge', expected: ['tun'] },
          { device: names.provider, kind: 'tun', expected: ['veth'] },
        ],
      },
      lines: [
        lineOf(link, 'none', 'netns', 'devices missing'),
        `  ${names.client} is a device of kind bridge, not this link's client tap`,
        `  ${names.provider} is a device of kind tun, not this link's provider veth`,
      ],
    });
  });

  it('a tun device in tun mode under a tap\'s name is no tap: list and show say it is foreign (kind `tun (mode tun)`), unlink says it deleted it, and link replaces it with a tap', async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    const tunModeAtClient = async (): Promise<void> => {
      await world().host.ip(['link', 'del', 'dev', names.client]);
      await world().host.ip(['tuntap', 'add', 'dev', names.client, 'mode', 'tun']);
    };
    await tunModeAtClient();
    const foreign = [{ device: names.client, kind: 'tun (mode tun)', expected: ['tun'] }];
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...link, attachRecorded: true, present: false, linked: true, foreign },
        lines: [lineOf(link, 'none', 'none', 'devices missing'), `  ${names.client} is a device of kind tun (mode tun), not this link's client tap`],
      });
    }
    // link makes a tap of it, and says so as any link does.
    expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
    const client = (await devices(world().host)).get(names.client) as { linkinfo?: { info_kind?: string; info_data?: { type?: string } } } | undefined;
    expect(client?.linkinfo).toMatchObject({ info_kind: 'tun', info_data: { type: 'tap' } });
    expect((await shown(['list'], link.id)).json).toMatchObject({ ...link, attachRecorded: true, present: true, linked: true, foreign: [] });
    // unlink deletes it as a foreign device, and says so.
    await tunModeAtClient();
    const unlinked = await world().link(['unlink', 'appvm-lynx', '--json']);
    expect([unlinked.code, unlinked.stderr]).toEqual([0, '']);
    expect(JSON.parse(unlinked.stdout)).toEqual({ vm: 'appvm-lynx', unlinked: [{ ...link, foreignDeleted: foreign }], forgotten: false });
    // Recorded without attach modes, its names holding only that one: not linked.
    await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    await recordAttached(link.id, undefined);
    await replaceDevices([['tuntap', 'add', 'dev', names.client, 'mode', 'tun']]);
    expect((await shown(['list'], link.id)).json).toEqual({
      ...link,
      clientAttach: null,
      providerAttach: null,
      attachRecorded: false,
      present: false,
      linked: false,
      foreign: [{ device: names.client, kind: 'tun (mode tun)', expected: ['tun', 'veth'] }],
    });
  });

  it("a netns link whose veth has its far end outside its VM's namespace (moved elsewhere, or that namespace no longer mounted) is not present in list and show, which say so; link makes the pair anew", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    expect([link.clientAttach, link.providerAttach]).toEqual(['netns', 'netns']);
    const [lynxNs, netvmNs] = [`${world().netnsPrefix}appvm-lynx`, `${world().netnsPrefix}netvm`];
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    expect((await shown(['list'], link.id)).json).toEqual(up);

    // The client's far end moved to another namespace.
    const elsewhere = await world().harness.namespace('elsewhere');
    await world().vmNetns('appvm-lynx').ip(['link', 'set', 'dev', names.client, 'netns', elsewhere.name]);
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...up, present: false, farEndsElsewhere: [{ device: names.client, netns: lynxNs }] },
        lines: [lineOf(link, 'netns', 'netns', 'far end elsewhere'), farEndLine(names.client, lynxNs)],
      });
    }
    // As the plan takes it: link makes the pair anew, and then it is present.
    expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
    expect((await shown(['list'], link.id)).json).toEqual(up);

    // netvm's namespace unmounted (ip netns delete) while a process still runs in it: the provider
    // veth is still there, its far end in a namespace without a name.
    const holder = world().vmNetns('netvm').spawn(['sh', '-c', 'echo held; exec sleep 60'], { enter: 'nsenter' });
    try {
      await holder.waitForOutput(/held/);
      await world().host.exec(['ip', 'netns', 'delete', netvmNs], { enter: 'nsenter' });
      expect((await devices(world().host)).get(names.provider)?.linkinfo?.info_kind).toBe('veth');
      expect(await shown(['list'], link.id)).toEqual({
        json: { ...up, present: false, farEndsElsewhere: [{ device: names.provider, netns: netvmNs }] },
        lines: [lineOf(link, 'netns', 'netns', 'far end elsewhere'), farEndLine(names.provider, netvmNs)],
      });
      expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
      expect((await shown(['list'], link.id)).json).toEqual(up);
    } finally {
      await holder.kill('SIGKILL');
      await holder.waitClosed();
    }
    // list given no --netns-prefix looks where the state records its netns links' VMs live (the world's prefix).
    const unprefixed = await world().host.exec(['node', LINK_BIN, 'list', '--state-dir', world().stateDir, '--json'], { enter: 'nsenter', allowFailure: true });
    expect([unprefixed.code, unprefixed.stderr]).toEqual([0, '']);
    expect((JSON.parse(unprefixed.stdout) as { id: number }[]).find((entry) => entry.id === link.id)).toMatchObject({ present: true, linked: true });
    // Given another, it looks for the far ends there: it says where it looked, and on stderr that the state records another.
    const other = `${world().netnsPrefix}o-`;
    const listedThere = await world().host.exec(['node', LINK_BIN, 'list', '--state-dir', world().stateDir, '--netns-prefix', other, '--json'], { enter: 'nsenter', allowFailure: true });
    expect(listedThere.code).toBe(0);
    expect(oneLineError(listedThere.stderr)).toContain(`netns prefix "${other}" (from --netns-prefix) is not the one state file ${join(world().stateDir, 'links.json')} records for its links attached in netns mode, "${world().netnsPrefix}"`);
    expect((JSON.parse(listedThere.stdout) as { id: number }[]).find((entry) => entry.id === link.id)).toMatchObject({
      present: false,
      farEndsElsewhere: [
        { device: names.client, netns: `${other}appvm-lynx` },
        { device: names.provider, netns: `${other}netvm` },
      ],
    });
    const elsewhereText = await world().host.exec(['node', LINK_BIN, 'list', '--state-dir', world().stateDir, '--netns-prefix', other], { enter: 'nsenter', allowFailure: true });
    expect(elsewhereText.code).toBe(0);
    expect(oneLineError(elsewhereText.stderr)).toBe(oneLineError(listedThere.stderr));
    expect(elsewhereText.stdout.split('\n').filter((line) => line.startsWith(`appvm-lynx -> netvm  id ${link.id} `))).toEqual([lineOf(link, 'netns', 'netns', 'far ends elsewhere')]);
    // Each veth's line says where it looked, not that link makes the pair anew (link given that prefix is refused).
    expect(elsewhereText.stdout).toContain(`  ${names.client} is a veth whose far end is not ${names.client} in network namespace ${other}appvm-lynx (looked for under netns prefix "${other}", not the one the state records, "${world().netnsPrefix}")`);
    expect(elsewhereText.stdout).not.toContain('link makes the pair anew');
  });

  it("a link whose side device is off its bridge (nomaster, or a port of another bridge) is flagged in list and show (`not bridged`, JSON `offBridge`, a line under it), its other fields as up; link puts it back", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
    const offLine = (device: string, where: string): string => `  ${device} ${where}, not of this link's bridge ${link.bridge} (link puts it back)`;

    // The provider's port taken off the bridge: the link carries nothing.
    await world().host.ip(['link', 'set', 'dev', names.provider, 'nomaster']);
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...up, offBridge: [{ device: names.provider, master: null }] },
        lines: [lineOf(link, 'netns', 'netns', 'not bridged'), offLine(names.provider, 'is a port of no bridge')],
      });
    }
    // And the client's put on another bridge too: both said, client first.
    await world().host.ip(['link', 'add', 'dev', 'xbr7', 'type', 'bridge']);
    try {
      await world().host.ip(['link', 'set', 'dev', names.client, 'master', 'xbr7']);
      expect(await shown(['show', 'appvm-lynx'], link.id)).toEqual({
        json: {
          ...up,
          offBridge: [
            { device: names.client, master: 'xbr7' },
            { device: names.provider, master: null },
          ],
        },
        lines: [lineOf(link, 'netns', 'netns', 'not bridged'), offLine(names.client, 'is a port of xbr7'), offLine(names.provider, 'is a port of no bridge')],
      });
      // link puts them back: up again, nothing flagged.
      expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
      expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
    } finally {
      await world().host.ip(['link', 'del', 'dev', 'xbr7']);
    }
  });

  it("a link whose bridge has another port or an address is flagged in list and show (`bridge shared`, JSON `foreignPorts` and `bridgeAddresses`, a line under it for each); link takes the port off (not deleted) and removes the address", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    await world().host.ip(['tuntap', 'add', 'dev', 'intruder0', 'mode', 'tap']);
    try {
      // A third party on the VM's link, and the host made one.
      await world().host.ip(['link', 'set', 'dev', 'intruder0', 'master', names.bridge]);
      await world().host.ip(['address', 'add', '198.51.100.1/24', 'dev', names.bridge]);
      for (const command of [['list'], ['show', 'appvm-lynx']]) {
        expect(await shown(command, link.id)).toEqual({
          json: { ...up, foreignPorts: [{ device: 'intruder0' }], bridgeAddresses: ['198.51.100.1/24'] },
          lines: [
            lineOf(link, 'netns', 'netns', 'bridge shared'),
            `  intruder0 is a port of this link's bridge ${link.bridge}, not one of the link's (link takes it off)`,
            `  ${link.bridge} has address 198.51.100.1/24: the host is no party on a VM's link (link removes it)`,
          ],
        });
      }
      expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
      const host = await devices(world().host);
      expect(host.get('intruder0')?.master).toBeUndefined();
      expect(host.get(names.client)?.master).toBe(names.bridge);
      expect((await world().host.ip(['-4', 'addr', 'show', 'dev', names.bridge])).stdout).toBe('');
      expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
    } finally {
      await world().host.ip(['link', 'del', 'dev', 'intruder0']);
    }
  });

  it("a link whose bridge has a device stacked on it (a macvlan: the host a party on the link through it) is flagged in list and show (`bridge shared`, JSON `upperDevices`, a line under it); link leaves it, not spectrum-link's", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    await world().host.ip(['link', 'add', 'link', names.bridge, 'name', 'stacked0', 'type', 'macvlan', 'mode', 'bridge']);
    try {
      const flagged = {
        json: { ...up, upperDevices: [{ device: 'stacked0', kind: 'macvlan' }] },
        lines: [
          lineOf(link, 'netns', 'netns', 'bridge shared'),
          `  stacked0 (macvlan) is stacked on this link's bridge ${link.bridge}: whoever holds it is a party on a VM's link (link leaves it, not spectrum-link's: delete it)`,
        ],
      };
      for (const command of [['list'], ['show', 'appvm-lynx']]) expect(await shown(command, link.id)).toEqual(flagged);
      expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
      expect((await devices(world().host)).has('stacked0')).toBe(true);
      expect(await shown(['list'], link.id)).toEqual(flagged);
      await world().host.ip(['link', 'del', 'dev', 'stacked0']);
      expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
    } finally {
      if ((await devices(world().host)).has('stacked0')) await world().host.ip(['link', 'del', 'dev', 'stacked0']);
    }
  });

  it("an address with a peer on a link's bridge is shown as `ip addr` shows it (A peer B/32) in list and show, and in link's warning as it removes it", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    await world().host.ip(['address', 'add', '198.51.100.1', 'peer', '198.51.100.2', 'dev', names.bridge]);
    const shownByIp = (await world().host.ip(['-br', 'address', 'show', 'dev', names.bridge])).stdout;
    expect(shownByIp).toContain('198.51.100.1 peer 198.51.100.2/32');
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      const { json, lines } = await shown(command, link.id);
      expect(json).toMatchObject({ bridgeAddresses: ['198.51.100.1 peer 198.51.100.2/32'] });
      expect(lines).toContain(`  ${names.bridge} has address 198.51.100.1 peer 198.51.100.2/32: the host is no party on a VM's link (link removes it)`);
    }
    const result = await world().link(['link', 'appvm-lynx']);
    expect(result.code, result.stderr).toBe(0);
    expect(warningMessages(result.stderr)).toEqual([`link appvm-lynx: removed address 198.51.100.1 peer 198.51.100.2/32 from bridge ${names.bridge}`]);
    expect((await world().host.ip(['-4', 'addr', 'show', 'dev', names.bridge])).stdout).toBe('');
  });

  it('link removes every IPv4 address of a subnet on a link\'s bridge, its secondaries (which the primary\'s delete takes with it) first: it failed on them, the addresses gone', async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    for (const address of ['198.51.100.1/24', '198.51.100.2/24', '203.0.113.5/32']) await world().host.ip(['address', 'add', address, 'dev', names.bridge]);
    expect((await shown(['list'], link.id)).json).toMatchObject({ bridgeAddresses: ['198.51.100.1/24', '203.0.113.5/32', '198.51.100.2/24'] });
    const result = await world().link(['link', 'appvm-lynx']);
    expect(result.code, result.stderr).toBe(0);
    expect(warningMessages(result.stderr)).toEqual(['198.51.100.2/24', '198.51.100.1/24', '203.0.113.5/32'].map((address) => `link appvm-lynx: removed address ${address} from bridge ${names.bridge}`));
    expect((await world().host.ip(['-4', 'addr', 'show', 'dev', names.bridge])).stdout).toBe('');
  });

  it("link puts another recorded link's side device found on a link's bridge back on its own link's bridge, saying so; where that bridge is not there, takes it off, saying it is on no bridge now", async () => {
    const lynx = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    const catgirl = await linkJson(['link', 'appvm-catgirl', '--attach', 'none']);
    await world().host.ip(['link', 'set', 'dev', catgirl.clientDevice, 'master', lynx.bridge]);
    const moved = await world().link(['link', 'appvm-lynx']);
    expect(moved.code, moved.stderr).toBe(0);
    expect(warningMessages(moved.stderr)).toEqual([`link appvm-lynx: put ${catgirl.clientDevice}, another link's side device, back on its link's bridge ${catgirl.bridge} (off bridge ${lynx.bridge})`]);
    expect((await devices(world().host)).get(catgirl.clientDevice)?.master).toBe(catgirl.bridge);
    // Its own bridge gone (its provider's tap with it, off no bridge then): taken off, said on no bridge.
    await world().host.ip(['link', 'del', 'dev', catgirl.bridge]);
    await world().host.ip(['link', 'set', 'dev', catgirl.clientDevice, 'master', lynx.bridge]);
    const released = await world().link(['link', 'appvm-lynx']);
    expect(released.code, released.stderr).toBe(0);
    expect(warningMessages(released.stderr)).toEqual([
      `link appvm-lynx: took foreign port ${catgirl.clientDevice} off bridge ${lynx.bridge} (another link's side device, whose bridge ${catgirl.bridge} is not there: it is on no bridge now; link its VM to make it)`,
    ]);
    expect((await devices(world().host)).get(catgirl.clientDevice)?.master).toBeUndefined();
  });

  it("link says what it changed of another's on a link's bridge: a warning on stderr for each foreign port taken off and each address removed, one for each device whose settings it put back; in --json the VM's line's `foreignChanged`; nothing where it changed nothing", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    await world().host.ip(['tuntap', 'add', 'dev', 'intruder1', 'mode', 'tap']);
    const intrude = async (): Promise<void> => {
      await world().host.ip(['link', 'set', 'dev', 'intruder1', 'master', names.bridge]);
      await world().host.ip(['address', 'add', '198.51.100.1/24', 'dev', names.bridge]);
      await world().host.ip(['link', 'set', 'dev', names.bridge, 'type', 'bridge', 'ageing_time', '0']);
      await world().host.ip(['link', 'set', 'dev', names.provider, 'type', 'bridge_slave', 'hairpin', 'on']);
    };
    try {
      await intrude();
      const said = await world().link(['link', 'appvm-lynx']);
      expect(said.code, said.stderr).toBe(0);
      expect(warningMessages(said.stderr)).toEqual([
        `link appvm-lynx: took foreign port intruder1 off bridge ${names.bridge}`,
        `link appvm-lynx: removed address 198.51.100.1/24 from bridge ${names.bridge}`,
        `link appvm-lynx: put back ${names.bridge}'s ageing_time 30000`,
        `link appvm-lynx: put back ${names.provider}'s hairpin off (a port of bridge ${names.bridge})`,
      ]);
      await intrude();
      const json = await world().link(['link', 'appvm-lynx', '--json']);
      expect(json.code, json.stderr).toBe(0);
      expect(warningMessages(json.stderr)).toHaveLength(4);
      const line = JSON.parse(json.stdout.trim()) as { vm: string; links: { id: number }[]; foreignChanged?: unknown };
      expect(line.links.map((entry) => entry.id)).toEqual([link.id]);
      expect(line.foreignChanged).toEqual([
        {
          bridge: names.bridge,
          released: ['intruder1'],
          addressesRemoved: ['198.51.100.1/24'],
          settingsPutBack: [
            { device: names.bridge, settings: ['ageing_time 30000'] },
            { device: names.provider, settings: ['hairpin off'] },
          ],
        },
      ]);
      const again = await world().link(['link', 'appvm-lynx', '--json']);
      expect([again.code, again.stderr]).toEqual([0, '']);
      expect(JSON.parse(again.stdout.trim())).not.toHaveProperty('foreignChanged');
    } finally {
      await world().host.ip(['link', 'del', 'dev', 'intruder1']);
    }
  });

  it("link's warning for a foreign port whose name holds what a terminal acts on (an escape) gives that name escaped, as list does: it went to the terminal raw", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    const intruder = 'fx\u001b[7m';
    await world().host.ip(['link', 'add', 'dev', intruder, 'type', 'veth', 'peer', 'name', 'fy0']);
    try {
      await world().host.ip(['link', 'set', 'dev', intruder, 'master', names.bridge]);
      const listed = (await shown(['list'], link.id)).lines.find((line) => line.includes('is a port of this link\'s bridge'));
      const shownName = listed?.trim().split(' ')[0];
      expect(shownName).toBeDefined();
      expect(shownName).not.toContain('\u001b');
      const result = await world().link(['link', 'appvm-lynx']);
      expect(result.code, result.stderr).toBe(0);
      expect(warningMessages(result.stderr)).toEqual([`link appvm-lynx: took foreign port ${String(shownName)} off bridge ${names.bridge}`]);
    } finally {
      await world().host.ip(['link', 'del', 'dev', 'fy0']);
    }
  });

  it("a link whose bridge learnt a VM's bridge for STP root is up once link turned STP off: its timers, the root's until it takes itself for root again, are none to put back", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    // The VM runs a bridge with STP, root over the link's (priority 0), with timers of its own.
    const vm = world().vmNetns('appvm-lynx');
    await vm.ip(['link', 'add', 'vmroot', 'type', 'bridge', 'stp_state', '1', 'priority', '0', 'forward_delay', '400', 'hello_time', '100', 'max_age', '4000']);
    try {
      await vm.ip(['link', 'set', names.client, 'master', 'vmroot']);
      await vm.ip(['link', 'set', 'vmroot', 'up']);
      await world().host.ip(['link', 'set', 'dev', names.bridge, 'type', 'bridge', 'stp_state', '1']);
      await eventually('the VM\'s bridge root of the link\'s', async () => (await world().host.ip(['-d', 'link', 'show', 'dev', names.bridge])).stdout.includes('max_age 4000'));
      expect((await shown(['list'], link.id)).json).toMatchObject({ changedSettings: expect.arrayContaining([{ device: names.bridge, setting: 'stp_state', value: 1, expected: 0 }]) });
      expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
      // The bridge still says the root's timers (for up to the VM's max_age, 40 s); list and link take it as up.
      expect((await world().host.ip(['-d', 'link', 'show', 'dev', names.bridge])).stdout).toContain('stp_state 0');
      expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
    } finally {
      await vm.ip(['link', 'del', 'vmroot']);
    }
  });

  it("a link whose bridge or port settings differ from a new one's (STP on with a long forward delay, no ageing; hairpin on, learning off) is flagged in list and show (`settings changed`, JSON `changedSettings`, a line under it for each); link puts them back", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    await world().host.ip(['link', 'set', 'dev', names.bridge, 'type', 'bridge', 'stp_state', '1', 'forward_delay', '3000', 'ageing_time', '0']);
    await world().host.ip(['link', 'set', 'dev', names.provider, 'type', 'bridge_slave', 'hairpin', 'on', 'learning', 'off']);
    const changed = [
      { device: names.bridge, setting: 'stp_state', value: 1, expected: 0, text: '1, not 0' },
      { device: names.bridge, setting: 'forward_delay', value: 3000, expected: 1500, text: '3000, not 1500' },
      { device: names.bridge, setting: 'ageing_time', value: 0, expected: 30000, text: '0, not 30000' },
      { device: names.provider, setting: 'hairpin', value: 1, expected: 0, text: 'on, not off' },
      { device: names.provider, setting: 'learning', value: 0, expected: 1, text: 'off, not on' },
    ];
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...up, changedSettings: changed.map(({ text: _, ...entry }) => entry) },
        lines: [lineOf(link, 'netns', 'netns', 'settings changed'), ...changed.map(({ device, setting, text }) => `  ${device} has ${setting} ${text} (link puts it back)`)],
      });
    }
    expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
    const bridge = (await world().host.ip(['-d', 'link', 'show', 'dev', names.bridge])).stdout;
    expect(bridge).toContain('stp_state 0');
    expect(bridge).toContain('forward_delay 1500');
    expect(bridge).toContain('ageing_time 30000');
    const port = (await world().host.ip(['-d', 'link', 'show', 'dev', names.provider])).stdout;
    expect(port).toContain('hairpin off');
    expect(port).toContain('learning on');
    expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
  });

  it("a link whose port's STP state is disabled (with STP off) or that is locked, either cutting its traffic, is flagged in list and show (`settings changed`); link puts them back; a tap no VMM holds open (disabled, no carrier) is up", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    // The kernel says a port's state as it is only once its device is operationally up (linkwatch).
    for (const port of [names.client, names.provider]) await world().host.linkActive(port);
    await world().host.exec(['bridge', 'link', 'set', 'dev', names.provider, 'state', '0']);
    await world().host.ip(['link', 'set', 'dev', names.client, 'type', 'bridge_slave', 'locked', 'on']);
    const changed = [
      { device: names.client, setting: 'locked', value: 1, expected: 0, text: 'on, not off' },
      { device: names.provider, setting: 'state', value: 0, expected: 3, text: 'disabled, not forwarding' },
    ];
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...up, changedSettings: changed.map(({ text: _, ...entry }) => entry) },
        lines: [lineOf(link, 'netns', 'netns', 'settings changed'), ...changed.map(({ device, setting, text }) => `  ${device} has ${setting} ${text} (link puts it back)`)],
      });
    }
    expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
    expect((await world().host.ip(['-d', 'link', 'show', 'dev', names.provider])).stdout).toContain('state forwarding');
    expect((await world().host.ip(['-d', 'link', 'show', 'dev', names.client])).stdout).toContain('locked off');
    expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
    // Its taps with no VMM: no carrier, so the kernel holds their ports disabled; none to put back.
    const none = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    expect((await world().host.ip(['-d', 'link', 'show', 'dev', names.provider])).stdout).toContain('state disabled');
    const listed = await shown(['list'], none.id);
    expect(listed.json).not.toHaveProperty('changedSettings');
    expect(listed.lines[0]).toBe(lineOf(none, 'none', 'none', 'up'));
  });

  it("a link's bridge handing frames to iptables (nf_call_*), forwarding link-local groups or not snooping multicast, and a port with a backup port or MAB on, are flagged in list and show (`settings changed`, a backup port by its name); link puts them back as a new bridge and port have them", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    // As the kernel makes them here (its own bridge netfilter reported, loaded or not).
    const fresh = (await world().host.ip(['-d', '-j', 'link', 'show', 'dev', names.bridge])).stdout;
    expect(JSON.parse(fresh)[0].linkinfo.info_data).toMatchObject({ nf_call_iptables: 0, nf_call_ip6tables: 0, nf_call_arptables: 0, group_fwd_mask: '0', mcast_snooping: 1 });
    await world().host.ip(['link', 'set', 'dev', names.bridge, 'type', 'bridge', 'nf_call_iptables', '1', 'nf_call_ip6tables', '1', 'nf_call_arptables', '1', 'group_fwd_mask', '8', 'mcast_snooping', '0']);
    await world().host.ip(['link', 'set', 'dev', names.client, 'type', 'bridge_slave', 'backup_port', names.provider]);
    // MAB (Linux 6.2 on), which iproute2 before 6.2 cannot set: by the built module's own step (it needs the port locked).
    const provider = (JSON.parse((await world().host.ip(['-j', 'link', 'show', 'dev', names.provider])).stdout) as { ifindex: number }[])[0]!.ifindex;
    const script = `import { applyDevicePlan } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'host', 'netlink-devices.js')).href)};
      const step = { netns: null, op: 'port-settings', name: ${JSON.stringify(names.provider)}, index: ${provider}, settings: { locked: 1, mab: 1 } };
      await applyDevicePlan({ createNamespaces: [], seenNamespaces: [], clearFarEnds: [], hostSteps: [[step]], configureFarEnds: [], creates: [] });`;
    const set = await world().host.exec(['node', '--input-type=module', '-e', script], { enter: 'nsenter', allowFailure: true });
    expect([set.code, set.stderr]).toEqual([0, '']);
    const clientIndex = (JSON.parse((await world().host.ip(['-j', 'link', 'show', 'dev', names.client])).stdout) as { ifindex: number }[])[0]!.ifindex;
    const changed = [
      { device: names.bridge, setting: 'group_fwd_mask', value: 8, expected: 0, text: '0x8, not 0' },
      { device: names.bridge, setting: 'mcast_snooping', value: 0, expected: 1, text: '0, not 1' },
      { device: names.bridge, setting: 'nf_call_iptables', value: 1, expected: 0, text: '1, not 0' },
      { device: names.bridge, setting: 'nf_call_ip6tables', value: 1, expected: 0, text: '1, not 0' },
      { device: names.bridge, setting: 'nf_call_arptables', value: 1, expected: 0, text: '1, not 0' },
      { device: names.client, setting: 'backup_port', value: provider, expected: 0, text: `${names.provider}, not none` },
      { device: names.provider, setting: 'locked', value: 1, expected: 0, text: 'on, not off' },
      { device: names.provider, setting: 'mab', value: 1, expected: 0, text: 'on, not off' },
    ];
    expect(clientIndex).not.toBe(provider);
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...up, changedSettings: changed.map(({ text: _, ...entry }) => ({ ...entry, ...(entry.setting === 'backup_port' && { valueDevice: names.provider }) })) },
        lines: [lineOf(link, 'netns', 'netns', 'settings changed'), ...changed.map(({ device, setting, text }) => `  ${device} has ${setting} ${text} (link puts it back)`)],
      });
    }
    const relinked = await world().link(['link', 'appvm-lynx']);
    expect(relinked.code, relinked.stderr).toBe(0);
    expect(warningMessages(relinked.stderr)).toEqual([
      `link appvm-lynx: put back ${names.bridge}'s group_fwd_mask 0, mcast_snooping 1, nf_call_iptables 0, nf_call_ip6tables 0, nf_call_arptables 0`,
      `link appvm-lynx: put back ${names.client}'s backup_port none (a port of bridge ${names.bridge})`,
      `link appvm-lynx: put back ${names.provider}'s locked off, mab off (a port of bridge ${names.bridge})`,
    ]);
    const bridge = JSON.parse((await world().host.ip(['-d', '-j', 'link', 'show', 'dev', names.bridge])).stdout)[0].linkinfo.info_data;
    expect(bridge).toMatchObject({ nf_call_iptables: 0, nf_call_ip6tables: 0, nf_call_arptables: 0, group_fwd_mask: '0', mcast_snooping: 1 });
    expect((await world().host.ip(['-d', 'link', 'show', 'dev', names.client])).stdout).not.toContain('backup_port');
    expect(await shown(['list'], link.id)).toEqual({ json: up, lines: [lineOf(link, 'netns', 'netns', 'up')] });
  });

  it("a netns link whose VM's namespace holds a veth under its veth's name that is not that veth's peer (another pair's end moved in under it) is not present in list and show, and link makes the pair anew", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const lynxNs = `${world().netnsPrefix}appvm-lynx`;
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    const hostIndex = async (): Promise<number | undefined> => ((await devices(world().host)).get(names.client) as { ifindex?: number } | undefined)?.ifindex;
    const before = await hostIndex();
    // The far end moved to another namespace, and another pair made there with an end in the VM's namespace under its name.
    const other = await world().harness.namespace('impostor');
    await world().vmNetns('appvm-lynx').ip(['link', 'set', 'dev', names.client, 'netns', other.name]);
    await other.ip(['link', 'add', 'impostor0', 'type', 'veth', 'peer', 'name', names.client, 'netns', lynxNs]);
    expect((await devices(world().vmNetns('appvm-lynx'))).get(names.client)?.linkinfo?.info_kind).toBe('veth');
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...up, present: false, farEndsElsewhere: [{ device: names.client, netns: lynxNs }] },
        lines: [lineOf(link, 'netns', 'netns', 'far end elsewhere'), farEndLine(names.client, lynxNs)],
      });
    }
    // As list takes it, so does the plan: the veth there goes (its peer with it), the pair is made anew.
    expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
    expect(await hostIndex()).not.toBe(before);
    expect([...(await devices(other)).keys()]).toEqual(['lo']);
    expect((await shown(['list'], link.id)).json).toEqual(up);
  });

  it("a netns link whose veth's far end is in its VM's namespace under another name (the VM renamed it) is not present in list and show, as link makes the pair anew", async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'netns']);
    const lynxNs = `${world().netnsPrefix}appvm-lynx`;
    const up = { ...link, attachRecorded: true, present: true, linked: true, foreign: [] };
    expect((await shown(['list'], link.id)).json).toEqual(up);
    const hostIndex = async (): Promise<number | undefined> => ((await devices(world().host)).get(names.client) as { ifindex?: number } | undefined)?.ifindex;
    const before = await hostIndex();
    // Renamed in the VM's namespace (down first: the kernel renames no device that is up).
    await world().vmNetns('appvm-lynx').ip(['link', 'set', 'dev', names.client, 'down']);
    await world().vmNetns('appvm-lynx').ip(['link', 'set', 'dev', names.client, 'name', 'renamed0']);
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...up, present: false, farEndsElsewhere: [{ device: names.client, netns: lynxNs }] },
        lines: [lineOf(link, 'netns', 'netns', 'far end elsewhere'), farEndLine(names.client, lynxNs)],
      });
    }
    // The plan's reading: no ${names.client} in the namespace, so it makes the pair anew.
    expect(await linkJson(['link', 'appvm-lynx'])).toEqual(link);
    expect(await hostIndex()).not.toBe(before);
    expect((await shown(['list'], link.id)).json).toEqual(up);
  });

  it('a record without attach modes whose names hold only devices of other kinds is not linked (list, show, unlink); gc leaves those devices (the id is owned), unlink deletes them', async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    await recordAttached(link.id, undefined);
    await replaceDevices([vxlanAtBridge, ifbAtClient]);
    const foreign = [
      { device: names.bridge, kind: 'vxlan', expected: ['bridge'] },
      { device: names.client, kind: 'ifb', expected: ['tun', 'veth'] },
    ];
    for (const command of [['list'], ['show', 'appvm-lynx']]) {
      expect(await shown(command, link.id)).toEqual({
        json: { ...link, clientAttach: null, providerAttach: null, attachRecorded: false, present: false, linked: false, foreign },
        lines: [
          lineOf(link, '-', '-', 'unlinked (id kept)'),
          `  ${names.bridge} is a device of kind vxlan, not this link's bridge`,
          `  ${names.client} is a device of kind ifb, not this link's client tap or veth`,
        ],
      });
    }
    // A tap of its own beside them: linked (as recorded before the state kept modes), not present.
    await world().host.ip(['tuntap', 'add', 'dev', names.provider, 'mode', 'tap']);
    expect((await shown(['list'], link.id)).json).toEqual({ ...link, clientAttach: null, providerAttach: null, attachRecorded: false, present: false, linked: true, foreign });
    await world().host.ip(['link', 'del', 'dev', names.provider]);

    const gc = await world().link(['gc', '--json']);
    expect([gc.code, gc.stderr, JSON.parse(gc.stdout)]).toEqual([0, '', { removed: [] }]);
    const unlinked = await world().link(['unlink', 'appvm-lynx', '--json']);
    expect(unlinked.code, unlinked.stderr).toBe(0);
    // Not linked: attached no way (not as --attach's default would have it). The devices it deleted, all foreign, said.
    expect(JSON.parse(unlinked.stdout)).toEqual({ vm: 'appvm-lynx', unlinked: [{ ...link, clientAttach: null, providerAttach: null, foreignDeleted: foreign }], forgotten: false });
    const host = await devices(world().host);
    expect([names.bridge, names.client, names.provider].filter((name) => host.has(name))).toEqual([]);
  });

  it.each([['text'], ['json']] as const)('unlink of a link up whose bridge is a vxlan and client tap an ifb says it deleted them (%s): a line under the link, or `foreignDeleted`; none said where all were its own', async (format) => {
    const json = format === 'json' ? ['--json'] : [];
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    // All its own: nothing more said (no `foreignDeleted`).
    const own = await world().link(['unlink', 'appvm-lynx', ...json]);
    expect([own.code, own.stderr]).toEqual([0, '']);
    expect(format === 'json' ? JSON.parse(own.stdout) : own.stdout).toEqual(format === 'json' ? { vm: 'appvm-lynx', unlinked: [link], forgotten: false } : `unlinked appvm-lynx -> netvm (id ${link.id}, kept)\n`);
    expect(await linkJson(['link', 'appvm-lynx', '--attach', 'none'])).toEqual(link);
    await world().host.ip(['link', 'del', 'dev', names.bridge]);
    await world().host.ip(vxlanAtBridge);
    await world().host.ip(['link', 'del', 'dev', names.client]);
    await world().host.ip(ifbAtClient);
    const unlinked = await world().link(['unlink', 'appvm-lynx', ...json]);
    expect([unlinked.code, unlinked.stderr]).toEqual([0, '']);
    if (format === 'json') {
      const foreignDeleted = [
        { device: names.bridge, kind: 'vxlan', expected: ['bridge'] },
        { device: names.client, kind: 'ifb', expected: ['tun'] },
      ];
      expect(JSON.parse(unlinked.stdout)).toEqual({ vm: 'appvm-lynx', unlinked: [{ ...link, foreignDeleted }], forgotten: false });
    } else {
      expect(unlinked.stdout).toBe(
        `unlinked appvm-lynx -> netvm (id ${link.id}, kept)\n` +
          `  also deleted ${names.bridge}, a device of kind vxlan under this link's bridge name; ${names.client}, a device of kind ifb under this link's client device name\n`,
      );
    }
    const host = await devices(world().host);
    expect([names.bridge, names.client, names.provider].filter((name) => host.has(name))).toEqual([]);
  });

  it.each([['text'], ['json']] as const)('link taking down a link to a provider dropped from the config says the devices of other kinds it deleted with it (%s), as unlink does', async (format) => {
    const json = format === 'json' ? ['--json'] : [];
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    await world().host.ip(['link', 'del', 'dev', names.bridge]);
    await world().host.ip(vxlanAtBridge);
    const provider = join(world().configDir, 'appvm-lynx', 'providers', 'net', 'netvm');
    await rm(provider);
    try {
      const result = await world().link(['link', 'appvm-lynx', ...json]);
      expect([result.code, result.stderr]).toEqual([0, '']);
      if (format === 'json') {
        const foreignDeleted = [{ device: names.bridge, kind: 'vxlan', expected: ['bridge'] }];
        expect(JSON.parse(result.stdout)).toEqual({ vm: 'appvm-lynx', links: [], unlinked: [{ ...link, foreignDeleted }] });
      } else {
        expect(result.stdout).toBe(
          `unlinked appvm-lynx -> netvm (id ${link.id}, kept): netvm is no longer among appvm-lynx's providers\n` +
            `  also deleted ${names.bridge}, a device of kind vxlan under this link's bridge name\n`,
        );
      }
      const host = await devices(world().host);
      expect([names.bridge, names.client, names.provider].filter((name) => host.has(name))).toEqual([]);
    } finally {
      await writeFile(provider, '');
    }
  });

  it('link keeps no attach mode of a link whose names hold only devices of other kinds: not up, its sides get their VMs\' modes (a record without modes, and one recorded qemu)', async () => {
    const catgirl = await linkJson(['link', 'appvm-catgirl', '--attach', 'netns']);
    expect(catgirl.providerAttach).toBe('netns');
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    await recordAttached(link.id, undefined);
    await replaceDevices([vxlanAtBridge]);
    // Not up: netvm's side gets netvm's mode (its link from appvm-catgirl is netns), appvm-lynx's
    // none (it has no other link). Taken as up, the link would keep none on both.
    expect(await linkJson(['link', 'appvm-lynx'])).toEqual({ ...link, providerAttach: 'netns' });
    expect((await devices(world().host)).get(names.bridge)?.linkinfo?.info_kind).toBe('bridge');

    // Recorded qemu on appvm-lynx's side, its devices replaced by others: not up, so no NIC is
    // hot-plugged into a QEMU that is not there (taken as up, the run would fail at its socket).
    await recordAttached(link.id, { client: 'qemu', provider: 'netns' });
    await replaceDevices([vxlanAtBridge, ifbAtClient]);
    const socketDir = join(world().stateDir, 'no-vmm');
    try {
      expect(await linkJson(['link', 'appvm-lynx', '--qmp-socket', join(socketDir, '{vm}.qmp')])).toEqual({ ...link, clientAttach: 'none', providerAttach: 'netns' });
    } finally {
      await rm(socketDir, { recursive: true, force: true });
    }
  });

  it('link takes down no link to a provider dropped from the config whose record has no attach modes and whose names hold only devices of other kinds (not linked): they stay', async () => {
    const link = await linkJson(['link', 'appvm-lynx', '--attach', 'none']);
    await recordAttached(link.id, undefined);
    await replaceDevices([vxlanAtBridge]);
    const provider = join(world().configDir, 'appvm-lynx', 'providers', 'net', 'netvm');
    await rm(provider);
    try {
      const result = await world().link(['link', 'appvm-lynx']);
      expect([result.code, result.stdout, result.stderr]).toEqual([0, 'appvm-lynx: no providers, nothing to link\n', '']);
      expect((await devices(world().host)).get(names.bridge)?.linkinfo?.info_kind).toBe('vxlan');
    } finally {
      await writeFile(provider, '');
    }
  });
});
