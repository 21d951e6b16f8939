import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlServer, checkControlSocketPath, controlRequest } from '../../../guest/netd/control-socket.js';
import { NetdError } from '../../../guest/netd/netd-error.js';

async function kindOf(run: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await run();
  } catch (error) {
    if (error instanceof NetdError) return error.kind;
    throw error;
  }
  return undefined;
}

/** Connect, send `text`, and collect what comes back until the server closes (or `ms` pass). */
function exchange(path: string, text: string, ms = 3000, later: readonly string[] = []): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect(path);
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ reply, closed: false });
    }, ms);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (reply += chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, closed: true });
    });
    socket.on('connect', () => {
      if (text !== '') socket.write(text);
      // Each in a packet of its own, while the first request is being answered.
      later.forEach((line, index) => setTimeout(() => socket.destroyed || socket.write(line), 20 * (index + 1)));
    });
  });
}

describe('the control socket', () => {
  let dir: string;
  let server: ControlServer | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'netd-control-'));
  });
  afterEach(() => {
    server?.close();
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('never removes a file that is not a socket: a mistyped --control-socket must not delete it', async () => {
    const path = join(dir, 'resolv.conf');
    writeFileSync(path, 'nameserver 192.0.2.53\n');
    expect(await kindOf(() => ControlServer.listen(path, () => Promise.resolve({})))).toBe('control-socket');
    expect(readFileSync(path, 'utf8')).toBe('nameserver 192.0.2.53\n');
  });

  it("makes the socket's own folder (as /run/spectrum-netd at boot), but no tree of folders for a mistyped path", async () => {
    server = await ControlServer.listen(join(dir, 'spectrum-netd', 'control.sock'), () => Promise.resolve({}));
    expect(statSync(join(dir, 'spectrum-netd')).isDirectory()).toBe(true);
    const error = await ControlServer.listen(join(dir, 'typo', 'spectrum-netd', 'control.sock'), () => Promise.resolve({})).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(NetdError);
    expect((error as NetdError).message).toBe(`cannot create the folder of ${join(dir, 'typo', 'spectrum-netd', 'control.sock')}: ${join(dir, 'typo')} does not exist; check --control-socket`);
    expect(existsSync(join(dir, 'typo'))).toBe(false);
  });

  it.each([
    ['empty', ''],
    ['longer than sun_path', `/tmp/${'a'.repeat(103)}`],
  ])('refuses a path that is %s before binding anything', async (_, path) => {
    expect(() => checkControlSocketPath(path)).toThrow(/is not usable: give a path of 1 to 107 bytes/);
    expect(await kindOf(() => ControlServer.listen(path, () => Promise.resolve({})))).toBe('control-socket-path');
    expect(await kindOf(() => controlRequest(path, { command: 'status' }))).toBe('control-socket-path');
    if (path !== '') expect(existsSync(path.slice(0, 107))).toBe(false);
  });

  it('answers one request per connection: lines after it run nothing', async () => {
    let calls = 0;
    server = await ControlServer.listen(join(dir, 'c.sock'), async () => {
      calls += 1;
      await new Promise((resolve) => setTimeout(resolve, 300));
      return { ok: calls };
    });
    const line = '{"command":"status"}\n';
    const { reply, closed } = await exchange(server.path, line, 3000, Array<string>(10).fill(line));
    expect(closed).toBe(true);
    expect(reply).toBe('{"ok":1}\n');
    expect(calls).toBe(1);
  });

  it('answers garbage and over-long requests with one error line', async () => {
    server = await ControlServer.listen(join(dir, 'c.sock'), () => Promise.resolve({}));
    expect((await exchange(server.path, '\u0000{{\n')).reply).toBe('{"error":"request is not JSON"}\n');
    expect((await exchange(server.path, 'x'.repeat(100_000))).reply).toBe('{"error":"request too long"}\n');
  });

  it('says a connection closed without an answer is one (an agent stopping), not a reply that is not JSON', async () => {
    const path = join(dir, 'closing.sock');
    const closing = createServer((socket) => socket.resume().end());
    await new Promise<void>((resolve) => closing.listen(path, resolve));
    try {
      await expect(controlRequest(path, { command: 'status' })).rejects.toMatchObject({
        kind: 'control-socket',
        message: expect.stringMatching(/closed the connection without answering: it may be stopping, or busy/),
      });
    } finally {
      await new Promise((resolve) => closing.close(resolve));
    }
  });

  it('says so when it already serves 64 connections, instead of a bare EPIPE', async () => {
    server = await ControlServer.listen(join(dir, 'c.sock'), () => Promise.resolve({ ok: true }));
    const held = await Promise.all(
      Array.from({ length: 64 }, () => new Promise<Socket>((resolve) => {
        const socket = connect(server!.path, () => resolve(socket));
        socket.on('error', () => undefined);
      })),
    );
    try {
      await expect(controlRequest(server.path, { command: 'status' })).rejects.toMatchObject({
        kind: 'control-socket',
        message: expect.stringMatching(/closed the connection without answering: it may be stopping, or busy with 64 other connections/),
      });
    } finally {
      for (const socket of held) socket.destroy();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await controlRequest(server.path, { command: 'status' })).toEqual({ ok: true });
  });

  it('closes a connection that sends nothing', async () => {
    server = await ControlServer.listen(join(dir, 'c.sock'), () => Promise.resolve({}), { idleMs: 200 });
    const { closed } = await exchange(server.path, '', 3000);
    expect(closed).toBe(true);
  });
});
