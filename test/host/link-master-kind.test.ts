// A device of another kind under a link's bridge name. Found as the plan looks, it is replaced by
// the bridge, as a device of another kind under a port's name is by a tap: the device prefix's
// names are the linker's. Made under the name by something else while the run joins its ports
// (after the plan looked), the join is refused, naming the device's kind, and the run is undone:
// a bond or a VRF there would take the port. This kernel has neither (nor dummy), so kinds it has
// stand in for them; test/host/rtnl-socket.test.ts has a bridge reported as a bond refused.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { describeNetns, eventually } from '../harness/index.js';
import { devices, linkPausedBeforeJoin, lynxDeviceNames, oneLineError } from './link-fixture.js';
import { linkWorldPerSuite, resumePausedLink } from './link-world-suite.js';

/** `ip link add` arguments that make a device of some kind other than a bridge under `name`. */
const OTHER_KINDS: readonly (readonly [kind: string, add: (name: string) => string[]])[] = [
  ['veth', (name) => ['link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}x`]],
  ['ifb', (name) => ['link', 'add', name, 'type', 'ifb']],
  ['vxlan', (name) => ['link', 'add', name, 'type', 'vxlan', 'id', '7', 'dstport', '4789']],
];

describeNetns('a device of another kind under a link bridge name', () => {
  const world = linkWorldPerSuite('linkkind');
  const names = lynxDeviceNames();

  // A state file to compare with: the link recorded, then taken down (its id kept).
  beforeAll(async () => {
    expect((await world().link(['link', 'appvm-lynx', '--attach', 'none'])).code).toBe(0);
    await reset();
  });

  /** Take the link down, its id kept (each test's link gets the same names), and delete what a test left under them. */
  const reset = async (): Promise<void> => {
    await world().link(['unlink', 'appvm-lynx']);
    const host = await devices(world().host);
    for (const name of [names.bridge, names.client, names.provider]) if (host.has(name)) await world().host.ip(['link', 'del', 'dev', name]);
  };

  it.each(OTHER_KINDS)('found as the plan looks: a device of kind %s under the bridge name is replaced by the bridge, as a device of another kind under a port name is by a tap', async (kind, add) => {
    await world().host.ip(add(names.bridge));
    // And a bridge under the client port's name: the plan's other wrong device of ours.
    await world().host.ip(['link', 'add', names.client, 'type', 'bridge']);
    try {
      const result = await world().link(['link', 'appvm-lynx', '--attach', 'none', '--json']);
      expect(result.code, result.stderr).toBe(0);
      const host = await devices(world().host);
      expect(host.get(names.bridge)?.linkinfo?.info_kind).toBe('bridge');
      for (const port of [names.client, names.provider]) expect(host.get(port)).toMatchObject({ master: names.bridge, linkinfo: { info_kind: 'tun' } });
      // A veth's peer went with it.
      if (kind === 'veth') expect(host.has(`${names.bridge}x`)).toBe(false);
    } finally {
      await reset();
    }
  });

  it.each(OTHER_KINDS.flatMap(([kind, add]) => (['client', 'provider'] as const).map((port) => [kind, port, add] as const)))(
    'made under the bridge name after the plan looked: a device of kind %s there when the %s port is to join (looked up first, or again after the join with the index looked up for the client port is refused) is refused in one line naming it and its kind; the run is undone, the device left',
    async (kind, port, add) => {
      const state = (): Promise<string> => readFile(join(world().stateDir, 'links.json'), 'utf8');
      const before = await state();
      const paused = await linkPausedBeforeJoin(world(), port);
      const { run } = paused;
      let index: number | undefined;
      // Then on with the run: the port joins whatever has the bridge's name now.
      await resumePausedLink(world(), paused, 1, async () => {
        const ready = async (): Promise<boolean> => {
          const host = await devices(world().host);
          return port === 'client' ? host.has(names.client) : host.get(names.client)?.master === names.bridge;
        };
        await eventually(`the run to reach the ${port} port's join`, ready, 30_000);
        await world().host.ip(['link', 'del', 'dev', names.bridge]);
        await world().host.ip(add(names.bridge));
        index = (await devices(world().host)).get(names.bridge)?.ifindex;
      });
      try {
        const device = port === 'client' ? names.client : names.provider;
        expect(oneLineError(run.stderr)).toBe(
          `spectrum-link: ip link set dev ${device} mtu 1500 master ${names.bridge} up failed: Operation not supported: master ${names.bridge} (ifindex ${String(index)}) is a device of kind ${kind}, not a bridge; ` +
            "something else made it under this link's bridge name after this run looked (README: How devices are made): " +
            'check what else makes network devices on this host (a network manager, another spectrum-link), then link again',
        );
        // Undone: the run's ports gone, the state as before it (the link's id kept by the unlink
        // before, no attach modes); the device under the bridge's name, not the run's, left as it is.
        const host = await devices(world().host);
        expect([names.client, names.provider].filter((name) => host.has(name))).toEqual([]);
        expect(host.get(names.bridge)).toMatchObject({ ifindex: index, linkinfo: { info_kind: kind } });
        expect(await state()).toBe(before);
        // Linked again, it is replaced.
        const again = await world().link(['link', 'appvm-lynx', '--attach', 'none']);
        expect(again.code, again.stderr).toBe(0);
        expect((await devices(world().host)).get(names.bridge)?.linkinfo?.info_kind).toBe('bridge');
      } finally {
        await reset();
      }
    },
  );

  it("a link device's name that another device has as an altname: the kernel's refusal names that device, for a bridge and a veth (File exists) as for a tap (busy); the run undone, the state as it was", async () => {
    const state = (): Promise<string> => readFile(join(world().stateDir, 'links.json'), 'utf8');
    const before = await state();
    await world().host.ip(['link', 'add', 'blocker', 'type', 'bridge']);
    try {
      const cases = [
        [names.bridge, 'none', `ip link add ${names.bridge} type bridge failed: File exists: device blocker has that name as an altname`],
        [names.client, 'netns', `failed: File exists: device blocker has that name as an altname`],
        [names.client, 'none', `ip tuntap add dev ${names.client} mode tap vnet_hdr failed: Device or resource busy: device blocker has that name as an altname`],
      ] as const;
      for (const [name, attach, said] of cases) {
        await world().host.ip(['link', 'property', 'add', 'dev', 'blocker', 'altname', name]);
        const result = await world().link(['link', 'appvm-lynx', '--attach', attach]);
        expect(result.code, result.stderr).toBe(1);
        expect(oneLineError(result.stderr)).toContain(said);
        expect(await state()).toBe(before);
        await world().host.ip(['link', 'property', 'del', 'dev', 'blocker', 'altname', name]);
      }
    } finally {
      await world().host.ip(['link', 'del', 'dev', 'blocker']);
      await reset();
    }
  });
});
