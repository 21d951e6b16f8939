// DNS over TCP frames each message with a 2-byte length (RFC 1035 4.2.2, RFC 7766).
import { MAX_MESSAGE_LENGTH } from './header.js';

export type FrameResult = { readonly frames: Buffer[]; readonly error?: 'empty-frame' };

/**
 * Splits a byte stream into DNS messages. Holds at most one incomplete frame (<= 65,537 bytes);
 * complete frames are handed out at once. A zero-length frame is a protocol error.
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

  get bufferedBytes(): number {
    return this.#frame === undefined ? this.#prefixBytes : 2 + this.#filled;
  }

  push(chunk: Buffer): FrameResult {
    const frames: Buffer[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      const current = this.#frame;
      if (current === undefined) {
        this.#prefix = (this.#prefix << 8) | (chunk[offset] ?? 0);
        this.#prefixBytes += 1;
        offset += 1;
        if (this.#prefixBytes < 2) continue;
        const length = this.#prefix;
        this.#prefix = 0;
        this.#prefixBytes = 0;
        if (length === 0) return { frames, error: 'empty-frame' };
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
        frames.push(current);
        this.#frame = undefined;
        this.#filled = 0;
      }
    }
    return { frames };
  }
}

export function frame(message: Uint8Array): Buffer {
  const length = Math.min(message.length, MAX_MESSAGE_LENGTH);
  const framed = Buffer.alloc(2 + length);
  framed.writeUInt16BE(length, 0);
  framed.set(message.subarray(0, length), 2);
  return framed;
}
