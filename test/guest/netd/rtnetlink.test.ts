// Decoding the kernel's messages into the agent's view (guest/netd/rtnetlink.ts).
import { endianness } from 'node:os';
import { AttrStream, rt } from 'netlink';
import { describe, expect, it } from 'vitest';
import { decodeDumpEntries, decodeLink } from '../../../guest/netd/rtnetlink.js';

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
        { messageType: 'NEWADDR', ifindex: 5, error: 'Invalid attribute length (64)' },
        { messageType: 'NEWNEIGH', ifindex: null, error: 'Unexpected Neighbor message length (6)' },
      ],
    });
  });
});
