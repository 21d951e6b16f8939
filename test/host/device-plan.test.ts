import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type DesiredConnection, type IpStep, type ObservedDevice, isEmptyPlan, planDevices, splitSteps } from '../../host/device-plan.js';

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
 * enough of `ip link` and `ip tuntap` to check that a plan reaches what it promises.
 */
function simulate(start: ReadonlyMap<string, ObservedDevice>, steps: readonly IpStep[]): Map<string, ObservedDevice> {
  const devices = new Map(start);
  for (const { args } of steps) {
    const [object, verb] = args;
    if (object === 'tuntap' && verb === 'add') {
      const name = args[3] ?? '';
      expect(devices.has(name)).toBe(false);
      devices.set(name, { name, kind: 'tun', master: null, mtu: 1500, up: false, mac: '02:00:00:00:00:01' });
    } else if (object === 'link' && verb === 'add') {
      const name = args[2] ?? '';
      expect(devices.has(name)).toBe(false);
      const rest = args.slice(3);
      const mtu = rest.includes('mtu') ? Number(rest[rest.indexOf('mtu') + 1]) : 1500;
      const kind = rest[rest.indexOf('type') + 1] ?? null;
      devices.set(name, { name, kind, master: null, mtu, up: rest.includes('up'), mac: '02:00:00:00:00:02' });
    } else if (object === 'link' && verb === 'del') {
      const name = args[3] ?? '';
      expect(devices.has(name)).toBe(true);
      devices.delete(name);
      for (const [other, device] of devices) if (device.master === name) devices.set(other, { ...device, master: null });
    } else if (object === 'link' && verb === 'set') {
      const name = args[3] ?? '';
      const device = devices.get(name);
      expect(device).toBeDefined();
      if (device === undefined) continue;
      const rest = args.slice(4);
      let next = { ...device };
      for (let index = 0; index < rest.length; index++) {
        const word = rest[index];
        if (word === 'up') next = { ...next, up: true };
        else if (word === 'mtu') next = { ...next, mtu: Number(rest[++index]) };
        else if (word === 'master') {
          const master = rest[++index] ?? '';
          expect(devices.get(master)?.kind).toBe('bridge');
          next = { ...next, master };
        } else if (word === 'address') next = { ...next, mac: rest[++index] ?? '' };
        else throw new Error(`simulate: unknown word ${String(word)}`);
      }
      devices.set(name, next);
    } else {
      throw new Error(`simulate: unknown step ${args.join(' ')}`);
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
    mtu: fc.constantFrom(1280, 1500, 9000),
    up: fc.boolean(),
    mac: fc.constant('02:00:00:00:00:03'),
  });

describe('planDevices, tap connections', () => {
  it('creates the bridge, each tap joins it, then the bridge comes up (as a hand-written batch does)', () => {
    const plan = planDevices([connection(7, 9000)], observedHost([]));
    expect(plan.hostSteps.flat().map((step) => step.args.join(' '))).toEqual([
      'link add snb7 type bridge',
      'tuntap add dev snc7 mode tap vnet_hdr',
      'link set dev snc7 mtu 9000 master snb7 up',
      'tuntap add dev snp7 mode tap vnet_hdr',
      'link set dev snp7 mtu 9000 master snb7 up',
      'link set dev snb7 mtu 9000 up',
    ]);
    expect(plan.creates).toEqual(['snb7', 'snc7', 'snp7']);
  });

  it('re-enslaves the ports of a non-bridge device that held the bridge name (deleting it released them)', () => {
    const bond: ObservedDevice = { name: 'snb7', kind: 'bond', master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:07' };
    const port: ObservedDevice = { name: 'snc7', kind: 'tun', master: 'snb7', mtu: 1500, up: true, mac: '02:00:00:00:00:08' };
    const steps = planDevices([connection(7)], observedHost([bond, port])).hostSteps.flat().map((step) => step.args.join(' '));
    expect(steps.slice(0, 3)).toEqual(['link del dev snb7', 'link add snb7 type bridge', 'link set dev snc7 master snb7']);
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
      fc.property(start, fc.constantFrom(1400, 1500, 9000), (before, mtu) => {
        const wanted = [connection(1, mtu), connection(2, mtu)];
        const after = simulate(before, planDevices(wanted, { host: before, netns: new Map() }).hostSteps.flat());
        for (const c of wanted) {
          expect(after.get(c.bridge)).toMatchObject({ kind: 'bridge', mtu, up: true });
          for (const side of [c.client, c.provider]) expect(after.get(side.device)).toMatchObject({ kind: 'tun', mtu, up: true, master: c.bridge });
        }
        expect(isEmptyPlan(planDevices(wanted, { host: after, netns: new Map() }))).toBe(true);
      }),
    );
  });
});

describe('splitSteps', () => {
  const groupsArb = fc.array(fc.nat({ max: 8 }), { maxLength: 40 }).map((sizes) =>
    sizes.map((size, connection) => Array.from({ length: size }, (_, step): IpStep => ({ netns: null, args: [`c${connection}`, `s${step}`] }))),
  );

  it('keeps every step once, in plan order, each connection whole in one batch, at most `parts` non-empty batches', () => {
    fc.assert(
      fc.property(groupsArb, fc.integer({ min: 1, max: 4 }), (groups, parts) => {
        const batches = splitSteps(groups, parts);
        expect(batches.flat()).toEqual(groups.flat());
        expect(batches.length).toBeLessThanOrEqual(parts);
        for (const batch of batches) expect(batch.length).toBeGreaterThan(0);
        const batchOf = new Map<string, number>();
        batches.forEach((batch, index) => batch.forEach((step) => batchOf.set(step.args.join(' '), index)));
        for (const group of groups) expect(new Set(group.map((step) => batchOf.get(step.args.join(' ')))).size).toBeLessThanOrEqual(1);
      }),
    );
  });

  it('balances: no batch exceeds its share by more than one connection', () => {
    fc.assert(
      fc.property(groupsArb, fc.integer({ min: 1, max: 4 }), (groups, parts) => {
        const total = groups.flat().length;
        const largest = Math.max(0, ...groups.map((group) => group.length));
        for (const batch of splitSteps(groups, parts)) expect(batch.length).toBeLessThanOrEqual(Math.ceil(total / parts) + largest);
      }),
    );
  });

  it('splits 200 connections of six steps into two batches of 600', () => {
    const groups = Array.from({ length: 200 }, (_, connection) => Array.from({ length: 6 }, (_, step): IpStep => ({ netns: null, args: [`c${connection}`, `s${step}`] })));
    expect(splitSteps(groups, 2).map((batch) => batch.length)).toEqual([600, 600]);
  });
});
