// Decoding the kernel's messages into the agent's view (guest/netd/rtnetlink.ts): only the
// attributes the agent reads are decoded, so no other can make a message undecodable.
import { endianness } from 'node:os';
import fc from 'fast-check';
import { IPv6 } from 'ip-num';
import { AttrStream, parseAttributes, rt } from 'netlink';
import { describe, expect, it } from 'vitest';
import type { KernelAddress, KernelLink, KernelNeighbour, KernelRoute } from '../../../guest/netd/kernel-view.js';
import { NetdError } from '../../../guest/netd/netd-error.js';
import { decodeAddress, decodeDumpEntries, decodeLink, decodeNeighbour, decodeNotification, decodeRoute } from '../../../guest/netd/rtnetlink.js';
import {
  ADDRESS_V0,
  BRIDGE_PORT_DELLINK_V0,
  BRIDGE_PORT_NEWLINK_V0,
  CONNECTED_ROUTE,
  DEFAULT_ROUTE_VIA_IPV6,
  LINK_V0,
  MARKED_ADDRESS_V0,
  NEIGHBOUR_V0,
  ROUTE_VIA_IPV6,
} from './kernel-messages.js';

/** A u32 attribute as the kernel sends it: host order. */
const u32 = (value: number): Buffer => {
  const bytes = Buffer.alloc(4);
  if (endianness() === 'LE') bytes.writeUInt32LE(value);
  else bytes.writeUInt32BE(value);
  return bytes;
};

const u16 = (value: number): Buffer => {
  const bytes = Buffer.alloc(2);
  if (endianness() === 'LE') bytes.writeUInt16LE(value);
  else bytes.writeUInt16BE(value);
  return bytes;
};

/** An attribute as the kernel sends it (host order, padded to 4 bytes); `flags`: NLA_F_NESTED (0x8000), NLA_F_NET_BYTEORDER (0x4000). */
const attribute = (type: number, data: Uint8Array, flags = 0): Buffer =>
  Buffer.concat([u16(4 + data.length), u16(type | flags), data, Buffer.alloc((4 - (data.length % 4)) % 4)]);

/** A message's payload made by the `netlink` package's formatter, its last attribute padded as the kernel pads it. */
const formatted = (format: (out: AttrStream) => void): Buffer => {
  const out = new AttrStream();
  format(out);
  const bytes = Buffer.concat(out.bufs);
  return Buffer.concat([bytes, Buffer.alloc((4 - (bytes.length % 4)) % 4)]);
};

const HEADER_LENGTH = { link: rt.__LENGTH_Link, address: rt.__LENGTH_Address, route: rt.__LENGTH_Route, neighbour: rt.__LENGTH_Neighbor } as const;
type Kind = keyof typeof HEADER_LENGTH;

/**
 * The attribute types the agent reads, by message (the spec: everything else it has no use for).
 * link: IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_GROUP; address: IFA_ADDRESS, IFA_LOCAL, IFA_PROTO;
 * route: RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE, RTA_VIA; neighbour: NDA_DST, NDA_LLADDR.
 */
const READ_TYPES: Record<Kind, readonly number[]> = { link: [1, 3, 4, 5, 27], address: [1, 2, 11], route: [1, 4, 5, 6, 15, 18], neighbour: [1, 2] };

const DECODE: Record<Kind, (payload: Buffer) => unknown> = { link: decodeLink, address: decodeAddress, route: decodeRoute, neighbour: decodeNeighbour };

/** The attributes of `payload` after its fixed header, each as the bytes it takes (padding included). */
function attributesOf(kind: Kind, payload: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  parseAttributes(payload.subarray(HEADER_LENGTH[kind]), (one) => parts.push(attribute(one.type, one.data, (one.nested === true ? 0x8000 : 0) | (one.no === true ? 0x4000 : 0))));
  return parts;
}

/** `payload` with `extra` inserted among its attributes, each at its position (modulo how many there are then). */
function withExtra(kind: Kind, payload: Buffer, extra: readonly (readonly [number, Buffer])[]): Buffer {
  const parts = attributesOf(kind, payload);
  for (const [at, one] of extra) parts.splice(at % (parts.length + 1), 0, one);
  return Buffer.concat([payload.subarray(0, HEADER_LENGTH[kind]), ...parts]);
}

