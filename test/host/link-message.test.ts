import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DeviceStep } from '../../host/device-plan.js';
import { TUN_MODE_KIND } from '../../host/device-plan.js';
import { type LinkInfo, type Program, ProgramWriter, decodeAddresses, decodeLinks, decodeNamespaceId, observedDevices } from '../../host/link-message.js';

/** The records of a program, as rtnl.c reads them: kind, payload. */
function records(program: Program): { kind: number; payload: Uint8Array }[] {
  const view = new DataView(program.bytes.buffer, program.bytes.byteOffset, program.bytes.byteLength);
  const found: { kind: number; payload: Uint8Array }[] = [];
  let offset = 0;
  while (offset < program.bytes.length) {
    const length = view.getUint32(offset + 4, true);
    found.push({ kind: view.getUint32(offset, true), payload: program.bytes.subarray(offset + 8, offset + 8 + length) });
    offset += 8 + ((length + 3) & ~3);
  }
  expect(offset).toBe(program.bytes.length);
  expect(found).toHaveLength(program.records);
  return found;
}

const header = (payload: Uint8Array) => {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { length: view.getUint32(0, true), type: view.getUint16(4, true), flags: view.getUint16(6, true), index: view.getInt32(20, true) };
};

const deviceName = fc.stringMatching(/^[a-z][a-z0-9-]{0,14}$/);
const mac = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 }).map((octets) => octets.map((o) => o.toString(16).padStart(2, '0')).join(':'));

