// Adapter: the state file on disk (<state dir>/links.json) and the lock that serialises writers.
//
// Writes are atomic and durable: the new text goes to a fresh temp file in the same directory
// (O_EXCL), which is fsynced, renamed over links.json, and then the directory is fsynced so the
// rename itself survives a crash. Readers therefore see the old file or the new one, never a mix.
//
// Lock: flock(2) (LOCK_EX) on a read-only descriptor of the state dir itself, through a small
// addon (host/native/state-lock.c; Node has no flock). Unlike a lock *file* whose existence is
// the lock, it needs no stale-lock detection: the kernel releases it when the holder unlocks or
// closes the descriptor, or dies for any reason (even SIGKILL). It is a property of the directory's
// inode, so it holds for every process that opens the same directory, whatever network, mount or
// PID namespace it runs in (an abstract Unix socket name, the earlier lock, held only within one
// network namespace). Two open descriptors exclude each other even within one process, so
// concurrent calls here wait like other processes do; nesting within one call chain is refused
// (it would wait for itself). Waiters retry with LOCK_NB until a timeout. The holder writes its
// PID to <state dir>/.lock-holder (best effort, removed on release) for the message of a waiter
// that times out; nothing else reads it, and a stale one (a holder killed) is harmless.
// Linux (or any system with flock(2) on directories; not NFS, where the kernel emulates flock
// with a write lock, which a directory opened read-only cannot take).
//
// File calls are synchronous behind the async interface: each takes microseconds (the fsyncs a
// few milliseconds that must finish before anything goes on anyway), and a short-lived command
// pays more for the thread pool and for loading node:fs/promises than for the calls themselves.
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type Stats,
  closeSync,
  constants,
  existsSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { type OptionSource, pathFix, shownOrigin } from '../shared/cli/option-source.js';
import { danglingSymlinkOn, symlinkLoopOn, symlinkToNothing } from '../shared/dangling-symlink.js';
import { loadNativeAddon } from '../shared/native-addon.js';
import { ID_COUNT, type LinkState, emptyState, parseState, serializeState } from './link-state.js';

export const DEFAULT_STATE_DIR = '/var/lib/spectrum-link';
export const STATE_DIR_ENV = 'SPECTRUM_STATE_DIR';
export const STATE_FILE = 'links.json';
const TEMP_PREFIX = `.${STATE_FILE}.`;
const TEMP_SUFFIX = '.tmp';
/** Where the lock's holder writes its PID, for the message of a waiter that times out. */
const HOLDER_FILE = '.lock-holder';

/**
 * The largest state file read: 64 MiB. The largest state spectrum-link writes holds all 65534 ids
 * (CLIENT_ID_MIN..CLIENT_ID_MAX), each on a line of at most 507 bytes (two 64-character VM names,
 * a 5-digit id, both sides attached with cloud-hypervisor, the longest mode, through sockets of
 * 107 bytes, the longest recorded: link-state.ts's isRecordedSocket, and a 5-digit MTU): 33.2 MB. 64 MiB is twice
 * that, room for a file reformatted by hand (pretty-printed with a key per line it is 38 MB), and
 * no more: JSON.parse of junk near the bound takes gigabytes (128 MiB of `[{},{},...]`: 69 s and
 * 4.1 GB, a reviewer measured). A larger file cannot be a state, and reading it would take as long and as much
 * memory as it is large (a sparse file of 3 GB: 17 s and 4 GB, holding the lock) only to be refused.
 */
export const STATE_FILE_MAX_BYTES = 64 * 1024 * 1024;

export type StateStoreErrorKind =
  | 'state-dir-unusable'
  /** A state dir named by --state-dir or its variable does not exist (requireNamedStateDir): bad input. */
  | 'state-dir-missing'
  | 'read-failed'
  /** The state file is larger than STATE_FILE_MAX_BYTES: not read, left as it is. */
  | 'too-large'
  /** The new state did not replace the file: it holds what it held before. */
  | 'write-failed'
  /**
   * The directory could not be synced: after a save, the new state replaced the file but a crash
   * may bring the old one back; after a probe (probeStateWrite), nothing was changed.
   */
  | 'sync-failed'
  | 'lock-failed'
  | 'lock-timeout'
  | 'lock-reentered'
  | 'lock-aborted'
  /**
   * The lock was not released as it should be: its unlock, or the close of the state dir's
   * descriptor, failed (withStateLock). Told where the caller takes it (LockOptions.onUnlockFailed),
   * the run's own error or result standing; else thrown where the run under it succeeded.
   */
  | 'unlock-failed';