/** Any attribute of a type the agent does not read for `kind`: any flags, any bytes (any length). */
const unreadAttribute = (kind: Kind): fc.Arbitrary<Buffer> =>
  fc
    .record({
      type: fc.oneof(fc.integer({ min: 0, max: 80 }), fc.integer({ min: 0, max: 0x3fff })).filter((type) => !READ_TYPES[kind].includes(type)),
      flags: fc.constantFrom(0, 0x4000, 0x8000, 0xc000),
      data: fc.uint8Array({ maxLength: 48 }),
    })
    .map(({ type, flags, data }) => attribute(type, data, flags));

const extraAttributes = (kind: Kind): fc.Arbitrary<[number, Buffer][]> => fc.array(fc.tuple(fc.nat(), unreadAttribute(kind)), { minLength: 1, maxLength: 8 });

const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
const ipText = (octets: readonly number[]): string => octets.join('.');

/** RTA_VIA's payload (struct rtvia): the family (u16, host order), then the address. */
const via = (family: number, address: Uint8Array): Buffer => Buffer.concat([u16(family), address]);
const AF_INET = 2;
const AF_INET6 = 10;

/** IPv6 next hops, as the kernel sends them and as RFC 5952 writes them (the longest run of zero groups, the first of equals, as ::; none for one group). */
const IPV6_HOPS: readonly (readonly [string, string])[] = [
  ['fe800000000000000000000000000001', 'fe80::1'],
  ['20010db8000000000001000000000000', '2001:db8:0:0:1::'],
  ['20010db8000000010000000000000001', '2001:db8:0:1::1'],
  ['20010db8000100010001000100010001', '2001:db8:1:1:1:1:1:1'],
  ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
  ['20010db80000000100000000000000ff', '2001:db8:0:1::ff'],
  ['00000000000000000000000000000000', '::'],
  ['20010db800000000000100000000abcd', '2001:db8::1:0:0:abcd'],
];

/** Any link message the agent can read, and what it is read as. */
const anyLink: fc.Arbitrary<{ payload: Buffer; link: KernelLink }> = fc
  .record({
    index: fc.integer({ min: 1, max: 0x7fffffff }),
    name: fc.stringMatching(/^[a-z0-9]{1,15}$/),
    mac: fc.option(fc.uint8Array({ maxLength: 32 }), { nil: undefined }),
    up: fc.boolean(),
    loopback: fc.boolean(),
    group: fc.option(fc.nat({ max: 0xffffffff }), { nil: undefined }),
    lower: fc.option(fc.integer({ min: 1, max: 0x7fffffff }), { nil: undefined }),
    mtu: fc.option(fc.nat({ max: 0xffffffff }), { nil: undefined }),
  })
  .map(({ index, name, mac, up, loopback, group, lower, mtu }) => ({
    payload: formatted((out) =>
      rt.formatLinkMessage(
        {
          kind: 'link',
          data: { index, flags: { ...(up && { up: true }), ...(loopback && { loopback: true }) } },
          attrs: { ifname: name, ...(mac !== undefined && { address: Buffer.from(mac) }), ...(group !== undefined && { group }), ...(lower !== undefined && { link: u32(lower) }), ...(mtu !== undefined && { mtu }) },
        },
        out,
      ),
    ),
    link: {
      ifindex: index,
      name,
      mac: mac === undefined ? '' : [...mac].map((octet) => octet.toString(16).padStart(2, '0')).join(':'),
      up,
      loopback,
      group: group ?? 0,
      ...(lower !== undefined && lower !== index && { lowerIfindex: lower }),
      ...(mtu !== undefined && { mtu }),
    },
  }));

/**
 * Any IPv4 address message, and what it is read as (IFA_LOCAL where there is one, else IFA_ADDRESS;
 * its IFA_PROTO, a u8 the `netlink` package does not format, or 0 without one).
 */
const anyAddress: fc.Arbitrary<{ payload: Buffer; address: KernelAddress }> = fc
  .record({
    index: fc.integer({ min: 1, max: 0x7fffffff }),
    prefixlen: fc.nat(32),
    local: fc.option(ipv4, { nil: undefined }),
    address: ipv4,
    proto: fc.option(fc.nat(255), { nil: undefined }),
  })
  .map(({ index, prefixlen, local, address, proto }) => ({
    payload: formatted((out) => {
      rt.formatAddressMessage(
        { kind: 'address', data: { family: 2, prefixlen, index }, attrs: { address: Buffer.from(address), ...(local !== undefined && { local: Buffer.from(local) }) } },
        out,
      );
      if (proto !== undefined) out.push(11, Buffer.from([proto]));
    }),
    address: { ifindex: index, ip: ipText(local ?? address), prefixLength: prefixlen, proto: proto ?? 0 },
  }));