describe('ProgramWriter', () => {
  it('writes a set step as an RTM_NEWLINK that reads back as the same name, MTU, address, state and addrgenmode', () => {
    fc.assert(
      fc.property(deviceName, fc.option(fc.integer({ min: 68, max: 65535 }), { nil: undefined }), fc.option(mac, { nil: undefined }), fc.boolean(), fc.boolean(), (name, mtu, address, up, quiet) => {
        const change = { ...(mtu === undefined ? {} : { mtu }), ...(address === undefined ? {} : { mac: address }), ...(up ? { up: true as const } : {}), ...(quiet ? { addrGenModeNone: true as const } : {}) };
        const step: DeviceStep = { netns: null, op: 'set', name, change };
        const [only] = records(new ProgramWriter().step(step, new Map()).finish());
        expect(only?.kind).toBe(1);
        const message = only?.payload ?? new Uint8Array();
        expect(header(message)).toMatchObject({ length: message.length, type: 16 });
        expect(decodeLinks(message)).toEqual([{ index: 0, name, kind: null, peerIndex: null, peerNetnsId: null, masterIndex: null, mtu: mtu ?? 0, up, mac: address ?? '', ipv6: quiet, ipv6LinkLocal: false, ipv6Forwarding: false, group: 0 }]);
      }),
    );
  });

  it('puts the master name of an enslaving step before the message, for the index to be added when it runs', () => {
    const [only] = records(new ProgramWriter().step({ netns: null, op: 'set', name: 'snc7', change: { master: 'snb7', up: true } }, new Map()).finish());
    expect(only?.kind).toBe(3);
    const payload = only?.payload ?? new Uint8Array();
    expect(Buffer.from(payload.subarray(0, 16)).toString('latin1')).toBe('snb7'.padEnd(16, '\0'));
    expect(decodeLinks(payload.subarray(16))).toMatchObject([{ name: 'snc7', up: true }]);
  });

  it('releases a foreign port by the index seen (IFLA_MASTER 0), its record going on past the port found gone (off the bridge already), as a delete does', () => {
    const program = new ProgramWriter()
      .step({ netns: null, op: 'release', name: 'intruder0', index: 51 }, new Map())
      .step({ netns: null, op: 'delete', name: 'snb2', index: 41 }, new Map())
      .finish();
    const [release, del] = records(program);
    expect(release?.kind).toBe(del?.kind);
    expect((release?.kind ?? 0) & 0x100).toBe(0x100);
    const payload = release?.payload ?? new Uint8Array();
    expect(header(payload)).toMatchObject({ type: 16, index: 51, length: 32 + 8 });
    // IFLA_MASTER (10), u32 0.
    expect([...payload.subarray(32, 40)]).toEqual([8, 0, 10, 0, 0, 0, 0, 0]);
  });

  it('addresses a device the plan saw by the index it saw, never by its name (another device may have it as an altname by then; with an index, a name asks for a rename)', () => {
    const program = new ProgramWriter()
      .step({ netns: null, op: 'delete', name: 'snb2', index: 41 }, new Map())
      .step({ netns: null, op: 'set', name: 'snc2', index: 42, change: { mtu: 1400 } }, new Map())
      .step({ netns: null, op: 'set', name: 'snp2', index: 43, change: { master: 'snb2', up: true } }, new Map())
      .step({ netns: null, op: 'set', name: 'snp3', change: { mtu: 1400 } }, new Map())
      .step({ netns: null, op: 'disable-ipv6', name: 'snb2', index: 0x01020304 }, new Map())
      .finish();
    const [del, set, join, byName, noIpv6] = records(program);
    // IPv6 off: the index (rtnl.c looks its name up when it runs), then the name the plan saw.
    expect(noIpv6?.kind).toBe(4);
    expect(Buffer.from(noIpv6?.payload ?? []).toString('latin1')).toBe('\x04\x03\x02\x01snb2\0');
    // Header and ifinfomsg alone (32 bytes), then only the change's attributes: no IFLA_IFNAME.
    expect(header(del?.payload ?? new Uint8Array())).toMatchObject({ type: 17, index: 41, length: 32 });
    expect(header(set?.payload ?? new Uint8Array())).toMatchObject({ type: 16, index: 42, length: 32 + 8 });
    expect(join?.kind).toBe(3);
    expect(header(join?.payload.subarray(16) ?? new Uint8Array())).toMatchObject({ type: 16, index: 43, length: 32 });
    // A device the plan makes has no index yet: by name.
    expect(header(byName?.payload ?? new Uint8Array())).toMatchObject({ index: 0 });
    expect(decodeLinks(byName?.payload ?? new Uint8Array())).toMatchObject([{ name: 'snp3', mtu: 1400 }]);
  });

  it('refuses a master name that would not fit the kernel\'s 16 bytes (it would name another device)', () => {
    expect(() => new ProgramWriter().step({ netns: null, op: 'set', name: 'snc7', change: { master: 'a'.repeat(16) } }, new Map())).toThrow(/longer than 15 bytes/);
    expect(() => new ProgramWriter().step({ netns: null, op: 'set', name: 'snc7', change: { master: 'a'.repeat(15) } }, new Map())).not.toThrow();
  });

  it('writes creation, deletion and queries as the kernel expects them', () => {
    const program = new ProgramWriter()
      .step({ netns: null, op: 'add-bridge', name: 'snb1' }, new Map())
      .step({ netns: null, op: 'add-tap', name: 'snc1' }, new Map())
      .step({ netns: null, op: 'add-veth', name: 'snp1', peerNetns: 'vm-a' }, new Map([['vm-a', 42]]))
      .step({ netns: null, op: 'delete', name: 'snb2', index: 44 }, new Map())
      .step({ netns: null, op: 'disable-ipv6', name: 'snb1' }, new Map())
      .getLink('snb1')
      .dumpLinks()
      .deleteByIndex(77)
      .finish();
    const [bridge, tap, veth, del, noIpv6, get, dump, byIndex] = records(program);
    expect(header(bridge?.payload ?? new Uint8Array())).toMatchObject({ type: 16, flags: 0x1 | 0x400 | 0x200 });
    expect(decodeLinks(bridge?.payload ?? new Uint8Array())).toMatchObject([{ name: 'snb1', kind: 'bridge' }]);
    expect(tap?.kind).toBe(2);
    expect(Buffer.from(tap?.payload ?? []).toString('latin1')).toBe('snc1\0');
    expect(decodeLinks(veth?.payload ?? new Uint8Array())).toMatchObject([{ name: 'snp1', kind: 'veth' }]);
    // The peer carries its own name and the namespace descriptor (IFLA_NET_NS_FD = 28, value 42).
    expect(Buffer.from(veth?.payload ?? []).includes(Buffer.from([8, 0, 28, 0, 42, 0, 0, 0]))).toBe(true);
    // By the index the plan saw alone (no IFLA_IFNAME): a device gone is not looked for by name.
    // Its record lets the program go on past that device gone (ENODEV); a removal's does not.
    expect(del?.kind).toBe(1 | 0x100);
    expect(byIndex?.kind).toBe(1);
    expect(header(del?.payload ?? new Uint8Array())).toMatchObject({ type: 17, index: 44, length: 32 });
    expect(noIpv6?.kind).toBe(4);
    // No index (a device the plan makes): 0, then the name.
    expect(Buffer.from(noIpv6?.payload ?? []).toString('latin1')).toBe('\0\0\0\0snb1\0');
    expect(header(get?.payload ?? new Uint8Array())).toMatchObject({ type: 18, flags: 0x1 });
    expect(header(dump?.payload ?? new Uint8Array())).toMatchObject({ type: 18, flags: 0x1 | 0x300 });
    expect(header(byIndex?.payload ?? new Uint8Array())).toMatchObject({ type: 17, index: 77, length: 32 });
  });

  it('keeps every record whole wherever the buffer has to grow', () => {
    const step: fc.Arbitrary<DeviceStep> = fc.oneof(
      deviceName.map((name): DeviceStep => ({ netns: null, op: 'add-tap', name })),
      deviceName.map((name): DeviceStep => ({ netns: null, op: 'add-bridge', name })),
      fc.tuple(deviceName, fc.integer({ min: 1, max: 0x7fff_ffff })).map(([name, index]): DeviceStep => ({ netns: null, op: 'delete', name, index })),
      fc.tuple(deviceName, deviceName, fc.integer({ min: 68, max: 65535 })).map(([name, master, mtu]): DeviceStep => ({ netns: null, op: 'set', name, change: { mtu, master, up: true } })),
      fc.tuple(deviceName, fc.integer({ min: 68, max: 65535 })).map(([name, mtu]): DeviceStep => ({ netns: null, op: 'set', name, change: { mtu } })),
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 60, maxLength: 400, size: 'max' }), (steps) => {
        const writer = new ProgramWriter();
        for (const each of steps) writer.step(each, new Map());
        const written = records(writer.finish());
        written.forEach((record, index) => {
          const wanted = steps[index];
          if (wanted === undefined || wanted.op === 'add-tap') return;
          const message = record.kind === 3 ? record.payload.subarray(16) : record.payload;
          expect(header(message).length).toBe(message.length);
          if (wanted.op !== 'delete') expect(decodeLinks(message)[0]).toMatchObject({ name: wanted.name, mtu: wanted.op === 'set' ? wanted.change.mtu : 0 });
        });
      }),
      { numRuns: 200 },
    );
  });

  it('keeps every record whole across buffer growth (a thousand links)', () => {
    const writer = new ProgramWriter();
    for (let id = 1; id <= 1000; id++) writer.step({ netns: null, op: 'set', name: `snc${id}`, change: { mtu: 1500, master: `snb${id}`, up: true } }, new Map());
    const all = records(writer.finish());
    expect(all.map((record) => decodeLinks(record.payload.subarray(16))[0]?.name)).toEqual(Array.from({ length: 1000 }, (_, index) => `snc${index + 1}`));
  });
});

