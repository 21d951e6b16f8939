// The agent's control socket: one JSON request per line, one JSON reply line, then close.
import { chmodSync, lstatSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { dirname } from 'node:path';
import { UNIX_SOCKET_PATH_MAX } from '../../shared/unix-socket-path.js';
import { NetdError } from './netd-error.js';

export const DEFAULT_CONTROL_SOCKET = '/run/spectrum-netd/control.sock';
const MAX_REQUEST_BYTES = 4096;
const CLIENT_TIMEOUT_MS = 5_000;
/** A connection that sends no request line in this time is closed: it would hold a descriptor forever. */
const SERVER_IDLE_MS = 10_000;
/** `status` is for an operator and a supervisor: more at once is a runaway script. */
const MAX_CONNECTIONS = 64;

/** A path a Unix socket can be bound to and reached at, or a NetdError saying why not. */
export function checkControlSocketPath(path: string): string {
  if (path === '' || path.includes('\0') || Buffer.byteLength(path) > UNIX_SOCKET_PATH_MAX) {
    throw new NetdError(
      'control-socket-path',
      `control socket path ${JSON.stringify(path.slice(0, 64))}${path.length > 64 ? '...' : ''} is not usable: give a path of 1 to ${UNIX_SOCKET_PATH_MAX} bytes`,
    );
  }
  return path;
}

/** A stale socket left by a killed agent may be replaced; any other file is someone else's. */
function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // none there
  }
  if (!isSocket) {
    throw new NetdError('control-socket', `${path} exists and is not a socket: give --control-socket a path of its own`);
  }
  try {
    unlinkSync(path);
  } catch (error) {
    throw new NetdError('control-socket', `cannot remove the stale socket ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

export type ControlHandler = (request: unknown) => Promise<unknown>;

function probe(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Owns the listening socket and its file; close() removes both. */
export class ControlServer {
  private constructor(
    readonly path: string,
    readonly server: Server,
  ) {}

  static async listen(path: string, handler: ControlHandler, options: { idleMs?: number } = {}): Promise<ControlServer> {
    checkControlSocketPath(path);
    // Only the socket's own folder (/run/spectrum-netd on a fresh boot), not every folder above it:
    // a mistyped --control-socket must not leave a tree of folders behind.
    try {
      mkdirSync(dirname(path), { mode: 0o755 });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        throw new NetdError('control-socket', `cannot create the folder of ${path}: ${dirname(dirname(path))} does not exist; check --control-socket`);
      }
      if (code !== 'EEXIST') throw new NetdError('control-socket', `cannot create the folder of ${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (await probe(path)) {
      // Only a connect: what listens may be no agent (a socket of something else's, a mistyped path).
      throw new NetdError('already-running', `a process is listening on ${path} (another spectrum-netd?): stop it, or give --control-socket another path`);
    }
    removeStaleSocket(path);
    const idleMs = options.idleMs ?? SERVER_IDLE_MS;
    const server = createServer((socket) => serve(socket, handler, idleMs));
    server.maxConnections = MAX_CONNECTIONS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new NetdError('control-socket', `cannot listen on ${path}: ${error.message}`)));
      server.listen(path, () => resolve());
    });
    // Once listening, a failed accept (out of descriptors) must not end the agent.
    server.on('error', () => undefined);
    const control = new ControlServer(path, server);
    try {
      chmodSync(path, 0o600);
    } catch (error) {
      control.close();
      throw new NetdError('control-socket', `cannot restrict ${path} to its owner: ${error instanceof Error ? error.message : String(error)}`);
    }
    return control;
  }

  close(): void {
    this.server.close();
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}

