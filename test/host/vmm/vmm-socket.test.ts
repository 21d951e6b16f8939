// Finding a VMM's socket without following a symlink at its path, and what is said of anything
// else found there. The clients that use it (QMP, cloud-hypervisor) are tested with a symlink too.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VmmSocket, VmmSocketError, noVmmThere, vmmPresence } from '../../../host/vmm/vmm-socket.js';

let dir: string;
let servers: Server[];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'spectrum-vmm-socket-'));
  servers = [];
});
afterEach(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  rmSync(dir, { recursive: true, force: true });
});

/** A listening socket at path; `connections` counts who connected. */
async function listen(path: string): Promise<{ connections: () => number }> {
  let count = 0;
  const server = createServer((socket: Socket) => {
    count += 1;
    socket.destroy();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { connections: () => count };
}

/** This process's open descriptors. */
const openFds = (): number => readdirSync('/proc/self/fd').length;

const failure = (path: string): VmmSocketError => {
  try {
    VmmSocket.find(path, 'start the VMM');
  } catch (error) {
    if (error instanceof VmmSocketError) return error;
    throw error;
  }
  throw new Error(`${path} was found`);
};

describe('VmmSocket.find', () => {
  it('finds a socket, and connecting through it reaches that socket', async () => {
    const path = join(dir, 'vmm.sock');
    const server = await listen(path);
    const found = VmmSocket.find(path, 'start the VMM');
    try {
      expect(found.connectPath).toMatch(/^\/proc\/self\/fd\/\d+$/);
      await new Promise<void>((resolve, reject) => createConnection({ path: found.connectPath }).once('connect', resolve).once('error', reject));
    } finally {
      found.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(server.connections()).toBe(1);
  });

  it('refuses a symlink at the path, even to a listening socket, saying so; nothing connects to the target', async () => {
    const target = join(dir, 'other-vm.sock');
    const server = await listen(target);
    symlinkSync(target, join(dir, 'vmm.sock'));
    const before = openFds();
    const error = failure(join(dir, 'vmm.sock'));
    expect(error.kind).toBe('symlink');
    expect(error.message).toMatch(/^not a socket but a symlink, which spectrum-link does not follow for VMM sockets/);
    expect(openFds()).toBe(before);
    // Also a relative one, and one to a symlink to the socket.
    symlinkSync('other-vm.sock', join(dir, 'relative.sock'));
    symlinkSync(join(dir, 'vmm.sock'), join(dir, 'chain.sock'));
    expect(failure(join(dir, 'relative.sock')).kind).toBe('symlink');
    expect(failure(join(dir, 'chain.sock')).kind).toBe('symlink');
    expect(server.connections()).toBe(0);
  });

  it('follows symlinks higher up: a VM directory that is a symlink is the host\'s to make', async () => {
    mkdirSync(join(dir, 'by-id', '7'), { recursive: true });
    const server = await listen(join(dir, 'by-id', '7', 'vmm.sock'));
    symlinkSync(join(dir, 'by-id', '7'), join(dir, 'netvm'));
    const found = VmmSocket.find(join(dir, 'netvm', 'vmm.sock'), 'start the VMM');
    try {
      await new Promise<void>((resolve, reject) => createConnection({ path: found.connectPath }).once('connect', resolve).once('error', reject));
    } finally {
      found.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(server.connections()).toBe(1);
  });

  describe("below the VM's directory (vmDir: a template's first component with {vm})", () => {
    /** A connection through the socket found at path, below vmDir. */
    const reach = async (path: string, vmDir: string): Promise<void> => {
      const found = VmmSocket.find(path, 'start the VMM', vmDir);
      try {
        await new Promise<void>((resolve, reject) => createConnection({ path: found.connectPath }).once('connect', resolve).once('error', reject));
      } finally {
        found.close();
      }
    };
    const refusal = (path: string, vmDir: string): VmmSocketError => {
      try {
        VmmSocket.find(path, 'start the VMM', vmDir).close();
      } catch (error) {
        if (error instanceof VmmSocketError) return error;
        throw error;
      }
      throw new Error(`${path} was found`);
    };

    it("refuses a symlinked directory below it (to another VM's), saying which and where it leads; nothing connects to the target, no descriptor is left", async () => {
      mkdirSync(join(dir, 'other', 'sub'), { recursive: true });
      const other = await listen(join(dir, 'other', 'sub', 'vmm.sock'));
      mkdirSync(join(dir, 'netvm'));
      symlinkSync(join(dir, 'other', 'sub'), join(dir, 'netvm', 'sub'));
      mkdirSync(join(dir, 'netvm', 'real'));
      await listen(join(dir, 'netvm', 'real', 'vmm.sock'));
      const before = openFds();
      const error = refusal(join(dir, 'netvm', 'sub', 'vmm.sock'), join(dir, 'netvm'));
      expect(error.kind).toBe('symlink-below-vm-dir');
      expect(error.message).toBe(
        `${join(dir, 'netvm', 'sub')} is a symlink (to ${join(dir, 'other', 'sub')}) below the VM's directory ${join(dir, 'netvm')}, which spectrum-link does not follow for VMM sockets (whoever may write the VM's directory could point it at another VM's socket): give a socket path with no symlink below the VM's directory (make that a directory of its own)`,
      );
      // Deeper down, relative, or leading back into the VM's own directory: refused all the same.
      mkdirSync(join(dir, 'netvm', 'a'));
      symlinkSync('../../other/sub', join(dir, 'netvm', 'a', 'b'));
      expect(refusal(join(dir, 'netvm', 'a', 'b', 'vmm.sock'), join(dir, 'netvm')).message).toMatch(/netvm\/a\/b is a symlink \(to \.\.\/\.\.\/other\/sub\) below/);
      symlinkSync('real', join(dir, 'netvm', 'alias'));
      expect(refusal(join(dir, 'netvm', 'alias', 'vmm.sock'), join(dir, 'netvm')).kind).toBe('symlink-below-vm-dir');
      // A `..` after the symlink leads where the kernel takes it: no more the VM's.
      expect(refusal(join(dir, 'netvm', 'sub', '..', 'sub', 'vmm.sock'), join(dir, 'netvm')).kind).toBe('symlink-below-vm-dir');
      expect(other.connections()).toBe(0);
      expect(openFds()).toBe(before);
      // The refusal is no VMM missing: a detach does not take the VM as stopped.
      expect(noVmmThere(error)).toBeUndefined();
      // With `sub` the VM's directory (the template's {vm} there), it is the host's to make: followed.
      await reach(join(dir, 'netvm', 'sub', 'vmm.sock'), join(dir, 'netvm', 'sub'));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(other.connections()).toBe(1);
    });

    it('takes a VM directory that is a symlink itself (the host\'s, by VM id), a plain subdirectory, and `.`, `..` and `//` within', async () => {
      mkdirSync(join(dir, 'by-id', '7', 'sub'), { recursive: true });
      const server = await listen(join(dir, 'by-id', '7', 'sub', 'vmm.sock'));
      symlinkSync(join(dir, 'by-id', '7'), join(dir, 'netvm'));
      await reach(join(dir, 'netvm', 'sub', 'vmm.sock'), join(dir, 'netvm'));
      await reach(`${join(dir, 'netvm')}/./sub//../sub/vmm.sock`, join(dir, 'netvm'));
      // Directories above the VM's may be symlinks too.
      symlinkSync(dir, join(dir, 'up'));
      await reach(join(dir, 'up', 'netvm', 'sub', 'vmm.sock'), join(dir, 'up', 'netvm'));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(server.connections()).toBe(3);
      // A symlink at the socket's own name is refused as ever; nothing at the path is a missing socket.
      symlinkSync('vmm.sock', join(dir, 'by-id', '7', 'sub', 'link.sock'));
      expect(refusal(join(dir, 'netvm', 'sub', 'link.sock'), join(dir, 'netvm')).kind).toBe('symlink');
      expect(refusal(join(dir, 'netvm', 'sub', 'none.sock'), join(dir, 'netvm')).kind).toBe('missing');
      expect(refusal(join(dir, 'gone', 'sub', 'vmm.sock'), join(dir, 'gone')).kind).toBe('missing');
    });

    it("takes `//` right after the VM's directory (/run/vm/{vm}//qmp.sock), as the kernel does, not as a symlink below it", async () => {
      mkdirSync(join(dir, 'by-id', '7', 'sub'), { recursive: true });
      const top = await listen(join(dir, 'by-id', '7', 'vmm.sock'));
      const deeper = await listen(join(dir, 'by-id', '7', 'sub', 'vmm.sock'));
      symlinkSync(join(dir, 'by-id', '7'), join(dir, 'netvm'));
      await reach(`${join(dir, 'netvm')}//vmm.sock`, join(dir, 'netvm'));
      await reach(`${join(dir, 'netvm')}///sub/vmm.sock`, join(dir, 'netvm'));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect([top.connections(), deeper.connections()]).toEqual([1, 1]);
      // A symlink below it is refused all the same.
      symlinkSync(join(dir, 'by-id', '7', 'sub'), join(dir, 'by-id', '7', 'alias'));
      expect(refusal(`${join(dir, 'netvm')}//alias/vmm.sock`, join(dir, 'netvm')).kind).toBe('symlink-below-vm-dir');
    });
  });

  it('says what is there instead of a socket, and leaves no descriptor open', () => {
    writeFileSync(join(dir, 'file'), '');
    mkdirSync(join(dir, 'dir'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    symlinkSync(join(dir, 'file'), join(dir, 'link-to-file'));
    const before = openFds();
    expect(failure(join(dir, 'file'))).toMatchObject({ kind: 'not-a-socket', message: 'not a socket but a regular file: check the path' });
    expect(failure(join(dir, 'dir'))).toMatchObject({ kind: 'not-a-socket', message: 'not a socket but a directory: check the path' });
    expect(failure(join(dir, 'fifo'))).toMatchObject({ kind: 'not-a-socket', message: 'not a socket but a special file: check the path' });
    expect(failure(join(dir, 'link-to-file')).kind).toBe('symlink');
    expect(failure(join(dir, 'none'))).toMatchObject({ kind: 'missing', message: 'no such socket: start the VMM' });
    expect(failure(join(dir, 'file', 'below'))).toMatchObject({ kind: 'unopenable', message: 'a path above it is not a directory: check the path' });
    expect(openFds()).toBe(before);
  });

  it('calls a refusing socket one nobody listens on (a VMM that exited and left it), naming the path, not /proc', async () => {
    const path = join(dir, 'vmm.sock');
    await listen(path);
    const found = VmmSocket.find(path, 'start the VMM');
    try {
      const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      expect(found.connectProblem(refused)).toMatch(/^connection refused: nothing listens there; the VMM may have exited/);
      const other = Object.assign(new Error(`connect EPERM ${found.connectPath}`), { code: 'EPERM' });
      expect(found.connectProblem(other)).toBe(`connect EPERM ${path}`);
    } finally {
      found.close();
    }
  });

  // A raw newline would become a space on the message's one line; '$' is no replacement pattern
  // (as one, '$&' put the raw path back and '$$' dropped a '$').
  it.each([
    ['a newline', 'a\nb.sock', 'c\nd.sock'],
    ["a newline and '$&' or '$$'", 'a\n$&$$b.sock', "c\n$'$$d.sock"],
  ])('names a path with %s in it escaped and as it is, as every socket path is shown', async (_what, socketName, loopedName) => {
    const path = join(dir, socketName);
    await listen(path);
    const found = VmmSocket.find(path, 'start the VMM');
    try {
      const other = Object.assign(new Error(`connect EPERM ${found.connectPath}`), { code: 'EPERM' });
      expect(found.connectProblem(other)).toBe(`connect EPERM ${JSON.stringify(path)}`);
    } finally {
      found.close();
    }
    // A failure to open that Node words with the path in it (a symlink loop above it).
    symlinkSync(join(dir, 'loop'), join(dir, 'loop'));
    const looped = join(dir, 'loop', loopedName);
    expect(failure(looped)).toMatchObject({ kind: 'unopenable', message: expect.stringContaining(`open '${JSON.stringify(looped)}'`) });
    expect(failure(looped).message).not.toContain('\n');
  });
});

describe('noVmmThere', () => {
  it('says that no VMM runs only where nothing is at the path or nothing listens on the socket; anything else there says nothing of the VMM', () => {
    writeFileSync(join(dir, 'file'), '');
    mkdirSync(join(dir, 'dir'));
    symlinkSync(join(dir, 'gone'), join(dir, 'dangling'));
    expect(noVmmThere(failure(join(dir, 'none')))).toBe('no-socket');
    for (const path of ['file', 'dir', 'dangling', join('file', 'below')]) expect(noVmmThere(failure(join(dir, path))), path).toBeUndefined();
    const errno = (code: string): Error => Object.assign(new Error(`connect ${code}`), { code });
    expect(noVmmThere(errno('ECONNREFUSED'))).toBe('stale-socket');
    // EACCES: a socket that may not be opened; ENOENT on connect: /proc/self/fd missing, not the socket.
    for (const code of ['EACCES', 'ENOENT', 'EPERM']) expect(noVmmThere(errno(code)), code).toBeUndefined();
    expect(noVmmThere(new VmmSocketError('unopenable', 'permission denied: run as a user that may open the socket'))).toBeUndefined();
  });
});

describe('vmmPresence', () => {
  it('running where a socket takes a connection (closed at once, nothing sent); none where nothing is there or a socket refuses; else why not, a symlink not followed', async () => {
    const path = join(dir, 'vmm.sock');
    const server = await listen(path);
    const before = openFds();
    expect(await vmmPresence(path, 1000)).toEqual({ running: true });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(server.connections()).toBe(1);
    expect(await vmmPresence(join(dir, 'none'), 1000)).toEqual({ running: false, none: true, why: 'nothing is at that path' });
    // A socket bound but not listening refuses connections, as one a VMM left when it exited.
    const stale = join(dir, 'stale.sock');
    execFileSync('python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
    expect(await vmmPresence(stale, 1000)).toEqual({ running: false, none: true, why: 'a socket there refuses connections (left by a VMM that exited)' });
    symlinkSync(path, join(dir, 'link.sock'));
    expect(await vmmPresence(join(dir, 'link.sock'), 1000)).toMatchObject({ running: false, none: false, why: expect.stringContaining('symlink') });
    writeFileSync(join(dir, 'file'), '');
    expect(await vmmPresence(join(dir, 'file'), 1000)).toEqual({ running: false, none: false, why: 'not a socket but a regular file: check the path' });
    expect(server.connections()).toBe(1);
    expect(openFds()).toBe(before);
  });
});