/** A netlink attribute, padded. */
function attribute(type: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt16LE(4 + payload.length, 0);
  head.writeUInt16LE(type, 2);
  return Buffer.concat([head, payload, Buffer.alloc((4 - (payload.length % 4)) % 4)]);
}

/** An RTM_NEWLINK answer for `name` with these attributes after its name. */
function answerWith(name: string, attributes: readonly Buffer[]): Uint8Array {
  const body = Buffer.concat([Buffer.alloc(16), attribute(3, Buffer.from(`${name}\0`)), ...attributes]);
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16 + body.length, 0);
  header.writeUInt16LE(16, 4);
  return Buffer.concat([header, body]);
}

/** An RTM_NEWLINK answer for `name` with IFLA_AF_SPEC holding these families' attributes. */
function answerWithAfSpec(name: string, families: ReadonlyMap<number, Buffer>): Uint8Array {
  return answerWith(name, [attribute(26, Buffer.concat([...families].map(([family, payload]) => attribute(family, payload))))]);
}

/**
 * AF_INET6's IFLA_INET6_CONF with disable_ipv6 (DEVCONF_DISABLE_IPV6, value 26 of 60) and
 * forwarding (DEVCONF_FORWARDING, value 0; on by default, so that a wrong place would read 1) as given.
 */
