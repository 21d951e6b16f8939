// The agent's control socket: one JSON request per line, one JSON reply line, then close.
import { chmodSync, mkdirSync, unlinkSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { dirname } from 'node:path';
import { NetdError } from './netd-error.js';

export const DEFAULT_CONTROL_SOCKET = '/run/spectrum-netd/control.sock';
const MAX_REQUEST_BYTES = 4096;
const CLIENT_TIMEOUT_MS = 5_000;

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

  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    } catch (error) {
      throw new NetdError('control-socket', `cannot create the folder of ${path}: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (await probe(path)) {
      throw new NetdError('already-running', `another spectrum-netd answers on ${path}: stop it, or give --control-socket another path`);
    }
    try {
      unlinkSync(path); // a stale socket left by a killed agent
    } catch {
      // none there
    }
    const server = createServer((socket) => serve(socket, handler));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new NetdError('control-socket', `cannot listen on ${path}: ${error.message}`)));
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    return new ControlServer(path, server);
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

function serve(socket: Socket, handler: ControlHandler): void {
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    if (buffer.length > MAX_REQUEST_BYTES) {
      socket.end(`${JSON.stringify({ error: 'request too long' })}\n`);
      return;
    }
    const newline = buffer.indexOf('\n');
    if (newline < 0) return;
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
  });
}

/** Send one request to a running agent and return its parsed reply. */
export function controlRequest(path: string, request: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new NetdError('control-socket', `spectrum-netd on ${path} did not answer within ${CLIENT_TIMEOUT_MS / 1000} s`));
    }, CLIENT_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (chunk: string) => (reply += chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        error.code === 'ENOENT' || error.code === 'ECONNREFUSED'
          ? new NetdError('not-running', `no spectrum-netd is running on ${path} (${error.code}): start it, or give --control-socket`)
          : new NetdError('control-socket', `cannot talk to spectrum-netd on ${path}: ${error.message}`),
      );
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(reply));
      } catch {
        reject(new NetdError('control-socket', `spectrum-netd on ${path} sent a reply that is not JSON`));
      }
    });
  });
}
