// The tap_fd addon against the real kernel: tap queues opened in a namespace of the test's own,
// and descriptors carried over a Unix socket with the first bytes of a connection.
import { execFile, execFileSync } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { type Socket, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TapFd, connectWithRights, deviceMtuIn, peekRights, tapNameOf } from '../../../host/vmm/tap-fd.js';
import { createHarness, describeNetns, eventually, type Harness, type Netns } from '../../harness/index.js';
import { compiledFixture } from './fake-cloud-hypervisor-process.js';
import { orphanedListener } from './orphaned-listener.js';

describe('SO_PEERPIDFD where the C library\'s headers lack it (host/native/so-peerpidfd.h)', () => {
  const native = fileURLToPath(new URL('../../../host/native/', import.meta.url));
  /** SO_PEERPIDFD as the addon's build sees it for a compiler that predefines `macros` (and none of the host's): 'none' where undefined. */
  const chosen = (macros: readonly string[]): string => {
    const probe = '#include "so-peerpidfd.h"\n#ifdef SO_PEERPIDFD\nchosen SO_PEERPIDFD\n#else\nchosen none\n#endif\n';
    const out = execFileSync('cc', ['-E', '-P', '-undef', ...macros.map((macro) => `-D${macro}`), '-I', native, '-x', 'c', '-'], { input: probe, encoding: 'utf8' });
    const found = /^chosen (\S+)$/m.exec(out)?.[1];
    if (found === undefined) throw new Error(`the preprocessor printed no choice: ${out}`);
    return found;
  };

  it("takes each architecture's own number from the kernel's uapi headers (parisc and sparc differ), and guesses none for an architecture it does not know", () => {
    // arch/parisc/include/uapi/asm/socket.h, arch/sparc/include/uapi/asm/socket.h
    expect(chosen(['__hppa__'])).toBe('0x404B');
    expect(chosen(['__sparc__'])).toBe('0x0056');
    // include/uapi/asm-generic/socket.h (alpha's and mips' own headers agree)
    for (const arch of ['__x86_64__', '__i386__', '__aarch64__', '__arm__', '__riscv', '__powerpc__', '__s390__', '__loongarch__', '__alpha__', '__mips__']) {
      expect([arch, chosen([arch])]).toEqual([arch, '77']);
    }
    expect(chosen([])).toBe('none');
    expect(chosen(['__m68k__'])).toBe('none');
    // Headers that define it are taken as they are.
    expect(chosen(['__hppa__', 'SO_PEERPIDFD=0x404B'])).toBe('0x404B');
    expect(chosen(['__m68k__', 'SO_PEERPIDFD=4242'])).toBe('4242');
  });
});

