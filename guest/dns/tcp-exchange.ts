import { connect, type Socket } from 'node:net';
import { answersQuestion, readId } from './header.js';
import { FrameReader, frame } from './tcp-frames.js';
import type { Upstream } from './upstream.js';

/**
 * End a TCP connection with a reset (SO_LINGER 0). A connection to an upstream, once its answer is
 * read or the exchange failed: nothing is left to send or to read. (A client's connection that
 * the forwarder closes: see closeClientConnection in forwarder.ts.) A close would leave the provider a socket
 * in TIME_WAIT for 60 s (one per TCP query: a few clients at the forwarder's per-client rate,
 * 200 a second, use up the ~28,000 local ports toward one upstream) and a conntrack entry in TIME_WAIT for
 * 120 s that no cap counts (a small provider's whole table in seconds); after a reset there is no
 * socket left and the entry is in CLOSE (10 s). A socket still connecting has no connection to
 * reset (Node's resetAndDestroy would wait for one): destroyed.
 */
export function resetConnection(socket: Socket): void {
  if (socket.destroyed) return;
  if (socket.connecting) {
    socket.destroy();
    return;
  }
  try {
    socket.resetAndDestroy();
  } catch {
    // Not a TCP handle (it throws ERR_INVALID_HANDLE_TYPE): nothing to reset.
    socket.destroy();
  }
}

/**
 * Why an exchange over TCP brought no answer: 'socket-error', the connection could not be opened
 * (`open` threw, or Node's connect found no descriptor: see `unopened`) or Node reported an error
 * on it other than the upstream's reset (refused, unreachable), the trouble of a socket, which
 * the forwarder counts as a send error, as it does for UDP; 'timed-out', no whole answer within
 * the time; 'upstream-ended', the upstream ended the connection it took before a whole answer
 * (its FIN or its reset, with no frame or one cut short) or sent an empty frame, a protocol
 * error: it will not answer, and waiting out the time would only delay the next upstream;
 * 'closed', the forwarder closed the connection itself (it is closing); 'abandoned', the client
 * that asked is gone.
 */
export type TcpExchangeFailure = 'socket-error' | 'timed-out' | 'upstream-ended' | 'closed' | 'abandoned';

/**
 * The errors of a connection the upstream reset once it was made: ECONNRESET where the reset
 * comes in, EPIPE where our write finds it. A reset while connecting is ECONNREFUSED (a socket's
 * error: nothing listens there).
 */
const RESET_BY_UPSTREAM: ReadonlySet<string> = new Set(['ECONNRESET', 'EPIPE']);

/**
 * The errors of Node's own connection that say it could not be opened here, not that the upstream
 * failed it: the agent (EMFILE) or the system (ENFILE) out of file descriptors.
 */
const NOT_OPENED: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE']);

/**
 * One query over a fresh TCP connection to `upstream`, resolving with the first response that
 * answers it, or with why there is none (TcpExchangeFailure). The connection is ours alone, so
 * the client's id cannot clash with anyone's and is kept; it ends with a reset (resetConnection)
 * in every case. `sockets` tracks open connections so the forwarder
 * can end them on close. `open`: a connection made some other way (through a link, say), written
 * to at once; it throws when it cannot be made. `abandoned`: once aborted (the client that asked
 * is gone, the query settled, or its connection wanted for another: each exchange has its own),
 * the exchange ends at once, as at its timeout, and none starts. `unopened`: told why
 * the connection could not be opened, where `open` threw or Node's own connection failed for
 * want of descriptors (NOT_OPENED: an 'error' event, as Node's connect never throws for it).
 * `opened`: called once the connection is opened, as it is (`open` returned it, or Node's own
 * connected), not when the exchange ends: one opened before others failed to open, and ending
 * after them, is no sign that they open again.
 */
export function exchangeOverTcp(
  upstream: Pick<Upstream, 'address' | 'port' | 'family'>,
  query: Buffer,
  questionEnd: number,
  timeoutMs: number,
  sockets: Set<Socket>,
  open?: () => Socket,
  abandoned?: AbortSignal,
  unopened?: (error: unknown) => void,
  opened?: () => void,
): Promise<Buffer | TcpExchangeFailure> {
  return new Promise((resolve) => {
    if (abandoned?.aborted === true) {
      resolve('abandoned');
      return;
    }
    const question = query.subarray(12, questionEnd);
    const reader = new FrameReader();
    let settled = false;
    let socket: Socket;
    try {
      // allowHalfOpen: the upstream's FIN does not make Node shut our side down (a FIN of ours
      // would leave the conntrack entry in TIME_WAIT, and a socket shut down cannot be reset:
      // libuv refuses, EINVAL); 'end' below resets.
      socket = open?.() ?? connect({ host: upstream.address, port: upstream.port, family: upstream.family, noDelay: true, allowHalfOpen: true });
    } catch (error) {
      unopened?.(error);
      resolve('socket-error');
      return;
    }
    if (open !== undefined) opened?.();
    sockets.add(socket);
    const finish = (response: Buffer | TcpExchangeFailure): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      abandoned?.removeEventListener('abort', onAbandoned);
      sockets.delete(socket);
      resetConnection(socket);
      resolve(response);
    };
    const onAbandoned = (): void => finish('abandoned');
    const timer = setTimeout(() => finish('timed-out'), timeoutMs);
    abandoned?.addEventListener('abort', onAbandoned, { once: true });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (open === undefined && NOT_OPENED.has(error.code ?? '') && !settled) unopened?.(error);
      finish(RESET_BY_UPSTREAM.has(error.code ?? '') ? 'upstream-ended' : 'socket-error');
    });
    // Closed with neither an error nor the upstream's FIN (both come first): destroyed here, by
    // the forwarder closing.
    socket.on('close', () => finish('closed'));
    // The upstream closed before a whole answer (none, or a frame cut short). Handled at once, in
    // the 'end' event: Node shuts our side down after it (nextTick) unless allowHalfOpen (a
    // socket made by `open` may not have it), and then it could not be reset.
    socket.on('end', () => finish('upstream-ended'));
    if (open === undefined) {
      socket.on('connect', () => {
        opened?.();
        socket.write(frame(query));
      });
    }
    else socket.write(frame(query));
    socket.on('data', (chunk: Buffer) => {
      const { frames, error } = reader.push(chunk);
      for (const response of frames) {
        if (readId(response) === readId(query) && answersQuestion(response, question)) return finish(response);
      }
      if (error !== undefined) finish('upstream-ended');
    });
  });
}