/** Any main-table IPv4 unicast route message (its table in the header, in RTA_TABLE, or both; any rtm_protocol), and what it is read as. */
const anyRoute: fc.Arbitrary<{ payload: Buffer; route: KernelRoute }> = fc
  .record({
    dstLen: fc.nat(32),
    dst: fc.option(ipv4, { nil: undefined }),
    tableIn: fc.constantFrom('header', 'attribute', 'both'),
    oif: fc.option(fc.nat({ max: 0xffffffff }), { nil: undefined }),
    // An IPv4 gateway (RTA_GATEWAY), an IPv6 one (RTA_VIA, RFC 5549), or none: the kernel sends one at most.
    gateway: fc.option(fc.oneof(ipv4.map((octets) => ({ ipv4: octets })), fc.constantFrom(...IPV6_HOPS).map(([hex, text]) => ({ ipv6: Buffer.from(hex, 'hex'), text }))), {
      nil: undefined,
    }),
    priority: fc.option(fc.nat({ max: 0xffffffff }), { nil: undefined }),
    protocol: fc.nat(255),
  })
  .map(({ dstLen, dst, tableIn, oif, gateway, priority, protocol }) => ({
    payload: formatted((out) => {
      rt.formatRouteMessage(
        {
          kind: 'route',
          // rtm_table says RT_TABLE_COMPAT (252) where RTA_TABLE alone holds the table.
          data: { family: 2, dstLen, table: tableIn === 'attribute' ? 252 : 254, protocol, type: 'UNICAST' },
          attrs: {
            ...(tableIn !== 'header' && { table: 254 }),
            ...(dst !== undefined && { dst: Buffer.from(dst) }),
            ...(oif !== undefined && { oif }),
            ...(gateway !== undefined && 'ipv4' in gateway && { gateway: Buffer.from(gateway.ipv4) }),
            ...(priority !== undefined && { priority }),
          },
        },
        out,
      );
      // RTA_VIA: the `netlink` package formats it as 3 bytes.
      if (gateway !== undefined && 'ipv6' in gateway) out.push(18, via(AF_INET6, gateway.ipv6));
    }),
    route: {
      dst: dst === undefined ? '0.0.0.0' : ipText(dst),
      dstLength: dstLen,
      oif: oif ?? null,
      gateway: gateway === undefined ? null : 'ipv4' in gateway ? ipText(gateway.ipv4) : gateway.text,
      priority: priority ?? 0,
      protocol,
    },
  }));

/** Any IPv4 neighbour message, and what it is read as. */
const anyNeighbour: fc.Arbitrary<{ payload: Buffer; neighbour: KernelNeighbour }> = fc
  .record({ ifindex: fc.integer({ min: 1, max: 0x7fffffff }), ip: ipv4, lladdr: fc.option(fc.uint8Array({ maxLength: 32 }), { nil: undefined }), permanent: fc.boolean() })
  .map(({ ifindex, ip, lladdr, permanent }) => ({
    payload: formatted((out) =>
      rt.formatNeighborMessage(
        { kind: 'neighbor', data: { family: 2, ifindex, state: permanent ? { permanent: true } : { reachable: true } }, attrs: { dst: Buffer.from(ip), ...(lladdr !== undefined && { lladdr: Buffer.from(lladdr) }) } },
        out,
      ),
    ),
    neighbour: { ifindex, ip: ipText(ip), mac: lladdr === undefined ? null : [...lladdr].map((octet) => octet.toString(16).padStart(2, '0')).join(':'), permanent },
  }));

/** IFLA_MTU (4) of 2 bytes, where the `netlink` package's parser wants 4. */
const SHORT_MTU = attribute(4, u16(1500));

