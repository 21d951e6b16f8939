// Which devices under a link's names are its own: by kind, as the plan makes them and replaces
// others (host/link-device-kinds.ts, host/device-plan.ts).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ATTACH_MODES, type AttachMode } from '../../host/attach-mode.js';
import { type DesiredSide, DEVICE_KIND, type ObservedDevice, type ObservedDevices, TUN_MODE_KIND, createdKinds, planDevices, replacedDevices } from '../../host/device-plan.js';
import { type LinkDeviceNames, devicePrefix, linkDeviceNames } from '../../host/device-names.js';
import { expectedLinkDevices, linkDevicesSeen, sideDeviceKinds } from '../../host/link-device-kinds.js';
import type { LinkAttachment } from '../../host/link-state.js';
import { clientId } from '../../shared/client-id.js';

const NAMES: LinkDeviceNames = linkDeviceNames(devicePrefix('sn'), clientId(7));
const NETNS = 'vm-x';
const mode = fc.constantFrom(...ATTACH_MODES);
/** A record's attach modes, or none (written before the state kept them). */
const attached = fc.option(fc.record({ client: mode, provider: mode }), { nil: undefined });
/** What may be under a name: nothing, or a device of one of these kinds (null: no link info). */
const kind = fc.option(fc.constantFrom<string | null>('bridge', 'tun', TUN_MODE_KIND, 'veth', 'vxlan', 'ifb', 'bond', null), { nil: undefined });
const found = fc.record({ bridge: kind, client: kind, provider: kind });

function device(name: string, kindOf: string | null, index: number): ObservedDevice {
  return { index, name, kind: kindOf, master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:01', ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false };
}

/** The host's devices: under each of the link's names, what `under` says is there. */
function hostOf(under: { readonly bridge: string | null | undefined; readonly client: string | null | undefined; readonly provider: string | null | undefined }): Map<string, ObservedDevice> {
  const host = new Map<string, ObservedDevice>();
  (['bridge', 'client', 'provider'] as const).forEach((role, index) => {
    const kindOf = under[role];
    if (kindOf !== undefined) host.set(NAMES[role], device(NAMES[role], kindOf, index + 1));
  });
  return host;
}

const sideOf = (attach: AttachMode, name: string): DesiredSide => ({ device: name, mac: '02:00:00:00:00:02', attach: attach === 'netns' ? { kind: 'veth', netns: NETNS } : { kind: 'tap' } });

/** What the kernel has: `host`, and a VM namespace holding the far end of each netns side (a whole pair where the host end is a veth). */
function observedOf(host: Map<string, ObservedDevice>): ObservedDevices {
  const far = new Map([NAMES.client, NAMES.provider].map((name, index): [string, ObservedDevice] => [name, device(name, 'veth', 10 + index)]));
  return { ipv6: false, ipv6Forwarding: false, host, netns: new Map([[NETNS, far]]) };
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
        for (const recorded of [modes, undefined]) expect(linkDevicesSeen(expectedLinkDevices(NAMES, recorded), host)).toEqual({ own: [NAMES.bridge, NAMES.client, NAMES.provider], whole: true, foreign: [] });
        expect(made.get(NAMES.bridge)).toBe(DEVICE_KIND.bridge);
      }),
    );
  });
});
