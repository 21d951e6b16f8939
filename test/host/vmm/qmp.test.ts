// The QMP client against scripted fake servers on Unix sockets in a temp dir: framing, events,
// errors and bounds. The real-QEMU tests are in qemu-attach.test.ts.
import { closeSync, mkdtempSync, openSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { QMP_MAX_BUFFERED_EVENT_BYTES, QMP_MAX_LINE, type QemuAttachOptions, QmpClient, qemuAttach, qemuDetach } from '../../../host/vmm/qmp.js';
import { TapFd, writeWithRights } from '../../../host/vmm/tap-fd.js';
import { type Harness, createHarness, describeNetns } from '../../harness/index.js';
import { qmpError } from './rejection.js';

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}\r\n';
type Message = Record<string, unknown>;

let dir: string;
let servers: Server[];
let sockets: Socket[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sn-vmm-qmp-'));
  servers = [];
  sockets = [];
});

afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  rmSync(dir, { recursive: true, force: true });
});

/** A server that runs onConnection for each client; returns its socket path. */
async function serve(onConnection: (socket: Socket) => void): Promise<string> {
  const path = join(dir, `qmp${servers.length}.sock`);
  const server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return path;
}

/** A QMP-speaking fake: greeting, then each command line goes to handle, which writes replies. */
function fakeQmp(handle: (message: Message, reply: (body: Message) => void, socket: Socket) => void): Promise<string> {
  return serve((socket) => {
    socket.write(GREETING);
    let buffer = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n')) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        const message = JSON.parse(line) as Message;
        const reply = (body: Message): void => void socket.write(`${JSON.stringify({ ...body, id: message.id })}\r\n`);
        if (message.execute === 'qmp_capabilities') reply({ return: {} });
        else handle(message, reply, socket);
      }
    });
  });
}