describe('decoding the bytes a kernel sent', () => {
  it('runs on a little-endian host, as the captured bytes were', () => {
    expect(endianness()).toBe('LE');
  });

  it('reads an IPv4 route via an IPv6 next hop (RTA_VIA, RFC 5549), which the netlink package cannot parse', () => {
    expect(() => rt.parseRouteMessage(DEFAULT_ROUTE_VIA_IPV6)).toThrow('Unexpected length for RouteVia');
    expect(() => rt.parseRouteMessage(ROUTE_VIA_IPV6)).toThrow('Unexpected length for RouteVia');
    // rtm_protocol: boot (3) for `ip route add`'s, kernel (2) for the kernel's own. The IPv6 next
    // hop is the gateway: not a route on the link, as the kernel's connected route is.
    expect(decodeRoute(DEFAULT_ROUTE_VIA_IPV6)).toEqual({ dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: 'fe80::1', priority: 0, protocol: 3 });
    expect(decodeRoute(ROUTE_VIA_IPV6)).toEqual({ dst: '203.0.113.0', dstLength: 24, oif: 3, gateway: 'fe80::1', priority: 7, protocol: 3 });
    expect(decodeRoute(CONNECTED_ROUTE)).toEqual({ dst: '100.64.0.0', dstLength: 24, oif: 3, gateway: null, priority: 0, protocol: 2 });
  });

  it('reads a veth, an address and a neighbour', () => {
    expect(decodeLink(LINK_V0)).toEqual({ ifindex: 3, name: 'v0', mac: '0a:b3:ec:80:00:01', up: true, loopback: false, group: 0, lowerIfindex: 2, mtu: 1500 });
    expect(decodeAddress(ADDRESS_V0)).toEqual({ ifindex: 3, ip: '100.64.0.1', prefixLength: 24, proto: 0 });
    expect(decodeNeighbour(NEIGHBOUR_V0)).toEqual({ ifindex: 3, ip: '100.64.0.2', mac: '0a:b3:ec:00:00:02', permanent: true });
  });

  it("reads an address's IFA_PROTO (client mode's mark), which the netlink package's parser drops", () => {
    expect(rt.parseAddressMessage(MARKED_ADDRESS_V0).attrs).not.toHaveProperty('proto');
    expect(decodeAddress(MARKED_ADDRESS_V0)).toEqual({ ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 236 });
    expect(decodeNotification(rt.MessageType.DELADDR, MARKED_ADDRESS_V0)).toEqual({ kind: 'address', op: 'del', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 236 } });
  });

  it("takes a bridge's messages about its port (AF_BRIDGE, no IFLA_GROUP) for nothing: its RTM_DELLINK says the port left the bridge, not that the link is gone", () => {
    // What they hold: v0 (ifindex 3, in group 7), by name, with no group.
    expect(rt.parseLinkMessage(BRIDGE_PORT_NEWLINK_V0)).toMatchObject({ data: { family: 7, index: 3 }, attrs: { ifname: 'v0' } });
    expect(rt.parseLinkMessage(BRIDGE_PORT_NEWLINK_V0).attrs).not.toHaveProperty('group');
    expect(rt.parseLinkMessage(BRIDGE_PORT_DELLINK_V0)).toMatchObject({ data: { family: 7, index: 3 }, attrs: { ifname: 'v0' } });
    expect(decodeLink(BRIDGE_PORT_NEWLINK_V0)).toBeNull();
    expect(decodeNotification(rt.MessageType.NEWLINK, BRIDGE_PORT_NEWLINK_V0)).toBeNull();
    expect(decodeNotification(rt.MessageType.DELLINK, BRIDGE_PORT_DELLINK_V0)).toBeNull();
    // The kernel's own (AF_UNSPEC) with the same bytes after the family: read.
    const own = Buffer.from(BRIDGE_PORT_DELLINK_V0);
    own[0] = 0;
    expect(decodeNotification(rt.MessageType.DELLINK, own)).toMatchObject({ kind: 'link', op: 'del', link: { ifindex: 3, name: 'v0' } });
  });

  it('reads a link whose IFLA_MTU is 2 bytes, which the netlink package cannot parse, as one of no MTU', () => {
    const link = Buffer.concat([LINK_V0, SHORT_MTU]);
    expect(() => rt.parseLinkMessage(link)).toThrow('Unexpected length (got 2, expected 4)');
    const { mtu, ...rest } = decodeLink(LINK_V0) ?? { mtu: undefined };
    expect(mtu).toBe(1500);
    expect(decodeLink(link)).toEqual(rest);
  });
});

