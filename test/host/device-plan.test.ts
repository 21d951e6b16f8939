import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BRIDGE_SETTINGS, type DesiredConnection, type DeviceAddress, type DeviceStep, type ObservedDevice, PORT_SETTINGS, TUN_MODE_KIND, createdKinds, foreignChanged, isEmptyPlan, mtuRestorePlan, planDevices, replacedDevices, settingText, stepText } from '../../host/device-plan.js';

const tap = { kind: 'tap' } as const;

function connection(id: number, mtu = 1500): DesiredConnection {
  return {
    bridge: `snb${id}`,
    mtu,
    client: { device: `snc${id}`, mac: '0a:b3:ec:00:00:01', attach: tap },
    provider: { device: `snp${id}`, mac: '0a:b3:ec:80:00:01', attach: tap },
  };
}

/** IPv6 in the current namespace: whether the kernel runs it, and whether new devices forward. */
interface HostIpv6 {
  readonly ipv6: boolean;
  readonly forwarding: boolean;
}
const PLAIN_HOST: HostIpv6 = { ipv6: true, forwarding: false };

const observedHost = (devices: Iterable<ObservedDevice>, host: HostIpv6 = PLAIN_HOST) => ({
  ipv6: host.ipv6,
  ipv6Forwarding: host.forwarding,
  host: new Map([...devices].map((d) => [d.name, d])),
  netns: new Map(),
  netnsIds: new Map(),
});

/** A device's IPv6 as the kernel starts it (when made, or when its MTU rises past 1280). */
const freshIpv6 = (host: HostIpv6) => ({ ipv6: host.ipv6, ipv6LinkLocal: host.ipv6, ipv6Forwarding: host.ipv6 && host.forwarding });
const NO_IPV6 = { ipv6: false, ipv6LinkLocal: false, ipv6Forwarding: false };

/**
 * What the kernel would hold after these steps (tap connections in the current namespace only):
 * enough of the kernel's rules to check that a plan reaches what it promises.
 */
