import { type FSWatcher, type Stats, constants, lstatSync, readlinkSync, statfsSync, statSync, watch } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { MAX_RESOLV_CONF_LENGTH, parseResolvConf, type ResolvConf } from './resolv-conf.js';

/** What a file that is not a regular one is, in words. */
function kindOf(info: Stats): string {
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isCharacterDevice()) return 'a character device';
  if (info.isBlockDevice()) return 'a block device';
  if (info.isSocket()) return 'a socket';
  return 'a special file';
}

/** Why `info` is no resolv.conf to read, or undefined for a regular file. */
function notRegular(path: string, info: Stats): { upstreams: []; skipped: []; legacyIpv4: []; withoutZone: []; indented: []; error: string } | undefined {
  return info.isFile() ? undefined : { upstreams: [], skipped: [], legacyIpv4: [], withoutZone: [], indented: [], error: `${path} is not a regular file but ${kindOf(info)}` };
}

/**
 * Read and parse a resolv.conf; a missing or unreadable file, or one that is no regular file (a
 * symlink to one is), has no nameservers. Only a regular file is opened: opening a device can act
 * (a watchdog's open arms it, a serial line's raises its modem lines), and opening a FIFO for
 * reading waits for a writer, which kept the agent from ever finishing its start; a device such as
 * /dev/zero read as text has no nameserver line, zero upstreams without a word. Opened without
 * blocking all the same, and checked again once open: the path may be replaced in between.
 */
export async function readResolvConf(path: string): Promise<ResolvConf & { readonly error?: string }> {
  let handle;
  try {
    const before = notRegular(path, await stat(path));
    if (before !== undefined) return before;
    // O_NOCTTY: a terminal given by mistake must not become the agent's controlling terminal.
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    const after = notRegular(path, await handle.stat());
    if (after !== undefined) return after;
    const buffer = Buffer.alloc(MAX_RESOLV_CONF_LENGTH);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return parseResolvConf(buffer.subarray(0, bytesRead).toString('utf8'));
  } catch (error) {
    return { upstreams: [], skipped: [], legacyIpv4: [], withoutZone: [], indented: [], error: error instanceof Error ? error.message : String(error) };
  } finally {
    await handle?.close();
  }
}

/** The most symlinks the kernel follows resolving one path (MAXSYMLINKS); one more is ELOOP. */
export const MAX_SYMLINKS = 40;

/** What a name in a directory is, as resolving a path needs to know: lstat's answer. */
export interface PathEntry {
  readonly kind: 'symlink' | 'directory' | 'other';
  /** Which file it is (device and inode): a directory removed and made again is another one. */
  readonly id: string;
}

/** How the directories to watch are found: lstat and readlink, undefined where they fail. */
export interface PathLookup {
  lstat(path: string): PathEntry | undefined;
  readlink(path: string): string | undefined;
}

/** A directory that resolving a path looks names up in: a change to one of them changes what it resolves to. */
export interface WatchedDirectory {
  /** Its path, symlink-free (each symlink on the way replaced by where it leads). */
  readonly dir: string;
  /** Which directory it was as looked at (PathEntry.id). */
  readonly id: string;
  /** The names looked up in it, in order. */
  readonly names: readonly string[];
}

/**
 * The directories that resolving absolute `path` looks names up in, each with those names, as
 * the kernel resolves it: component by component from `/`, each symlink met (in a directory on
 * the way or the last one) replaced by its target, a relative one read from the directory that
 * holds the link, `..` the parent of the directory reached (so a physical parent, not the
 * path's). A missing name, or one that is no directory with more to come, ends the walk: the
 * directory it is missing from is watched for it. Past MAX_SYMLINKS links (a loop, or a chain
 * too long) the kernel gives ELOOP: the walk stops there too, every link met watched, so that a
 * change mending the chain is seen. Watching each of these directories for its names sees every
 * change to what the path resolves to: a link re-pointed, a target replaced by rename or written
 * in place, a directory on the way removed, moved or made again.
 */
