import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { DhcpError } from '../../../guest/dhcp/dhcp-error.js';
import { type DhcpPacket, encodeDhcpPacket, MAX_MESSAGE_LENGTH, OPTIONS_OFFSET, parseDhcpPacket } from '../../../guest/dhcp/dhcp-packet.js';
import { encodedOptionsLength } from '../../../guest/dhcp/dhcp-options.js';
import { packetArb } from './dhcp-arbitraries.js';

function basePacket(options: Map<number, Uint8Array>): DhcpPacket {
  return {
    op: 1, htype: 1, hlen: 6, hops: 0, xid: 0x12345678, secs: 3, flags: 0x8000,
    ciaddr: '0.0.0.0', yiaddr: '0.0.0.0', siaddr: '0.0.0.0', giaddr: '0.0.0.0',
    chaddr: Uint8Array.from([0x0a, 0xb3, 0xec, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    sname: new Uint8Array(64), file: new Uint8Array(128), options,
  };
}

/** A message with the given option area bytes after the cookie. */
function withOptionBytes(bytes: number[], fill?: { sname?: number[]; file?: number[] }): Uint8Array {
  const message = new Uint8Array(OPTIONS_OFFSET + bytes.length);
  message[0] = 1;
  message.set([99, 130, 83, 99], 236);
  message.set(bytes, OPTIONS_OFFSET);
  if (fill?.sname) message.set(fill.sname, 44);
  if (fill?.file) message.set(fill.file, 108);
  return message;
}

describe('parseDhcpPacket', () => {
  it('throws nothing but DhcpError, whatever the bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500, size: 'max' }), (bytes) => {
        try {
          parseDhcpPacket(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(DhcpError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('throws nothing but DhcpError for mutated valid messages (past the cookie check)', () => {
    fc.assert(
      fc.property(packetArb(true), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 20 }), fc.nat(), (packet, edits, cut) => {
        const bytes = encodeDhcpPacket(packet, MAX_MESSAGE_LENGTH);
        for (const [at, value] of edits) bytes[OPTIONS_OFFSET + (at % Math.max(1, bytes.length - OPTIONS_OFFSET))] = value;
        try {
          parseDhcpPacket(bytes.subarray(0, OPTIONS_OFFSET + (cut % (bytes.length - OPTIONS_OFFSET + 1))));
        } catch (error) {
          expect(error).toBeInstanceOf(DhcpError);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('refuses short messages, a missing cookie, truncated options and bad overload values by kind', () => {
    const kind = (bytes: Uint8Array): string => {
      try {
        parseDhcpPacket(bytes);
        return 'parsed';
      } catch (error) {
        return error instanceof DhcpError ? error.kind : 'other';
      }
    };
    expect(kind(new Uint8Array(239))).toBe('too-short');
    expect(kind(new Uint8Array(300))).toBe('bad-cookie');
    expect(kind(withOptionBytes([53, 4, 1]))).toBe('option-truncated');
    expect(kind(withOptionBytes([53]))).toBe('option-truncated');
    expect(kind(withOptionBytes([52, 1, 4, 255]))).toBe('bad-overload');
    expect(kind(withOptionBytes([52, 1, 1, 255], { file: [52, 1, 1, 255] }))).toBe('bad-overload');
    expect(kind(withOptionBytes([53, 1, 1]))).toBe('parsed'); // End missing is tolerated
  });

  it('skips pad, stops at end and concatenates repeated options in order (RFC 3396)', () => {
    const packet = parseDhcpPacket(withOptionBytes([0, 0, 12, 2, 65, 66, 0, 12, 1, 67, 255, 12, 1, 68]));
    expect(packet.options).toEqual(new Map([[12, Uint8Array.from([65, 66, 67])]]));
  });

  it('reads options carried in file, then sname, when option 52 says so', () => {
    const packet = parseDhcpPacket(
      withOptionBytes([53, 1, 1, 52, 1, 3, 12, 1, 65, 255], { file: [12, 1, 66, 255], sname: [12, 1, 67, 61, 1, 9, 255] }),
    );
    expect(packet.options.get(12)).toEqual(Uint8Array.from([65, 66, 67]));
    expect(packet.options.get(61)).toEqual(Uint8Array.of(9));
    expect(packet.options.has(52)).toBe(false);
    expect(packet.sname).toEqual(new Uint8Array(64));
    expect(packet.file).toEqual(new Uint8Array(128));
  });
});

describe('encodeDhcpPacket', () => {
  it('round-trips through parse, sname and file included', () => {
    fc.assert(
      fc.property(packetArb(true), (packet) => {
        expect(parseDhcpPacket(encodeDhcpPacket(packet, MAX_MESSAGE_LENGTH))).toEqual(packet);
      }),
      { numRuns: 300 },
    );
  });

  it('overloads file and sname when the options outgrow the limit, and still round-trips', () => {
    fc.assert(
      fc.property(packetArb(false), fc.integer({ min: 300, max: 1500 }), (packet, limit) => {
        let bytes: Uint8Array;
        try {
          bytes = encodeDhcpPacket(packet, limit);
        } catch (error) {
          // Only when even 190 more bytes (file and sname, less their End) cannot hold them; at
          // each of the two area boundaries up to 2 bytes can go (the header of a value's
          // continuation there, or a tail too short for another option's header and a byte).
          expect(error).toMatchObject({ kind: 'too-long' });
          expect(OPTIONS_OFFSET + encodedOptionsLength(packet.options) + 1).toBeGreaterThan(limit - 3 - 1 + 128 + 64 - 2 - 2 * 2);
          return;
        }
        expect(bytes.length).toBeLessThanOrEqual(Math.max(limit, 300));
        expect(parseDhcpPacket(bytes)).toEqual(packet);
      }),
      { numRuns: 500 },
    );
  });

  it('splits a value longer than 255 bytes into consecutive instances (RFC 3396)', () => {
    const long = Uint8Array.from({ length: 600 }, (_, index) => index & 0xff);
    const bytes = encodeDhcpPacket(basePacket(new Map([[43, long]])), MAX_MESSAGE_LENGTH);
    expect([bytes[OPTIONS_OFFSET], bytes[OPTIONS_OFFSET + 1]]).toEqual([43, 255]);
    expect([bytes[OPTIONS_OFFSET + 257], bytes[OPTIONS_OFFSET + 258]]).toEqual([43, 255]);
    expect([bytes[OPTIONS_OFFSET + 514], bytes[OPTIONS_OFFSET + 515]]).toEqual([43, 90]);
    expect(parseDhcpPacket(bytes).options.get(43)).toEqual(long);
  });

  it('pads to the 300-byte BOOTP minimum and ends the options with End', () => {
    const bytes = encodeDhcpPacket(basePacket(new Map([[53, Uint8Array.of(2)]])));
    expect(bytes.length).toBe(300);
    expect([...bytes.subarray(OPTIONS_OFFSET, OPTIONS_OFFSET + 4)]).toEqual([53, 1, 2, 255]);
  });

  it('refuses options that do not fit when sname/file are taken, and framing codes as values', () => {
    const named = { ...basePacket(new Map([[43, new Uint8Array(400)]])), file: new Uint8Array(128).fill(1) };
    expect(() => encodeDhcpPacket(named, 548)).toThrow(expect.objectContaining({ kind: 'too-long' }));
    expect(() => encodeDhcpPacket(basePacket(new Map([[52, Uint8Array.of(1)]])))).toThrow(expect.objectContaining({ kind: 'bad-option' }));
  });

  it('parses a largest message cut into tiny options without an object per option instance', () => {
    // A hostile client's 64 KiB of two- and three-byte options (RFC 3396 says to join them): a
    // view per instance made such a message cost 8 ms to parse, 30 times one of long options.
    const message = (option: (code: number) => number[]): { bytes: Uint8Array; instances: number } => {
      const bytes: number[] = [];
      let instances = 0;
      for (let code = 1; bytes.length < 64_000; code = (code % 250) + 1) {
        if (code === 52) continue;
        bytes.push(...option(code));
        instances += 1;
      }
      const payload = new Uint8Array(OPTIONS_OFFSET + bytes.length + 1);
      payload[0] = 1;
      payload.set([99, 130, 83, 99], 236);
      payload.set(bytes, OPTIONS_OFFSET);
      payload[payload.length - 1] = 255;
      return { bytes: payload, instances };
    };
    for (const { bytes, instances } of [message(() => [1, 0]), message((code) => [code, 1, code])]) {
      const views = vi.spyOn(Uint8Array.prototype, 'subarray');
      const copies = vi.spyOn(Uint8Array.prototype, 'slice');
      let parsed: DhcpPacket;
      let made: number;
      try {
        parsed = parseDhcpPacket(bytes);
      } finally {
        made = views.mock.calls.length + copies.mock.calls.length;
        views.mockRestore();
        copies.mockRestore();
      }
      const values = [...parsed.options.values()].reduce((sum, value) => sum + value.length, 0);
      expect(values).toBe(bytes.length - OPTIONS_OFFSET - 1 - 2 * instances);
      // The fixed fields and one value per code (at most 254), not one per instance.
      expect(made).toBeLessThan(300);
    }
  });
});
