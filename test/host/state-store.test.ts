import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { chmod, chown, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEVICE_PREFIX_MAX, devicePrefix } from '../../host/device-names.js';
import { ID_COUNT, type Link, allocateLink, allocateLinks, emptyState, serializeState } from '../../host/link-state.js';
import { STATE_FILE_MAX_BYTES, StateStoreError, hasStateFile, loadState, probeStateWrite, saveState, stateDirFrom, stateFilePath, updateState, withStateLock } from '../../host/state-store.js';
import { VM_NAME_MAX, vmName } from '../../host/vm-name.js';
import { clientId } from '../../shared/client-id.js';
import { CLIENT_ID_MIN } from '../../shared/scheme.js';
import { UNIX_SOCKET_PATH_MAX } from '../../shared/unix-socket-path.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FIXTURE = join(ROOT, 'dist', 'test', 'host', 'fixtures', 'allocate.js');
const run = promisify(execFile);

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'spectrum-state-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const pair = { client: vmName('appvm-lynx'), provider: vmName('netvm') };

describe('load and save', () => {
  it('loads an empty state when there is no file', async () => {
    expect(await loadState(dir)).toEqual(emptyState());
  });

  it('round-trips, leaving only the state file', async () => {
    const { state } = allocateLinks(emptyState(), pair.client, [pair.provider, vmName('vpnvm')]);
    await saveState(dir, state);
    expect(await loadState(dir)).toEqual(state);
    expect(await readFile(stateFilePath(dir), 'utf8')).toBe(serializeState(state));
    expect(await readdir(dir)).toEqual(['links.json']);
  });

  it('refuses a corrupt file with a clear error and leaves it untouched', async () => {
    for (const corrupt of ['{"version":1,"links":[', '{"version":1,"links":[{"client":"a","provider":"b","id":0}]}', '', 'null']) {
      await writeFile(stateFilePath(dir), corrupt);
      await expect(loadState(dir)).rejects.toMatchObject({ name: 'StateError', message: expect.stringContaining(stateFilePath(dir)) });
      await expect(updateState(dir, (state) => allocateLink(state, pair))).rejects.toMatchObject({ name: 'StateError' });
      expect(await readFile(stateFilePath(dir), 'utf8')).toBe(corrupt);
      expect(await readdir(dir)).toEqual(['links.json']);
    }
  });

  it('reports an unreadable state file as a store error', async () => {
    await rm(dir, { recursive: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(stateFilePath(dir), { recursive: true }));
    await expect(loadState(dir)).rejects.toMatchObject({ name: 'StateStoreError', kind: 'read-failed' });
  });

  it('says a state dir that is a file (or lies below one) is no directory, as the lock does, not that its state file cannot be read', async () => {
    const file = join(dir, 'a-file');
    await writeFile(file, '');
    await expect(loadState(file)).rejects.toMatchObject({
      name: 'StateStoreError',
      kind: 'state-dir-unusable',
      message: `state dir ${file} cannot be used (it is not a directory); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory`,
    });
    await expect(loadState(join(file, 'below'))).rejects.toMatchObject({
      kind: 'state-dir-unusable',
      message: `state dir ${join(file, 'below')} cannot be used (a path above it is not a directory); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory`,
    });
    // The lock (link, unlink) says the same of the same dir.
    await expect(withStateLock(file, async () => undefined)).rejects.toMatchObject({
      kind: 'state-dir-unusable',
      message: `state dir ${file} cannot be used (it is not a directory); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory`,
    });
  });

  it.each([
    [{ from: 'option', flag: '--state-dir' }, '(from --state-dir) cannot be used (it is not a directory); check --state-dir: it must be a writable directory'],
    [
      { from: 'environment', variable: 'SPECTRUM_STATE_DIR' },
      '(from environment variable SPECTRUM_STATE_DIR) cannot be used (it is not a directory); check SPECTRUM_STATE_DIR: it must be a writable directory (or pass --state-dir, which overrides it)',
    ],
    [{ from: 'default' }, '(the default) cannot be used (it is not a directory); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory'],
  ] as const)('says where a state dir that cannot be used came from (%j), and what to check of it', async (source, said) => {
    const file = join(dir, 'a-file');
    await writeFile(file, '');
    const refused = { kind: 'state-dir-unusable', message: `state dir ${file} ${said}` };
    await expect(loadState(file, source)).rejects.toMatchObject(refused);
    await expect(withStateLock(file, async () => undefined, { source })).rejects.toMatchObject(refused);
    expect(() => hasStateFile(file, source)).toThrow(expect.objectContaining(refused));
  });

  it('refuses a state file that is a symlink (to a device or a FIFO too) or a FIFO at once instead of reading it (forever)', async () => {
    // A device first: the FIFO would block a plain read (and this test) for good.
    await symlink('/dev/null', stateFilePath(dir));
    await expect(loadState(dir)).rejects.toMatchObject({ name: 'StateStoreError', kind: 'read-failed', message: expect.stringContaining('not a regular file') });
    await rm(stateFilePath(dir));
    await run('mkfifo', [join(dir, 'fifo')]);
    await symlink('fifo', stateFilePath(dir));
    await expect(loadState(dir)).rejects.toMatchObject({ name: 'StateStoreError', kind: 'read-failed', message: expect.stringContaining('not a regular file') });
    await rm(stateFilePath(dir));
    await run('mkfifo', [stateFilePath(dir)]);
    await expect(loadState(dir)).rejects.toMatchObject({ name: 'StateStoreError', kind: 'read-failed', message: expect.stringContaining('not a regular file') });
    await expect(updateState(dir, (state) => allocateLink(state, pair))).rejects.toMatchObject({ kind: 'read-failed' });
  });

  it('refuses a state file that is a symlink to a regular file, leaving link and target as they were', async () => {
    const { state } = allocateLink(emptyState(), pair);
    const target = join(dir, 'real', 'links.json');
    await import('node:fs/promises').then((fs) => fs.mkdir(join(dir, 'real')));
    await writeFile(target, serializeState(state));
    const stateDir = join(dir, 'state');
    await import('node:fs/promises').then((fs) => fs.mkdir(stateDir));
    await symlink('../real/links.json', stateFilePath(stateDir));
    const refused = { name: 'StateStoreError', kind: 'read-failed', message: expect.stringMatching(/links\.json is a symbolic link .*--state-dir/) };
    await expect(loadState(stateDir)).rejects.toMatchObject(refused);
    await expect(updateState(stateDir, (s) => allocateLink(s, { client: vmName('appvm-other'), provider: pair.provider }))).rejects.toMatchObject(refused);
    expect(await readlink(stateFilePath(stateDir))).toBe('../real/links.json');
    expect(await readFile(target, 'utf8')).toBe(serializeState(state));
    expect(await readdir(stateDir)).toEqual(['links.json']);
  });

  it('reports a state dir that cannot be created', async () => {
    await writeFile(join(dir, 'file'), '');
    await expect(updateState(join(dir, 'file', 'sub'), (s) => ({ state: s }))).rejects.toMatchObject({
      kind: 'state-dir-unusable',
      message: expect.stringContaining('(a path above it is not a directory)'),
    });
    await expect(updateState(join(dir, 'file'), (s) => ({ state: s }))).rejects.toMatchObject({
      kind: 'state-dir-unusable',
      message: expect.stringContaining('(it is not a directory)'),
    });
  });

  it('refuses at once a state dir whose folders cannot be made where mkdir says ENOENT of an existing parent (under /proc)', async () => {
    // Node's recursive mkdir retries such a parent for ever, spinning and deaf to signals: run in a
    // child with a bound, so that a regression fails this test rather than hanging the suite.
    const stateDir = `/proc/sys/spectrum-link-test-${process.pid}/state`;
    const script = `import('${join(ROOT, 'dist', 'host', 'state-store.js')}').then((m) => m.updateState(process.argv[1], (s) => ({ state: s }))).catch((e) => { console.log(JSON.stringify({ kind: e.kind, message: e.message })); })`;
    const { stdout } = await run('node', ['--input-type=module', '-e', script, stateDir], { timeout: 10_000, killSignal: 'SIGKILL' });
    expect(JSON.parse(stdout)).toEqual({
      kind: 'state-dir-unusable',
      message: `state dir ${stateDir} cannot be used (cannot make /proc/sys/spectrum-link-test-${process.pid}: ENOENT); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory`,
    });
  });

  it('reports a state dir that is, or lies below, a symlink to nothing as such (where mkdir -p says ENOENT)', async () => {
    await symlink(join(dir, 'gone'), join(dir, 'dangling'));
    for (const stateDir of [join(dir, 'dangling'), join(dir, 'dangling', 'sub')]) {
      await expect(updateState(stateDir, (s) => ({ state: s }))).rejects.toMatchObject({
        kind: 'state-dir-unusable',
        message: `state dir ${stateDir} cannot be used (${join(dir, 'dangling')} is a symlink to ${join(dir, 'gone')}, which does not exist); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory`,
      });
    }
  });
});

describe('a state dir that is, or lies below, a symlink loop', () => {
  it.each([
    ['to itself', ['loop', 'loop']],
    ['round two symlinks', ['loop', 'other', 'other', 'loop']],
  ])('%s: said as a loop (not as a symlink to nothing, nor as a state file that is a symlink), by the lock (mkdir), a read and a look for the state file', async (_how, links) => {
    for (let index = 0; index < links.length; index += 2) await symlink(join(dir, links[index + 1]!), join(dir, links[index]!));
    const said = (stateDir: string): string =>
      `state dir ${stateDir} cannot be used (${join(dir, 'loop')} is a symlink to ${join(dir, links[1]!)}, which loops (ELOOP: too many levels of symbolic links)); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory`;
    for (const stateDir of [join(dir, 'loop'), join(dir, 'loop', 'sub')]) {
      const refused = { name: 'StateStoreError', kind: 'state-dir-unusable', message: said(stateDir) };
      await expect(updateState(stateDir, (state) => ({ state }))).rejects.toMatchObject(refused);
      await expect(loadState(stateDir)).rejects.toMatchObject(refused);
      expect(() => hasStateFile(stateDir)).toThrow(expect.objectContaining(refused));
    }
    expect((await readdir(dir)).sort()).toEqual([...new Set(links)].sort());
  });
});

describe('the size bound', () => {
  it('is at least twice the largest state: every id held, by the longest names, attached the longest way, through the longest sockets recorded, with the longest device prefix', async () => {
    // The longest socket path the state records: a Unix socket path's 107 bytes.
    const socket = `/${'s'.repeat(UNIX_SOCKET_PATH_MAX - 1)}`;
    const links: Link[] = Array.from({ length: ID_COUNT }, (_, index) => ({
      client: vmName(`c${String(index).padStart(VM_NAME_MAX - 1, '0')}`),
      provider: vmName(`p${String(index).padStart(VM_NAME_MAX - 1, '0')}`),
      id: clientId(CLIENT_ID_MIN + index),
      attached: { client: 'cloud-hypervisor', provider: 'cloud-hypervisor', clientSocket: socket, providerSocket: socket },
    }));
    const largest = { version: 2 as const, devicePrefix: devicePrefix('a'.repeat(DEVICE_PREFIX_MAX)), links };
    expect(Buffer.byteLength(serializeState(largest)) * 2).toBeLessThanOrEqual(STATE_FILE_MAX_BYTES);
    await saveState(dir, largest);
    expect((await loadState(dir)).links).toHaveLength(ID_COUNT);
  });

  it('refuses a state file over it before reading it (one byte over, a sparse one of 3 GB too), saying its size (rounded up) and the bound, and leaves it untouched', async () => {
    const path = stateFilePath(dir);
    for (const [size, shown] of [
      // Just over the bound: said over it (rounded up), not 64.0 MiB over the 64 MiB.
      [STATE_FILE_MAX_BYTES + 1, '64.1 MiB'],
      [3 * 1024 ** 3, '3072 MiB'],
    ] as const) {
      await writeFile(path, '');
      await truncate(path, size);
      const before = await stat(path);
      const refused = {
        name: 'StateStoreError',
        kind: 'too-large',
        message: `state file ${path} is ${shown}, over the 64 MiB a state file can take: not read, left untouched; check what wrote it (README: The state file)`,
      };
      await expect(loadState(dir)).rejects.toMatchObject(refused);
      await expect(updateState(dir, (state) => allocateLink(state, pair))).rejects.toMatchObject(refused);
      const after = await stat(path);
      expect({ size: after.size, mtimeMs: after.mtimeMs, ino: after.ino }).toEqual({ size: before.size, mtimeMs: before.mtimeMs, ino: before.ino });
      expect(await readdir(dir)).toEqual(['links.json']);
    }
  });

  it('reads a file of exactly the bound (a bad one is then refused for what it holds)', async () => {
    await writeFile(stateFilePath(dir), '');
    await truncate(stateFilePath(dir), STATE_FILE_MAX_BYTES);
    await expect(loadState(dir)).rejects.toMatchObject({ name: 'StateError', kind: 'not-json' });
  });
});

describe('mode and owner of the state file', () => {
  const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o7777;

  it('makes a first one 0644 (less the umask), owned by this user', async () => {
    await updateState(dir, (state) => allocateLink(state, pair));
    const info = await stat(stateFilePath(dir));
    expect({ mode: info.mode & 0o7777, uid: info.uid, gid: info.gid }).toEqual({ mode: 0o644 & ~process.umask(), uid: process.getuid?.(), gid: process.getgid?.() });
  });

  it("keeps an operator's mode on every save (0600, or one the umask would take bits from)", async () => {
    await updateState(dir, (state) => allocateLink(state, pair));
    for (const mode of [0o600, 0o666, 0o640]) {
      await chmod(stateFilePath(dir), mode);
      const before = await stat(stateFilePath(dir));
      await updateState(dir, (state) => allocateLink(state, { client: vmName(`appvm-${mode.toString(8)}`), provider: pair.provider }));
      const after = await stat(stateFilePath(dir));
      expect(after.ino, 'the file was replaced').not.toBe(before.ino);
      expect(await modeOf(stateFilePath(dir))).toBe(mode);
    }
    expect(await readdir(dir)).toEqual(['links.json']);
  });

  it("keeps another user's and group's ownership of the file (run as root)", async () => {
    expect(process.getuid?.(), 'this test chowns files: run it as root').toBe(0);
    await updateState(dir, (state) => allocateLink(state, pair));
    await chown(stateFilePath(dir), 65534, 65533);
    await chmod(stateFilePath(dir), 0o640);
    await updateState(dir, (state) => allocateLink(state, { client: vmName('appvm-other'), provider: pair.provider }));
    const info = await stat(stateFilePath(dir));
    expect({ uid: info.uid, gid: info.gid, mode: info.mode & 0o7777 }).toEqual({ uid: 65534, gid: 65533, mode: 0o640 });
    expect((await loadState(dir)).links).toHaveLength(2);
  });
});

describe('updateState', () => {
  it('persists allocations and gives the same pair its id back across runs', async () => {
    const first = await updateState(dir, (state) => allocateLink(state, pair));
    const second = await updateState(dir, (state) => allocateLink(state, pair));
    expect(second.link).toEqual(first.link);
    expect(second.created).toBe(false);
    expect((await loadState(dir)).links).toEqual([first.link]);
  });

  it('does not write when nothing changed, and cleans up temp files of dead writers', async () => {
    await writeFile(join(dir, '.links.json.123.abc.tmp'), 'half a write');
    await updateState(dir, (state) => ({ state }));
    expect(await readdir(dir)).toEqual([]);
  });

  it('leaves the file as it was when the change throws', async () => {
    await updateState(dir, (state) => allocateLink(state, pair));
    const before = await readFile(stateFilePath(dir), 'utf8');
    await expect(
      updateState(dir, () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await readFile(stateFilePath(dir), 'utf8')).toBe(before);
  });
});

describe('withStateLock', () => {
  it('serialises concurrent holders in one process', async () => {
    const events: string[] = [];
    const task = (name: string) =>
      withStateLock(dir, async () => {
        events.push(`${name}+`);
        await new Promise((resolve) => setTimeout(resolve, 20));
        events.push(`${name}-`);
      });
    await Promise.all([task('a'), task('b'), task('c')]);
    for (let i = 0; i < events.length; i += 2) expect(events[i]?.[0]).toBe(events[i + 1]?.[0]);
  });

  it('is released when the function throws', async () => {
    await expect(withStateLock(dir, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await withStateLock(dir, () => Promise.resolve(1), { timeoutMs: 100 })).toBe(1);
  });

  // A lock not released as it should be. Deleting the state dir meanwhile does not do it (the
  // descriptor holds its inode); its descriptor closed under it does (EBADF), as a file system
  // whose flock(2) fails (EIO) would.
  it('releases it all the same where the state dir is deleted meanwhile', async () => {
    expect(await withStateLock(dir, async () => (await rm(dir, { recursive: true }), 1))).toBe(1);
  });

  /** Close this process's descriptors of the state dir (the lock's): its release then fails. */
  const closeLockDescriptor = (): void => {
    const path = realpathSync(dir);
    const fds = readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === path;
      } catch {
        return false;
      }
    });
    expect(fds).toHaveLength(1);
    for (const fd of fds) closeSync(Number(fd));
  };
  const unreleased = (): string =>
    `the lock of state dir ${dir} was not released as it should be: unlocking it failed (EBADF), and so did closing its descriptor (EBADF): it is released once this process exits; check the state dir's file system (spectrum-link needs flock(2) on it)`;

  it("where the run failed: its error is thrown, not the release's, which is told", async () => {
    const told: unknown[] = [];
    const cause = new StateStoreError('write-failed', 'cannot write state file (ENOSPC)', 'ENOSPC');
    const run = withStateLock(
      dir,
      async () => {
        closeLockDescriptor();
        throw cause;
      },
      { onUnlockFailed: (error) => void told.push(error) },
    );
    await expect(run).rejects.toBe(cause);
    expect(told).toEqual([expect.objectContaining({ name: 'StateStoreError', kind: 'unlock-failed', code: 'EBADF', message: unreleased() })]);
    expect(await withStateLock(dir, () => Promise.resolve(1), { timeoutMs: 100 })).toBe(1);
  });

  it('where the run succeeded and nothing is told it: the failed release is the error, saying that the work is done', async () => {
    const run = withStateLock(dir, async () => closeLockDescriptor());
    await expect(run).rejects.toMatchObject({ name: 'StateStoreError', kind: 'unlock-failed', code: 'EBADF', message: `this run's work under the lock is done, but ${unreleased()}` });
    expect(await withStateLock(dir, () => Promise.resolve(1), { timeoutMs: 100 })).toBe(1);
  });

  it("where the run succeeded and onUnlockFailed is given: its result is returned (its work is done, to be said), the release's told", async () => {
    const told: unknown[] = [];
    const run = withStateLock(dir, async () => (closeLockDescriptor(), 'done'), { onUnlockFailed: (error) => void told.push(error) });
    expect(await run).toBe('done');
    expect(told).toEqual([expect.objectContaining({ name: 'StateStoreError', kind: 'unlock-failed', code: 'EBADF', message: unreleased() })]);
    expect(await withStateLock(dir, () => Promise.resolve(1), { timeoutMs: 100 })).toBe(1);
  });

  it('refuses nesting instead of deadlocking', async () => {
    await expect(withStateLock(dir, () => withStateLock(dir, () => Promise.resolve(1)))).rejects.toMatchObject({ kind: 'lock-reentered' });
  });

  it('stops waiting as soon as its signal is aborted (a Ctrl-C), long before the timeout, running nothing', async () => {
    let release = (): void => undefined;
    const holding = withStateLock(dir, () => new Promise<void>((resolve) => (release = resolve)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const controller = new AbortController();
    let ran = false;
    const started = performance.now();
    const waiting = withStateLock(dir, () => Promise.resolve((ran = true)), { timeoutMs: 30_000, signal: controller.signal }).catch((e: unknown) => e);
    setTimeout(() => controller.abort('SIGINT'), 50);
    const error = await waiting;
    const waitedMs = performance.now() - started;
    release();
    await holding;
    expect(error).toMatchObject({ kind: 'lock-aborted', message: expect.stringContaining('(SIGINT): nothing was changed') });
    expect(ran).toBe(false);
    expect(waitedMs).toBeLessThan(5_000);
    // And the lock is free again for the next one.
    expect(await withStateLock(dir, () => Promise.resolve(1), { timeoutMs: 1_000 })).toBe(1);
  });

  it('times out with the holder PID in the message', async () => {
    let release = (): void => undefined;
    const holding = withStateLock(dir, () => new Promise<void>((resolve) => (release = resolve)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const error = await withStateLock(dir, () => Promise.resolve(), { timeoutMs: 100 }).catch((e: unknown) => e);
    release();
    await holding;
    expect(error).toBeInstanceOf(StateStoreError);
    expect(error).toMatchObject({ kind: 'lock-timeout', message: expect.stringContaining(`PID ${process.pid}`) });
  });

  it('says how long it waited before giving up, and how to wait longer; with a wait of 0, gives up at the first try, running nothing', async () => {
    let release = (): void => undefined;
    const holding = withStateLock(dir, () => new Promise<void>((resolve) => (release = resolve)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    let ran = false;
    const waited = await withStateLock(dir, () => Promise.resolve((ran = true)), { timeoutMs: 250 }).catch((e: unknown) => e);
    const none = await withStateLock(dir, () => Promise.resolve((ran = true)), { timeoutMs: 0 }).catch((e: unknown) => e);
    release();
    await holding;
    const advice = 'check it is not stuck, or wait longer with --lock-wait SECONDS (README: Ids)';
    expect(waited).toMatchObject({
      kind: 'lock-timeout',
      message: `gave up on the lock of state dir ${dir} after waiting 0.25 s: another spectrum-link (PID ${process.pid}) holds it; ${advice}`,
    });
    expect(none).toMatchObject({
      kind: 'lock-timeout',
      message: `gave up on the lock of state dir ${dir} without waiting (a wait of 0 s): another spectrum-link (PID ${process.pid}) holds it; ${advice}`,
    });
    expect(ran).toBe(false);
    // A free lock is taken with a wait of 0 too.
    expect(await withStateLock(dir, () => Promise.resolve(1), { timeoutMs: 0 })).toBe(1);
  });
  it('writes its PID to a .lock-holder it makes itself: a symlink there is replaced, never written through (its target is untouched)', async () => {
    const target = join(dir, 'precious');
    await writeFile(target, 'keep me\n');
    await symlink(target, join(dir, '.lock-holder'));
    let seen = '';
    await withStateLock(dir, async () => {
      seen = await readFile(join(dir, '.lock-holder'), 'utf8');
    });
    expect(seen).toBe(`${process.pid}\n`);
    expect(await readFile(target, 'utf8')).toBe('keep me\n');
    expect(existsSync(join(dir, '.lock-holder'))).toBe(false);
  });
});

describe('across processes (needs a build)', () => {
  beforeAll(() => {
    // scripts/test builds once before the suite; rebuilding here would race other test files.
    if (!existsSync(FIXTURE)) throw new Error(`${FIXTURE} is missing: run \`npm run build\` first`);
  });

  it('20 parallel invocations get 20 distinct ids, all recorded', async () => {
    const clients = Array.from({ length: 20 }, (_, i) => `appvm-${i}`);
    const results = await Promise.all(clients.map((client) => run(process.execPath, [FIXTURE, 'allocate', dir, client, 'netvm'])));
    const ids = results.map((r) => Number(r.stdout.trim()));
    expect(new Set(ids).size).toBe(20);
    const state = await loadState(dir);
    expect(state.links).toHaveLength(20);
    expect(new Set(state.links.map((l) => l.id))).toEqual(new Set(ids));
    expect(await readdir(dir)).toEqual(['links.json']);
  });

  it('neither hangs on a FIFO at .lock-holder: not the holder writing its PID, nor a waiter that times out reading it', async () => {
    const STORE = join(ROOT, 'dist', 'host', 'state-store.js');
    const lockOnce = (timeoutMs: number) =>
      run(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const { withStateLock } = await import(${JSON.stringify(STORE)});
           await withStateLock(${JSON.stringify(dir)}, () => Promise.resolve(), { timeoutMs: ${timeoutMs} }).then(() => console.log('locked'), (e) => console.log(e.kind));`,
        ],
        { timeout: 5000 },
      );
    const fifo = join(dir, '.lock-holder');
    await run('mkfifo', [fifo]);
    // The holder: on a FIFO, open(2) for writing would wait for a reader forever, lock held.
    expect((await lockOnce(1000)).stdout).toBe('locked\n');
    // A waiter that times out reads the holder's PID: on a FIFO, open(2) for reading would wait for a writer forever.
    let release = (): void => undefined;
    await rm(fifo, { force: true });
    const holding = withStateLock(dir, async () => {
      await rm(fifo, { force: true });
      await run('mkfifo', [fifo]);
      await new Promise<void>((resolve) => (release = resolve));
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const waiter = await lockOnce(100).finally(release);
    await holding;
    expect(waiter.stdout).toBe('lock-timeout\n');
  });

  it("refuses to save where it cannot keep the file's owner (run as a user who may not chown), keeping the old file", async () => {
    expect(process.getuid?.(), 'this test runs the fixture as another user: run it as root').toBe(0);
    await updateState(dir, (state) => allocateLink(state, pair));
    const before = await readFile(stateFilePath(dir), 'utf8');
    // The dir is nobody's, so nobody could replace root's file there: the owner is what stops it.
    await chown(dir, 65534, 65534);
    const result = await run(process.execPath, [FIXTURE, 'allocate', dir, 'appvm-other', 'netvm'], { uid: 65534, gid: 65534 }).catch((error: { code: number; stdout: string }) => error);
    expect(result).toMatchObject({
      code: 1,
      stdout: `write-failed: cannot write state file ${stateFilePath(dir)}: the new file cannot be given the old one's owner 0:0 (EPERM), so the old one was kept; run spectrum-link as root or as that owner, or chown the file to the user that runs it\n`,
    });
    expect(await readFile(stateFilePath(dir), 'utf8')).toBe(before);
    expect((await stat(stateFilePath(dir))).uid).toBe(0);
    expect(await readdir(dir)).toEqual(['links.json']);
  });

  it('probeStateWrite leaves the state file as it was (not written again: same inode, times and text) and nothing else in the dir', async () => {
    await updateState(dir, (state) => allocateLink(state, pair));
    const before = await stat(stateFilePath(dir), { bigint: true });
    const text = await readFile(stateFilePath(dir), 'utf8');
    await probeStateWrite(dir);
    const after = await stat(stateFilePath(dir), { bigint: true });
    expect([after.ino, after.mtimeNs, after.ctimeNs]).toEqual([before.ino, before.mtimeNs, before.ctimeNs]);
    expect(await readFile(stateFilePath(dir), 'utf8')).toBe(text);
    expect(await readdir(dir)).toEqual(['links.json']);
  });

  it("probeStateWrite fails as a save would where the state file's owner cannot be kept (run as a user who may not chown), its error structured", async () => {
    expect(process.getuid?.(), 'this test runs the fixture as another user: run it as root').toBe(0);
    await updateState(dir, (state) => allocateLink(state, pair));
    await chown(dir, 65534, 65534);
    const result = await run(process.execPath, [FIXTURE, 'probe', dir], { uid: 65534, gid: 65534 }).catch((error: { code: number; stdout: string }) => error);
    expect(result).toMatchObject({ code: 1, stdout: expect.stringMatching(/^write-failed EPERM: cannot write state file .*: the new file cannot be given the old one's owner 0:0 \(EPERM\)/) });
    expect(await readdir(dir)).toEqual(['links.json']);
    // Not writable at all for that user: EACCES, as a save says it.
    await chown(dir, 0, 0);
    const denied = await run(process.execPath, [FIXTURE, 'probe', dir], { uid: 65534, gid: 65534 }).catch((error: { code: number; stdout: string }) => error);
    expect(denied).toMatchObject({ code: 1, stdout: `write-failed EACCES: cannot write state file ${stateFilePath(dir)} (EACCES); check the state dir's permissions and free space\n` });
  });

  it('says a relative state dir cannot be resolved where the working directory is gone', async () => {
    const gone = await mkdtemp(join(tmpdir(), 'spectrum-cwd-'));
    // The shell enters the directory and removes it, then becomes the fixture, run from there.
    const { stdout } = await run('sh', ['-c', 'cd "$1" && rmdir "$1" && exec "$2" "$3" try state 300', 'sh', gone, process.execPath, FIXTURE]).catch(
      (error: { stdout: string }) => error,
    );
    expect(existsSync(gone)).toBe(false);
    expect(stdout).toBe(
      'state-dir-unusable: state dir state cannot be used (the working directory is gone, so the relative path cannot be resolved: give an absolute path); pass --state-dir or set SPECTRUM_STATE_DIR to a writable directory\n',
    );
  });

  it('the kernel releases the lock of a killed holder (no stale lock)', async () => {
    const holder: ChildProcess = spawn(process.execPath, [FIXTURE, 'hold', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      holder.stdout?.on('data', (chunk: Buffer) => chunk.toString().includes('locked') && resolve());
      holder.on('exit', () => reject(new Error('holder exited early')));
    });
    await expect(withStateLock(dir, () => Promise.resolve(), { timeoutMs: 100 })).rejects.toMatchObject({
      kind: 'lock-timeout',
      message: expect.stringContaining(`PID ${holder.pid}`),
    });
    const exited = new Promise((resolve) => holder.on('exit', resolve));
    holder.kill('SIGKILL');
    await exited;
    expect(await withStateLock(dir, () => Promise.resolve('mine'), { timeoutMs: 2_000 })).toBe('mine');
  });
});

describe('stateDirFrom', () => {
  it('prefers the flag, then a non-empty env var, then the default', () => {
    expect(stateDirFrom('/flag', { SPECTRUM_STATE_DIR: '/env' })).toBe('/flag');
    expect(stateDirFrom(undefined, { SPECTRUM_STATE_DIR: '/env' })).toBe('/env');
    expect(stateDirFrom(undefined, { SPECTRUM_STATE_DIR: '' })).toBe('/var/lib/spectrum-link');
  });
});