export function directoriesToWatch(path: string, lookup: PathLookup): WatchedDirectory[] {
  const found = new Map<string, { id: string; names: string[] }>();
  const root = lookup.lstat('/');
  if (root === undefined) return [];
  /** The directories from / down to the one reached, each with its id. */
  let stack: { readonly dir: string; readonly id: string }[] = [{ dir: '/', id: root.id }];
  const pending = componentsOf(path);
  let links = 0;
  for (let name = pending.shift(); name !== undefined; name = pending.shift()) {
    if (name === '.') continue;
    if (name === '..') {
      if (stack.length > 1) stack = stack.slice(0, -1);
      continue;
    }
    const here = stack[stack.length - 1] ?? { dir: '/', id: root.id };
    const seen = found.get(here.dir) ?? { id: here.id, names: [] };
    if (!seen.names.includes(name)) seen.names.push(name);
    found.set(here.dir, seen);
    const entryPath = join(here.dir, name);
    const entry = lookup.lstat(entryPath);
    if (entry === undefined) break;
    if (entry.kind === 'symlink') {
      links += 1;
      if (links > MAX_SYMLINKS) break;
      const target = lookup.readlink(entryPath);
      if (target === undefined) break;
      if (target.startsWith('/')) stack = [{ dir: '/', id: root.id }];
      pending.unshift(...componentsOf(target));
      continue;
    }
    if (entry.kind !== 'directory' || pending.length === 0) break;
    stack = [...stack, { dir: entryPath, id: entry.id }];
  }
  return [...found].map(([dir, { id, names }]) => ({ dir, id, names }));
}

function componentsOf(path: string): string[] {
  return path.split('/').filter((component) => component !== '');
}

/** lstat and readlink on the file system, sync: a few calls on local directories per change. */
const fileSystem: PathLookup = {
  lstat(path) {
    try {
      const info = lstatSync(path, { bigint: true });
      return { kind: info.isSymbolicLink() ? 'symlink' : info.isDirectory() ? 'directory' : 'other', id: `${info.dev}:${info.ino}` };
    } catch {
      return undefined;
    }
  },
  readlink(path) {
    try {
      return readlinkSync(path);
    } catch {
      return undefined;
    }
  },
};

/**
 * `path` made absolute as the kernel reads a relative one, from the working directory (which
 * getcwd gives symlink-free), and left as written: not tidied up as text (path.resolve), which
 * takes `link/..` away where the kernel goes to the parent of where the link leads.
 */
function fromWorkingDirectory(path: string): string {
  return path.startsWith('/') ? path : `${process.cwd()}/${path}`;
}

function samePlan(a: readonly WatchedDirectory[], b: readonly WatchedDirectory[]): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** statfs's f_type of procfs (linux/magic.h). */
const PROC_SUPER_MAGIC = 0x9fa0;

/**
 * What the watches would see change, as it is now: the directories on the way (which each is,
 * the names looked up there) and the file the path resolves to (which file it is, its size, its
 * times of change), or why there is none. Another at the next look is a change the watches may
 * have missed. A file of procfs is looked at without its times: procfs gives the inode of a
 * /proc/net file anew at each lookup, with the time of that lookup, and a resolv.conf that is a
 * symlink to /proc/net/pnp (the kernel's ip= autoconfiguration, as its nfsroot document says to
 * make it) differed at every look, read again every 2 s for as long as the agent ran.
 */
function lookOf(path: string): string {
  let file: string;
  try {
    const info = statSync(path, { bigint: true });
    const times = statfsSync(path).type === PROC_SUPER_MAGIC ? 'procfs' : `${info.mtimeNs}:${info.ctimeNs}`;
    file = `${info.dev}:${info.ino}:${info.size}:${times}`;
  } catch (error) {
    file = error instanceof Error && 'code' in error ? String(error.code) : 'unreadable';
  }
  return JSON.stringify([directoriesToWatch(path, fileSystem), file]);
}

/** How often the path is looked at for a change the watches missed (see ResolvConfWatcher). */
export const RESOLV_CONF_CHECK_MS = 2000;

interface Watch {
  readonly id: string;
  names: ReadonlySet<string>;
  /** Replaced when the directory is watched again (see #stillThere). */
  watcher: FSWatcher;
  /** To be watched again, in a moment (see #stillThere). */
  renew: boolean;
}

