// Which devices under a link's names are its own: by kind, as the plan makes them and replaces
// others (host/link-device-kinds.ts, host/device-plan.ts).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ATTACH_MODES, type AttachMode } from '../../host/attach-mode.js';
import { type DesiredSide, DEVICE_KIND, type ObservedDevice, type ObservedDevices, TUN_MODE_KIND, createdKinds, planDevices, replacedDevices } from '../../host/device-plan.js';
import { type LinkDeviceNames, devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import { type FarEndsFound, expectedLinkDevices, linkDevicesSeen, sideDeviceKinds } from '../../host/link-device-kinds.js';
import type { LinkAttachment } from '../../host/link-state.js';
import { clientId } from '../../shared/client-id.js';

const NAMES: LinkDeviceNames = linkDeviceNames(devicePrefix('sn'), clientId(7));
const NETNS = 'vm-x';
/** The id the host gives NETNS, as a veth's peerNetnsId names it. */
const NETNS_ID = 4;
/** The index a side's far end has in NETNS (client, provider). */
const FAR_INDEX = { client: 10, provider: 11 } as const;
const mode = fc.constantFrom(...ATTACH_MODES);
/** A record's attach modes, or none (written before the state kept them). */
const attached = fc.option(fc.record({ client: mode, provider: mode }), { nil: undefined });
/** What may be under a name: nothing, or a device of one of these kinds (null: no link info). */
const kind = fc.option(fc.constantFrom<string | null>('bridge', 'tun', TUN_MODE_KIND, 'veth', 'vxlan', 'ifb', 'bond', null), { nil: undefined });
const found = fc.record({ bridge: kind, client: kind, provider: kind });

function device(name: string, kindOf: string | null, index: number): ObservedDevice {
  return { index, name, kind: kindOf, master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:01', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false };
}

/** The host's devices: under each of the link's names, what `under` says is there (a side's veth with its far end in NETNS). */
function hostOf(under: { readonly bridge: string | null | undefined; readonly client: string | null | undefined; readonly provider: string | null | undefined }): Map<string, ObservedDevice> {
  const host = new Map<string, ObservedDevice>();
  (['bridge', 'client', 'provider'] as const).forEach((role, index) => {
    const kindOf = under[role];
    if (kindOf === undefined) return;
    const peer = role !== 'bridge' && kindOf === 'veth' ? { peerNetnsId: NETNS_ID, peerIndex: FAR_INDEX[role] } : {};
    host.set(NAMES[role], { ...device(NAMES[role], kindOf, index + 1), ...peer });
  });
  return host;
}

const sideOf = (attach: AttachMode, name: string): DesiredSide => ({ device: name, mac: '02:00:00:00:00:02', attach: attach === 'netns' ? { kind: 'veth', netns: NETNS } : { kind: 'tap' } });

/** What the kernel has: `host`, and a VM namespace holding the far end of each netns side (a whole pair where the host end is a veth). */
function observedOf(host: Map<string, ObservedDevice>): ObservedDevices {
  const far = new Map((['client', 'provider'] as const).map((role): [string, ObservedDevice] => [NAMES[role], device(NAMES[role], 'veth', FAR_INDEX[role])]));
  return { ipv6: false, ipv6Forwarding: false, host, netns: new Map([[NETNS, { identity: { dev: 4, ino: 4026532300, cookie: 2 }, devices: far }]]), netnsIds: new Map([[NETNS, NETNS_ID]]) };
}

describe('link device kinds', () => {
  it('a side is a veth in netns mode, a tap (tun) in every other, either where no mode is recorded', () => {
    expect(sideDeviceKinds('netns')).toEqual(['veth']);
    for (const other of ['none', 'qemu', 'cloud-hypervisor'] as const) expect(sideDeviceKinds(other)).toEqual(['tun']);
    expect(sideDeviceKinds(undefined)).toEqual(['tun', 'veth']);
    expect(expectedLinkDevices(NAMES, undefined)).toEqual([
      { role: 'bridge', device: 'snb7', kinds: ['bridge'] },
      { role: 'client', device: 'snc7', kinds: ['tun', 'veth'] },
      { role: 'provider', device: 'snp7', kinds: ['tun', 'veth'] },
    ]);
  });

  it('tells each device under a link name its own or foreign; the link is whole only where every name holds its own', () => {
    fc.assert(
      fc.property(attached, found, (modes, under) => {
        const host = hostOf(under);
        const seen = linkDevicesSeen(expectedLinkDevices(NAMES, modes), host);
        const foreign = seen.foreign.map((entry) => entry.device);
        // Every device under the names is one or the other, and only those.
        expect([...seen.own, ...foreign].sort()).toEqual([...host.keys()].sort());
        for (const entry of seen.foreign) {
          expect(entry.kind).toBe(host.get(entry.device)?.kind);
          expect(entry.kind === null || !entry.expected.includes(entry.kind)).toBe(true);
        }
        expect(seen.whole).toBe(seen.own.length === 3);
        expect(seen.devicesThere).toBe(seen.own.length === 3);
        // A bridge is the bridge's, and never a side's.
        expect(seen.own.includes(NAMES.bridge)).toBe(under.bridge === 'bridge');
        if (under.client === 'bridge') expect(foreign).toContain(NAMES.client);
      }),
    );
  });

  it('for a record with attach modes, a device is foreign exactly where the plan for that link deletes it to make the link\'s own', () => {
    fc.assert(
      fc.property(fc.record({ client: mode, provider: mode }), found, (modes: LinkAttachment, under) => {
        const host = hostOf(under);
        const connection = { bridge: NAMES.bridge, mtu: 1500, client: sideOf(modes.client, NAMES.client), provider: sideOf(modes.provider, NAMES.provider) };
        const plan = planDevices([connection], observedOf(host));
        const seen = linkDevicesSeen(expectedLinkDevices(NAMES, modes), host);
        expect(seen.foreign.map((entry) => entry.device).sort()).toEqual(replacedDevices(plan).sort());
      }),
    );
  });

  it('what the plan makes for a link from nothing is the link\'s own, whole, in every mode', () => {
    fc.assert(
      fc.property(fc.record({ client: mode, provider: mode }), (modes: LinkAttachment) => {
        const connection = { bridge: NAMES.bridge, mtu: 1500, client: sideOf(modes.client, NAMES.client), provider: sideOf(modes.provider, NAMES.provider) };
        const made = createdKinds(planDevices([connection], observedOf(new Map())));
        const host = new Map([...made].map(([name, kindOf], index): [string, ObservedDevice] => [name, device(name, kindOf, index + 1)]));
        // Recorded, and (to a record without modes) whatever they were.
        for (const recorded of [modes, undefined]) expect(linkDevicesSeen(expectedLinkDevices(NAMES, recorded), host)).toEqual({ own: [NAMES.bridge, NAMES.client, NAMES.provider], devicesThere: true, whole: true, foreign: [], farEndsElsewhere: [] });
        expect(made.get(NAMES.bridge)).toBe(DEVICE_KIND.bridge);
      }),
    );
  });
});

describe('far ends of a link\'s veths', () => {
  const SIDE_NETNS = { client: 'vm-c', provider: 'vm-p' } as const;
  /**
   * Where a side's device is: nothing, a tap, or a veth whose far end is in the VM's namespace
   * (under the veth's name, or renamed there), in another, or here.
   */
  const sideState = fc.constantFrom('none', 'tap', 'veth-in-vm', 'veth-renamed', 'veth-elsewhere', 'veth-here');
  const inVm = (state: string): boolean => state === 'veth-in-vm' || state === 'veth-renamed';
  const ID_OF_VM = { client: 5, provider: 6 } as const;
  const OTHER_ID = 9;

  /**
   * The host's devices (a bridge, and each side as `states` says), and what the kernel has for the
   * plan and for list (namespaceIds, farEndNames). Where `impostor` says so, the VM's namespace
   * (mounted) also holds a veth under the side's name that is not its peer (another pair's end
   * moved in under that name; of the index the side's peer has in its namespace where that is
   * another: indexes are per namespace), but where the peer itself has that name.
   */
  function world(
    states: { client: string; provider: string },
    mounted: { client: boolean; provider: boolean },
    impostor: { client: boolean; provider: boolean } = { client: false, provider: false },
  ): { host: Map<string, ObservedDevice>; observed: ObservedDevices; ids: FarEndsFound } {
    const host = hostOf({ bridge: 'bridge', client: undefined, provider: undefined });
    const farDevices = new Map<string, Map<string, ObservedDevice>>([[SIDE_NETNS.client, new Map()], [SIDE_NETNS.provider, new Map()]]);
    const farNames = new Map<string, string>();
    (['client', 'provider'] as const).forEach((role, index) => {
      const state = states[role];
      if (state === 'none') return;
      const name = NAMES[role];
      const peerNetnsId = inVm(state) ? ID_OF_VM[role] : state === 'veth-elsewhere' ? OTHER_ID : undefined;
      host.set(name, { ...device(name, state === 'tap' ? 'tun' : 'veth', index + 2), ...(peerNetnsId !== undefined && { peerNetnsId, peerIndex: 20 + index }) });
      const farName = state === 'veth-renamed' ? `eth${index}` : name;
      if (inVm(state)) {
        farDevices.get(SIDE_NETNS[role])?.set(farName, device(farName, 'veth', 20 + index));
        farNames.set(name, farName);
      }
    });
    (['client', 'provider'] as const).forEach((role, index) => {
      if (!impostor[role] || states[role] === 'veth-in-vm') return;
      farDevices.get(SIDE_NETNS[role])?.set(NAMES[role], impostorOf(role, states[role], index));
    });
    const netns = new Map(
      (['client', 'provider'] as const).map((role, index) => [SIDE_NETNS[role], mounted[role] ? { identity: { dev: 4, ino: 4026532300 + index, cookie: 2 + index }, devices: farDevices.get(SIDE_NETNS[role]) ?? new Map() } : null]),
    );
    const netnsIds = new Map((['client', 'provider'] as const).flatMap((role) => (mounted[role] ? [[SIDE_NETNS[role], ID_OF_VM[role]] as const] : [])));
    return { host, observed: { ipv6: false, ipv6Forwarding: false, host, netns, netnsIds }, ids: { netnsIds, names: farNames } };
  }
  /** The veth under a side's name in its VM's namespace that is not its peer. */
  const impostorOf = (role: 'client' | 'provider', state: string, index: number): ObservedDevice => device(NAMES[role], 'veth', state === 'veth-renamed' ? 30 + index : 20 + index);
  const vethSide = (role: 'client' | 'provider'): DesiredSide => ({ device: NAMES[role], mac: '02:00:00:00:00:02', attach: { kind: 'veth', netns: SIDE_NETNS[role] } });

  it('a netns link is whole exactly where its plan makes no device anew (every veth with its far end in its VM\'s mounted namespace, under its name; a veth there under that name that is not its peer is none of it)', () => {
    const both = fc.record({ client: fc.boolean(), provider: fc.boolean() });
    fc.assert(
      fc.property(fc.record({ client: sideState, provider: sideState }), both, both, (states, mounted, impostor) => {
        // A far end in the VM's namespace only where that namespace is mounted: else it would have no name to be found by.
        fc.pre((['client', 'provider'] as const).every((role) => mounted[role] || !inVm(states[role])));
        const { host, observed, ids } = world(states, mounted, impostor);
        const plan = planDevices([{ bridge: NAMES.bridge, mtu: 1500, client: vethSide('client'), provider: vethSide('provider') }], observed);
        // A veth there under a side's name that is not its peer goes, to make way for the pair made anew.
        (['client', 'provider'] as const).forEach((role, index) => {
          if (!impostor[role] || !mounted[role] || states[role] === 'veth-in-vm') return;
          expect(plan.clearFarEnds).toContainEqual({ netns: SIDE_NETNS[role], op: 'delete', name: NAMES[role], index: impostorOf(role, states[role], index).index });
          expect(plan.creates).toContain(NAMES[role]);
        });
        for (const recorded of [{ client: 'netns', provider: 'netns' } as const, undefined]) {
          const seen = linkDevicesSeen(expectedLinkDevices(NAMES, recorded, SIDE_NETNS), host, ids);
          // Unrecorded, a tap is the link's own (either kind): the plan for netns replaces it all the same.
          const taps = recorded === undefined && (states.client === 'tap' || states.provider === 'tap');
          if (!taps) expect(seen.whole).toBe(plan.creates.length === 0);
          // Every device there (its far ends aside): a veth on each side, or, unrecorded, a tap too.
          expect(seen.devicesThere).toBe((['client', 'provider'] as const).every((role) => states[role].startsWith('veth') || (recorded === undefined && states[role] === 'tap')));
          const away = seen.farEndsElsewhere.map((entry) => entry.device);
          expect(away).toEqual((['client', 'provider'] as const).filter((role) => states[role].startsWith('veth') && !(states[role] === 'veth-in-vm' && mounted[role])).map((role) => NAMES[role]));
          // Still the link's own: list says where the far end should be, unlink and link take it as the link's.
          for (const name of away) expect(seen.own).toContain(name);
        }
      }),
    );
  });

  it('without the namespaces\' ids (unlink, link), a veth is the link\'s whatever its far end, as before', () => {
    const { host } = world({ client: 'veth-elsewhere', provider: 'veth-here' }, { client: true, provider: false });
    expect(linkDevicesSeen(expectedLinkDevices(NAMES, { client: 'netns', provider: 'netns' }), host)).toEqual({ own: [NAMES.bridge, NAMES.client, NAMES.provider], devicesThere: true, whole: true, foreign: [], farEndsElsewhere: [] });
    expect(linkDevicesSeen(expectedLinkDevices(NAMES, { client: 'netns', provider: 'netns' }, SIDE_NETNS), host, { netnsIds: new Map([[SIDE_NETNS.client, 5]]), names: new Map() })).toEqual({
      own: [NAMES.bridge, NAMES.client, NAMES.provider],
      devicesThere: true,
      whole: false,
      foreign: [],
      farEndsElsewhere: [
        { role: 'client', device: NAMES.client, netns: SIDE_NETNS.client },
        { role: 'provider', device: NAMES.provider, netns: SIDE_NETNS.provider },
      ],
    });
  });
});