function simulate(start: ReadonlyMap<string, ObservedDevice>, steps: readonly DeviceStep[], host: HostIpv6): Map<string, ObservedDevice> {
  const devices = new Map(start);
  let nextIndex = Math.max(1, ...[...start.values()].map((device) => device.index)) + 1;
  // A device the plan saw is addressed by the index it saw (its name may be another device's
  // altname by the time the step runs); only one the plan made is addressed by name.
  const addressed = (step: DeviceStep & { op: 'delete' | 'set' | 'disable-ipv6' }): void => {
    if (start.get(step.name)?.index === devices.get(step.name)?.index) expect(step.index).toBe(devices.get(step.name)?.index);
    else expect(step.index).toBeUndefined();
  };
  for (const step of steps) {
    const { name } = step;
    switch (step.op) {
      case 'add-tap':
      case 'add-bridge':
        expect(devices.has(name)).toBe(false);
        devices.set(name, { index: nextIndex++, name, kind: step.op === 'add-tap' ? 'tun' : 'bridge', master: null, mtu: 1500, up: false, mac: '02:00:00:00:00:01', ...freshIpv6(host) });
        break;
      case 'delete':
        expect(devices.has(name)).toBe(true);
        addressed(step);
        devices.delete(name);
        for (const [other, device] of devices) if (device.master === name) devices.set(other, { ...device, master: null });
        break;
      case 'set': {
        const device = devices.get(name);
        expect(device).toBeDefined();
        if (device === undefined) break;
        addressed(step);
        const { mac, mtu, master, up, addrGenModeNone } = step.change;
        if (master !== undefined) expect(devices.get(master)?.kind).toBe('bridge');
        const newMtu = mtu ?? device.mtu;
        // The kernel takes IPv6 off a device below an MTU of 1280, and starts it afresh above.
        let ipv6 = newMtu < 1280 ? NO_IPV6 : device.mtu < 1280 ? freshIpv6(host) : device;
        if (addrGenModeNone === true) {
          // The kernel refuses IPv6 settings for a device without IPv6, before the message and after the MTU change.
          expect(host.ipv6 && device.mtu >= 1280 && newMtu >= 1280).toBe(true);
          ipv6 = { ...ipv6, ipv6LinkLocal: false };
        }
        const { ipv6: runs, ipv6LinkLocal, ipv6Forwarding } = ipv6;
        devices.set(name, { ...device, mac: mac ?? device.mac, mtu: newMtu, master: master ?? device.master, up: up ?? device.up, ipv6: runs, ipv6LinkLocal, ipv6Forwarding });
        break;
      }
      case 'disable-ipv6': {
        const device = devices.get(name);
        expect(device).toBeDefined();
        addressed(step);
        if (device !== undefined) devices.set(name, { ...device, ...NO_IPV6 });
        break;
      }
      case 'release': {
        const device = devices.get(name);
        expect(device?.index).toBe(step.index);
        if (device !== undefined) devices.set(name, { ...device, master: null });
        for (const [other, bridge] of devices) if (bridge.ports !== undefined) devices.set(other, { ...bridge, ports: bridge.ports.filter((port) => port.name !== name) });
        break;
      }
      case 'delete-address': {
        const device = devices.get(name);
        expect(device?.addresses?.some((address) => address.address === step.address && address.prefixLength === step.prefixLength)).toBe(true);
        // As the kernel (promote_secondaries off): a primary's delete takes its subnet's secondaries (same prefix here) with it.
        const primary = device?.addresses?.find((address) => address.address === step.address)?.secondary !== true;
        const taken = (address: DeviceAddress): boolean => address.address === step.address || (primary && address.secondary === true && address.prefixLength === step.prefixLength);
        if (device !== undefined) devices.set(name, { ...device, addresses: (device.addresses ?? []).filter((address) => !taken(address)) });
        break;
      }
      case 'bridge-settings':
      case 'port-settings': {
        const device = devices.get(name);
        expect(device?.index).toBe(step.index);
        if (step.op === 'port-settings') expect(devices.get(device?.master ?? '')?.kind).toBe('bridge');
        if (device !== undefined) devices.set(name, { ...device, settings: { ...device.settings, ...step.settings } });
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
    index: fc.integer({ min: 2, max: 1 << 20 }),
    name: fc.constant(name),
    kind: fc.constantFrom<string | null>('bridge', 'bond', 'tun', TUN_MODE_KIND, 'veth', 'dummy', null),
    master: fc.constantFrom<string | null>(null, 'snb1', 'snb2', 'other'),
    mtu: fc.constantFrom(1000, 1280, 1500, 9000),
    up: fc.boolean(),
    mac: fc.constant('02:00:00:00:00:03'),
    ipv6: fc.boolean(),
    ipv6LinkLocal: fc.boolean(),
    ipv6Forwarding: fc.boolean(),
  }).map((device) => (device.mtu < 1280 || !device.ipv6 ? { ...device, ...NO_IPV6 } : device));

describe('planDevices, tap connections', () => {
  it('creates the bridge, each tap joins it, then the bridge comes up (as a hand-written batch does), IPv6 off on it before that', () => {
    const plan = planDevices([connection(7, 9000)], observedHost([]));
    expect(plan.hostSteps.flat().map((step) => stepText(step))).toEqual([
      'ip link add snb7 type bridge',
      'ip tuntap add dev snc7 mode tap vnet_hdr',
      'ip link set dev snc7 mtu 9000 master snb7 up addrgenmode none',
      'ip tuntap add dev snp7 mode tap vnet_hdr',
      'ip link set dev snp7 mtu 9000 master snb7 up addrgenmode none',
      'sysctl -w net.ipv6.conf.snb7.disable_ipv6=1',
      'ip link set dev snb7 mtu 9000 up',
    ]);
    expect(plan.creates).toEqual(['snb7', 'snc7', 'snp7']);
  });

  it('re-enslaves the ports of a non-bridge device that held the bridge name (deleting it released them)', () => {
    const bond: ObservedDevice = { index: 7, name: 'snb7', kind: 'bond', master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:07', ...NO_IPV6 };
    const port: ObservedDevice = { index: 8, name: 'snc7', kind: 'tun', master: 'snb7', mtu: 1500, up: true, mac: '02:00:00:00:00:08', ...NO_IPV6 };
    const steps = planDevices([connection(7)], observedHost([bond, port])).hostSteps.flat().map((step) => stepText(step));
    expect(steps.slice(0, 3)).toEqual(['ip link del dev snb7', 'ip link add snb7 type bridge', 'ip link set dev snc7 master snb7']);
  });

  it('replaces a tun device in tun mode under a tap\'s name with a tap, as any device of another kind (its port joins anew)', () => {
    const bridge: ObservedDevice = { index: 7, name: 'snb7', kind: 'bridge', master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:07', ...NO_IPV6 };
    const tun: ObservedDevice = { index: 8, name: 'snc7', kind: TUN_MODE_KIND, master: null, mtu: 1500, up: true, mac: '', ...NO_IPV6 };
    const tap: ObservedDevice = { index: 9, name: 'snp7', kind: 'tun', master: 'snb7', mtu: 1500, up: true, mac: '02:00:00:00:00:09', ...NO_IPV6 };
    const plan = planDevices([connection(7)], observedHost([bridge, tun, tap]));
    expect(plan.hostSteps.flat().map((step) => stepText(step))).toEqual(['ip link del dev snc7', 'ip tuntap add dev snc7 mode tap vnet_hdr', 'ip link set dev snc7 mtu 1500 master snb7 up addrgenmode none']);
    expect([plan.creates, replacedDevices(plan)]).toEqual([['snc7'], ['snc7']]);
  });

  it('reaches the desired devices from any starting state, and planning again then changes nothing', () => {
    const names = ['snb1', 'snc1', 'snp1', 'snb2', 'snc2', 'snp2'];
    const start = fc
      .tuple(...names.map((name) => fc.option(someDevice(name), { nil: undefined })))
      .map((found) => new Map(found.flatMap((device) => (device === undefined ? [] : [[device.name, device] as const]))))
      // As in the kernel: a master (other than a bridge outside the plan) exists and can be one
      // (a bridge, or a bond named like our bridge).
      .filter((devices) => [...devices.values()].every((d) => d.master === null || d.master === 'other' || ['bridge', 'bond'].includes(devices.get(d.master)?.kind ?? '')));
    const host = fc.record({ ipv6: fc.boolean(), forwarding: fc.boolean() }).map((h) => (h.ipv6 ? h : { ipv6: false, forwarding: false }));
    fc.assert(
      fc.property(start, fc.constantFrom(1000, 1400, 1500, 9000), host, (found, mtu, hostIpv6) => {
        // Without IPv6 in the kernel no device has any.
        const before = hostIpv6.ipv6 ? found : new Map([...found].map(([name, device]) => [name, { ...device, ...NO_IPV6 }]));
        const wanted = [connection(1, mtu), connection(2, mtu)];
        const after = simulate(before, planDevices(wanted, observedHost(before.values(), hostIpv6)).hostSteps.flat(), hostIpv6);
        for (const c of wanted) {
          expect(after.get(c.bridge)).toMatchObject({ kind: 'bridge', mtu, up: true, ipv6: false });
          for (const side of [c.client, c.provider]) {
            const port = after.get(side.device);
            expect(port).toMatchObject({ kind: 'tun', mtu, up: true, master: c.bridge });
            // Silent: no address of its own, and no all-routers groups to report.
            expect(port?.ipv6 === true && (port.ipv6LinkLocal || port.ipv6Forwarding)).toBe(false);
          }
        }
        expect(isEmptyPlan(planDevices(wanted, observedHost(after.values(), hostIpv6)))).toBe(true);
      }),
    );
  });
});

describe('mtuRestorePlan', () => {
  it('puts back the MTU a plan changed on every device it found (not one it made anew), IPv6 off again on one back past 1280 where it was, and changes nothing else', () => {
    const names = ['snb1', 'snc1', 'snp1'];
    const start = fc
      .tuple(...names.map((name) => fc.option(someDevice(name), { nil: undefined })))
      .map((found) => new Map(found.flatMap((device) => (device === undefined ? [] : [[device.name, device] as const]))))
      .filter((devices) => [...devices.values()].every((d) => d.master === null || d.master === 'other' || ['bridge', 'bond'].includes(devices.get(d.master)?.kind ?? '')));
    fc.assert(
      fc.property(start, fc.constantFrom(1000, 1400, 1500, 9000), (before, mtu) => {
        const plan = planDevices([connection(1, mtu)], observedHost(before.values()));
        const made = simulate(before, plan.hostSteps.flat(), PLAIN_HOST);
        const restore = mtuRestorePlan(plan, true);
        expect(restore.createNamespaces.length + restore.clearFarEnds.length + restore.configureFarEnds.length + restore.creates.length).toBe(0);
        const back = simulate(made, restore.hostSteps.flat(), PLAIN_HOST);
        for (const [name, device] of made) {
          const found = before.get(name);
          // Found and kept (not replaced: same index): its MTU as it was; one made anew keeps the plan's.
          const kept = found !== undefined && found.index === device.index;
          expect(back.get(name)?.mtu, name).toBe(kept ? found.mtu : device.mtu);
          expect(back.get(name)).toMatchObject({ master: device.master, up: device.up, kind: device.kind });
          // The host is no party on the link: a bridge with IPv6 off after the plan keeps it off.
          if (device.kind === 'bridge' && !device.ipv6 && (back.get(name)?.mtu ?? 0) >= 1280) expect(back.get(name)?.ipv6).toBe(false);
          // And a port sends nothing of the host's (no address of its own, no all-routers groups), as the plan left it.
          const port = back.get(name);
          if (device.kind === 'tun' && !(device.ipv6 && (device.ipv6LinkLocal || device.ipv6Forwarding))) expect(port?.ipv6 === true && (port.ipv6LinkLocal || port.ipv6Forwarding)).toBe(false);
        }
      }),
    );
  });
});

/** Any of link 1's three host devices, each absent or there as some device. */
const someDevicesOfLink1 = fc
  .tuple(...['snb1', 'snc1', 'snp1'].map((name) => fc.option(someDevice(name), { nil: undefined })))
  .map((found) => found.flatMap((device) => (device === undefined ? [] : [device])));

describe('replacedDevices', () => {
  it('gives exactly the devices that exist and are made anew (so that undoing the plan loses them), each one a device the plan creates', () => {
    fc.assert(
      fc.property(someDevicesOfLink1, (found) => {
        const plan = planDevices([connection(1)], observedHost(found));
        const replaced = replacedDevices(plan);
        const kindWanted = (name: string): string => (name === 'snb1' ? 'bridge' : 'tun');
        expect(replaced.sort()).toEqual(found.filter((device) => device.kind !== kindWanted(device.name)).map((device) => device.name).sort());
        for (const name of replaced) expect(plan.creates).toContain(name);
      }),
    );
  });

  it('holds the host end of a veth that is to be a tap (another attach mode)', () => {
    const veth: ObservedDevice = { index: 8, name: 'snc7', kind: 'veth', master: 'snb7', mtu: 1500, up: true, mac: '02:00:00:00:00:08', ...NO_IPV6 };
    const bridge: ObservedDevice = { index: 7, name: 'snb7', kind: 'bridge', master: null, mtu: 1500, up: true, mac: '02:00:00:00:00:07', ...NO_IPV6 };
    expect(replacedDevices(planDevices([connection(7)], observedHost([bridge, veth])))).toEqual(['snc7']);
    expect(replacedDevices(planDevices([connection(7)], observedHost([])))).toEqual([]);
  });
});

describe('planDevices, veth connections', () => {
  const withVeth: DesiredConnection = { ...connection(1), client: { device: 'snc1', mac: '0a:b3:ec:00:00:01', attach: { kind: 'veth', netns: 'vm-a' } } };
  const linked = (name: string, kind: string, index: number, master: string | null): ObservedDevice => ({ index, name, kind, master, mtu: 1500, up: true, mac: '0a:b3:ec:00:00:01', ...NO_IPV6 });
  /** The host end's peer: index 20 in the namespace the host gives id 5. */
  const hostEnd: ObservedDevice = { ...linked('snc1', 'veth', 8, 'snb1'), peerNetnsId: 5, peerIndex: 20 };
  const observed = (far: ObservedDevice, netnsIds: ReadonlyMap<string, number>) => ({
    ...observedHost([linked('snb1', 'bridge', 7, null), hostEnd, linked('snp1', 'tun', 9, 'snb1')], { ipv6: false, forwarding: false }),
    netns: new Map([['vm-a', { identity: { dev: 4, ino: 4026532300, cookie: 2 }, devices: new Map([['snc1', far]]) }]]),
    netnsIds,
  });

  it("takes a pair as whole only where the veth under its name in the VM's namespace is the host end's peer (that namespace, that index): another veth there goes, and the pair is made anew", () => {
    const peer = linked('snc1', 'veth', 20, null);
    expect(isEmptyPlan(planDevices([withVeth], observed(peer, new Map([['vm-a', 5]]))))).toBe(true);
    // Each with whether the far end may be the host end's peer all the same (withFarEnd: deleted
    // first, it may take the host end along), which only a namespace without an id here leaves open.
    const notPeers: [ObservedDevice, ReadonlyMap<string, number>, boolean][] = [
      // Another index there (the peer renamed or gone, another veth given its name).
      [linked('snc1', 'veth', 21, null), new Map([['vm-a', 5]]), false],
      [linked('snc1', 'veth', 21, null), new Map(), false],
      // The peer's index, but in another namespace: that namespace has another id, or none.
      [peer, new Map([['vm-a', 6]]), false],
      [peer, new Map(), true],
      // No veth there: no peer of any.
      [linked('snc1', 'tun', 20, null), new Map(), false],
    ];
    for (const [far, netnsIds, withFarEnd] of notPeers) {
      const plan = planDevices([withVeth], observed(far, netnsIds));
      expect(plan.clearFarEnds).toEqual([{ netns: 'vm-a', op: 'delete', name: 'snc1', index: far.index }]);
      expect(plan.hostSteps.flat().slice(0, 2)).toEqual([
        { netns: null, op: 'delete', name: 'snc1', index: hostEnd.index, ...(withFarEnd && { withFarEnd }) },
        { netns: null, op: 'add-veth', name: 'snc1', peerNetns: 'vm-a' },
      ]);
      expect(plan.creates).toEqual(['snc1']);
    }
  });
});

describe('planDevices, the VM namespaces it saw', () => {
  const IDENTITY = { dev: 4, ino: 4026532301, cookie: 3 };
  const side = (device: string, netns: string) => ({ device, mac: '0a:b3:ec:00:00:01', attach: { kind: 'veth', netns } }) as const;
  const wanted: DesiredConnection = { ...connection(1), client: side('snc1', 'vm-a'), provider: side('snp1', 'vm-b') };
  const veth = (name: string, index: number, peer?: { peerNetnsId: number; peerIndex: number }): ObservedDevice => ({
    index,
    name,
    kind: 'veth',
    master: null,
    mtu: 1000,
    up: false,
    mac: '02:00:00:00:00:05',
    ...NO_IPV6,
    ...peer,
  });
  /** One VM namespace: absent, or there (with an id here, or none) holding a veth under the side's name or nothing. */
  const namespace = (device: string) =>
    fc.record({ there: fc.boolean(), id: fc.option(fc.constantFrom(5, 6), { nil: undefined }), far: fc.option(fc.integer({ min: 2, max: 4 }), { nil: undefined }) }).map((ns) => ({ ...ns, device }));

  it("records each VM namespace it saw with the identity it saw it under, and goes by an index only in those: none in one it creates (absent when it looked, it saw nothing there)", () => {
    fc.assert(
      fc.property(namespace('snc1'), namespace('snp1'), fc.integer({ min: 2, max: 4 }), (a, b, peerIndex) => {
        const sides = [['vm-a', a], ['vm-b', b]] as const;
        const host = sides.map(([, ns], index) => veth(ns.device, 10 + index, { peerNetnsId: 5, peerIndex }));
        const observed = {
          ...observedHost(host, { ipv6: false, forwarding: false }),
          netns: new Map(sides.map(([name, ns], index) => [name, ns.there ? { identity: { ...IDENTITY, ino: IDENTITY.ino + index }, devices: new Map(ns.far === undefined ? [] : [[ns.device, veth(ns.device, ns.far)]]) } : null])),
          netnsIds: new Map(sides.flatMap(([name, ns]) => (ns.there && ns.id !== undefined ? [[name, ns.id] as const] : []))),
        };
        const plan = planDevices([wanted], observed);
        expect(plan.seenNamespaces).toEqual(sides.flatMap(([name, ns], index) => (ns.there ? [{ netns: name, identity: { ...IDENTITY, ino: IDENTITY.ino + index } }] : [])));
        expect(plan.createNamespaces).toEqual(sides.flatMap(([name, ns]) => (ns.there ? [] : [name])));
        const seen = new Set(plan.seenNamespaces.map(({ netns }) => netns));
        const vmSteps = [...plan.clearFarEnds, ...plan.hostSteps.flat(), ...plan.configureFarEnds].filter((step) => step.netns !== null);
        for (const step of vmSteps) if ('index' in step && step.index !== undefined) expect(seen.has(step.netns ?? '')).toBe(true);
        // Each VM namespace its steps go into (or veth peers go to) is one it saw, or one it creates.
        const into = [...vmSteps.map((step) => step.netns ?? ''), ...plan.hostSteps.flat().flatMap((step) => (step.op === 'add-veth' ? [step.peerNetns] : []))];
        for (const netns of into) expect(seen.has(netns) !== plan.createNamespaces.includes(netns)).toBe(true);
      }),
    );
  });
});

describe('createdKinds', () => {
  it('gives each device a plan creates the kind it is made as, as the kernel reports it, and a replaced one another kind than it had', () => {
    fc.assert(
      fc.property(someDevicesOfLink1, (found) => {
        const plan = planDevices([connection(1)], observedHost(found));
        const kinds = createdKinds(plan);
        expect([...kinds.keys()].sort()).toEqual([...plan.creates].sort());
        for (const name of plan.creates) expect(kinds.get(name)).toBe(name === 'snb1' ? 'bridge' : 'tun');
        for (const name of replacedDevices(plan)) expect(found.find((device) => device.name === name)?.kind).not.toBe(kinds.get(name));
      }),
    );
  });
});

describe('planDevices, IPv6 on the host\'s devices', () => {
  type Ipv6 = 'off' | 'no-address' | 'addresses' | 'forwarding';
  const device = (name: string, master: string | null, ipv6: Ipv6, mtu = 1500): ObservedDevice => ({
    index: name.charCodeAt(2),
    name,
    kind: master === null ? 'bridge' : 'tun',
    master,
    mtu,
    up: true,
    mac: '02:00:00:00:00:09',
    ipv6: ipv6 !== 'off',
    ipv6LinkLocal: ipv6 === 'addresses',
    ipv6Forwarding: ipv6 === 'forwarding',
  });
  const stepsOf = (devices: ObservedDevice[], mtu = 1500, host: HostIpv6 = PLAIN_HOST) => planDevices([connection(7, mtu)], observedHost(devices, host)).hostSteps.flat().map((step) => stepText(step));

  it('turns IPv6 off on an existing bridge where it runs (which drops its addresses); ports without addresses stay as they are', () => {
    expect(stepsOf([device('snb7', null, 'no-address'), device('snc7', 'snb7', 'no-address'), device('snp7', 'snb7', 'off')])).toEqual(['sysctl -w net.ipv6.conf.snb7.disable_ipv6=1']);
  });

  it('turns it off after the MTU of a bridge that rises past 1280 (the kernel gives it back, on)', () => {
    expect(stepsOf([device('snb7', null, 'off', 1000), device('snc7', 'snb7', 'off'), device('snp7', 'snb7', 'off')])).toEqual([
      'ip link set dev snb7 mtu 1500',
      'sysctl -w net.ipv6.conf.snb7.disable_ipv6=1',
    ]);
  });

  // A port making addresses is as an older spectrum-link left it (IPv6 off also drops the
  // address it has); a forwarding one reports the all-routers groups.
  it.each<Ipv6>(['addresses', 'forwarding'])('turns it off on existing ports whose IPv6 sends something (%s)', (noisy) => {
    expect(stepsOf([device('snb7', null, 'off'), device('snc7', 'snb7', noisy), device('snp7', 'snb7', 'no-address')])).toEqual([
      'sysctl -w net.ipv6.conf.snc7.disable_ipv6=1',
    ]);
  });

  it('turns it off on a port after its MTU rises past 1280 (the kernel starts IPv6 on it afresh, making addresses)', () => {
    expect(stepsOf([device('snb7', null, 'off'), device('snc7', 'snb7', 'off', 1000), device('snp7', 'snb7', 'off')])).toEqual([
      'ip link set dev snc7 mtu 1500',
      'sysctl -w net.ipv6.conf.snc7.disable_ipv6=1',
    ]);
  });

  it('sets no addrgenmode below an MTU of 1280 (the kernel runs no IPv6 there and would refuse it)', () => {
    expect(stepsOf([], 1000)).toEqual([
      'ip link add snb7 type bridge',
      'ip tuntap add dev snc7 mode tap vnet_hdr',
      'ip link set dev snc7 mtu 1000 master snb7 up',
      'ip tuntap add dev snp7 mode tap vnet_hdr',
      'ip link set dev snp7 mtu 1000 master snb7 up',
      'sysctl -w net.ipv6.conf.snb7.disable_ipv6=1',
      'ip link set dev snb7 mtu 1000 up',
    ]);
  });

  it('asks nothing of IPv6 where the kernel runs none', () => {
    expect(stepsOf([], 1500, { ipv6: false, forwarding: false }).filter((step) => /addrgenmode|ipv6/.test(step))).toEqual([]);
  });

  it('turns it off on new ports before they come up where the host forwards IPv6 (a forwarding port reports the all-routers groups)', () => {
    expect(stepsOf([], 1500, { ipv6: true, forwarding: true })).toEqual([
      'ip link add snb7 type bridge',
      'ip tuntap add dev snc7 mode tap vnet_hdr',
      'sysctl -w net.ipv6.conf.snc7.disable_ipv6=1',
      'ip link set dev snc7 mtu 1500 master snb7 up',
      'ip tuntap add dev snp7 mode tap vnet_hdr',
      'sysctl -w net.ipv6.conf.snp7.disable_ipv6=1',
      'ip link set dev snp7 mtu 1500 master snb7 up',
      'sysctl -w net.ipv6.conf.snb7.disable_ipv6=1',
      'ip link set dev snb7 mtu 1500 up',
    ]);
  });

  it('has nothing to do where the bridge has it off and the ports make no address', () => {
    expect(isEmptyPlan(planDevices([connection(7)], observedHost([device('snb7', null, 'off'), device('snc7', 'snb7', 'no-address'), device('snp7', 'snb7', 'off')])))).toBe(true);
  });
});

describe('stepText', () => {
  it('says each step as the ip command that does the same', () => {
    const steps: DeviceStep[] = [
      { netns: null, op: 'delete', name: 'snb1', index: 4 },
      { netns: null, op: 'add-veth', name: 'snc1', peerNetns: 'vm-a' },
      { netns: 'vm-a', op: 'set', name: 'snc1', change: { mac: '0a:b3:ec:00:00:01', mtu: 1500, up: true } },
      { netns: null, op: 'set', name: 'snc1', change: { master: 'snb1' } },
      { netns: null, op: 'set', name: 'snp1', change: { mtu: 1500, addrGenModeNone: true } },
    ];
    expect(steps.map(stepText)).toEqual([
      'ip link del dev snb1',
      'ip link add snc1 type veth peer name snc1 netns vm-a',
      'ip link set dev snc1 address 0a:b3:ec:00:00:01 mtu 1500 up',
      'ip link set dev snc1 master snb1',
      'ip link set dev snp1 mtu 1500 addrgenmode none',
    ]);
  });
});

describe('planDevices, what is on a link\'s bridge that is none of the link\'s', () => {
  const bridge = (name: string, ports: readonly string[], addresses: ObservedDevice['addresses'] = []): ObservedDevice => ({
    index: 100 + Number(name.slice(3)),
    name,
    kind: 'bridge',
    master: null,
    mtu: 1500,
    up: true,
    mac: '02:00:00:00:00:08',
    ...NO_IPV6,
    ports: ports.map((port) => ({ name: port, index: port.length * 7 + port.charCodeAt(port.length - 1) })),
    addresses,
  });
  const port = (name: string, master: string): ObservedDevice => ({ index: name.length * 7 + name.charCodeAt(name.length - 1), name, kind: 'tun', master, mtu: 1500, up: true, mac: '02:00:00:00:00:09', ...NO_IPV6 });

  it('takes a third port off the bridge (nomaster, by the index it saw: never deleted) and removes its IPv4 addresses; IPv6 ones go with IPv6 off', () => {
    const devices = [
      bridge('snb7', ['snc7', 'snp7', 'intruder0'], [
        { family: 4, address: '198.51.100.1', prefixLength: 24 },
        { family: 6, address: 'fe80::1', prefixLength: 64 },
      ]),
      port('snc7', 'snb7'),
      port('snp7', 'snb7'),
      port('intruder0', 'snb7'),
    ];
    const plan = planDevices([connection(7)], observedHost(devices));
    expect(plan.hostSteps.flat().map(stepText)).toEqual(['ip link set dev intruder0 nomaster', 'ip addr del 198.51.100.1/24 dev snb7']);
    expect(plan.hostSteps.flat()[0]).toMatchObject({ op: 'release', index: devices[3]?.index });
    expect(plan.creates).toEqual([]);
    const after = simulate(new Map(devices.map((d) => [d.name, d])), plan.hostSteps.flat(), PLAIN_HOST);
    expect(after.get('intruder0')).toMatchObject({ master: null });
    expect(isEmptyPlan(planDevices([connection(7)], observedHost([...after.values()].map((d) => (d.name === 'snb7' ? { ...d, addresses: [] } : d)))))).toBe(true);
  });

  it("removes a subnet's secondary IPv4 addresses before its primary, whose delete would take them with it (their own delete then failing the run)", () => {
    const addresses = [
      { family: 4 as const, address: '198.51.100.1', prefixLength: 24 },
      { family: 4 as const, address: '203.0.113.5', prefixLength: 32 },
      { family: 4 as const, address: '198.51.100.2', prefixLength: 24, secondary: true as const },
    ];
    const devices = [bridge('snb7', ['snc7', 'snp7'], addresses), port('snc7', 'snb7'), port('snp7', 'snb7')];
    const plan = planDevices([connection(7)], observedHost(devices));
    expect(plan.hostSteps.flat().map(stepText)).toEqual(['ip addr del 198.51.100.2/24 dev snb7', 'ip addr del 198.51.100.1/24 dev snb7', 'ip addr del 203.0.113.5/32 dev snb7']);
    const after = simulate(new Map(devices.map((d) => [d.name, d])), plan.hostSteps.flat(), PLAIN_HOST);
    expect(after.get('snb7')?.addresses).toEqual([]);
  });

  it("leaves a side device of another connection of the plan found on the bridge to its own steps (a release after them would take it off its bridge), and a bridge whose ports and addresses were not looked at", () => {
    const devices = [bridge('snb7', ['snc7', 'snp7', 'snc8']), port('snc7', 'snb7'), port('snp7', 'snb7'), port('snc8', 'snb7'), bridge('snb8', ['snp8']), port('snp8', 'snb8')];
    expect(planDevices([connection(7), connection(8)], observedHost(devices)).hostSteps.flat().map(stepText)).toEqual(['ip link set dev snc8 master snb8']);
    const { ports: _, addresses: __, ...unlooked } = bridge('snb7', ['snc7', 'snp7', 'other0'], [{ family: 4, address: '198.51.100.1', prefixLength: 24 }]);
    expect(planDevices([connection(7)], observedHost([unlooked, port('snc7', 'snb7'), port('snp7', 'snb7')])).hostSteps.flat()).toEqual([]);
  });
});

describe('planDevices, the settings of a link\'s bridge and ports', () => {
  const fresh = (table: typeof BRIDGE_SETTINGS): Record<string, number> => Object.fromEntries(table.map(({ name, value }) => [name, value]));
  const device = (name: string, index: number, master: string | null, settings: Record<string, number>): ObservedDevice => ({
    index,
    name,
    kind: master === null ? 'bridge' : 'tun',
    master,
    mtu: 1500,
    up: true,
    mac: '02:00:00:00:00:09',
    ...NO_IPV6,
    settings,
  });

  it('puts back the settings of the bridge (STP on, a long forward delay, no ageing) and of its ports there (hairpin on, learning off) that differ from a new one\'s, those alone, by the index seen; planning again then changes nothing', () => {
    const devices = [
      device('snb7', 10, null, { ...fresh(BRIDGE_SETTINGS), stp_state: 1, forward_delay: 3000, ageing_time: 0 }),
      device('snc7', 11, 'snb7', fresh(PORT_SETTINGS)),
      device('snp7', 12, 'snb7', { ...fresh(PORT_SETTINGS), hairpin: 1, learning: 0 }),
    ];
    const plan = planDevices([connection(7)], observedHost(devices));
    expect(plan.hostSteps.flat().map(stepText)).toEqual([
      'ip link set dev snb7 type bridge stp_state 0 forward_delay 1500 ageing_time 30000',
      'ip link set dev snp7 type bridge_slave hairpin off learning on',
    ]);
    expect(plan.hostSteps.flat().map((step) => ('index' in step ? step.index : undefined))).toEqual([10, 12]);
    const after = simulate(new Map(devices.map((d) => [d.name, d])), plan.hostSteps.flat(), PLAIN_HOST);
    expect(after.get('snb7')?.settings).toEqual(fresh(BRIDGE_SETTINGS));
    expect(isEmptyPlan(planDevices([connection(7)], observedHost(after.values())))).toBe(true);
  });

  it("puts back a port's STP state other than forwarding (by its number: ip takes no word for it before 6.2) and locked on; its state not where the bridge is down (the kernel holds every port of it disabled, and link brings it up)", () => {
    const ports = [device('snc7', 11, 'snb7', { ...fresh(PORT_SETTINGS), locked: 1 }), device('snp7', 12, 'snb7', { ...fresh(PORT_SETTINGS), state: 0 })];
    const steps = (up: boolean): string[] =>
      planDevices([connection(7)], observedHost([{ ...device('snb7', 10, null, fresh(BRIDGE_SETTINGS)), up }, ...ports])).hostSteps.flat().map(stepText).filter((step) => step.includes('bridge_slave'));
    expect(steps(true)).toEqual(['ip link set dev snc7 type bridge_slave locked off', 'ip link set dev snp7 type bridge_slave state 3']);
    expect(steps(false)).toEqual(['ip link set dev snc7 type bridge_slave locked off']);
    expect(settingText(PORT_SETTINGS, 'state', 0)).toBe('disabled');
    expect(settingText(PORT_SETTINGS, 'locked', 1)).toBe('on');
  });

  it("puts a port's STP state back in a step of its own after its other settings (refused on a port that lost its carrier meanwhile, it must not stop those), said with them", () => {
    const ports = [device('snc7', 11, 'snb7', fresh(PORT_SETTINGS)), device('snp7', 12, 'snb7', { ...fresh(PORT_SETTINGS), state: 0, hairpin: 1 })];
    const plan = planDevices([connection(7)], observedHost([device('snb7', 10, null, fresh(BRIDGE_SETTINGS)), ...ports]));
    const settingsSteps = plan.hostSteps.flat().filter((step) => step.op === 'port-settings');
    expect(settingsSteps.map((step) => step.op === 'port-settings' && step.settings)).toEqual([{ hairpin: 0 }, { state: 3 }]);
    expect(foreignChanged([connection(7)], plan)).toEqual([{ bridge: 'snb7', released: [], addressesRemoved: [], settingsPutBack: [{ device: 'snp7', settings: ['hairpin off', 'state forwarding'] }] }]);
  });

  it("puts back a bridge's group_fwd_mask, mcast_snooping and nf_call_* and a port's mab and backup_port (as `ip` takes it: nobackup_port), said as `ip -d link` says them", () => {
    const devices = [
      device('snb7', 10, null, { ...fresh(BRIDGE_SETTINGS), group_fwd_mask: 8, mcast_snooping: 0, nf_call_arptables: 1 }),
      device('snc7', 11, 'snb7', { ...fresh(PORT_SETTINGS), backup_port: 12 }),
      device('snp7', 12, 'snb7', { ...fresh(PORT_SETTINGS), mab: 1, locked: 1 }),
    ];
    const plan = planDevices([connection(7)], observedHost(devices));
    expect(plan.hostSteps.flat().map(stepText)).toEqual([
      'ip link set dev snb7 type bridge group_fwd_mask 0 mcast_snooping 1 nf_call_arptables 0',
      'ip link set dev snc7 type bridge_slave nobackup_port',
      'ip link set dev snp7 type bridge_slave locked off mab off',
    ]);
    expect(foreignChanged([connection(7)], plan)[0]?.settingsPutBack).toEqual([
      { device: 'snb7', settings: ['group_fwd_mask 0', 'mcast_snooping 1', 'nf_call_arptables 0'] },
      { device: 'snc7', settings: ['backup_port none'] },
      { device: 'snp7', settings: ['locked off', 'mab off'] },
    ]);
    expect([settingText(PORT_SETTINGS, 'backup_port', 12, 'snp7'), settingText(PORT_SETTINGS, 'backup_port', 12), settingText(BRIDGE_SETTINGS, 'group_fwd_mask', 16392)]).toEqual(['snp7', 'ifindex 12', '0x4008']);
  });

  it('leaves the settings of a port joining the bridge anew (a new port has a new port\'s) and those the kernel did not report', () => {
    const devices = [device('snb7', 10, null, { stp_state: 0 }), device('snc7', 11, 'other', { hairpin: 1 }), device('snp7', 12, 'snb7', { hairpin: 0 })];
    expect(planDevices([connection(7)], observedHost(devices)).hostSteps.flat().map(stepText)).toEqual(['ip link set dev snc7 master snb7']);
  });
});