describe('QMP client', () => {
  it('negotiates, matches replies by id and keeps events apart', async () => {
    const seen: Message[] = [];
    const path = await fakeQmp((message, reply, socket) => {
      seen.push(message);
      // An event first, then the replies in reverse order, all in one chunk.
      if (message.execute === 'second') {
        const first = seen.find((m) => m.execute === 'first');
        socket.write(
          '{"event": "X", "data": {"n": 1}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n' +
            `${JSON.stringify({ return: 2, id: message.id })}\r\n${JSON.stringify({ return: 1, id: first?.id })}\r\n`,
        );
      }
    });
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    try {
      expect(client.serverGreeting?.capabilities).toEqual(['oob']);
      const [a, b] = await Promise.all([client.execute('first'), client.execute('second', { x: 1 })]);
      expect([a, b]).toEqual([1, 2]);
      expect(seen[1]?.arguments).toEqual({ x: 1 });
      expect(client.events).toEqual([{ event: 'X', data: { n: 1 }, timestamp: { seconds: 1, microseconds: 2 } }]);
      expect(await client.waitForEvent('X', (e) => e.data.n === 1, 100)).toMatchObject({ event: 'X' });
      expect(client.events).toEqual([]);
    } finally {
      client.close();
    }
  });

  it('reassembles messages split across reads, byte by byte, CRLF or LF', async () => {
    const path = await serve((socket) => {
      const text = `${GREETING}`;
      let i = 0;
      const drip = setInterval(() => {
        if (i >= text.length) return clearInterval(drip);
        socket.write(text.slice(i, i + 1));
        i += 1;
      }, 0);
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        for (const line of chunk.split('\r\n').filter((l) => l !== '')) {
          const id = (JSON.parse(line) as Message).id;
          const reply = `{"return": {"text": "\u00e9\u4e2d"}, "id": ${JSON.stringify(id)}}\n`;
          const bytes = Buffer.from(reply);
          // Split inside a multi-byte character too.
          for (let j = 0; j < bytes.length; j += 3) socket.write(bytes.subarray(j, j + 3));
        }
      });
    });
    const client = await QmpClient.connect(path, { timeoutMs: 5000 });
    try {
      expect(await client.execute('anything')).toEqual({ text: 'é中' });
    } finally {
      client.close();
    }
  });

  it('turns an error reply into kind command with QEMU class and desc', async () => {
    const path = await fakeQmp((_message, reply) => reply({ error: { class: 'DeviceNotFound', desc: "Device 'x' not found" } }));
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    try {
      const error = await qmpError(client.execute('device_del', { id: 'x' }));
      expect(error).toMatchObject({ kind: 'command', qmpClass: 'DeviceNotFound', desc: "Device 'x' not found" });
      expect(error.message).toMatch(/device_del.*not found/);
      // The session survives a refused command.
      await expect(qmpError(client.execute('device_del', { id: 'y' }))).resolves.toMatchObject({ kind: 'command' });
    } finally {
      client.close();
    }
  });

  it('a missing socket is kind no-socket (no QEMU runs there), saying what to check', async () => {
    const error = await qmpError(QmpClient.connect(join(dir, 'nothing-here.sock'), { timeoutMs: 1000 }));
    expect(error.kind).toBe('no-socket');
    expect(error.message).toMatch(/nothing-here\.sock.*no such socket.*-qmp/);
    const nic = { id: 'snc7', tap: 'snc7', mac: '0A:B3:EC:00:00:07' };
    expect((await qmpError(qemuDetach(join(dir, 'nothing-here.sock'), nic, { timeoutMs: 1000 }))).kind).toBe('no-socket');
  });

  it('a socket path with a newline is shown escaped in its messages, so that the one line names that very path (not one with a space)', async () => {
    const missing = join(dir, 'a\nb.qmp');
    const refused = await qmpError(QmpClient.connect(missing, { timeoutMs: 1000 }));
    expect(refused.message).toContain(`cannot connect to QMP socket ${JSON.stringify(missing)}: no such socket`);
    // Connected, then closed by the peer at the first command.
    const path = join(dir, 'c\nd.qmp');
    renameSync(await fakeQmp((_message, _reply, socket) => socket.destroy()), path);
    const client = await QmpClient.connect(path, { timeoutMs: 1000 });
    try {
      const closed = `QMP socket ${JSON.stringify(path)}: `;
      expect((await qmpError(client.execute('query-status'))).message.slice(0, closed.length)).toBe(closed);
    } finally {
      client.close();
    }
  });

  it('a socket nobody listens on (left by a QEMU that exited) is kind stale-socket, saying so', async () => {
    const path = join(dir, 'stale.sock');
    // A server in a process that exits without closing it leaves its socket file behind.
    const { execFileSync } = await import('node:child_process');
    execFileSync(process.execPath, ['-e', "require('node:net').createServer().listen(process.argv[1], () => process.exit(0))", path]);
    const error = await qmpError(QmpClient.connect(path, { timeoutMs: 1000 }));
    expect(error.kind).toBe('stale-socket');
    expect(error.message).toMatch(/stale\.sock: connection refused: nothing listens there/);
  });

  it('a path that is not a socket is kind connect, saying what is there', async () => {
    const file = join(dir, 'plain-file');
    writeFileSync(file, '');
    const error = await qmpError(QmpClient.connect(file, { timeoutMs: 1000 }));
    // Not kind no-socket: something is there, so nothing says that no QEMU runs (and holds a NIC).
    expect(error.kind).toBe('connect');
    expect(error.message).toMatch(/plain-file: not a socket but a regular file: check the path/);
  });

  it("a symlink at the socket path is not followed, even to a QMP socket: kind connect, saying so; the target sees no connection (another VM's QEMU would get this VM's tap)", async () => {
    let connections = 0;
    const target = await serve((socket) => {
      connections += 1;
      socket.write(GREETING);
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        for (const line of chunk.split('\n').filter((text) => text.trim() !== '')) socket.write(`${JSON.stringify({ return: {}, id: (JSON.parse(line) as Message).id })}\r\n`);
      });
    });
    const link = join(dir, 'vm-a.qmp');
    symlinkSync(target, link);
    const fds = readdirSync('/proc/self/fd').length;
    const error = await qmpError(QmpClient.connect(link, { timeoutMs: 1000 }));
    expect(error.kind).toBe('connect');
    expect(error.message).toBe(
      `cannot connect to QMP socket ${link}: not a socket but a symlink, which spectrum-link does not follow for VMM sockets (whoever may write the VM's directory could point it at another VM's socket): give the path of the socket itself`,
    );
    const nic = { id: 'snc7', tap: 'snc7', mac: '0A:B3:EC:00:00:07' };
    expect((await qmpError(qemuAttach(link, nic, { timeoutMs: 1000 }))).kind).toBe('connect');
    expect((await qmpError(qemuDetach(link, nic, { timeoutMs: 1000 }))).kind).toBe('connect');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(connections).toBe(0);
    expect(readdirSync('/proc/self/fd').length).toBe(fds);
    // The socket itself, as ever.
    (await QmpClient.connect(target, { timeoutMs: 1000 })).close();
    expect(connections).toBe(1);
  });

  it('a FIFO or a directory at the socket path is kind connect, saying what is there, at once', async () => {
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    expect(await qmpError(QmpClient.connect(join(dir, 'fifo'), { timeoutMs: 1000 }))).toMatchObject({ kind: 'connect', message: expect.stringMatching(/fifo: not a socket but a special file: check the path$/) });
    expect(await qmpError(QmpClient.connect(dir, { timeoutMs: 1000 }))).toMatchObject({ kind: 'connect', message: expect.stringMatching(/: not a socket but a directory: check the path$/) });
  });

  it('garbage instead of a greeting is kind protocol, at once', async () => {
    const path = await serve((socket) => socket.write('HTTP/1.1 400 Bad Request\r\n\r\n'));
    const started = Date.now();
    const error = await qmpError(QmpClient.connect(path, { timeoutMs: 5000 }));
    expect(error.kind).toBe('protocol');
    expect(error.message).toMatch(/not JSON.*QMP socket/);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('JSON that is not a greeting is kind protocol', async () => {
    const path = await serve((socket) => socket.write('{"hello": 1}\n'));
    expect((await qmpError(QmpClient.connect(path, { timeoutMs: 5000 }))).message).toMatch(/expected the QMP greeting/);
  });

  it('garbage after the handshake fails the waiting command with kind protocol and ends the session', async () => {
    const path = await fakeQmp((_message, _reply, socket) => socket.write('[1, 2, 3]\r\n'));
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    try {
      expect((await qmpError(client.execute('query-status'))).kind).toBe('protocol');
      expect((await qmpError(client.execute('query-status'))).kind).toBe('protocol');
    } finally {
      client.close();
    }
  });

  it('refuses a line over the limit without waiting for its end', async () => {
    const path = await serve((socket) => {
      socket.write('{"QMP": {"version": "');
      const block = 'a'.repeat(64 * 1024);
      for (let sent = 0; sent <= QMP_MAX_LINE; sent += block.length) socket.write(block);
    });
    const error = await qmpError(QmpClient.connect(path, { timeoutMs: 10_000 }));
    expect(error.kind).toBe('protocol');
    expect(error.message).toMatch(/over 1048576 bytes/);
  });

  it('a signal ends the session when it aborts: whatever waits fails at once, kind timeout, saying why', async () => {
    const path = await fakeQmp(() => undefined); // negotiates, then answers nothing
    const controller = new AbortController();
    const client = await QmpClient.connect(path, { timeoutMs: 5000, signal: controller.signal });
    try {
      const started = Date.now();
      const waiting = qmpError(client.execute('device_del', { id: 'x' }));
      const event = qmpError(client.waitForEvent('DEVICE_DELETED', () => true, 5000));
      setTimeout(() => controller.abort(new Error('the whole detach took too long')), 100);
      for (const error of [await waiting, await event]) {
        expect(error).toMatchObject({ kind: 'timeout', message: expect.stringMatching(/: given up: the whole detach took too long$/) });
      }
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      client.close();
    }
    // Aborted already: the session does not start.
    expect((await qmpError(QmpClient.connect(path, { timeoutMs: 5000, signal: controller.signal }))).kind).toBe('timeout');
  });

  it('a silent server is kind timeout, bounded, naming the single-client rule', async () => {
    const path = await serve(() => undefined);
    const started = Date.now();
    const error = await qmpError(QmpClient.connect(path, { timeoutMs: 200 }));
    expect(error.kind).toBe('timeout');
    expect(error.message).toMatch(/greeting.*one QMP client at a time/);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('a command without reply is kind timeout; a late reply is ignored', async () => {
    const held: Array<() => void> = [];
    const path = await fakeQmp((_message, reply) => held.push(() => reply({ return: 'late' })));
    const client = await QmpClient.connect(path, { timeoutMs: 2000, commandTimeoutMs: 100 });
    try {
      expect((await qmpError(client.execute('slow'))).kind).toBe('timeout');
      for (const send of held) send();
      held.length = 0;
      const next = client.execute('next', undefined, { timeoutMs: 1000 });
      await new Promise((resolve) => setTimeout(resolve, 50));
      for (const send of held) send();
      expect(await next).toBe('late');
    } finally {
      client.close();
    }
  });

  it('waitForEvent waits for a later event and times out when none comes', async () => {
    const path = await fakeQmp((message, reply, socket) => {
      reply({ return: {} });
      if (message.execute === 'device_del') {
        setTimeout(() => socket.write('{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/n1/virtio-backend"}}\r\n'), 10);
        setTimeout(() => socket.write('{"event": "DEVICE_DELETED", "data": {"device": "n1", "path": "/machine/peripheral/n1"}}\r\n'), 30);
      }
    });
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    try {
      const observed: string[] = [];
      const stop = client.onEvent((event) => observed.push(event.event));
      const waiting = client.waitForEvent('DEVICE_DELETED', (event) => event.data.device === 'n1', 2000);
      await client.execute('device_del', { id: 'n1' });
      expect((await waiting).data).toEqual({ device: 'n1', path: '/machine/peripheral/n1' });
      stop();
      expect(observed).toEqual(['DEVICE_DELETED', 'DEVICE_DELETED']);
      expect(client.events).toHaveLength(1); // the backend's event, not asked for
      expect((await qmpError(client.waitForEvent('DEVICE_DELETED', (e) => e.data.device === 'n2', 50))).kind).toBe('timeout');
    } finally {
      client.close();
    }
  });

  it('keeps at most QMP_MAX_BUFFERED_EVENT_BYTES of events nobody took: a flood of big events cannot fill the heap', async () => {
    // Each line is under the line limit, but parses into some 100k objects: kept by the thousand,
    // they took the root tool past its heap limit (an abort with a V8 stack trace).
    const big = `{"event": "FLOOD", "data": {"objects": [${'{},'.repeat(100_000)}{}]}}\r\n`;
    const path = await fakeQmp((_message, reply, socket) => {
      for (let i = 0; i < 40; i += 1) socket.write(big);
      socket.write('{"event": "LAST", "data": {}}\r\n');
      reply({ return: {} });
    });
    const client = await QmpClient.connect(path, { timeoutMs: 10_000 });
    try {
      await client.execute('flood');
      const kept = client.events.reduce((bytes, event) => bytes + JSON.stringify(event).length, 0);
      expect(kept).toBeLessThanOrEqual(QMP_MAX_BUFFERED_EVENT_BYTES);
      expect(client.events.length).toBeLessThan(40);
      // The newest are kept, the oldest dropped.
      expect(client.events.at(-1)?.event).toBe('LAST');
      expect(await client.waitForEvent('LAST', () => true, 100)).toMatchObject({ event: 'LAST' });
    } finally {
      client.close();
    }
  });

  it('keeps no descriptor a VMM sends back with its messages (SCM_RIGHTS): the kernel drops them, as Node reads without ancillary data', async () => {
    const marker = join(dir, 'marker');
    writeFileSync(marker, '');
    const held = (): number =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === marker;
        } catch {
          return false;
        }
      }).length;
    const sendWithFds = (socket: Socket, text: string): void => {
      const fds = Array.from({ length: 16 }, () => openSync(marker, 'r'));
      try {
        writeWithRights(socket, Buffer.from(text), fds);
      } finally {
        for (const fd of fds) closeSync(fd);
      }
    };
    const path = await serve((socket) => {
      sendWithFds(socket, GREETING);
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        for (const line of chunk.split('\n').filter((l) => l.trim() !== '')) {
          const id = (JSON.parse(line) as Message).id;
          setTimeout(() => sendWithFds(socket, `{"event": "X", "data": {}}\r\n${JSON.stringify({ return: {}, id })}\r\n`), 5);
        }
      });
    });
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    try {
      for (let i = 0; i < 5; i += 1) await client.execute('anything');
      expect(held()).toBe(0);
    } finally {
      client.close();
    }
  });

  it('QEMU going away fails what waits with kind closed; close() does too', async () => {
    const path = await fakeQmp((message, _reply, socket) => {
      if (message.execute === 'quit') socket.end();
    });
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    const waiting = client.waitForEvent('SHUTDOWN', () => true, 5000);
    expect((await qmpError(client.execute('quit'))).kind).toBe('closed');
    expect((await qmpError(waiting)).kind).toBe('closed');
    const other = await QmpClient.connect(path, { timeoutMs: 2000 });
    const pending = other.execute('never-answered');
    other.close();
    expect((await qmpError(pending)).kind).toBe('closed');
    expect((await qmpError(other.execute('after-close'))).kind).toBe('closed');
  });
});

