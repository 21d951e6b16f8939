// Decoding the kernel's messages into the agent's view (guest/netd/rtnetlink.ts).
import { endianness } from 'node:os';
import { AttrStream, rt } from 'netlink';
import { describe, expect, it } from 'vitest';
import { decodeDumpEntries, decodeLink, decodeNotification } from '../../../guest/netd/rtnetlink.js';

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

const message = (attrs: rt.LinkMessage['attrs']): rt.LinkMessage => ({ kind: 'link', data: { index: 5, flags: { up: true } }, attrs: { ifname: 'p5', ...attrs } });

describe('decodeLink', () => {
  it('records the device a link sits on (IFLA_LINK: a veth peer), whose link-state events the kernel takes as urgent', () => {
    expect(decodeLink(message({ link: u32(7) }))).toMatchObject({ ifindex: 5, name: 'p5', up: true, lowerIfindex: 7 });
  });

  it('records none for a device of its own: no IFLA_LINK, or one naming the link itself', () => {
    expect(decodeLink(message({}))).not.toHaveProperty('lowerIfindex');
    expect(decodeLink(message({ link: u32(5) }))).not.toHaveProperty('lowerIfindex');
    expect(decodeLink(message({ link: Buffer.alloc(2) }))).not.toHaveProperty('lowerIfindex');
  });
});

describe('decodeDumpEntries', () => {
  it("skips an entry the parser cannot read, naming the link its fixed header gives, or none where it is cut short, and reads the rest", () => {
    // An ifaddrmsg for ifindex 5, then an attribute that claims 64 bytes where 4 are left.
    const address = Buffer.concat([Buffer.from([2, 24, 0, 0]), u32(5), u16(64), u16(1)]);
    const entry = (type: number, data: Buffer): { type: number; flags: number; seq: number; port: number; data: Buffer } => ({ type, flags: 2, seq: 1, port: 0, data });
    const fine = new AttrStream();
    rt.formatLinkMessage({ kind: 'link', data: { index: 9 }, attrs: { ifname: 'p9' } }, fine);
    expect(decodeDumpEntries([entry(rt.MessageType.NEWADDR, address), entry(rt.MessageType.NEWNEIGH, Buffer.alloc(6)), entry(rt.MessageType.NEWLINK, Buffer.concat(fine.bufs))])).toEqual({
      events: [{ kind: 'link', op: 'new', link: expect.objectContaining({ ifindex: 9, name: 'p9' }) }],
      skipped: [
        { messageType: 'NEWADDR', ifindex: 5, error: 'Invalid attribute length (64)', defaultRoute: false },
        { messageType: 'NEWNEIGH', ifindex: null, error: 'Unexpected Neighbor message length (6)', defaultRoute: false },
      ],
    });
  });

  it('says of a route it cannot read whether its header makes it an IPv4 main-table default route (one via an IPv6 next hop, RFC 5549)', () => {
    /** An attribute as the kernel sends it (host order, padded to 4 bytes). */
    const attribute = (type: number, data: Buffer): Buffer => Buffer.concat([u16(4 + data.length), u16(type), data, Buffer.alloc((4 - (data.length % 4)) % 4)]);
    // RTA_VIA (18): an rtvia of family AF_INET6 (10) and 16 address bytes; the package wants 3 bytes.
    const viaIpv6 = attribute(18, Buffer.concat([u16(10), Buffer.from('fe800000000000000000000000000001', 'hex')]));
    /** An rtmsg (family, dst_len, src_len, tos, table, protocol, scope, type, flags), RTA_TABLE, RTA_OIF, RTA_VIA. */
    const route = (dstLength: number, table: number, type: number): Buffer =>
      Buffer.concat([Buffer.from([2, dstLength, 0, 0, table, 3, 0, type]), u32(0), attribute(15, u32(table)), attribute(4, u32(2)), viaIpv6]);
    const entry = (data: Buffer): { type: number; flags: number; seq: number; port: number; data: Buffer } => ({ type: rt.MessageType.NEWROUTE, flags: 2, seq: 1, port: 0, data });
    const { events, skipped } = decodeDumpEntries([
      entry(route(0, 254, 1)),
      // Not a default, another table's, not unicast (unreachable): none is the planner's business.
      entry(route(24, 254, 1)),
      entry(route(0, 100, 1)),
      entry(route(0, 254, 7)),
    ]);
    expect(events).toEqual([]);
    expect(skipped.map((one) => [one.error, one.defaultRoute])).toEqual([
      ['Unexpected length for RouteVia', true],
      ['Unexpected length for RouteVia', false],
      ['Unexpected length for RouteVia', false],
      ['Unexpected length for RouteVia', false],
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