describe('tap and device names given to the tap_fd addon', () => {
  it('says the 15 bytes a name may have: a longer one (16 bytes and more) is refused so, before any kernel call', () => {
    for (const name of ['x'.repeat(16), 'x'.repeat(17), `${'x'.repeat(14)}\u00e9`]) {
      expect(() => TapFd.open(name, null)).toThrow(expect.objectContaining({ code: 'EINVAL', message: 'tap-fd: tap name must be a string of at most 15 bytes, without NUL' }));
      expect(() => deviceMtuIn(-1, name)).toThrow(expect.objectContaining({ code: 'EINVAL', message: 'tap-fd: device name must be a string of at most 15 bytes, without NUL' }));
    }
    // An empty name is none: EINVAL, as before.
    expect(() => TapFd.open('', null)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describeNetns('tap queues and descriptor passing', () => {
  let harness: Harness;
  let ns: Netns;
  let nsPath: string;

  beforeAll(async () => {
    harness = createHarness('tapfd');
    ns = await harness.namespace('taps');
    nsPath = `/run/netns/${ns.name}`;
    await ns.ip(['tuntap', 'add', 'dev', 'tq1', 'mode', 'tap', 'vnet_hdr']);
    await ns.ip(['tuntap', 'add', 'dev', 'tq2', 'mode', 'tap']);
    await ns.ip(['link', 'add', 'bq1', 'type', 'bridge']);
  });

  afterAll(async () => {
    await harness?.cleanup();
  });

  it('opens a queue of an existing tap, once: a second open is EBUSY until the first is closed', () => {
    const first = TapFd.open('tq1', nsPath);
    try {
      expect(tapNameOf(first.fd)).toBe('tq1');
      expect(() => TapFd.open('tq1', nsPath)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    } finally {
      first.close();
    }
    const again = TapFd.open('tq1', nsPath);
    again.close();
    again.close(); // closing twice is harmless
    // A tap made without a virtio-net header gets one from the queue opened here (the kernel
    // takes the header flag from whoever attaches), as cloud-hypervisor needs it.
    const plain = TapFd.open('tq2', nsPath);
    plain.close();
  });

  it('takes a name or path whole or not at all: one with a NUL inside, or cut short at a whole character, opens nothing', () => {
    // Before, the copy into C stopped there and opened tq1 (or tq1's namespace) all the same.
    expect(() => TapFd.open('tq1\0x', nsPath)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => TapFd.open('tq1', `${nsPath}\0x`)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // A path whose bytes up to 4094 name the namespace (slashes repeat freely), then a character
    // of 4 bytes that does not fit the 4096-byte buffer.
    const padded = `${'/'.repeat(4094 - nsPath.length + 1)}${nsPath.slice(1)}`;
    expect(Buffer.byteLength(padded)).toBe(4094);
    expect(() => TapFd.open('tq1', `${padded}\u{1F600}`)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // And the tap is free: nothing opened it.
    TapFd.open('tq1', nsPath).close();
  });

  it('never makes a tap: a missing name is ENODEV and leaves no device behind', async () => {
    expect(() => TapFd.open('tqmissing', nsPath)).toThrow(expect.objectContaining({ code: 'ENODEV' }));
    const { stdout } = await ns.ip(['-j', 'link', 'show']);
    expect((JSON.parse(stdout) as { ifname: string }[]).map((link) => link.ifname)).not.toContain('tqmissing');
  });

  it("opens only a tap whose own name is the one given: another tap's altname is refused (ERR_TAP_ALTNAME, naming it) and that tap left alone", async () => {
    // tq3 without the virtio-net header: a queue opened on it would give it the flag.
    await ns.ip(['tuntap', 'add', 'dev', 'tq3', 'mode', 'tap']);
    await ns.ip(['link', 'property', 'add', 'dev', 'tq3', 'altname', 'tqalias']);
    const header = async (): Promise<string> => (/vnet_hdr (on|off)/.exec((await ns.ip(['-d', 'link', 'show', 'dev', 'tq3'])).stdout)?.[1] ?? 'unknown');
    expect(await header()).toBe('off');
    let refused: unknown;
    try {
      TapFd.open('tqalias', nsPath).close();
    } catch (error) {
      refused = error;
    }
    expect(refused).toMatchObject({ code: 'ERR_TAP_ALTNAME', device: 'tq3', message: 'tqalias is an altname of device tq3, not a device\'s own name' });
    expect(await header()).toBe('off');
    // Under its own name it opens (and takes the header flag).
    const own = TapFd.open('tq3', nsPath);
    expect(tapNameOf(own.fd)).toBe('tq3');
    own.close();
    expect(await header()).toBe('on');
  });

  it('looks the name up without a device ioctl (SIOCGIF*, for which the kernel first tries to load a module named after a missing name: dev_load runs modprobe), as strace shows', async () => {
    // Run from dist, in a process of its own under strace (ptrace: nothing outside it changes).
    const compiled = compiledFixture('host/vmm/tap-fd', []);
    const dir = mkdtempSync(join(tmpdir(), 'sn-tapfd-strace-'));
    try {
      const trace = join(dir, 'trace');
      const opens = `
        import { TapFd } from ${JSON.stringify(compiled)};
        const outcomes = ['tqabsent', 'tq1', 'bq1'].map((name) => {
          try {
            TapFd.open(name, ${JSON.stringify(nsPath)}).close();
            return 'opened';
          } catch (error) {
            return error.code;
          }
        });
        console.log(JSON.stringify(outcomes));`;
      const { stdout } = await promisify(execFile)('strace', ['-f', '-qq', '-e', 'trace=ioctl', '-o', trace, process.execPath, '--input-type=module', '-e', opens]);
      expect(JSON.parse(stdout)).toEqual(['ENODEV', 'opened', 'EINVAL']);
      const calls = readFileSync(trace, 'utf8').split('\n');
      // The trace saw the opens of the names that exist (TUNSETIFF on /dev/net/tun) ...
      expect(calls.filter((line) => /\bioctl\(\d+, TUNSETIFF\b/.test(line))).toHaveLength(2);
      // ... and no socket device ioctl (SIOC*, or the 0x89xx range where strace has no name).
      expect(calls.filter((line) => /\bioctl\(\d+, (SIOC|0x89[0-9a-f]{2}\b)/i.test(line))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a device that is not a tap, and names of 16 bytes or more', () => {
    expect(() => TapFd.open('bq1', nsPath)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => TapFd.open('a'.repeat(16), nsPath)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => TapFd.open('tq1', '/nonexistent/netns')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('tapNameOf refuses a descriptor that is no tap queue', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      expect(() => tapNameOf(fd)).toThrow();
    } finally {
      closeSync(fd);
    }
  });

  it('a connection carries the descriptors with its first write, and only then; the rest reads and writes plainly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sn-tapfd-'));
    const path = join(dir, 'peer.sock');
    const received: { taps: (string | null)[]; text: string }[] = [];
    const server = createServer({ pauseOnConnect: true }, (socket: Socket) => {
      const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
      const poll = (): void => {
        const fds = peekRights(fd);
        if (fds === null) {
          setTimeout(poll, 1);
          return;
        }
        const taps = fds.map((passed) => {
          try {
            return tapNameOf(passed);
          } finally {
            closeSync(passed);
          }
        });
        let text = '';
        socket.on('data', (data: Buffer) => {
          text += data.toString();
          if (text.endsWith('\n')) {
            received.push({ taps, text });
            socket.end('answer');
          }
        });
        socket.resume();
      };
      poll();
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const tap = TapFd.open('tq1', nsPath);
    try {
      const connection = connectWithRights(path, [tap.fd]);
      // The listener is this process (SO_PEERCRED), running (its pidfd, SO_PEERPIDFD: Linux 6.5).
      expect(connection.peer.pid).toBe(process.pid);
      expect(connection.peer.running()).toBe(true);
      // Its network namespace, by that pidfd (PIDFD_GET_NET_NAMESPACE: Linux 6.11): ours.
      const netns = connection.peer.netnsFd();
      if (netns === undefined) throw new Error('no network namespace by the pidfd: this needs Linux 6.11');
      const [got, ours] = [fstatSync(netns), statSync('/proc/thread-self/ns/net')];
      closeSync(netns);
      expect([got.dev, got.ino]).toEqual([ours.dev, ours.ino]);
      let answer = '';
      connection.on('data', (data: Buffer) => (answer += data.toString()));
      const ended = new Promise((resolve) => connection.on('end', resolve));
      connection.write('first ');
      connection.write('second\n');
      await ended;
      expect(answer).toBe('answer');
      expect(received).toEqual([{ taps: ['tq1'], text: 'first second\n' }]);
      connection.destroy();
    } finally {
      tap.close();
      await new Promise((resolve) => server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => connectWithRights(path, [0])).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('an empty write after the peer has answered and closed sends nothing and does not fail', async () => {
    // node:http ends a request with an empty write; a VMM that answers and closes first must not
    // turn that into EPIPE (seen with cloud-hypervisor's fake under load).
    const dir = mkdtempSync(join(tmpdir(), 'sn-tapfd-'));
    const path = join(dir, 'peer.sock');
    const server = createServer((socket: Socket) => socket.once('data', () => socket.end('answer')));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const passed = openSync('/dev/null', 'r');
    try {
      const connection = connectWithRights(path, [passed]);
      connection.resume();
      const ended = new Promise((resolve) => connection.on('end', resolve));
      connection.write('request\n');
      await ended;
      // The peer is gone now; any write(2), even of no bytes, would be EPIPE.
      const written = await new Promise<Error | null | undefined>((resolve) => connection.write(Buffer.alloc(0), resolve));
      expect(written ?? null).toBeNull();
      connection.destroy();
    } finally {
      closeSync(passed);
      await new Promise((resolve) => server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the peer whose listener has exited (a launcher that handed the socket over): its pid, and not running; its pidfd closed with the connection', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sn-tapfd-'));
    const path = join(dir, 'orphan.sock');
    const passed = openSync('/dev/null', 'r');
    try {
      const launcher = await orphanedListener(path);
      const fds = readdirSync('/proc/self/fd').length;
      const connection = connectWithRights(path, [passed]);
      // The socket and the pidfd.
      expect(readdirSync('/proc/self/fd').length).toBe(fds + 2);
      expect(connection.peer.pid).toBe(launcher);
      expect(connection.peer.running()).toBe(false);
      expect(() => connection.peer.netnsFd()).toThrow(expect.objectContaining({ code: 'ESRCH' }));
      connection.destroy();
      expect(() => connection.peer.running()).toThrow(/closed/);
      await eventually('the socket and the pidfd closed', async () => readdirSync('/proc/self/fd').length === fds, 2000);
    } finally {
      closeSync(passed);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