export class StateStoreError extends Error {
  override readonly name = 'StateStoreError';
  constructor(
    readonly kind: StateStoreErrorKind,
    message: string,
    /** The errno name (ENOSPC, EROFS, ...) where the failure has one: for a caller's decision, never read from the message. */
    readonly code?: string,
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

/**
 * Where a state dir's path came from (--state-dir, $SPECTRUM_STATE_DIR, the default), for the
 * messages that say what to check; left out (a caller that does not know), they name none.
 */
export type StateDirSource = OptionSource | undefined;

/**
 * What a message about a state dir that will not do says to check, by where its path came from
 * (`want`: what it must be).
 */
export function stateDirFix(source: StateDirSource, want = 'a writable directory'): string {
  return pathFix('--state-dir', STATE_DIR_ENV, source, want);
}

/**
 * Why a state dir cannot be used, said as `link`'s lock says it (openStateDir): for a reader too,
 * which would otherwise name a file under it (`<dir>/links.json`, ENOTDIR) or find no state at all.
 */
function stateDirUnusable(dir: string, reason: string, source: StateDirSource): StateStoreError {
  return new StateStoreError('state-dir-unusable', `${shownOrigin('state dir', dir, source)} cannot be used (${reason}); ${stateDirFix(source)}`);
}

/** Opening `<dir>/links.json` said ENOTDIR: dir is a file, or a path above it is. */
function notADirectory(dir: string, source: StateDirSource): StateStoreError {
  let reason = 'it is not a directory';
  try {
    statSync(dir);
  } catch (error) {
    if (isCode(error, 'ENOTDIR')) reason = 'a path above it is not a directory';
  }
  return stateDirUnusable(dir, reason, source);
}

/**
 * Refuse a state dir named by --state-dir or $SPECTRUM_STATE_DIR that does not exist: a typo, most
 * likely, which a command that only reads or takes down (list, show, unlink, gc) would take for a
 * host with nothing linked. The default one missing is such a host (nothing linked yet); `link`
 * makes either, as its first record needs it. A path that does not exist because it is, or goes
 * through, a symlink to nothing is no typo and nothing `link` can make a directory at: it cannot
 * be used, said as `link` says it (exit 1). Anything else wrong with the path is left to the
 * reader or the lock, which say it (not a directory, a path above it not one).
 */
export function requireNamedStateDir(dir: string, source: StateDirSource): void {
  if (source === undefined || source.from === 'default') return;
  try {
    statSync(dir);
  } catch (error) {
    if (!isCode(error, 'ENOENT')) return;
    // (A relative dir whose working directory is gone is refused before this, by usablePath.)
    const dangling = danglingSymlinkOn(dir);
    if (dangling !== undefined) throw stateDirUnusable(dir, dangling, source);
    const want = 'the directory the links are recorded in (spectrum-link link makes it as it records the first)';
    throw new StateStoreError('state-dir-missing', `${shownOrigin('state dir', dir, source)} does not exist; ${stateDirFix(source, want)}`);
  }
}

/**
 * Whether a state dir does not exist, with no symlink to nothing on its path: the default one on a
 * host where nothing was linked yet (a named one is refused before, requireNamedStateDir). It
 * records no links, which a command that takes links down (`unlink`) says without the lock, which
 * would make it: a command that finds nothing to do leaves no trace. A dir that is there, or
 * cannot be (a symlink to nothing, a file on its path), is left to the reader or the lock.
 */
export function stateDirAbsent(dir: string): boolean {
  try {
    statSync(dir);
    return false;
  } catch (error) {
    return isCode(error, 'ENOENT') && danglingSymlinkOn(dir) === undefined;
  }
}

/**
 * Whether dir holds a state file at all (a state with no links still has one once written). Not
 * followed: a symlink there, to nothing too, is a state file that loadState refuses as one, not none.
 */
export function hasStateFile(dir: string, source?: StateDirSource): boolean {
  try {
    lstatSync(stateFilePath(dir));
    return true;
  } catch (error) {
    // A state dir that is a file holds no state, but is no state dir either: said so, not "no state file".
    if (isCode(error, 'ENOTDIR')) throw notADirectory(dir, source);
    // Nor is one that loops (a symlink loop on its path).
    const loop = isCode(error, 'ELOOP') ? symlinkLoopOn(dir) : undefined;
    if (loop !== undefined) throw stateDirUnusable(dir, loop, source);
    return false;
  }
}

/** The state recorded in dir; empty when there is no state file yet. Safe without the lock. */
export async function loadState(dir: string, source?: StateDirSource): Promise<LinkState> {
  const path = stateFilePath(dir);
  let text: string;
  try {
    // Non-blocking open and a type check first: reading a FIFO or a device put there would wait
    // (or read) forever, holding the lock. A symlink is refused, not followed: the atomic rename
    // of the next save would replace the link with a regular file and leave its target stale
    // (and a target outside the state dir is outside the lock: another state dir could link to it).
    const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    try {
      const info = fstatSync(fd);
      if (!info.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'not a regular file' });
      if (info.size > STATE_FILE_MAX_BYTES) throw new StateStoreError('too-large', tooLargeMessage(path, info.size));
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    if (error instanceof StateStoreError) throw error;
    if (isCode(error, 'ENOENT')) return emptyState();
    if (isCode(error, 'ENOTDIR')) throw notADirectory(dir, source);
    if (isCode(error, 'ELOOP')) {
      // The state dir itself may be what loops (O_NOFOLLOW refuses only the file's own symlink).
      const loop = symlinkLoopOn(dir);
      if (loop !== undefined) throw stateDirUnusable(dir, loop, source);
      throw new StateStoreError(
        'read-failed',
        `state file ${path} is a symbolic link (not a regular file), which a save would replace rather than follow; move the file it points to there, or pass --state-dir the directory it is in`,
      );
    }
    throw new StateStoreError('read-failed', `cannot read state file ${path} (${reasonOf(error)}); check that it is a readable file`);
  }
  return parseState(text, path); // a StateError names the file and leaves it alone
}

const MIB = 1024 * 1024;

function tooLargeMessage(path: string, size: number): string {
  // Rounded up, so that a file just over the bound is not said to be the bound's size (64.0 MiB).
  const mib = (bytes: number): string => (bytes % MIB === 0 ? `${bytes / MIB} MiB` : `${(Math.ceil((bytes * 10) / MIB) / 10).toFixed(1)} MiB`);
  return (
    `state file ${path} is ${mib(size)}, over the ${mib(STATE_FILE_MAX_BYTES)} a state file can take: not read, left untouched; check what wrote it (README: The state file)`
  );
}

/** The regular file at path (not followed through a symlink), if any: the state file a save replaces. */
function existingFile(path: string): Stats | undefined {
  const info = lstatSync(path, { throwIfNoEntry: false });
  return info?.isFile() === true ? info : undefined;
}

/**
 * Replace the state file atomically and durably. Call it holding the lock (see updateState). The
 * new file keeps the old one's mode and owner (an operator's 0600, a group that may read it); a
 * first one is made 0644 (less the umask), owned by whoever runs this.
 */
export async function saveState(dir: string, state: LinkState): Promise<void> {
  const path = stateFilePath(dir);
  writeThroughTemp(dir, path, Buffer.from(serializeState(state), 'utf8'), 'as-state', (temp) => renameSync(temp, path));
  try {
    syncDir(dir);
  } catch (error) {
    throw new StateStoreError('sync-failed', `wrote ${path} but could not sync ${dir} (${reasonOf(error)}); the change may not survive a crash`, errnoOf(error));
  }
}

/**
 * Write `bytes` to a new temp file in dir, made as the state file at `path` is to be: given the
 * old one's owner where that differs, and with 'as-state' its mode too (a first one 0644 less the
 * umask; 'private': 0600); fsync it, then `finish` it (a rename over path, or its removal). On a
 * failure the temp file is removed and the store's error thrown.
 */
function writeThroughTemp(dir: string, path: string, bytes: Buffer, mode: 'as-state' | 'private', finish: (temp: string) => void): void {
  const temp = join(dir, `${TEMP_PREFIX}${process.pid}.${tempTag()}${TEMP_SUFFIX}`);
  try {
    const old = existingFile(path);
    // 0600 until given the old file's mode: never readable by more than the old one was meanwhile.
    const fd = openSync(temp, 'wx', old === undefined && mode === 'as-state' ? 0o644 : 0o600);
    try {
      for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
      if (old !== undefined) {
        // Owner first: a chown may clear the set-id bits, which the chmod then gives back.
        const made = fstatSync(fd);
        if (made.uid !== old.uid || made.gid !== old.gid) keepOwner(fd, path, old);
        if (mode === 'as-state') fchmodSync(fd, old.mode & 0o7777);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    finish(temp);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // never created, or already renamed or removed
    }
    throw writeFailed(path, error);
  }
}

/** The store's error for a write of the state file at path that failed (`error`, the file system's or keepOwner's). */
function writeFailed(path: string, error: unknown): StateStoreError {
  if (error instanceof StateStoreError) return error;
  const check = isCode(error, 'EROFS') ? 'a read-only file system: check how the state dir is mounted' : "check the state dir's permissions and free space";
  return new StateStoreError('write-failed', `cannot write state file ${path} (${reasonOf(error)}); ${check}`, errnoOf(error));
}

function errnoOf(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Throw the error a save to dir would fail with, found without touching the state file: a probe
 * file of a few bytes is made in the state dir (as a save's temp file is: exclusively, given the
 * state file's owner where that differs), written, fsynced, removed, and the dir synced. Call it
 * holding the lock, before something is done that a save is to record.
 *
 * What it shows: a state dir that is read-only (EROFS), not writable by us (EACCES), out of inodes
 * or full (ENOSPC: the fsync makes a file system with delayed allocation find its block), whose
 * state file's owner cannot be kept (keepOwner), or that cannot be synced. What it cannot: that the
 * whole new state fits (a file system with room for a few bytes but not for a large state), nor a
 * failure that comes meanwhile (a disk that fills, a remount); the save after still fails then, and
 * its caller must say what was done unrecorded. Nor a rename over the state file that is refused
 * (an immutable file): a probe cannot try that without replacing it.
 */
export async function probeStateWrite(dir: string): Promise<void> {
  writeThroughTemp(dir, stateFilePath(dir), Buffer.from('probe\n'), 'private', (temp) => unlinkSync(temp));
  try {
    syncDir(dir);
  } catch (error) {
    throw new StateStoreError('sync-failed', `cannot sync state dir ${dir} (${reasonOf(error)}), so a state saved there may not survive a crash`, errnoOf(error));
  }
}

/**
 * Give the new state file (fd) the old one's owner and group. Refused (EPERM) to anyone but root
 * where they are another user's or a group this one is not in: the save fails rather than hand
 * the file to whoever runs this.
 */
function keepOwner(fd: number, path: string, old: Stats): void {
  try {
    fchownSync(fd, old.uid, old.gid);
  } catch (error) {
    throw new StateStoreError(
      'write-failed',
      `cannot write state file ${path}: the new file cannot be given the old one's owner ${old.uid}:${old.gid} (${reasonOf(error)}), so the old one was kept; run spectrum-link as root or as that owner, or chown the file to the user that runs it`,
      errnoOf(error),
    );
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

/** Remove temp files left by writers that died mid-save (or mid-probe). Only safe holding the lock. */
function removeStaleTemps(dir: string): void {
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

/** The state dir (made if missing) opened read-only, the descriptor the lock is taken on. */
function openStateDir(dir: string, source: StateDirSource): { fd: number; key: string } {
  try {
    makeDirs(dir);
    const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      const info = fstatSync(fd, { bigint: true });
      return { fd, key: `${info.dev.toString(16)}:${info.ino.toString(16)}` };
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  } catch (error) {
    // makeDirs says why in its own words; open with O_DIRECTORY says ENOTDIR where the path is
    // no directory (or became something else meanwhile).
    const reason = error instanceof MakeDirError ? error.message : isCode(error, 'ENOTDIR') ? 'it is not a directory' : reasonOf(error);
    throw stateDirUnusable(dir, reason, source);
  }
}

/** Why a directory of the state dir's path could not be made, in words. */
class MakeDirError extends Error {}

/**
 * mkdir -p, one directory at a time, with the mode wanted. Not Node's recursive mkdir: where a
 * mkdir says ENOENT though its parent exists (a path under /proc or /sys) it retries that parent
 * for ever, the process spinning and deaf to signals; and it says ENOENT for every failure of a
 * missing directory, whatever the cause. Here each mkdir's own error is the reason given.
 */
function makeDirs(dir: string): void {
  let absolute: string;
  try {
    absolute = resolve(dir);
  } catch {
    // Only a relative dir needs the working directory, which getcwd(2) says ENOENT of once deleted.
    throw new MakeDirError('the working directory is gone, so the relative path cannot be resolved: give an absolute path');
  }
  const missing: string[] = [];
  // existsSync follows symlinks (one to nothing looks missing: mkdir then finds it there) and is
  // false below a file (mkdir then says ENOTDIR).
  for (let path = absolute; !existsSync(path); path = dirname(path)) {
    missing.push(path);
    if (dirname(path) === path) break;
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path, { mode: 0o755 });
    } catch (error) {
      if (isCode(error, 'EEXIST')) {
        const there = lstatSync(path);
        // Made meanwhile by another run: as good.
        if (there.isDirectory()) continue;
        // A symlink that leads nowhere: to nothing, or round a loop, each said as what it is.
        if (there.isSymbolicLink()) throw new MakeDirError(symlinkLoopOn(path) ?? symlinkToNothing(path));
        throw new MakeDirError(path === absolute ? 'it is not a directory' : 'a path above it is not a directory');
      }
      if (isCode(error, 'ENOTDIR')) throw new MakeDirError('a path above it is not a directory');
      if (isCode(error, 'EROFS')) throw new MakeDirError(`cannot make ${path}: EROFS, a read-only file system; check how it is mounted`);
      if (isCode(error, 'EACCES')) throw new MakeDirError(`cannot make ${path}: EACCES, no permission to write in ${dirname(path)}`);
      throw new MakeDirError(`cannot make ${path}: ${reasonOf(error)}`);
    }
  }
}

interface LockAddon {
  tryLock(fd: number): boolean;
  unlock(fd: number): void;
}

let lockAddon: LockAddon | undefined;

function flockAddon(): LockAddon {
  lockAddon ??= loadNativeAddon<LockAddon>(import.meta.url, 'state_lock.node');
  if (lockAddon === undefined) {
    throw Object.assign(new Error('the state_lock addon (build/Release/state_lock.node) is missing: run npm run build'), { code: 'ERR_ADDON_MISSING' });
  }
  return lockAddon;
}

/**
 * The PID the lock's holder recorded; undefined when there is none (yet) or it is unreadable. Read
 * without the lock, so whatever is there is only trusted to be a short regular file: opened
 * non-blocking and not through a symlink (a FIFO put there would otherwise block the read, and
 * the waiter, forever).
 */
function holderPid(dir: string): string | undefined {
  try {
    const fd = openSync(join(dir, HOLDER_FILE), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    try {
      if (!fstatSync(fd).isFile()) return undefined;
      const text = readFileSync(fd, 'utf8');
      return /^[0-9]+\n$/.test(text) ? text.trim() : undefined;
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

/**
 * Record this process as the lock's holder (best effort: only a waiter's message needs it). A new
 * file in place of whatever is there: writing to the name as found would follow a symlink (and,
 * run as root, truncate its target wherever it points) or block on a FIFO forever, lock held.
 */
function writeHolderPid(dir: string): void {
  const path = join(dir, HOLDER_FILE);
  try {
    unlinkSync(path);
  } catch {
    // none there (the usual case), or not ours to remove: the exclusive create below then fails
  }
  try {
    const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    try {
      writeSync(fd, `${process.pid}\n`);
    } finally {
      closeSync(fd);
    }
  } catch {
    // only a message's detail: a waiter that times out then names no PID
  }
}

export interface LockOptions {
  /** How long to wait for another invocation to finish, in milliseconds (0: not at all). */
  readonly timeoutMs?: number;
  /** Aborted while waiting (a SIGINT, in the CLI): stop waiting, with kind 'lock-aborted'. */
  readonly signal?: AbortSignal;
  /** Where the state dir's path came from, for the message of a dir that cannot be used. */
  readonly source?: StateDirSource;
  /**
   * Told once when the lock is still held by another run LOCK_WAIT_SAID_MS after the first try
   * (with the holder's PID where it wrote one), where the wait is longer than that: a wait of
   * minutes must not look like a hang.
   */
  readonly onWaiting?: (holderPid: string | undefined) => void;
  /**
   * Told where releasing the lock failed (kind 'unlock-failed'), after the run under it failed or
   * succeeded: the run's error is what is thrown (the cause), or its result what is returned (its
   * work done, to be said), this one a further line.
   */
  readonly onUnlockFailed?: (error: StateStoreError) => void;
}

/** How long a run waits for the lock before it says that it waits (LockOptions.onWaiting). */
export const LOCK_WAIT_SAID_MS = 1000;

/** The variable whose value (seconds) is `--lock-wait`'s default. */
export const LOCK_WAIT_ENV = 'SPECTRUM_LOCK_WAIT';

/**
 * How long a run waits for another that holds the lock (`--lock-wait`'s default): 10 minutes. A
 * run holds it while its VMMs answer, each step bounded by --vmm-timeout (T, 5 s by default): a
 * NIC's hot-plug takes at most 4T (2T to add, 2T to take back an add given up), its detach 2T, so
 * a VM linked to its provider by VMM on both sides can hold it 40 s, 60 s where a failure undoes
 * the run, and `link --all` that long for each VM. At boot Spectrum starts VMs together, each
 * `link`ing itself, and their runs queue on the lock: the last waits for all before it. A run that
 * waits costs nothing, one that gives up leaves its VM without a network, so the wait is long
 * enough for ten such VMs whose VMMs all stall; a holder still there after that is stuck, not slow.
 */
export const DEFAULT_LOCK_TIMEOUT_MS = 600_000;

/**
 * A waiter giving up after waitMs: how long it waited, who holds the lock, and how to wait longer
 * (a holder may be slow rather than stuck: `link` holds it while its VMMs answer).
 */
function lockTimeout(dir: string, waitMs: number): StateStoreError {
  const pid = holderPid(dir);
  const waited = waitMs === 0 ? 'without waiting (a wait of 0 s)' : `after waiting ${waitMs / 1000} s`;
  return new StateStoreError(
    'lock-timeout',
    `gave up on the lock of state dir ${dir} ${waited}: another spectrum-link${pid === undefined ? '' : ` (PID ${pid})`} holds it; ` +
      `check it is not stuck, or wait longer with --lock-wait SECONDS (README: Ids)`,
  );
}

/** The locks (state dirs' device:inode) held by the current async call chain: nesting is an error, concurrent calls wait. */
const held = new AsyncLocalStorage<ReadonlySet<string>>();

/** Wait ms, or less where signal is aborted meanwhile (then resolved early: the caller checks it). */
function sleepUnlessAborted(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted === true) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Release the lock (where `locked`) and close the state dir's descriptor, each tried whatever the
 * other did: why it was not released as it should be (a file system whose flock(2) fails, say
 * EIO; the descriptor closed by something else, EBADF), else undefined. (Deleting the state dir
 * meanwhile fails neither: the descriptor still holds its inode.)
 */
function releaseLock(dir: string, fd: number, locked: boolean): StateStoreError | undefined {
  let unlockFailure: { readonly error: unknown } | undefined;
  let closeFailure: { readonly error: unknown } | undefined;
  try {
    // Unlock explicitly: a child forked meanwhile shares the descriptor until it execs.
    if (locked) flockAddon().unlock(fd);
  } catch (error) {
    unlockFailure = { error };
  }
  try {
    // Closing releases the lock too, should the unlock have failed.
    closeSync(fd);
  } catch (error) {
    closeFailure = { error };
  }
  const first = unlockFailure ?? closeFailure;
  if (first === undefined) return undefined;
  const closed = closeFailure === undefined ? '' : reasonOf(closeFailure.error);
  const what =
    unlockFailure === undefined
      ? `the descriptor of state dir ${dir} could not be closed (${closed})`
      : `the lock of state dir ${dir} was not released as it should be: unlocking it failed (${reasonOf(unlockFailure.error)})` +
        (closeFailure === undefined ? ', so closing its descriptor released it' : `, and so did closing its descriptor (${closed}): it is released once this process exits`);
  const code = first.error instanceof Error && 'code' in first.error && typeof first.error.code === 'string' ? first.error.code : undefined;
  return new StateStoreError('unlock-failed', `${what}; check the state dir's file system (spectrum-link needs flock(2) on it)`, code);
}

/**
 * Run fn holding the state dir's exclusive lock (creating the dir if needed), the temp files of
 * writers that died removed first. The lock is released when fn settles, and by the kernel if
 * this process dies. Not reentrant. A release that fails does not replace fn's error or result:
 * it is told (options.onUnlockFailed) and fn's is thrown or returned; where nothing is told it,
 * after fn succeeded, it is the error.
 */
export async function withStateLock<T>(dir: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  const { fd, key } = openStateDir(dir, options.source);
  let locked = false;
  let ran: { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };
  try {
    const outer = held.getStore() ?? new Set<string>();
    if (outer.has(key)) {
      throw new StateStoreError('lock-reentered', `this process already holds the lock of state dir ${dir}; do not nest withStateLock calls`);
    }
    const waitMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    // A monotonic clock: at boot the wall clock may be set while a run waits.
    const deadline = performance.now() + waitMs;
    let said = false;
    for (let attempt = 0; ; attempt++) {
      try {
        locked = flockAddon().tryLock(fd);
      } catch (error) {
        throw new StateStoreError('lock-failed', `cannot take the lock of state dir ${dir} (${reasonOf(error)}); spectrum-link needs flock(2) on the state dir's file system`);
      }
      if (locked) break;
      const now = performance.now();
      // Said before giving up too (a wait long enough to say), so that a give-up always follows it.
      if (!said && waitMs > LOCK_WAIT_SAID_MS && now >= deadline - waitMs + LOCK_WAIT_SAID_MS) {
        said = true;
        options.onWaiting?.(holderPid(dir));
      }
      if (now >= deadline) throw lockTimeout(dir, waitMs);
      await sleepUnlessAborted(Math.min(5 * 2 ** Math.min(attempt, 4), 50) * (0.5 + Math.random()), options.signal);
      if (options.signal?.aborted === true) {
        throw new StateStoreError('lock-aborted', `stopped waiting for the lock of state dir ${dir} (${String(options.signal.reason)}): nothing was changed`);
      }
    }
    writeHolderPid(dir);
    // Every writer holds the lock (link, unlink, gc, updateState): a temp file there now is one
    // whose writer died mid-save or mid-probe, which nothing else would remove.
    removeStaleTemps(dir);
    try {
      ran = { ok: true, value: await held.run(new Set([...outer, key]), fn) };
    } finally {
      try {
        unlinkSync(join(dir, HOLDER_FILE));
      } catch {
        // not written, or removed with the dir
      }
    }
  } catch (error) {
    ran = { ok: false, error };
  }
  const unreleased = releaseLock(dir, fd, locked);
  if (unreleased !== undefined && options.onUnlockFailed !== undefined) options.onUnlockFailed(unreleased);
  if (!ran.ok) throw ran.error;
  if (unreleased !== undefined && options.onUnlockFailed === undefined) {
    throw new StateStoreError('unlock-failed', `this run's work under the lock is done, but ${unreleased.message}`, unreleased.code);
  }
  return ran.value;
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