/**
 * Calls `onChange` whenever what `path` resolves to may have changed. Watches directories, not
 * the file: connman and friends replace resolv.conf by rename, which a watch on the old inode
 * never sees. Not only the directory of `path`: /etc/resolv.conf is often a symlink (into /run,
 * by resolvconf, systemd-resolved or a read-only root), whose target is replaced or rewritten
 * where the link is not. Every directory that resolving the path looks in is watched (see
 * directoriesToWatch), and looked at again after each change, so that a watch follows the link
 * where it is re-pointed and one no longer on the way is closed: as many watches as the path has
 * directories on its way, however often it changes. A directory removed or moved away (its own
 * watch then says so by its name, and sees nothing more) is watched again once it is back.
 * Bursts of events are coalesced into one call after `settleMs`. A directory that cannot be
 * watched (no permission to read it, out of inotify watches) is said to `onError` once, until
 * that changes, and tried again at the next change seen; the others are watched all the same.
 *
 * inotify queues so many events (fs.inotify.max_queued_events, 16384 by default) until they are
 * read, and drops the rest, saying so in one IN_Q_OVERFLOW event that libuv drops in turn (it
 * belongs to no watch): Node never says. A busy folder on the way (/run, /tmp) while the loop is
 * held up, and a change to resolv.conf is lost. So the path is also looked at every `checkMs`
 * (the directories on the way, the file it leads to: a few lstat calls), and where that differs
 * from the look taken when a change was last said, it is followed and said again as a change.
 */
export class ResolvConfWatcher {
  readonly #path: string;
  readonly #onChange: () => void;
  readonly #onError: (error: Error) => void;
  readonly #settleMs: number;
  readonly #watches = new Map<string, Watch>();
  /** The directories that could not be watched, each with why, as said. */
  readonly #failing = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  /** Watches again the directories whose watch may be gone (see #stillThere), in a moment. */
  #renewing: NodeJS.Timeout | undefined;
  /** The path as looked at (lookOf) when a change was last said (or at the start): the read after it sees at least that. */
  #lookSaid: string;
  readonly #checking: NodeJS.Timeout;
  #closed = false;

