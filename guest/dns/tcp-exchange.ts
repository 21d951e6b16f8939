import { connect, type Socket } from 'node:net';
import { answersQuestion, readId } from './header.js';
import { FrameReader, frame } from './tcp-frames.js';
import type { Upstream } from './upstream.js';

/**
 * One query over a fresh TCP connection to `upstream`, resolving with the first response that
 * answers it, or undefined on any failure (refused, reset, timeout, bad answer). The connection
 * is ours alone, so the client's id cannot clash with anyone's and is kept. `sockets` tracks
 * open connections so the forwarder can destroy them on close. `open`: a connection made some
 * other way (through a link, say), written to at once; it throws when it cannot be made.
 */
export function exchangeOverTcp(
  upstream: Upstream,
  query: Buffer,
  questionEnd: number,
  timeoutMs: number,
  sockets: Set<Socket>,
  open?: () => Socket,
): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const question = query.subarray(12, questionEnd);
    const reader = new FrameReader();
    let settled = false;
    let socket: Socket;
    try {
      socket = open?.() ?? connect({ host: upstream.address, port: upstream.port, family: upstream.family, noDelay: true });
    } catch {
      resolve(undefined);
      return;
    }
    sockets.add(socket);
    const finish = (response: Buffer | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sockets.delete(socket);
      socket.destroy();
      resolve(response);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    socket.on('error', () => finish(undefined));
    socket.on('close', () => finish(undefined));
    if (open === undefined) socket.on('connect', () => socket.write(frame(query)));
    else socket.write(frame(query));
    socket.on('data', (chunk: Buffer) => {
      const { frames, error } = reader.push(chunk);
      for (const response of frames) {
        if (readId(response) === readId(query) && answersQuestion(response, question)) return finish(response);
      }
      if (error !== undefined) finish(undefined);
    });
  });
}
