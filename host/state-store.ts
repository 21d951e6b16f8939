// Adapter: the state file on disk (<state dir>/links.json) and the lock that serialises writers.
//
// Writes are atomic and durable: the new text goes to a fresh temp file in the same directory
// (O_EXCL), which is fsynced, renamed over links.json, and then the directory is fsynced so the
// rename itself survives a crash. Readers therefore see the old file or the new one, never a mix.
//
// Lock: Node has no flock(2), and a lock *file* needs stale-lock detection, which is racy (PID
// reuse; two waiters both judging a lock stale and each deleting the other's fresh lock). Instead
// the lock is a Unix socket bound in Linux's abstract namespace, named after the state dir's
// device and inode: bind(2) succeeds for exactly one socket per name, and the kernel releases the
// name when the holder closes it or dies for any reason (even SIGKILL), so there is no stale lock
// to detect. Waiters retry until a timeout; a waiter that times out connects to the holder, which
// answers with its PID, for the error message. Caveat: abstract names are per network namespace,
// so every process sharing a state dir must run in the same network namespace (true for the host
// linker, whose devices live in the host namespace anyway). Linux only.
//
// File calls are synchronous behind the async interface: each takes microseconds (the fsyncs a
// few milliseconds that must finish before anything goes on anyway), and a short-lived command
// pays more for the thread pool and for loading node:fs/promises than for the calls themselves.
import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, constants, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { type LinkState, emptyState, parseState, serializeState } from './link-state.js';

export const DEFAULT_STATE_DIR = '/var/lib/spectrum-link';
export const STATE_DIR_ENV = 'SPECTRUM_STATE_DIR';
export const STATE_FILE = 'links.json';
const TEMP_PREFIX = `.${STATE_FILE}.`;
const TEMP_SUFFIX = '.tmp';

export type StateStoreErrorKind = 'state-dir-unusable' | 'read-failed' | 'write-failed' | 'lock-failed' | 'lock-timeout' | 'lock-reentered';

export class StateStoreError extends Error {
  override readonly name = 'StateStoreError';
  constructor(
    readonly kind: StateStoreErrorKind,
    message: string,
  ) {
    super(message);
  }
}

function reasonOf(error: unknown): string {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return error instanceof Error ? error.message : String(error);
}

function isCode(error: unknown, code: string): boolean {
  return error instanceof Error && 'code' in error && error.code === code;
}

export function stateFilePath(dir: string): string {
  return join(dir, STATE_FILE);
}

/** Whether dir holds a state file at all (a state with no links still has one once written). */
export function hasStateFile(dir: string): boolean {
  return existsSync(stateFilePath(dir));
}

/** The state recorded in dir; empty when there is no state file yet. Safe without the lock. */
export async function loadState(dir: string): Promise<LinkState> {
  const path = stateFilePath(dir);
  let text: string;
  try {
    // Non-blocking open and a type check first: reading a FIFO or a device put there would wait
    // (or read) forever, holding the lock.
    const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!fstatSync(fd).isFile()) throw Object.assign(new Error('not a regular file'), { code: 'not a regular file' });
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    if (isCode(error, 'ENOENT')) return emptyState();
    throw new StateStoreError('read-failed', `cannot read state file ${path} (${reasonOf(error)}); check that it is a readable file`);
  }
  return parseState(text, path); // a StateError names the file and leaves it alone
}

/** Replace the state file atomically and durably. Call it holding the lock (see updateState). */
export async function saveState(dir: string, state: LinkState): Promise<void> {
  const path = stateFilePath(dir);
  const temp = join(dir, `${TEMP_PREFIX}${process.pid}.${tempTag()}${TEMP_SUFFIX}`);
  try {
    const fd = openSync(temp, 'wx', 0o644);
    try {
      const bytes = Buffer.from(serializeState(state), 'utf8');
      for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // never created, or already renamed
    }
    throw new StateStoreError('write-failed', `cannot write state file ${path} (${reasonOf(error)}); check the state dir's permissions and free space`);
  }
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    throw new StateStoreError('write-failed', `wrote ${path} but could not sync ${dir} (${reasonOf(error)}); the change may not survive a crash`);
  }
}

let tempCount = 0;

/**
 * What makes a temp file name unique beside the PID (O_EXCL refuses a clash anyway): the time
 * in nanoseconds and a counter, so that a stale temp of a dead writer with a reused PID never
 * collides. (Loading node:crypto for random bytes takes 5-10 ms, about as long as the save.)
 */
function tempTag(): string {
  tempCount += 1;
  return `${process.hrtime.bigint().toString(16)}${tempCount.toString(16)}`;
}

