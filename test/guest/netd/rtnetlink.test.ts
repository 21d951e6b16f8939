// Decoding the kernel's link messages into the agent's view (guest/netd/rtnetlink.ts).
import { endianness } from 'node:os';
import type { rt } from 'netlink';
import { describe, expect, it } from 'vitest';
import { decodeLink } from '../../../guest/netd/rtnetlink.js';

/** A u32 attribute as the kernel sends it: host order. */
const u32 = (value: number): Buffer => {
  const bytes = Buffer.alloc(4);
  if (endianness() === 'LE') bytes.writeUInt32LE(value);
  else bytes.writeUInt32BE(value);
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
