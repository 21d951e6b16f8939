import { watch, type FSWatcher } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { MAX_RESOLV_CONF_LENGTH, parseResolvConf, type ResolvConf } from './resolv-conf.js';

/** Read and parse a resolv.conf; a missing or unreadable file has no nameservers. */
export async function readResolvConf(path: string): Promise<ResolvConf & { readonly error?: string }> {
  let handle;
  try {
    handle = await open(path, 'r');
    const buffer = Buffer.alloc(MAX_RESOLV_CONF_LENGTH);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return parseResolvConf(buffer.subarray(0, bytesRead).toString('utf8'));
  } catch (error) {
    return { upstreams: [], skipped: [], error: error instanceof Error ? error.message : String(error) };
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