/** Remove temp files left by writers that died mid-save. Only safe holding the lock. */
async function removeStaleTemps(dir: string): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names.filter((entry) => entry.startsWith(TEMP_PREFIX) && entry.endsWith(TEMP_SUFFIX))) {
    try {
      unlinkSync(join(dir, name));
    } catch {
      // gone already
    }
  }
}

async function ensureStateDir(dir: string): Promise<bigint[]> {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const info = statSync(dir, { bigint: true });
    if (!info.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'EEXIST' });
    return [info.dev, info.ino];
  } catch (error) {
    // mkdir -p says EEXIST where the path itself is no directory, ENOTDIR where a folder above it is none.
    const reason = isCode(error, 'EEXIST') ? 'it is not a directory' : isCode(error, 'ENOTDIR') ? 'a path above it is not a directory' : reasonOf(error);
    throw new StateStoreError('state-dir-unusable', `state dir ${dir} cannot be used (${reason}); pass --state-dir or set ${STATE_DIR_ENV} to a writable directory`);
  }
}

/** The abstract socket name that locks a state dir (identified by device and inode, not path). */
export function lockName(dev: bigint, ino: bigint): string {
  return `\0spectrum-link/state/${dev.toString(16)}:${ino.toString(16)}`;
}

function tryBind(name: string): Promise<Server | 'busy'> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket: Socket) => {
      socket.on('error', () => undefined);
      socket.end(`${process.pid}\n`);
    });
    server.once('error', (error) => {
      server.close(() => undefined);
      if (isCode(error, 'EADDRINUSE')) resolve('busy');
      else reject(error);
    });
    server.listen(name, () => {
      server.unref();
      resolve(server);
    });
  });
}

/** Ask the holder of a lock for its PID; undefined when it does not answer quickly. */
function holderPid(name: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    let text = '';
    const socket = createConnection(name);
    const done = (value: string | undefined): void => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(200, () => done(undefined));
    socket.on('data', (chunk) => (text += chunk.toString()));
    socket.on('end', () => done(/^[0-9]+\n$/.test(text) ? text.trim() : undefined));
    socket.on('error', () => done(undefined));
  });
}

export interface LockOptions {
  /** How long to wait for another invocation to finish, in milliseconds. */
  readonly timeoutMs?: number;
}

export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;

/** The locks held by the current async call chain: nesting is an error, concurrent calls wait. */
const held = new AsyncLocalStorage<ReadonlySet<string>>();

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Run fn holding the state dir's exclusive lock (creating the dir if needed). The lock is
 * released when fn settles, and by the kernel if this process dies. Not reentrant.
 */
export async function withStateLock<T>(dir: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  const [dev, ino] = await ensureStateDir(dir);
  const name = lockName(dev ?? 0n, ino ?? 0n);
  const outer = held.getStore() ?? new Set<string>();
  if (outer.has(name)) {
    throw new StateStoreError('lock-reentered', `this process already holds the lock of state dir ${dir}; do not nest withStateLock calls`);
  }
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS);
  let server: Server | 'busy';
  for (let attempt = 0; ; attempt++) {
    try {
      server = await tryBind(name);
    } catch (error) {
      throw new StateStoreError('lock-failed', `cannot take the lock of state dir ${dir} (${reasonOf(error)}); spectrum-link needs Linux abstract Unix sockets`);
    }
    if (server !== 'busy') break;
    if (Date.now() >= deadline) {
      const pid = await holderPid(name);
      throw new StateStoreError(
        'lock-timeout',
        `timed out waiting for the lock of state dir ${dir}: another spectrum-link${pid === undefined ? '' : ` (PID ${pid})`} is still holding it; check that it is not stuck`,
      );
    }
    await sleep(Math.min(5 * 2 ** Math.min(attempt, 4), 50) * (0.5 + Math.random()));
  }
  const lock = server;
  try {
    return await held.run(new Set([...outer, name]), fn);
  } finally {
    await new Promise<void>((resolve) => lock.close(() => resolve()));
  }
}

/**
 * Lock, load, apply a pure change, save when the state changed, unlock. The change returns the
 * new state plus anything else (e.g. allocateLinks' links); an unchanged state (the same object)
 * is not written. Errors thrown by the change leave the file as it was.
 */
export async function updateState<R extends { readonly state: LinkState }>(
  dir: string,
  change: (state: LinkState) => R,
  options: LockOptions = {},
): Promise<R> {
  return withStateLock(
    dir,
    async () => {
      await removeStaleTemps(dir);
      const before = await loadState(dir);
      const result = change(before);
      if (result.state !== before) await saveState(dir, result.state);
      return result;
    },
    options,
  );
}

/** The state dir to use: --state-dir, else $SPECTRUM_STATE_DIR (when not empty), else the default. */
export function stateDirFrom(flag: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  return flag ?? (env[STATE_DIR_ENV] || undefined) ?? DEFAULT_STATE_DIR;
}