describe('attributes the agent does not read', () => {
  const REAL: readonly (readonly [Kind, Buffer])[] = [
    ['link', LINK_V0],
    ['address', ADDRESS_V0],
    ['address', MARKED_ADDRESS_V0],
    ['route', DEFAULT_ROUTE_VIA_IPV6],
    ['route', CONNECTED_ROUTE],
    ['route', ROUTE_VIA_IPV6],
    ['neighbour', NEIGHBOUR_V0],
    ['link', BRIDGE_PORT_NEWLINK_V0],
    ['link', BRIDGE_PORT_DELLINK_V0],
  ];

  it('reads real messages with their attributes laid out again as they were (the splitting the properties below rely on)', () => {
    for (const [kind, payload] of REAL) expect(withExtra(kind, payload, [])).toEqual(payload);
  });

  it('never change what a real message is read as, whatever their type, flags, length, bytes or place', () => {
    const real = fc.constantFrom(...REAL).chain(([kind, payload]) => fc.tuple(fc.constant(kind), fc.constant(payload), extraAttributes(kind)));
    fc.assert(
      fc.property(real, ([kind, payload, extra]) => {
        expect(DECODE[kind](withExtra(kind, payload, extra))).toEqual(DECODE[kind](payload));
      }),
      { numRuns: 500 },
    );
  });

  it('never change what any link, address, route or neighbour is read as', () => {
    const cases = fc.oneof(
      anyLink.map(({ payload, link }) => ({ kind: 'link' as const, payload, read: link })),
      anyAddress.map(({ payload, address }) => ({ kind: 'address' as const, payload, read: address })),
      anyRoute.map(({ payload, route }) => ({ kind: 'route' as const, payload, read: route })),
      anyNeighbour.map(({ payload, neighbour }) => ({ kind: 'neighbour' as const, payload, read: neighbour })),
    );
    fc.assert(
      fc.property(
        cases.chain((one) => fc.tuple(fc.constant(one), extraAttributes(one.kind))),
        ([{ kind, payload, read }, extra]) => {
          expect(DECODE[kind](payload)).toEqual(read);
          expect(DECODE[kind](withExtra(kind, payload, extra))).toEqual(read);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('attributes the agent reads', () => {
  const undecodable = (decode: () => unknown): string => {
    try {
      decode();
    } catch (error) {
      expect(error).toBeInstanceOf(NetdError);
      return (error as NetdError).message;
    }
    throw new Error('decoded');
  };

  it('make a message undecodable where malformed, naming the attribute (the last of a type counts, as for the kernel)', () => {
    const link = (extra: Buffer): Buffer => Buffer.concat([LINK_V0, extra]);
    expect(undecodable(() => decodeLink(link(attribute(27, u16(1)))))).toBe('IFLA_GROUP: Unexpected length (got 2, expected 4)');
    expect(undecodable(() => decodeLink(link(attribute(5, u16(7)))))).toBe('IFLA_LINK: Unexpected length (got 2, expected 4)');
    expect(undecodable(() => decodeLink(link(attribute(3, Buffer.from('v0')))))).toBe('IFLA_IFNAME: Not null terminated');
    expect(undecodable(() => decodeLink(link(attribute(1, Buffer.alloc(6), 0x8000))))).toBe('IFLA_ADDRESS is flagged nested');
    expect(undecodable(() => decodeLink(link(attribute(27, u32(1), 0x4000))))).toBe('IFLA_GROUP is flagged in network byte order');
    expect(undecodable(() => decodeAddress(Buffer.concat([ADDRESS_V0, attribute(2, Buffer.alloc(16))])))).toBe('IFA_LOCAL: Unexpected length (got 16, expected 4)');
    // IFA_PROTO is a u8: exactly 1 byte, neither flag.
    expect(undecodable(() => decodeAddress(Buffer.concat([ADDRESS_V0, attribute(11, u16(236))])))).toBe('IFA_PROTO: Unexpected length (got 2, expected 1)');
    expect(undecodable(() => decodeAddress(Buffer.concat([ADDRESS_V0, attribute(11, Buffer.alloc(0))])))).toBe('IFA_PROTO: Unexpected length (got 0, expected 1)');
    expect(undecodable(() => decodeAddress(Buffer.concat([MARKED_ADDRESS_V0, attribute(11, u32(236))])))).toBe('IFA_PROTO: Unexpected length (got 4, expected 1)');
    expect(undecodable(() => decodeAddress(Buffer.concat([ADDRESS_V0, attribute(11, Buffer.from([236]), 0x8000)])))).toBe('IFA_PROTO is flagged nested');
    expect(undecodable(() => decodeNotification(rt.MessageType.NEWADDR, Buffer.concat([ADDRESS_V0, attribute(11, u16(236))])))).toBe('IFA_PROTO: Unexpected length (got 2, expected 1)');
    const route = (extra: Buffer): Buffer => Buffer.concat([ROUTE_VIA_IPV6, extra]);
    expect(undecodable(() => decodeRoute(route(attribute(15, u16(254)))))).toBe('RTA_TABLE: Unexpected length (got 2, expected 4)');
    expect(undecodable(() => decodeRoute(route(attribute(1, Buffer.alloc(16)))))).toBe('RTA_DST: Unexpected length (got 16, expected 4)');
    expect(undecodable(() => decodeRoute(route(attribute(4, u16(3)))))).toBe('RTA_OIF: Unexpected length (got 2, expected 4)');
    expect(undecodable(() => decodeRoute(route(attribute(5, Buffer.alloc(16)))))).toBe('RTA_GATEWAY: Unexpected length (got 16, expected 4)');
    expect(undecodable(() => decodeRoute(route(attribute(6, Buffer.alloc(8)))))).toBe('RTA_PRIORITY: Unexpected length (got 8, expected 4)');
    // RTA_VIA: a family the kernel takes for an IPv4 route's next hop (AF_INET6, AF_INET), and an address of its length.
    const viaRoute = (payload: Buffer): Buffer => route(attribute(18, payload));
    expect(undecodable(() => decodeRoute(viaRoute(via(AF_INET6, Buffer.alloc(4)))))).toBe('RTA_VIA: Unexpected length (got 4, expected 16)');
    expect(undecodable(() => decodeRoute(viaRoute(via(AF_INET, Buffer.alloc(16)))))).toBe('RTA_VIA: Unexpected length (got 16, expected 4)');
    expect(undecodable(() => decodeRoute(viaRoute(via(17, Buffer.alloc(6)))))).toBe('RTA_VIA: Unexpected family 17 (expected 10 or 2)');
    expect(undecodable(() => decodeRoute(viaRoute(Buffer.from([10]))))).toBe('RTA_VIA: Unexpected length (got 1, expected 6 or 18)');
    expect(undecodable(() => decodeRoute(viaRoute(Buffer.alloc(0))))).toBe('RTA_VIA: Unexpected length (got 0, expected 6 or 18)');
    expect(undecodable(() => decodeRoute(route(attribute(18, via(AF_INET6, Buffer.alloc(16)), 0x8000))))).toBe('RTA_VIA is flagged nested');
    expect(undecodable(() => decodeNeighbour(Buffer.concat([NEIGHBOUR_V0, attribute(1, Buffer.alloc(16))])))).toBe('NDA_DST: Unexpected length (got 16, expected 4)');
    // A second of a type, well formed, after a malformed one: the last counts.
    expect(decodeLink(link(Buffer.concat([attribute(27, u16(1)), attribute(27, u32(9))])))).toMatchObject({ group: 9 });
    expect(decodeAddress(Buffer.concat([ADDRESS_V0, attribute(11, u16(1)), attribute(11, Buffer.from([236]))]))).toMatchObject({ proto: 236 });
  });

  it('are read only where the agent needs them: another family, table or type, or an IFA_ADDRESS behind IFA_LOCAL, is no matter', () => {
    const garbled = attribute(1, Buffer.alloc(16));
    // An IPv6 address, neighbour and route (AF_INET6: 10): none of the agent's business, whatever their attributes.
    const ipv6 = (payload: Buffer): Buffer => Buffer.concat([Buffer.from([10]), payload.subarray(1), garbled]);
    expect(decodeAddress(ipv6(ADDRESS_V0))).toBeNull();
    expect(decodeAddress(Buffer.concat([ipv6(ADDRESS_V0), attribute(11, u16(236))]))).toBeNull();
    expect(decodeNeighbour(ipv6(NEIGHBOUR_V0))).toBeNull();
    expect(decodeRoute(ipv6(CONNECTED_ROUTE))).toBeNull();
    // Another table's route (RTA_TABLE 100), and an unreachable one (type 7).
    expect(decodeRoute(Buffer.concat([CONNECTED_ROUTE, attribute(15, u32(100)), garbled]))).toBeNull();
    const unreachable = Buffer.from(CONNECTED_ROUTE);
    unreachable[7] = 7;
    expect(decodeRoute(Buffer.concat([unreachable, garbled]))).toBeNull();
    // IFA_ADDRESS garbled behind a good IFA_LOCAL.
    expect(decodeAddress(Buffer.concat([ADDRESS_V0, garbled]))).toEqual({ ifindex: 3, ip: '100.64.0.1', prefixLength: 24, proto: 0 });
  });

  it("read a route's next hop from RTA_VIA as from RTA_GATEWAY: an IPv6 one as RFC 5952 text, an IPv4 one dotted", () => {
    const route = (next: Buffer): Buffer => Buffer.concat([CONNECTED_ROUTE, attribute(18, next)]);
    for (const [hex, text] of IPV6_HOPS) expect(decodeRoute(route(via(AF_INET6, Buffer.from(hex, 'hex'))))).toMatchObject({ oif: 3, gateway: text });
    expect(decodeRoute(route(via(AF_INET, Buffer.from([192, 0, 2, 1]))))).toMatchObject({ oif: 3, gateway: '192.0.2.1' });
    // Any 16 bytes: text that reads back as them.
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const gateway = decodeRoute(route(via(AF_INET6, bytes)))?.gateway ?? '';
        expect(gateway).toMatch(/^[0-9a-f:]+$/);
        expect(IPv6.fromString(gateway).getValue()).toBe(BigInt(`0x${Buffer.from(bytes).toString('hex')}`));
      }),
    );
  });

  it('read a route of several next hops (RTA_MULTIPATH, no RTA_OIF) as one of no device and no gateway: never taken for one of the agent\'s', () => {
    // Two struct rtnexthop (len 8, flags, hops, ifindex): through links 3 and 4.
    const hops = Buffer.concat([u16(8), Buffer.from([0, 0]), u32(3), u16(8), Buffer.from([0, 0]), u32(4)]);
    const multipath = formatted((out) =>
      rt.formatRouteMessage({ kind: 'route', data: { family: 2, dstLen: 32, table: 254, protocol: 3, type: 'UNICAST' }, attrs: { table: 254, dst: Buffer.from([100, 64, 0, 1]), multipath: hops } }, out),
    );
    expect(decodeRoute(multipath)).toEqual({ dst: '100.64.0.1', dstLength: 32, oif: null, gateway: null, priority: 0, protocol: 3 });
  });

  it('record the device a link sits on (IFLA_LINK: a veth peer) only where it is another', () => {
    const link = (attrs: rt.LinkMessage['attrs']): Buffer => formatted((out) => rt.formatLinkMessage({ kind: 'link', data: { index: 5, flags: { up: true } }, attrs: { ifname: 'p5', ...attrs } }, out));
    expect(decodeLink(link({ link: u32(7) }))).toMatchObject({ ifindex: 5, name: 'p5', up: true, lowerIfindex: 7 });
    expect(decodeLink(link({}))).not.toHaveProperty('lowerIfindex');
    expect(decodeLink(link({ link: u32(5) }))).not.toHaveProperty('lowerIfindex');
  });
});

describe('decodeNotification', () => {
  it('says of a message cut short what it is and how long, and of one whose attributes cannot be split what the splitter says', () => {
    expect(() => decodeNotification(rt.MessageType.NEWLINK, LINK_V0.subarray(0, 4))).toThrow('a link message of 4 bytes, shorter than its fixed header (16)');
    // An attribute that claims 64 bytes where 4 are left.
    expect(() => decodeNotification(rt.MessageType.DELADDR, Buffer.concat([ADDRESS_V0, u16(64), u16(1)]))).toThrow('Invalid attribute length (64)');
    expect(decodeNotification(rt.MessageType.DELROUTE, ROUTE_VIA_IPV6)).toEqual({ kind: 'route', op: 'del', route: { dst: '203.0.113.0', dstLength: 24, oif: 3, gateway: 'fe80::1', priority: 7, protocol: 3 } });
  });
});

describe('decodeDumpEntries', () => {
  const entry = (type: number, data: Buffer): { type: number; flags: number; seq: number; port: number; data: Buffer } => ({ type, flags: 2, seq: 1, port: 0, data });

  it('skips an entry it cannot decode, naming the link its fixed header gives, or none where it is cut short, and reads the rest', () => {
    // An ifaddrmsg for ifindex 5, then an attribute that claims 64 bytes where 4 are left.
    const address = Buffer.concat([Buffer.from([2, 24, 0, 0]), u32(5), u16(64), u16(1)]);
    const fine = formatted((out) => rt.formatLinkMessage({ kind: 'link', data: { index: 9 }, attrs: { ifname: 'p9' } }, out));
    expect(
      decodeDumpEntries([
        entry(rt.MessageType.NEWADDR, address),
        entry(rt.MessageType.NEWNEIGH, Buffer.alloc(6)),
        entry(rt.MessageType.NEWLINK, Buffer.concat([LINK_V0, attribute(27, u16(1))])),
        entry(rt.MessageType.NEWLINK, fine),
        entry(rt.MessageType.NEWROUTE, DEFAULT_ROUTE_VIA_IPV6),
      ]),
    ).toEqual({
      events: [
        { kind: 'link', op: 'new', link: expect.objectContaining({ ifindex: 9, name: 'p9' }) },
        { kind: 'route', op: 'new', route: { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: 'fe80::1', priority: 0, protocol: 3 } },
      ],
      skipped: [
        { messageType: 'NEWADDR', ifindex: 5, error: 'Invalid attribute length (64)', defaultRoute: false },
        { messageType: 'NEWNEIGH', ifindex: null, error: 'a neighbour message of 6 bytes, shorter than its fixed header (12)', defaultRoute: false },
        { messageType: 'NEWLINK', ifindex: 3, error: 'IFLA_GROUP: Unexpected length (got 2, expected 4)', defaultRoute: false },
      ],
    });
  });

  it('says of a route it cannot read whether its header makes it an IPv4 main-table default route', () => {
    /** An rtmsg (family, dst_len, src_len, tos, table, protocol, scope, type, flags), RTA_TABLE, then `rest`. */
    const route = (dstLength: number, table: number, type: number, rest: Buffer): Buffer =>
      Buffer.concat([Buffer.from([2, dstLength, 0, 0, table, 3, 0, type]), u32(0), attribute(15, u32(table)), rest]);
    const shortOif = attribute(4, u16(2));
    // An attribute that claims 64 bytes where 4 are left: the table cannot be read.
    const unsplittable = Buffer.concat([u16(64), u16(4)]);
    const { events, skipped } = decodeDumpEntries([
      entry(rt.MessageType.NEWROUTE, route(0, 254, 1, shortOif)),
      // Not a default, another table's: none is the planner's business.
      entry(rt.MessageType.NEWROUTE, route(24, 254, 1, shortOif)),
      entry(rt.MessageType.NEWROUTE, route(0, 100, 1, unsplittable)),
      // Another table's, not unicast (unreachable): ignored, whatever their attributes.
      entry(rt.MessageType.NEWROUTE, route(0, 100, 1, shortOif)),
      entry(rt.MessageType.NEWROUTE, route(0, 254, 7, unsplittable)),
    ]);
    expect(events).toEqual([]);
    expect(skipped.map((one) => [one.error, one.defaultRoute])).toEqual([
      ['RTA_OIF: Unexpected length (got 2, expected 4)', true],
      ['RTA_OIF: Unexpected length (got 2, expected 4)', false],
      ['Invalid attribute length (64)', false],
    ]);
  });
});

describe("the marks of what is configured (client mode's, see CLIENT_MARK)", () => {
  const payload = (format: (out: AttrStream) => void): Buffer => {
    const out = new AttrStream();
    format(out);
    return Buffer.concat(out.bufs);
  };
  const address = (proto: number | null): Buffer =>
    payload((out) => {
      rt.formatAddressMessage({ kind: 'address', data: { family: 2, prefixlen: 32, index: 3 }, attrs: { local: Buffer.from([100, 64, 0, 5]), label: 'eth0' } }, out);
      // IFA_PROTO (11), a u8 the `netlink` package neither parses nor formats; then IFA_FLAGS after it.
      if (proto !== null) out.push(11, Buffer.from([proto]));
      out.push(8, u32(0x80));
    });

  it("reads an address's IFA_PROTO, which the netlink package drops, and 0 where there is none", () => {
    expect(decodeNotification(rt.MessageType.NEWADDR, address(236))).toEqual({ kind: 'address', op: 'new', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 236 } });
    expect(decodeNotification(rt.MessageType.DELADDR, address(null))).toEqual({ kind: 'address', op: 'del', address: { ifindex: 3, ip: '100.64.0.5', prefixLength: 32, proto: 0 } });
  });

  it("reads a route's protocol as a number, whether the netlink package names it or not", () => {
    const route = (protocol: number): Buffer =>
      payload((out) => rt.formatRouteMessage({ kind: 'route', data: { family: 2, dstLen: 0, table: 254, protocol, type: 'UNICAST' }, attrs: { oif: 3, gateway: Buffer.from([169, 254, 0, 1]) } }, out));
    for (const protocol of [3, 236, 0]) {
      expect(decodeNotification(rt.MessageType.NEWROUTE, route(protocol))).toEqual({
        kind: 'route',
        op: 'new',
        route: { dst: '0.0.0.0', dstLength: 0, oif: 3, gateway: '169.254.0.1', priority: 0, protocol },
      });
    }
  });
});
