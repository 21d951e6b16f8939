import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
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

  it('cuts frames one at a time from what was fed, reading no further than each frame ends', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 1, maxLength: 20 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 20 }),
        (messages, cuts, takes) => {
          const stream = Buffer.concat(messages.map((m) => frame(m)));
          const reader = new FrameReader();
          const got: Buffer[] = [];
          let offset = 0;
          for (let i = 0; offset < stream.length || reader.holding; i++) {
            // A reader serves a few frames, then more bytes arrive (fed while some are held too).
            if (!reader.holding || i % 3 === 0) {
              const size = cuts[i % cuts.length] ?? 1;
              reader.feed(stream.subarray(offset, offset + size));
              offset += size;
            }
            // Once the stream is all fed, every round serves at least one.
            const served = Math.max(takes[i % takes.length] ?? 1, offset >= stream.length ? 1 : 0);
            for (let take = served; take > 0; take--) {
              const next = reader.next();
              expect(next).not.toBe('empty-frame');
              if (next === undefined || next === 'empty-frame') break;
              got.push(next);
            }
          }
          expect(got).toEqual(messages.map((m) => Buffer.from(m)));
          expect(reader.next()).toBeUndefined();
          expect(reader.bufferedBytes).toBe(0);
        },
      ),
    );
  });

  it('has cut no frame beyond the one next() returns: the rest of a chunk waits as bytes', () => {
    const reader = new FrameReader();
    reader.feed(Buffer.concat(Array.from({ length: 1000 }, () => frame(Uint8Array.of(7)))));
    expect(reader.next()).toEqual(Buffer.of(7));
    expect(reader.holding).toBe(true);
    let count = 1;
    while (reader.next() !== undefined) count += 1;
    expect(count).toBe(1000);
    expect(reader.holding).toBe(false);
  });

  it('buffers at most one incomplete frame and reports zero-length frames', () => {
    const reader = new FrameReader();
    expect(reader.push(Buffer.from([0xff, 0xff, 1, 2, 3])).frames).toEqual([]);
    expect(reader.bufferedBytes).toBe(5);
    expect(new FrameReader().push(Buffer.from([0, 0, 0, 1, 9])).error).toBe('empty-frame');
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('allocates about one frame of memory for a frame trickled in a byte at a time, not a copy per byte', () => {
    const message = new Uint8Array(65_535).fill(0x5a);
    const stream = frame(message);
    let allocated = 0;
    const count = <T extends Uint8Array>(result: T): T => {
      allocated += result.length;
      return result;
    };
    const { alloc, allocUnsafe, concat, from } = { alloc: Buffer.alloc, allocUnsafe: Buffer.allocUnsafe, concat: Buffer.concat, from: Buffer.from };
    vi.spyOn(Buffer, 'alloc').mockImplementation((...args: Parameters<typeof Buffer.alloc>) => count(alloc(...args)));
    vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((size: number) => count(allocUnsafe(size)));
    vi.spyOn(Buffer, 'concat').mockImplementation((...args: Parameters<typeof Buffer.concat>) => count(concat(...args)));
    vi.spyOn(Buffer, 'from').mockImplementation(((...args: Parameters<typeof Buffer.from>) => count((from as (...a: unknown[]) => Buffer)(...args))) as typeof Buffer.from);
    const chunks = Array.from({ length: stream.length }, (_, index) => stream.subarray(index, index + 1));
    const reader = new FrameReader();
    const got: Buffer[] = [];
    for (const chunk of chunks) got.push(...reader.push(chunk).frames);
    vi.restoreAllMocks();
    expect(got).toEqual([Buffer.from(message)]);
    expect(allocated).toBeLessThanOrEqual(2 * stream.length);
  });
});
