import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type DesiredConnection, type DeviceStep, type ObservedDevice, isEmptyPlan, planDevices, stepText } from '../../host/device-plan.js';

const tap = { kind: 'tap' } as const;

function connection(id: number, mtu = 1500): DesiredConnection {
  return {
    bridge: `snb${id}`,
    mtu,
    client: { device: `snc${id}`, mac: '0a:b3:ec:00:00:01', attach: tap },
    provider: { device: `snp${id}`, mac: '0a:b3:ec:80:00:01', attach: tap },
  };
}

const observedHost = (devices: Iterable<ObservedDevice>) => ({ host: new Map([...devices].map((d) => [d.name, d])), netns: new Map() });

/**
 * What the kernel would hold after these steps (tap connections in the current namespace only):
 * enough of the kernel's rules to check that a plan reaches what it promises.
 */
function simulate(start: ReadonlyMap<string, ObservedDevice>, steps: readonly DeviceStep[]): Map<string, ObservedDevice> {
  const devices = new Map(start);
  for (const step of steps) {
    const { name } = step;
    switch (step.op) {
      case 'add-tap':
      case 'add-bridge':
        expect(devices.has(name)).toBe(false);
        devices.set(name, { name, kind: step.op === 'add-tap' ? 'tun' : 'bridge', master: null, mtu: 1500, up: false, mac: '02:00:00:00:00:01', ipv6: true });
        break;
      case 'delete':
        expect(devices.has(name)).toBe(true);
        devices.delete(name);
        for (const [other, device] of devices) if (device.master === name) devices.set(other, { ...device, master: null });
        break;
      case 'set': {
        const device = devices.get(name);
        expect(device).toBeDefined();
        if (device === undefined) break;
        const { mac, mtu, master, up } = step.change;
        if (master !== undefined) expect(devices.get(master)?.kind).toBe('bridge');
        const newMtu = mtu ?? device.mtu;
        // The kernel takes IPv6 off a device below an MTU of 1280, and gives it back (on) above.
        const ipv6 = newMtu < 1280 ? false : device.mtu < 1280 ? true : device.ipv6;
        devices.set(name, { ...device, mac: mac ?? device.mac, mtu: newMtu, master: master ?? device.master, up: up ?? device.up, ipv6 });
        break;
      }
      case 'disable-ipv6': {
        const device = devices.get(name);
        expect(device).toBeDefined();
        if (device !== undefined) devices.set(name, { ...device, ipv6: false });
        break;
      }
      case 'add-veth':
        throw new Error(`simulate: no veths here: ${stepText(step)}`);
    }
  }
  return devices;
}

/** A device named like one of the connection's, in some state (right, wrong kind, down, ...). */
const someDevice = (name: string): fc.Arbitrary<ObservedDevice> =>
  fc.record({
    name: fc.constant(name),
    kind: fc.constantFrom<string | null>('bridge', 'bond', 'tun', 'veth', 'dummy', null),
    master: fc.constantFrom<string | null>(null, 'snb1', 'snb2', 'other'),
    mtu: fc.constantFrom(1000, 1280, 1500, 9000),
    up: fc.boolean(),
    mac: fc.constant('02:00:00:00:00:03'),
    ipv6: fc.boolean(),
  }).map((device) => (device.mtu < 1280 ? { ...device, ipv6: false } : device));