describe('QMP text in messages', () => {
  // What a terminal could act on: C0 and C1 controls, DEL, and format characters such as bidi overrides.
  const TERMINAL_ACTIVE = /[\p{Cc}\p{Cf}]/u;
  const hostile = `\u001b]0;owned\u0007\u001b[2J\u009b2K\u202e${'x'.repeat(100_000)}`;
  const nic = { id: 'n1', tap: 'tap1', mac: '0A:B3:EC:00:00:07' };

  it("quotes and bounds QEMU's error class and description: a VMM cannot write to the operator's terminal", async () => {
    const path = await fakeQmp((_message, reply) => reply({ error: { class: hostile, desc: hostile } }));
    const client = await QmpClient.connect(path, { timeoutMs: 2000 });
    try {
      const error = await qmpError(client.execute('device_del', { id: 'x' }));
      expect(error).toMatchObject({ kind: 'command', qmpClass: hostile, desc: hostile });
      expect(error.message).not.toMatch(TERMINAL_ACTIVE);
      expect(error.message.length).toBeLessThan(1000);
      expect(error.message).toMatch(/^QEMU refused device_del: "\\u001b\]0;owned/);
    } finally {
      client.close();
    }
    // Plain descriptions stay as QEMU wrote them.
    const plain = await fakeQmp((_message, reply) => reply({ error: { class: 'DeviceNotFound', desc: "Device 'x' not found" } }));
    expect((await qmpError(qemuDetach(plain, nic, { timeoutMs: 2000 }))).message).toBe("QEMU refused qom-list: Device 'x' not found (DeviceNotFound)");
  });

  it('the same for what qom-get answers', async () => {
    const path = await fakeQmp((message, reply) => {
      const args = (message.arguments ?? {}) as Message;
      switch (message.execute) {
        case 'qom-list':
          return reply({ return: [{ name: 'n1', type: 'child<virtio-net-pci>' }] });
        case 'qom-get':
          return reply({ return: args.property === 'type' ? 'virtio-net-pci' : hostile });
        default:
          return reply({ return: {} });
      }
    });
    const conflict = await qmpError(qemuDetach(path, nic, { timeoutMs: 2000 }));
    expect(conflict.kind).toBe('conflict');
    expect(conflict.message).not.toMatch(TERMINAL_ACTIVE);
    expect(conflict.message.length).toBeLessThan(1000);
  });
});

describe('qemuDetach with a cooperating guest (scripted QMP)', () => {
  it('waits for DEVICE_DELETED, then removes the netdev: acknowledged', async () => {
    const commands: string[] = [];
    let present = true;
    const path = await fakeQmp((message, reply, socket) => {
      const args = (message.arguments ?? {}) as Message;
      commands.push(`${String(message.execute)} ${String(args.id ?? args.property ?? '')}`.trim());
      switch (message.execute) {
        case 'qom-list':
          return reply({ return: [{ name: 'type', type: 'string' }, ...(present ? [{ name: 'n1', type: 'child<virtio-net-pci>' }] : [])] });
        case 'qom-get':
          return reply({ return: args.property === 'type' ? 'virtio-net-pci' : '0a:b3:ec:00:00:07' });
        case 'device_del':
          reply({ return: {} });
          present = false;
          setTimeout(() => socket.write('{"event": "DEVICE_DELETED", "data": {"device": "n1", "path": "/machine/peripheral/n1"}, "timestamp": {"seconds": 1, "microseconds": 0}}\r\n'), 20);
          return;
        default:
          return reply({ return: {} });
      }
    });
    const nic = { id: 'n1', tap: 'tap1', mac: '0A:B3:EC:00:00:07' };
    expect(await qemuDetach(path, nic, { timeoutMs: 2000 })).toEqual({ acknowledged: true, alreadyDetached: false });
    expect(commands).toEqual(['qom-list', 'qom-get type', 'qom-get mac', 'device_del n1', 'netdev_del net-n1']);
  });

  it('attach through a socket that is not QMP fails with kind protocol, no hang', async () => {
    const path = await serve((socket) => socket.write('\u0000\u0001garbage\n'));
    const error = await qmpError(qemuAttach(path, { id: 'n1', tap: 'tap1', mac: '0A:B3:EC:00:00:07' }, { timeoutMs: 5000 }));
    expect(error.kind).toBe('protocol');
  });
});

describeNetns('qemuAttach against a QEMU that misbehaves mid-way (taps in a namespace)', () => {
  // What a terminal could act on: C0 and C1 controls, DEL, and format characters such as bidi overrides.
  const TERMINAL_ACTIVE = /[\p{Cc}\p{Cf}]/u;
  const nic = { id: 'snp77', tap: 'snp77', mac: '0A:B3:EC:00:00:4D' };
  let harness: Harness | undefined;
  let options: QemuAttachOptions;

  beforeAll(async () => {
    harness = createHarness('qmpmid');
    const ns = await harness.namespace('vmm');
    await ns.ip(['tuntap', 'add', 'dev', nic.tap, 'mode', 'tap', 'vnet_hdr']);
    options = { timeoutMs: 300, tapNetnsPath: `/run/netns/${ns.name}` };
  });
  afterAll(async () => {
    await harness?.cleanup();
  });

  type Behaviour = 'ok' | 'silent' | 'close' | Message;
  /** A QMP fake with no devices and no netdevs, answering each command as `script` says (default ok); records the commands. */
  async function scripted(script: Readonly<Record<string, Behaviour>>): Promise<{ path: string; commands: string[] }> {
    const commands: string[] = [];
    const path = await fakeQmp((message, reply, socket) => {
      const command = String(message.execute);
      const args = (message.arguments ?? {}) as Message;
      commands.push(command);
      // The probe for an existing netdev (a descriptor name nobody registered): there is none.
      if (command === 'netdev_add' && args.fd !== `net-${nic.id}`) return reply({ error: { class: 'GenericError', desc: `File descriptor named '${String(args.fd)}' has not been found` } });
      if (command === 'qom-list') return reply({ return: [] });
      const behaviour = script[command] ?? 'ok';
      if (behaviour === 'silent') return;
      if (behaviour === 'close') return void socket.destroy();
      reply(behaviour === 'ok' ? { return: {} } : behaviour);
    });
    return { path, commands };
  }

  /** Whether this process (or anyone) still holds the tap's one queue: the tool must have closed its descriptor. */
  function tapFree(): boolean {
    const tap = TapFd.open(nic.tap, options.tapNetnsPath ?? null);
    tap.close();
    return true;
  }

  it('device_add refused: the netdev goes again, the tap descriptor is closed, the message is clean', async () => {
    const hostile = `\u001b]0;owned\u0007\u009b2K${'x'.repeat(10_000)}`;
    const { path, commands } = await scripted({ device_add: { error: { class: 'GenericError', desc: hostile } } });
    const error = await qmpError(qemuAttach(path, nic, options));
    expect(error.kind).toBe('command');
    expect(error.message).not.toMatch(TERMINAL_ACTIVE);
    expect(error.message.length).toBeLessThan(1000);
    expect(commands).toEqual(['qom-list', 'netdev_add', 'getfd', 'netdev_add', 'device_add', 'netdev_del']);
    expect(tapFree()).toBe(true);
  });

  it('getfd, netdev_add or device_add never answered: kind timeout within a few bounds, the tap descriptor closed', async () => {
    for (const command of ['getfd', 'netdev_add', 'device_add']) {
      const { path } = await scripted({ [command]: 'silent' });
      const started = Date.now();
      const error = await qmpError(qemuAttach(path, nic, options));
      expect(error.kind).toBe('timeout');
      expect(Date.now() - started).toBeLessThan(10 * options.timeoutMs);
      expect(tapFree()).toBe(true);
    }
  });

  it('netdev_add or device_add not answered in time: what QEMU may still have made is asked back, by our ids', async () => {
    // A slow QEMU answers after the bound: the netdev or the NIC may exist then. A NIC left on a
    // netdev removed under it would later read as an unplug the guest never acknowledged.
    const slowNetdev = await scripted({ netdev_add: 'silent' });
    expect((await qmpError(qemuAttach(slowNetdev.path, nic, options))).kind).toBe('timeout');
    expect(slowNetdev.commands.slice(3)).toEqual(['netdev_add', 'netdev_del', 'closefd']);
    const slowDevice = await scripted({ device_add: 'silent' });
    expect((await qmpError(qemuAttach(slowDevice.path, nic, options))).kind).toBe('timeout');
    expect(slowDevice.commands.slice(4)).toEqual(['device_add', 'device_del', 'netdev_del']);
    // A refusal is an answer: nothing was made, nothing more is asked.
    const refused = await scripted({ device_add: { error: { class: 'GenericError', desc: 'Bus not found' } } });
    await qmpError(qemuAttach(refused.path, nic, options));
    expect(refused.commands.slice(4)).toEqual(['device_add', 'netdev_del']);
  });

  it('the connection cut at getfd, netdev_add or device_add: kind closed, the tap descriptor closed', async () => {
    for (const command of ['getfd', 'netdev_add', 'device_add']) {
      const { path } = await scripted({ [command]: 'close' });
      expect((await qmpError(qemuAttach(path, nic, options))).kind).toBe('closed');
      expect(tapFree()).toBe(true);
    }
  });
});