  constructor(path: string, onChange: () => void, onError: (error: Error) => void, settleMs = 25, checkMs = RESOLV_CONF_CHECK_MS) {
    this.#path = fromWorkingDirectory(path);
    this.#onChange = onChange;
    this.#onError = onError;
    this.#settleMs = settleMs;
    // Before the watches: what changes meanwhile is seen by them, or differs at the first check.
    this.#lookSaid = lookOf(this.#path);
    this.#follow();
    this.#checking = setInterval(() => {
      // A change being followed already (seen by a watch): its look is taken when it is said.
      if (this.#timer !== undefined || lookOf(this.#path) === this.#lookSaid) return;
      // A change the watches missed: what else they missed may have been a folder on the way
      // removed and made again with its inode number, its watch gone. Each is watched again.
      for (const watched of this.#watches.values()) watched.renew = true;
      this.#settle();
    }, checkMs);
    this.#checking.unref();
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#checking);
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (this.#renewing !== undefined) clearTimeout(this.#renewing);
    for (const watch of this.#watches.values()) watch.watcher.close();
    this.#watches.clear();
  }

  /**
   * Watches the directories the path goes through now, and only those. Something may change
   * between the look and the watch: the path is looked at again once they are watched, and
   * followed again a moment later where it goes elsewhere by then.
   */
  #follow(): void {
    // First: a change said after this (read after it) is seen by the watches kept.
    this.#renew();
    const plan = directoriesToWatch(this.#path, fileSystem);
    const wanted = new Map(plan.map((directory) => [directory.dir, directory]));
    for (const [dir, watch] of this.#watches) {
      if (wanted.get(dir)?.id === watch.id) continue;
      watch.watcher.close();
      this.#watches.delete(dir);
    }
    for (const dir of this.#failing.keys()) if (!wanted.has(dir)) this.#failing.delete(dir);
    for (const directory of plan) {
      const watch = this.#watches.get(directory.dir);
      if (watch === undefined) this.#watch(directory);
      else watch.names = new Set(directory.names);
    }
    if (!samePlan(plan, directoriesToWatch(this.#path, fileSystem))) this.#settle();
  }

  #watch({ dir, id, names }: WatchedDirectory): void {
    let watcher: FSWatcher;
    try {
      watcher = this.#open(dir);
    } catch (error) {
      const code = error instanceof Error && 'code' in error ? error.code : undefined;
      // Gone between the look and the watch: the second look sees it gone, and follows that.
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      this.#failed(dir, names, error);
      return;
    }
    this.#failing.delete(dir);
    this.#watches.set(dir, { id, names: new Set(names), watcher, renew: false });
  }

  /** A watch on `dir`, its events and error said as those of the one of #watches[dir] it is. */
  #open(dir: string): FSWatcher {
    const watcher = watch(dir, { persistent: false }, (event, filename) => this.#seen(dir, watcher, event, filename));
    watcher.on('error', (error) => {
      const watched = this.#watches.get(dir);
      if (watched?.watcher !== watcher) return;
      // Node has closed the watch: it is tried again at the next change seen elsewhere.
      this.#watches.delete(dir);
      if (!this.#closed) this.#failed(dir, [...watched.names], error);
    });
    return watcher;
  }

  /** Says that `dir` cannot be watched, once for each reason while it cannot. */
  #failed(dir: string, names: readonly string[], error: unknown): void {
    const reason = error instanceof Error ? error.message : String(error);
    if (this.#failing.get(dir) === reason) return;
    this.#failing.set(dir, reason);
    this.#onError(new Error(`cannot watch ${dir} (${reason}): a change there to ${names.map((name) => join(dir, name)).join(', ')} is not followed`));
  }

  #seen(dir: string, watcher: FSWatcher, event: string, filename: string | null): void {
    const watched = this.#watches.get(dir);
    if (this.#closed || watched?.watcher !== watcher) return;
    // inotify says the directory itself removed or moved by its own name, as it says a file in it
    // of that name created, removed or renamed ('rename' all): told apart by looking (a change
    // in place, 'change', is never the directory's going).
    if (event === 'rename' && filename !== null && filename === basename(dir) && !this.#stillThere(dir, watched)) {
      this.#settle();
      return;
    }
    if (filename !== null && !watched.names.has(filename)) return;
    this.#settle();
  }

  /**
   * Whether the directory `watched` is still the one at `dir`, after an event that may be its
   * going. If not, its watch, which sees nothing more at `dir`, is closed: the next look watches
   * whatever is there. If so, the event was most likely a file in it of its name, the watch as
   * good as before; but the directory may have been removed and made again with the same inode
   * number (ext4 gives a new one the number just freed), its watch gone: it is watched again in
   * a moment, once for however many such events, the new watch there before the old one is
   * closed, so that nothing is missed where the old one is good. What was there meanwhile in one
   * made again is seen all the same: removing a directory and making it are changes to its name
   * in the one above, watched for it.
   */
  #stillThere(dir: string, watched: Watch): boolean {
    const now = fileSystem.lstat(dir);
    if (now?.kind === 'directory' && now.id === watched.id) {
      watched.renew = true;
      this.#renewSoon();
      return true;
    }
    watched.watcher.close();
    this.#watches.delete(dir);
    return false;
  }

  #renewSoon(): void {
    if (this.#renewing !== undefined || this.#closed) return;
    this.#renewing = setTimeout(() => {
      this.#renewing = undefined;
      if (!this.#closed) this.#renew();
    }, this.#settleMs);
  }

  /** Watches again the directories marked so (see #stillThere). */
  #renew(): void {
    for (const [dir, watched] of this.#watches) {
      if (!watched.renew) continue;
      watched.renew = false;
      try {
        const watcher = this.#open(dir);
        watched.watcher.close();
        watched.watcher = watcher;
      } catch {
        // Gone meanwhile, or cannot be watched: the next look says it, and follows.
        watched.watcher.close();
        this.#watches.delete(dir);
        this.#settle();
      }
    }
  }

  #settle(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      // Before the read that #onChange asks for: a change after the look is one the read may miss.
      this.#lookSaid = lookOf(this.#path);
      this.#follow();
      this.#onChange();
    }, this.#settleMs);
  }
}
