import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameReader, frame } from '../../../guest/dns/tcp-frames.js';

describe('DNS over TCP framing', () => {
  it('gets back every framed message however the stream is cut into chunks', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 1, maxLength: 20 }),
        (messages, cuts) => {
          const stream = Buffer.concat(messages.map((m) => frame(m)));
          const reader = new FrameReader();
          const got: Buffer[] = [];
          let offset = 0;
          for (let i = 0; offset < stream.length; i++) {
            const size = cuts[i % cuts.length] ?? 1;
            const result = reader.push(stream.subarray(offset, offset + size));
            expect(result.error).toBeUndefined();
            got.push(...result.frames);
            offset += size;
          }
          expect(got).toEqual(messages.map((m) => Buffer.from(m)));
          expect(reader.bufferedBytes).toBe(0);
        },
      ),
    );
  });

  it('buffers at most one incomplete frame and reports zero-length frames', () => {
    const reader = new FrameReader();
    expect(reader.push(Buffer.from([0xff, 0xff, 1, 2, 3])).frames).toEqual([]);
    expect(reader.bufferedBytes).toBe(5);
    expect(new FrameReader().push(Buffer.from([0, 0, 0, 1, 9])).error).toBe('empty-frame');
  });
});
