// What the notification socket's wrapper (guest/netd/rtnl-events.ts) makes of what its addon read:
// a datagram the `netlink` package cannot split into messages is said as such (the agent logs it
// as undecodable, naming the cause), not as an overflow. The kernel sends no such datagram, so
// the wrapper's delivery is fed one directly. And how setting NETLINK_NO_ENOBUFS on the request
// socket fails.
import { constants, endianness } from 'node:os';
import { describe, expect, it } from 'vitest';
import { unsplittableLoss } from '../../../guest/netd/rtnetlink.js';
import { type NotificationHandlers, deliverDatagram } from '../../../guest/netd/rtnl-events.js';

/** Handlers that record what they are told, in order. */
function recorder(): NotificationHandlers & { told: string[] } {
  const told: string[] = [];
  return {
    told,
    messages: (messages) => void told.push(`messages: ${messages.map((message) => message.type).join(',')}`),
    overflow: () => void told.push('overflow'),
    unsplittable: (error) => void told.push(`unsplittable: ${error}`),
    failed: (code) => void told.push(`failed: ${code}`),
  };
}

/** A netlink header (16 bytes, host order) of `type` saying the message is `length` bytes long. */
function header(length: number, type: number): Buffer {
  const bytes = Buffer.alloc(16);
  if (endianness() === 'LE') {
    bytes.writeUInt32LE(length, 0);
    bytes.writeUInt16LE(type, 4);
  } else {
    bytes.writeUInt32BE(length, 0);
    bytes.writeUInt16BE(type, 4);
  }
  return bytes;
}

describe('deliverDatagram', () => {
  it('splits a datagram into its messages', () => {
    const handlers = recorder();
    deliverDatagram(handlers, 0, Buffer.concat([header(20, 16), Buffer.alloc(4), header(16, 20)]));
    expect(handlers.told).toEqual(['messages: 16,20']);
  });

  it('says a datagram whose message claims more bytes than it holds as unsplittable, with the parser\'s error, not as an overflow', () => {
    const handlers = recorder();
    deliverDatagram(handlers, 0, Buffer.concat([header(16, 16), header(64, 16)]));
    expect(handlers.told).toEqual(['unsplittable: Invalid header length (64)']);
  });

  it('says a datagram shorter than a header as unsplittable too', () => {
    const handlers = recorder();
    deliverDatagram(handlers, 0, Buffer.alloc(8));
    expect(handlers.told).toEqual([expect.stringMatching(/^unsplittable: ./)]);
  });

  it('still says an overflow (-ENOBUFS) as one, and another errno as a failure', () => {
    const handlers = recorder();
    deliverDatagram(handlers, -constants.errno.ENOBUFS, undefined);
    deliverDatagram(handlers, -constants.errno.EBADF, undefined);
    expect(handlers.told).toEqual(['overflow', 'failed: EBADF']);
  });
});

describe('unsplittableLoss', () => {
  it('is an undecodable loss naming an unsplittable datagram and the parser\'s error, in brief', () => {
    expect(unsplittableLoss('Invalid header length (64)')).toEqual({ kind: 'undecodable', messageType: 'unsplittable datagram', error: 'Invalid header length (64)' });
    const long = unsplittableLoss(`${'x'.repeat(300)}\nsecond line`);
    expect(long.kind === 'undecodable' ? long.error : '').toBe(`${'x'.repeat(200)}...`);
  });
});