function inet6Conf(disableIpv6: number, forwarding = 1): Buffer {
  const conf = Buffer.alloc(4 * 60);
  conf.writeInt32LE(forwarding, 0);
  conf.writeInt32LE(disableIpv6, 4 * 26);
  const head = Buffer.alloc(4);
  head.writeUInt16LE(4 + conf.length, 0);
  head.writeUInt16LE(2, 2);
  return Buffer.concat([head, conf]);
}

/** AF_INET6's IFLA_INET6_ADDR_GEN_MODE (0 eui64, 1 none, 2 stable privacy, 3 random). */
function addrGenMode(mode: number): Buffer {
  return Buffer.from([5, 0, 8, 0, mode, 0, 0, 0]);
}

describe('decodeLinks', () => {
  it("reads whether IPv6 runs on a device from IFLA_AF_SPEC's IPv6 settings", () => {
    const ipv6Of = (families: ReadonlyMap<number, Buffer>) => decodeLinks(answerWithAfSpec('snb1', families))[0]?.ipv6;
    expect(ipv6Of(new Map([[10, inet6Conf(0)]]))).toBe(true);
    expect(ipv6Of(new Map([[10, inet6Conf(1)]]))).toBe(false);
    // Only IPv4 settings: a kernel without IPv6, or a device it does not run on.
    expect(ipv6Of(new Map([[2, Buffer.alloc(8)]]))).toBe(false);
    expect(ipv6Of(new Map([[2, Buffer.alloc(8)], [10, inet6Conf(0)]]))).toBe(true);
  });

  it('reads whether IPv6 forwards on it (only where it runs)', () => {
    const forwardingOf = (inet6: Buffer) => decodeLinks(answerWithAfSpec('snc1', new Map([[10, inet6]])))[0]?.ipv6Forwarding;
    expect(forwardingOf(inet6Conf(0, 1))).toBe(true);
    expect(forwardingOf(inet6Conf(0, 0))).toBe(false);
    expect(forwardingOf(inet6Conf(1, 1))).toBe(false);
  });

  it('reads whether IPv6 makes a link-local address for it: it runs, and addrgenmode is not none', () => {
    const linkLocalOf = (inet6: Buffer) => decodeLinks(answerWithAfSpec('snc1', new Map([[10, inet6]])))[0]?.ipv6LinkLocal;
    expect(linkLocalOf(Buffer.concat([inet6Conf(0), addrGenMode(1)]))).toBe(false);
    expect(linkLocalOf(Buffer.concat([addrGenMode(1), inet6Conf(0)]))).toBe(false);
    for (const mode of [0, 2, 3]) expect(linkLocalOf(Buffer.concat([inet6Conf(0), addrGenMode(mode)]))).toBe(true);
    // Kernels before 4.1 report no mode, and always make one.
    expect(linkLocalOf(inet6Conf(0))).toBe(true);
    expect(linkLocalOf(Buffer.concat([inet6Conf(1), addrGenMode(0)]))).toBe(false);
  });

  it("tells a tun device in tun mode from a tap by IFLA_INFO_DATA's IFLA_TUN_TYPE; one that does not say (kernels before 4.20) is a tap, as before", () => {
    const kindOf = (linkInfo: Buffer) => decodeLinks(answerWith('snc1', [attribute(18, linkInfo)]))[0]?.kind;
    const tun = attribute(1, Buffer.from('tun\0'));
    // IFLA_TUN_TYPE (3) is a u8: IFF_TUN 1, IFF_TAP 2; other tun attributes around it.
    const data = (type: number) => attribute(2, Buffer.concat([attribute(1, Buffer.from([0, 0, 0, 0])), attribute(3, Buffer.from([type])), attribute(4, Buffer.from([0]))]));
    expect(kindOf(Buffer.concat([tun, data(1)]))).toBe(TUN_MODE_KIND);
    expect(kindOf(Buffer.concat([tun, data(2)]))).toBe('tun');
    expect(kindOf(tun)).toBe('tun');
    // Another kind's IFLA_INFO_DATA is none of a tun's.
    expect(kindOf(Buffer.concat([attribute(1, Buffer.from('vxlan\0')), data(1)]))).toBe('vxlan');
    expect(decodeLinks(answerWith('lo', []))[0]?.kind).toBeNull();
  });

  it("reads a bridge's settings, leaving out the STP timers where STP is off but a root port is left (another bridge was root: they are that root's, not the bridge's own)", () => {
    const u32 = (value: number): Buffer => Buffer.from(new Uint32Array([value]).buffer);
    const settingsOf = (stp: number, rootPort: number) => {
      // IFLA_BR_FORWARD_DELAY 1, HELLO_TIME 2, MAX_AGE 3, AGEING_TIME 4, STP_STATE 5 (u32 each), ROOT_PORT 12 (u16).
      const data = [attribute(1, u32(400)), attribute(2, u32(100)), attribute(3, u32(600)), attribute(4, u32(30000)), attribute(5, u32(stp)), attribute(12, Buffer.from([rootPort, 0]))];
      return decodeLinks(answerWith('snb1', [attribute(18, Buffer.concat([attribute(1, Buffer.from('bridge\0')), attribute(2, Buffer.concat(data))]))]))[0]?.settings;
    };
    const all = { forward_delay: 400, hello_time: 100, max_age: 600, ageing_time: 30000 };
    expect(settingsOf(0, 1)).toEqual({ ageing_time: 30000, stp_state: 0 });
    expect(settingsOf(0, 0)).toEqual({ ...all, stp_state: 0 });
    // STP on: the timers in use are the bridge's to put back (with STP off).
    expect(settingsOf(1, 1)).toEqual({ ...all, stp_state: 1 });
  });

  it("reads a device's peer: its index (IFLA_LINK) and the id of its namespace where that is another (IFLA_LINK_NETNSID)", () => {
    const u32 = (value: number): Buffer => Buffer.from(new Uint32Array([value]).buffer);
    const [elsewhere] = decodeLinks(answerWith('snc1', [attribute(5, u32(4)), attribute(37, u32(2))]));
    expect([elsewhere?.peerIndex, elsewhere?.peerNetnsId]).toEqual([4, 2]);
    const [here] = decodeLinks(answerWith('snc1', [attribute(5, u32(9))]));
    expect([here?.peerIndex, here?.peerNetnsId]).toEqual([9, null]);
    const host = observedDevices([elsewhere!, { ...here!, name: 'snp1', index: 3 }]);
    expect([host.get('snc1')?.peerNetnsId, host.get('snp1')?.peerNetnsId]).toEqual([2, undefined]);
  });

  it("takes a peer in another namespace without IFLA_LINK (kernels before 5.2 leave it out where it equals the device's own index) to have the device's index there", () => {
    const u32 = (value: number): Buffer => Buffer.from(new Uint32Array([value]).buffer);
    /** answerWith's message with the ifinfomsg's index set. */
    const withIndex = (index: number, attributes: readonly Buffer[]): Uint8Array => {
      const message = Buffer.from(answerWith('snc1', attributes));
      message.writeInt32LE(index, 16 + 4);
      return message;
    };
    const [elsewhere] = decodeLinks(withIndex(3, [attribute(37, u32(2))]));
    expect([elsewhere?.index, elsewhere?.peerIndex, elsewhere?.peerNetnsId]).toEqual([3, 3, 2]);
    expect(observedDevices([elsewhere!]).get('snc1')).toMatchObject({ index: 3, peerNetnsId: 2, peerIndex: 3 });
    // In its own namespace, no IFLA_LINK is no peer.
    const [alone] = decodeLinks(withIndex(3, []));
    expect([alone?.peerIndex, alone?.peerNetnsId]).toEqual([null, null]);
  });

  it('never throws on arbitrary bytes, and reads only whole messages', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512, size: 'max' }), (bytes) => {
        let links: ReturnType<typeof decodeLinks> = [];
        expect(() => (links = decodeLinks(bytes))).not.toThrow();
        for (const link of links) expect(typeof link.name).toBe('string');
      }),
    );
  });
});

