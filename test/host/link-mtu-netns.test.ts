// The link MTU kept and undone, end to end in namespaces: a `link` given no --mtu keeps the MTU a
// link records (a boot script's plain link), and a failed run puts back the MTU it had changed on
// the devices of links that were up.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { preferredId } from '../../host/link-state.js';
import { vmName } from '../../host/vm-name.js';
import { createHarness, describeNetns, type Harness } from '../harness/index.js';
import { type LinkWorld, devices, makeLinkWorld, oneLineError } from './link-fixture.js';

interface LinkOutput {
  links: { id: number; bridge: string; clientDevice: string; providerDevice: string; vmmArguments?: { client?: { qemu: string[] } } }[];
}

describeNetns('spectrum-link link MTU', () => {
  let harness: Harness;
  let world: LinkWorld;

  beforeAll(async () => {
    harness = createHarness('linkmtu');
    world = await makeLinkWorld(harness);
  });
  afterAll(async () => {
    await world?.dispose();
    await harness?.cleanup();
  });

  const mtus = async (link: LinkOutput['links'][number]): Promise<(number | undefined)[]> => {
    const host = await devices(world.host);
    const lynx = await devices(world.vmNetns('appvm-lynx'));
    const netvm = await devices(world.vmNetns('netvm'));
    return [host.get(link.bridge)?.mtu, host.get(link.clientDevice)?.mtu, host.get(link.providerDevice)?.mtu, lynx.get(link.clientDevice)?.mtu, netvm.get(link.providerDevice)?.mtu];
  };
  const recorded = async (): Promise<unknown[]> => {
    const state = JSON.parse(await readFile(join(world.stateDir, 'links.json'), 'utf8')) as { links: { client: string; attached?: { mtu?: unknown } }[] };
    return state.links.map((link) => link.attached?.mtu);
  };

  it('keeps the MTU a link was made with where link is given no --mtu (its record has it), and changes it where given another', async () => {
    const made = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--mtu', '9000', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const link = (JSON.parse(made.stdout) as LinkOutput).links[0]!;
    expect(await mtus(link)).toEqual([9000, 9000, 9000, 9000, 9000]);
    expect(await recorded()).toEqual([9000]);
    // A boot script's plain link: the MTU stays, as the mode does.
    const plain = await world.link(['link', 'appvm-lynx']);
    expect(plain.code, plain.stderr).toBe(0);
    expect(await mtus(link)).toEqual([9000, 9000, 9000, 9000, 9000]);
    // Another --mtu changes it; 1500, the default, is recorded as no MTU.
    const back = await world.link(['link', 'appvm-lynx', '--mtu', '1500']);
    expect(back.code, back.stderr).toBe(0);
    expect(await mtus(link)).toEqual([1500, 1500, 1500, 1500, 1500]);
    expect(await recorded()).toEqual([undefined]);
  });

  it('refuses, as bad input (exit 2, nothing changed), to give a tap to a side of a link that records an MTU above what a tap takes, where no --mtu is given', async () => {
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--mtu', '65535'])).code).toBe(0);
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    const refused = await world.link(['link', 'appvm-lynx', '--attach', 'none']);
    expect(refused.code).toBe(2);
    expect(oneLineError(refused.stderr)).toMatch(/^spectrum-link: MTU 65535, which appvm-lynx -> netvm records \(no --mtu given\), is more than a tap takes \(65521, Linux's tun driver\), and appvm-lynx is attached with none \(a tap\): give --mtu 65521 or less/);
    expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '1500'])).code).toBe(0);
  });

  it('prints the VMM arguments of a link attached by hand with the MTU it keeps', async () => {
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'none', '--mtu', '4000'])).code).toBe(0);
    const plain = await world.link(['link', 'appvm-lynx', '--json']);
    expect(plain.code, plain.stderr).toBe(0);
    expect((JSON.parse(plain.stdout) as LinkOutput).links[0]?.vmmArguments?.client?.qemu.join(' ')).toMatch(/,host_mtu=4000$/);
    expect((await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--mtu', '1500'])).code).toBe(0);
  });

  it('says the MTU a link records in link, list and show, text and JSON (mtu), and none at the default 1500', async () => {
    const line = (stdout: string): string => stdout.split('\n')[0] ?? '';
    const made = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--mtu', '9000']);
    expect(made.code, made.stderr).toBe(0);
    expect(line(made.stdout)).toMatch(/  bridge snb\d+  mtu 9000$/);
    const list = await world.link(['list']);
    expect(line(list.stdout)).toMatch(/  bridge snb\d+  mtu 9000  up$/);
    for (const args of [['link', 'appvm-lynx', '--json'], ['list', '--json'], ['show', 'appvm-lynx', '--json']]) {
      const out = await world.link(args);
      expect(out.code, out.stderr).toBe(0);
      const parsed = JSON.parse(out.stdout) as { links: Record<string, unknown>[] } | Record<string, unknown>[];
      const link = (Array.isArray(parsed) ? parsed[0] : parsed.links[0]) ?? {};
      expect(link.mtu, args.join(' ')).toBe(9000);
      // Added after the fields that were there: their order kept.
      expect(Object.keys(link).indexOf('mtu'), args.join(' ')).toBeGreaterThan(Object.keys(link).indexOf('providerAttach'));
    }
    const back = await world.link(['link', 'appvm-lynx', '--mtu', '1500', '--json']);
    expect(back.code, back.stderr).toBe(0);
    expect((JSON.parse(back.stdout) as { links: Record<string, unknown>[] }).links[0]).not.toHaveProperty('mtu');
    const show = await world.link(['show', 'appvm-lynx']);
    expect(line(show.stdout)).toMatch(/  bridge snb\d+  up$/);
  });

  it('a run that fails on one VM puts back the MTU it had set on the devices of another VM\'s link that was up (host and VM sides), as its record is', async () => {
    const up = await world.link(['link', 'appvm-lynx', '--attach', 'netns', '--json']);
    expect(up.code, up.stderr).toBe(0);
    const link = (JSON.parse(up.stdout) as LinkOutput).links[0]!;
    const stateBefore = await readFile(join(world.stateDir, 'links.json'), 'utf8');
    // appvm-catgirl's bridge name held as an altname: the kernel refuses its bridge, after lynx's link was set to 9000.
    const bridge = `snb${preferredId({ client: vmName('appvm-catgirl'), provider: vmName('netvm') })}`;
    await world.host.ip(['link', 'add', 'blocker', 'type', 'bridge']);
    await world.host.ip(['link', 'property', 'add', 'dev', 'blocker', 'altname', bridge]);
    try {
      const failed = await world.link(['link', 'appvm-lynx', 'appvm-catgirl', '--mtu', '9000']);
      expect(failed.code).toBe(1);
      expect(oneLineError(failed.stderr)).toMatch(new RegExp(`${bridge}`));
      expect(await mtus(link)).toEqual([1500, 1500, 1500, 1500, 1500]);
      expect(await readFile(join(world.stateDir, 'links.json'), 'utf8')).toBe(stateBefore);
    } finally {
      await world.host.ip(['link', 'del', 'blocker']);
    }
  });
});
