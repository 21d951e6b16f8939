// DNS over TCP frames each message with a 2-byte length (RFC 1035 4.2.2, RFC 7766).
import { MAX_MESSAGE_LENGTH } from './header.js';

export type FrameResult = { readonly frames: Buffer[]; readonly error?: 'empty-frame' };

/** What next() finds: a complete frame, a zero-length one (a protocol error), or nothing yet. */
export type NextFrame = Buffer | 'empty-frame' | undefined;

/**
 * Splits a byte stream into DNS messages. Holds at most one incomplete frame (<= 65,537 bytes);
 * push() hands out every complete frame of a chunk at once. A zero-length frame is a protocol
 * error. feed() and next() cut frames one at a time, for a reader that takes only as many as it
 * can serve now: 64 KiB of a client's stream hold 21,845 frames.
 *
 * Each frame's buffer is allocated once its length is known and filled as bytes arrive, so every
 * byte is copied once however the stream is cut: a client trickling a 64 KiB frame a byte per
 * segment must not make us copy what we hold again at each byte (2 GB per frame).
 */
export class FrameReader {
  /** The length prefix as far as it has arrived: 0, 1 or 2 bytes of it. */
  #prefixBytes = 0;
  #prefix = 0;
  /** The frame being filled, once its length is known. */
  #frame: Buffer | undefined;
  #filled = 0;
  /** The chunk fed last, cut up to #offset so far. */
  #chunk: Buffer | undefined;
  #offset = 0;

  /** Bytes of frames not complete yet (not counting a fed chunk next() has not reached). */
  get bufferedBytes(): number {
    return this.#frame === undefined ? this.#prefixBytes : 2 + this.#filled;
  }

  /** Whether a fed chunk still has bytes next() has not read. */
  get holding(): boolean {
    return this.#chunk !== undefined;
  }

  /** Hand over the next bytes of the stream, for next() to cut. */
  feed(chunk: Buffer): void {
    const rest = this.#chunk?.subarray(this.#offset);
    this.#chunk = rest === undefined ? chunk : Buffer.concat([rest, chunk]);
    this.#offset = 0;
    if (this.#chunk.length === 0) this.#chunk = undefined;
  }

  /** The next complete frame from the bytes fed so far, reading no further than its end. */
  next(): NextFrame {
    const chunk = this.#chunk;
    if (chunk === undefined) return undefined;
    let offset = this.#offset;
    let found: NextFrame;
    while (offset < chunk.length && found === undefined) {
      const current = this.#frame;
      if (current === undefined) {
        this.#prefix = (this.#prefix << 8) | (chunk[offset] ?? 0);
        this.#prefixBytes += 1;
        offset += 1;
        if (this.#prefixBytes < 2) continue;
        const length = this.#prefix;
        this.#prefix = 0;
        this.#prefixBytes = 0;
        if (length === 0) {
          found = 'empty-frame';
          break;
        }
        // A fresh buffer: the forwarder rewrites ids in place and must not touch the stream's.
        this.#frame = Buffer.alloc(length);
        this.#filled = 0;
        continue;
      }
      const take = Math.min(current.length - this.#filled, chunk.length - offset);
      chunk.copy(current, this.#filled, offset, offset + take);
      this.#filled += take;
      offset += take;
      if (this.#filled === current.length) {
        found = current;
        this.#frame = undefined;
        this.#filled = 0;
      }
    }
    this.#offset = offset;
    if (offset >= chunk.length) this.#chunk = undefined;
    return found;
  }

  push(chunk: Buffer): FrameResult {
    this.feed(chunk);
    const frames: Buffer[] = [];
    for (;;) {
      const next = this.next();
      if (next === undefined) return { frames };
      if (next === 'empty-frame') {
        // What followed the error is not read.
        this.#chunk = undefined;
        return { frames, error: next };
      }
      frames.push(next);
    }
  }
}

export function frame(message: Uint8Array): Buffer {
  const length = Math.min(message.length, MAX_MESSAGE_LENGTH);
  const framed = Buffer.alloc(2 + length);
  framed.writeUInt16BE(length, 0);
  framed.set(message.subarray(0, length), 2);
  return framed;
}