function serve(socket: Socket, handler: ControlHandler, idleMs: number): void {
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('error', () => socket.destroy());
  // Until the reply is sent; a reader that never reads it is cut off as well.
  socket.setTimeout(idleMs, () => socket.destroy());
  const onData = (chunk: string): void => {
    buffer += chunk;
    const newline = buffer.indexOf('\n');
    if (newline < 0 && buffer.length <= MAX_REQUEST_BYTES) return;
    // One request per connection: whatever follows it is not read, and runs nothing.
    socket.off('data', onData);
    socket.pause();
    if (newline < 0 || newline > MAX_REQUEST_BYTES) {
      socket.end(`${JSON.stringify({ error: 'request too long' })}\n`);
      return;
    }
    let request: unknown;
    try {
      request = JSON.parse(buffer.slice(0, newline));
    } catch {
      socket.end(`${JSON.stringify({ error: 'request is not JSON' })}\n`);
      return;
    }
    handler(request).then(
      (reply) => socket.end(`${JSON.stringify(reply)}\n`),
      (error: unknown) => socket.end(`${JSON.stringify({ error: error instanceof Error ? error.message : String(error) })}\n`),
    );
  };
  socket.on('data', onData);
}

/**
 * The longest reply read. The largest real one is a status, which grows with the clients served:
 * at most 65,534 (one per client id), each a link row, a firewall model entry, a DHCP lease and an
 * IP owing a conntrack purge, under 1 KB with every text at its longest (control-socket.test.ts
 * works it out): ~64 MB in all, and what --allow-pair adds is bounded by the command line. Twice
 * that still keeps the client well below V8's longest string (~512 MiB), which a peer that never
 * stops sending (no spectrum-netd: another service on that path) made it reach, a RangeError.
 */
export const MAX_REPLY_BYTES = 128 * 1024 * 1024;

/** The one line for a reply that no spectrum-netd sends. */
function notOurs(path: string, why: string): NetdError {
  return new NetdError('control-socket', `the answer on ${path} is not a spectrum-netd reply: ${why}; is --control-socket the agent's socket?`);
}

/**
 * What is at `path`, where connect(2) was refused: a socket nobody listens on (an agent that was
 * killed), or a file that is no socket at all (a mistyped --control-socket); undefined if unknown.
 */
function kindAt(path: string): string | undefined {
  try {
    const info = statSync(path);
    return info.isSocket() ? 'socket' : info.isFile() ? 'a regular file' : info.isDirectory() ? 'a directory' : info.isFIFO() ? 'a FIFO' : 'a special file';
  } catch {
    return undefined;
  }
}

/** Send one request to a running agent and return its parsed reply (at most MAX_REPLY_BYTES). */
export function controlRequest(path: string, request: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    checkControlSocketPath(path);
    const socket = connect(path);
    const reply: Buffer[] = [];
    let replyBytes = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new NetdError('control-socket', `spectrum-netd on ${path} did not answer within ${CLIENT_TIMEOUT_MS / 1000} s`));
    }, CLIENT_TIMEOUT_MS);
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (chunk: Buffer) => {
      replyBytes += chunk.length;
      if (replyBytes <= MAX_REPLY_BYTES) {
        reply.push(chunk);
        return;
      }
      clearTimeout(timer);
      socket.destroy();
      reject(notOurs(path, `it is longer than ${MAX_REPLY_BYTES / (1 << 20)} MiB`));
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const kind = error.code === 'ECONNREFUSED' ? kindAt(path) : 'socket';
      reject(
        kind !== undefined && kind !== 'socket'
          ? new NetdError('control-socket', `${path} is not a socket but ${kind}: give --control-socket the path the agent was started with`)
          : error.code === 'ENOENT' || error.code === 'ECONNREFUSED'
            ? new NetdError('not-running', `no spectrum-netd is running on ${path} (${error.code}): start it, or give --control-socket`)
            : error.code === 'EPIPE' || error.code === 'ECONNRESET'
              ? unanswered(path)
              : new NetdError('control-socket', `cannot talk to spectrum-netd on ${path}: ${error.message}`),
      );
    });
    socket.on('end', () => {
      clearTimeout(timer);
      if (replyBytes === 0) {
        reject(unanswered(path));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(reply).toString('utf8')));
      } catch {
        reject(notOurs(path, 'it is not JSON'));
      }
    });
  });
}

/** A connection closed before any answer: what a full server (MAX_CONNECTIONS) or an agent on its way out does. */
function unanswered(path: string): NetdError {
  return new NetdError(
    'control-socket',
    `spectrum-netd on ${path} closed the connection without answering: it may be stopping, or busy with ${MAX_CONNECTIONS} other connections; try again`,
  );
}