describe('observedDevices', () => {
  it('names masters it has seen, and gives unknown masters a name no device can have', () => {
    const link = (index: number, name: string, masterIndex: number | null): LinkInfo => ({ index, name, kind: 'tun', peerIndex: null, peerNetnsId: null, masterIndex, mtu: 1500, up: true, mac: '', ipv6: true, ipv6LinkLocal: true, ipv6Forwarding: false, group: 0 });
    const devices = observedDevices([link(5, 'snb1', null), link(6, 'snc1', 5), link(7, 'snp1', 99)]);
    expect(devices.get('snc1')?.master).toBe('snb1');
    expect(devices.get('snp1')?.master).toBe('ifindex 99');
    expect(devices.get('snb1')?.master).toBeNull();
  });
});

describe('namespace ids', () => {
  it('asks for the id of the namespace of a descriptor (RTM_GETNSID, NETNSA_FD), and reads the answer (none where not assigned)', () => {
    const [record] = records(new ProgramWriter().getNamespaceId(17).finish());
    const view = new DataView(record!.payload.buffer, record!.payload.byteOffset, record!.payload.byteLength);
    expect([record!.kind, view.getUint32(0, true), view.getUint16(4, true), record!.payload.length]).toEqual([1, 28, 90, 28]);
    // After the padded rtgenmsg (family 0): NETNSA_FD.
    expect([view.getUint8(16), view.getUint16(20, true), view.getUint16(22, true), view.getUint32(24, true)]).toEqual([0, 8, 3, 17]);
    const answer = (id: number): Uint8Array => {
      const message = Buffer.alloc(28);
      message.writeUInt32LE(28, 0);
      message.writeUInt16LE(88, 4);
      message.writeUInt16LE(8, 20);
      message.writeUInt16LE(1, 22);
      message.writeInt32LE(id, 24);
      return message;
    };
    expect(decodeNamespaceId(answer(3))).toBe(3);
    expect(decodeNamespaceId(answer(-1))).toBeNull();
    expect(decodeNamespaceId(new Uint8Array())).toBeNull();
  });
});