describe('planDevices, tap connections', () => {
  it('creates the bridge, each tap joins it, then the bridge comes up (as a hand-written batch does), IPv6 off on it before that', () => {
    const plan = planDevices([connection(7, 9000)], observedHost([]));
    expect(plan.hostSteps.flat().map((step) => stepText(step))).toEqual([
      'ip link add snb7 type bridge',
      'ip tuntap add dev snc7 mode tap vnet_hdr',
      'ip link set dev snc7 mtu 9000 master snb7 up',
      'ip tuntap add dev snp7 mode tap vnet_hdr',
      'ip link set dev snp7 mtu 9000 master snb7 up',
      'sysctl -w net.ipv6.conf.snb7.disable_ipv6=1',
      'ip link set dev snb7 mtu 9000 up',
    ]);
    expect(plan.creates).toEqual(['snb7', 'snc7', 'snp7']);
  });

  it('re-enslaves the ports of a non-bridge device that held the bridge name (deleting it released them)', () => {
    const bond: ObservedDevice = { name: 'snb7', kind: 'bond', master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:07', ipv6: false };
    const port: ObservedDevice = { name: 'snc7', kind: 'tun', master: 'snb7', mtu: 1500, up: true, mac: '02:00:00:00:00:08', ipv6: false };
    const steps = planDevices([connection(7)], observedHost([bond, port])).hostSteps.flat().map((step) => stepText(step));
    expect(steps.slice(0, 3)).toEqual(['ip link del dev snb7', 'ip link add snb7 type bridge', 'ip link set dev snc7 master snb7']);
  });

  it('reaches the desired devices from any starting state, and planning again then changes nothing', () => {
    const names = ['snb1', 'snc1', 'snp1', 'snb2', 'snc2', 'snp2'];
    const start = fc
      .tuple(...names.map((name) => fc.option(someDevice(name), { nil: undefined })))
      .map((found) => new Map(found.flatMap((device) => (device === undefined ? [] : [[device.name, device] as const]))))
      // As in the kernel: a master (other than a bridge outside the plan) exists and can be one
      // (a bridge, or a bond named like our bridge).
      .filter((devices) => [...devices.values()].every((d) => d.master === null || d.master === 'other' || ['bridge', 'bond'].includes(devices.get(d.master)?.kind ?? '')));
    fc.assert(
      fc.property(start, fc.constantFrom(1000, 1400, 1500, 9000), (before, mtu) => {
        const wanted = [connection(1, mtu), connection(2, mtu)];
        const after = simulate(before, planDevices(wanted, { host: before, netns: new Map() }).hostSteps.flat());
        for (const c of wanted) {
          expect(after.get(c.bridge)).toMatchObject({ kind: 'bridge', mtu, up: true, ipv6: false });
          for (const side of [c.client, c.provider]) expect(after.get(side.device)).toMatchObject({ kind: 'tun', mtu, up: true, master: c.bridge });
        }
        expect(isEmptyPlan(planDevices(wanted, { host: after, netns: new Map() }))).toBe(true);
      }),
    );
  });
});

describe('planDevices, IPv6 on the host\'s bridge', () => {
  const device = (name: string, master: string | null, ipv6: boolean, mtu = 1500): ObservedDevice => ({ name, kind: master === null ? 'bridge' : 'tun', master, mtu, up: true, mac: '02:00:00:00:00:09', ipv6 });

  it('turns IPv6 off on an existing bridge where it runs (which drops its addresses), and leaves the ports theirs', () => {
    const plan = planDevices([connection(7)], observedHost([device('snb7', null, true), device('snc7', 'snb7', true), device('snp7', 'snb7', false)]));
    expect(plan.hostSteps.flat().map((step) => stepText(step))).toEqual(['sysctl -w net.ipv6.conf.snb7.disable_ipv6=1']);
  });

  it('turns it off after the MTU of a bridge that rises past 1280 (the kernel gives it back, on)', () => {
    const plan = planDevices([connection(7, 1500)], observedHost([device('snb7', null, false, 1000), device('snc7', 'snb7', false), device('snp7', 'snb7', false)]));
    expect(plan.hostSteps.flat().map((step) => stepText(step))).toEqual([
      'ip link set dev snb7 mtu 1500',
      'sysctl -w net.ipv6.conf.snb7.disable_ipv6=1',
    ]);
  });

  it('has nothing to do where it is off already', () => {
    expect(isEmptyPlan(planDevices([connection(7)], observedHost([device('snb7', null, false), device('snc7', 'snb7', true), device('snp7', 'snb7', true)])))).toBe(true);
  });
});

describe('stepText', () => {
  it('says each step as the ip command that does the same', () => {
    const steps: DeviceStep[] = [
      { netns: null, op: 'delete', name: 'snb1' },
      { netns: null, op: 'add-veth', name: 'snc1', peerNetns: 'vm-a' },
      { netns: 'vm-a', op: 'set', name: 'snc1', change: { mac: '0a:b3:ec:00:00:01', mtu: 1500, up: true } },
      { netns: null, op: 'set', name: 'snc1', change: { master: 'snb1' } },
    ];
    expect(steps.map(stepText)).toEqual([
      'ip link del dev snb1',
      'ip link add snc1 type veth peer name snc1 netns vm-a',
      'ip link set dev snc1 address 0a:b3:ec:00:00:01 mtu 1500 up',
      'ip link set dev snc1 master snb1',
    ]);
  });
});
