/**
 * Adapter: nft commands run in the caller's own process and network namespace through
 * libnftables (guest/native/nft-run.c), instead of a spawned nft per change. The addon keeps one
 * nft context, which runs one call at a time on libuv's thread pool; this module queues calls.
 */
import { loadNativeAddon } from '../../shared/native-addon.js';
import { FirewallError } from './firewall-error.js';

/** What one nft run printed, and its exit code as nft would report it (0: success). */
export interface NftResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** nft's output options (-s, -j, -n), and where the call runs. */
export interface NftOutput {
  readonly stateless?: boolean;
  readonly json?: boolean;
  /**
   * Every value as a number (nft -n: device groups, protocols, conntrack states, ICMP types,
   * chain priorities): no name read from /etc (iproute2/group, protocols, ...) in the text.
   */
  readonly numeric?: boolean;
  /**
   * A listing: run it in a context made for this call alone, so that the long-lived context's
   * cache never holds every element of a large table (the next change would pay to drop it).
   */
  readonly listing?: boolean;
}

interface Addon {
  run(script: string, flags: number, callback: (code: number, stdout: string, stderr: string) => void): void;
  readonly STATELESS: number;
  readonly JSON: number;
  readonly NUMERIC: number;
  readonly ONE_OFF: number;
}

const BUILD_HINT = 'run npm run build (scripts/setup installs its build dependency, libnftables-dev)';

let addon: Addon | undefined;

/**
 * Load the addon (and with it libnftables); the agent does so when it starts, so a broken
 * install fails there. A FirewallError of kind 'nft-library' says what to do.
 */
export function loadNftLibrary(): void {
  if (addon !== undefined) return;
  let loaded: Addon | undefined;
  try {
    loaded = loadNativeAddon<Addon>(import.meta.url, 'nft_run.node');
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new FirewallError('nft-library', `cannot load the nft-run addon (build/Release/nft_run.node): ${message}: is libnftables1 installed (it comes with nftables)? Else ${BUILD_HINT}`, {
      cause: error,
    });
  }
  if (loaded === undefined) throw new FirewallError('nft-library', `the nft-run addon (build/Release/nft_run.node) is missing: ${BUILD_HINT}`);
  addon = loaded;
}

/** The call before this one settles (succeeds, fails or, past its timeout, finally finishes). */
let queue: Promise<unknown> = Promise.resolve();

function runNow(lib: Addon, script: string, flags: number): Promise<NftResult> {
  return new Promise((resolve, reject) => {
    try {
      lib.run(script, flags, (code, stdout, stderr) => resolve({ code, stdout, stderr }));
    } catch (error) {
      reject(new FirewallError('nft-failed', `could not run nft in-process: ${error instanceof Error ? error.message : String(error)}`, { cause: error }));
    }
  });
}

/**
 * Run `script` (what `nft -f` would read, or one command) through libnftables, after every call
 * queued before it. `what` names the call in a timeout's message. `timeoutMs` counts from this
 * call, the wait in the queue included. A call past it is reported as an 'nft-timeout' but
 * cannot be stopped (a thread inside libnftables): the calls queued after it wait for it.
 */
export function runNftInProcess(script: string, output: NftOutput, timeoutMs: number, what: string): Promise<NftResult> {
  loadNftLibrary();
  const lib = addon;
  if (lib === undefined) return Promise.reject(new FirewallError('nft-library', `the nft-run addon did not load: ${BUILD_HINT}`));
  const flags =
    (output.stateless === true ? lib.STATELESS : 0) |
    (output.json === true ? lib.JSON : 0) |
    (output.numeric === true ? lib.NUMERIC : 0) |
    (output.listing === true ? lib.ONE_OFF : 0);
  const call = queue.then(() => runNow(lib, script, flags));
  queue = call.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FirewallError('nft-timeout', `nft ${what} did not finish within ${timeoutMs} ms: is the netlink socket stuck?`)), timeoutMs);
  });
  return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
}