describe('decodeAddresses', () => {
  /** An RTM_NEWADDR message: family, prefix length, device index, IFA_LOCAL. */
  const newAddr = (family: number, prefixLength: number, index: number, address: readonly number[], flags = 0): Uint8Array => {
    const attribute = 4 + address.length;
    const length = 16 + 8 + ((attribute + 3) & ~3);
    const bytes = new Uint8Array(length);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, length, true);
    view.setUint16(4, 20, true);
    bytes[16] = family;
    bytes[17] = prefixLength;
    bytes[18] = flags;
    view.setUint32(20, index, true);
    view.setUint16(24, attribute, true);
    view.setUint16(26, 2, true);
    bytes.set(address, 28);
    return bytes;
  };

  it('reads IPv4 and IPv6 addresses with their device and prefix, IPv6 in RFC 5952 form (the longest zero run as ::)', () => {
    const v6 = (groups: readonly number[]): number[] => groups.flatMap((group) => [group >> 8, group & 0xff]);
    const bytes = Buffer.concat([
      newAddr(2, 24, 7, [198, 51, 100, 1]),
      newAddr(10, 64, 7, v6([0xfe80, 0, 0, 0, 0, 0, 0, 0x99])),
      newAddr(10, 128, 8, v6([0x2001, 0xdb8, 0, 0, 1, 0, 0, 0])),
      newAddr(10, 128, 8, v6([0x2001, 0xdb8, 1, 2, 3, 4, 0, 5])),
    ]);
    expect(decodeAddresses(bytes)).toEqual([
      { index: 7, family: 4, address: '198.51.100.1', prefixLength: 24 },
      { index: 7, family: 6, address: 'fe80::99', prefixLength: 64 },
      { index: 8, family: 6, address: '2001:db8:0:0:1::', prefixLength: 128 },
      { index: 8, family: 6, address: '2001:db8:1:2:3:4:0:5', prefixLength: 128 },
    ]);
  });

  it('marks an IPv4 address the kernel holds as secondary (IFA_F_SECONDARY), which goes with its primary', () => {
    // IFA_F_SECONDARY (0x01), with IFA_F_PERMANENT (0x80) as `ip addr add` gives it.
    const bytes = Buffer.concat([newAddr(2, 24, 7, [198, 51, 100, 1], 0x80), newAddr(2, 24, 7, [198, 51, 100, 2], 0x81)]);
    expect(decodeAddresses(bytes)).toEqual([
      { index: 7, family: 4, address: '198.51.100.1', prefixLength: 24 },
      { index: 7, family: 4, address: '198.51.100.2', prefixLength: 24, secondary: true },
    ]);
  });
});
