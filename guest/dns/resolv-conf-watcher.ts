import { type FSWatcher, type Stats, constants, watch } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
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

/**
 * Calls `onChange` whenever `path` may have changed. Watches the directory, not the file:
 * connman and friends replace resolv.conf by rename, which a watch on the old inode never sees.
 * Bursts of events are coalesced into one call after `settleMs`.
 */
export class ResolvConfWatcher {
  readonly #watcher: FSWatcher;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(path: string, onChange: () => void, onError: (error: Error) => void, settleMs = 25) {
    const name = basename(path);
    this.#watcher = watch(dirname(path), { persistent: false }, (_event, filename) => {
      if (filename !== null && filename !== name) return;
      if (this.#timer !== undefined || this.#closed) return;
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (!this.#closed) onChange();
      }, settleMs);
    });
    this.#watcher.on('error', onError);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#watcher.close();
  }
}
