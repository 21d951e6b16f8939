import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../../guest/netd/agent.js';
import { ControlServer, MAX_REPLY_BYTES, checkControlSocketPath, controlRequest } from '../../../guest/netd/control-socket.js';
import type { LeaseInfo } from '../../../guest/dhcp/lease-table.js';
import { MAX_CLIENT_IDENTIFIER_BYTES, MAX_HOSTNAME_CHARS } from '../../../guest/dhcp/lease-table.js';
import type { FirewallModel } from '../../../guest/firewall/model.js';
import { CLIENT_ID_MAX } from '../../../shared/scheme.js';
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

  it('refuses a path something listens on, without claiming it is an agent (it only connected) and leaving that socket', async () => {
    const path = join(dir, 'other.sock');
    const other = createServer();
    await new Promise<void>((resolve) => other.listen(path, resolve));
    try {
      await expect(ControlServer.listen(path, () => Promise.resolve({}))).rejects.toMatchObject({
        kind: 'already-running',
        message: `a process is listening on ${path} (another spectrum-netd?): stop it, or give --control-socket another path`,
      });
      expect(statSync(path).isSocket()).toBe(true);
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
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

  it('refuses a reply longer than MAX_REPLY_BYTES (a peer that never stops sending) with one error, instead of gathering it until V8 gives up', async () => {
    // It gathered the reply without bound: "RangeError: Invalid string length" at ~512 MiB, uncaught.
    const path = join(dir, 'flood.sock');
    const sockets = new Set<Socket>();
    const flood = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      const chunk = Buffer.alloc(1 << 20, 'x');
      const more = (): void => {
        while (!socket.destroyed && socket.write(chunk));
        if (!socket.destroyed) socket.once('drain', more);
      };
      more();
    });
    await new Promise<void>((resolve) => flood.listen(path, resolve));
    try {
      await expect(controlRequest(path, { command: 'status' })).rejects.toMatchObject({
        kind: 'control-socket',
        message: `the answer on ${path} is not a spectrum-netd reply: it is longer than 128 MiB; is --control-socket the agent's socket?`,
      });
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => flood.close(resolve));
    }
  });

  it('MAX_REPLY_BYTES holds the status of an agent serving every client id, each with every text at its longest', () => {
    // A link row, a firewall model entry, a lease and an IP owing a purge for each client.
    const name = 's'.repeat(15);
    const ip = '100.64.255.254';
    const row: AgentStatus['links'][number] = {
      ifindex: 2 ** 31 - 1,
      name,
      role: 'provider',
      id: CLIENT_ID_MAX,
      ip,
      state: 'configured',
      note: `client id ${CLIENT_ID_MAX} is already served on ${name}; all its traffic is dropped`,
      // A failed operation and the kernel's reason, or why the link is held back: never near this.
      error: 'e'.repeat(256),
    };
    const entry: FirewallModel['providerLinks'][number] = { ifname: name, clientIp: ip };
    const lease: LeaseInfo = {
      ifname: name,
      id: CLIENT_ID_MAX as LeaseInfo['id'],
      clientIp: ip as LeaseInfo['clientIp'],
      clientMac: '0a:b3:ec:00:ff:fe',
      state: 'declined',
      firstSeen: 10 ** 13,
      lastRenewed: 10 ** 13,
      expires: 10 ** 13,
      clientIdentifier: 'ff'.repeat(MAX_CLIENT_IDENTIFIER_BYTES),
      hostname: 'h'.repeat(MAX_HOSTNAME_CHARS),
    };
    // Each in its list, with the comma after it.
    const perClient = [row, entry, lease, ip].reduce((sum, part) => sum + Buffer.byteLength(JSON.stringify(part)) + 1, 0);
    expect(perClient).toBeLessThan(1024);
    // Counters, the DNS forwarder's, the reaper's: a few KiB; the rest, one MiB, is the allowed pairs' share.
    expect(CLIENT_ID_MAX * perClient + (1 << 20)).toBeLessThan(MAX_REPLY_BYTES / 2);
  });

  it('says that a path which is no socket is none, rather than that no agent runs there', async () => {
    // connect(2) is refused (ECONNREFUSED) there as on a socket of an agent that was killed.
    writeFileSync(join(dir, 'file'), '');
    mkdirSync(join(dir, 'folder'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    for (const [path, kind] of [['file', 'a regular file'], ['folder', 'a directory'], ['fifo', 'a FIFO']] as const) {
      await expect(controlRequest(join(dir, path), { command: 'status' })).rejects.toMatchObject({
        kind: 'control-socket',
        message: `${join(dir, path)} is not a socket but ${kind}: give --control-socket the path the agent was started with`,
      });
    }
    // A socket nobody listens on is an agent that is not running (any more): one that exits
    // without closing its server leaves the socket file, as a killed agent does.
    const stale = join(dir, 'stale.sock');
    execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`]);
    expect(await kindOf(() => controlRequest(stale, { command: 'status' }))).toBe('not-running');
  });
});
