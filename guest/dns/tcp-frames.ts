// DNS over TCP frames each message with a 2-byte length (RFC 1035 4.2.2, RFC 7766).
import { MAX_MESSAGE_LENGTH } from './header.js';

export type FrameResult = { readonly frames: Buffer[]; readonly error?: 'empty-frame' };

/**
 * Splits a byte stream into DNS messages. Holds at most one incomplete frame (<= 65,537 bytes);
 * complete frames are handed out at once. A zero-length frame is a protocol error.
 */
export class FrameReader {
  #buffered: Buffer = Buffer.alloc(0);

  get bufferedBytes(): number {
    return this.#buffered.length;
  }

  push(chunk: Buffer): FrameResult {
    let data = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    const frames: Buffer[] = [];
    while (data.length >= 2) {
      const length = data.readUInt16BE(0);
      if (length === 0) {
        this.#buffered = Buffer.alloc(0);
        return { frames, error: 'empty-frame' };
      }
      if (data.length < 2 + length) break;
      // Copy: the forwarder rewrites ids in place and must not touch the stream's buffer.
      frames.push(Buffer.from(data.subarray(2, 2 + length)));
      data = data.subarray(2 + length);
    }
    // Keep a copy, never a view into a large chunk that would stay alive with it.
    this.#buffered = data.length === 0 ? Buffer.alloc(0) : Buffer.from(data);
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
