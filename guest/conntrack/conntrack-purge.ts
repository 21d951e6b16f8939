/**
 * Adapter: deletes conntrack entries in the caller's own network namespace through
 * libnetfilter_conntrack (guest/native/conntrack-purge.c): one dump of the IPv4 table (a reap of
 * any source: of IPv4 and IPv6), then one delete per matching entry, on libuv's thread pool. No
 * process per purge (a purge sits between a link's removal and the next client's routes), and one
 * pass serves any number of addresses.
 */
import { loadNativeAddon } from '../../shared/native-addon.js';
import type { ConntrackPort, ConntrackPurgeResult } from '../conntrack-port.js';
import { ConntrackError, type ConntrackErrorKind } from './conntrack-error.js';
import { type ClosedFlowFilter, sourceNumbers, tcpStateMask } from './closed-flows.js';
import { type ConntrackFilter, ipv4Number, isEmptyFilter } from './conntrack-filter.js';

type PurgeCallback = (error: string | null, phase: string | null, scanned: number, matched: number, deleted: number) => void;

/** The addon's interface (guest/native/conntrack-purge.c); tests give ConntrackPurger a fake. */
export interface ConntrackAddon {
  purge(exact: Uint32Array, sweepNetwork: number, sweepPrefix: number, keep: Uint32Array, callback: PurgeCallback): void;
  /** Delete the TCP entries in one of the states (a bit mask, closed-flows.ts) whose original source is one of `sources` (null: any). */
  reap(sources: Uint32Array | null, tcpStates: number, callback: PurgeCallback): void;
}

const BUILD_HINT = 'run npm run build (scripts/setup installs its build dependency, libnetfilter-conntrack-dev)';
const DEFAULT_TIMEOUT_MS = 10_000;

let addon: ConntrackAddon | undefined;

/**
 * Load the addon (and with it libnetfilter_conntrack); the agent does so when it starts, so a
 * broken install fails there. A ConntrackError of kind 'library' says what to do.
 */
export function loadConntrackLibrary(): ConntrackAddon {
  if (addon !== undefined) return addon;
  let loaded: ConntrackAddon | undefined;
  try {
    loaded = loadNativeAddon<ConntrackAddon>(import.meta.url, 'conntrack_purge.node');
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new ConntrackError(
      'library',
      `cannot load the conntrack-purge addon (build/Release/conntrack_purge.node): ${message}: is libnetfilter-conntrack3 installed? Else ${BUILD_HINT}`,
      { cause: error },
    );
  }
  if (loaded === undefined) throw new ConntrackError('library', `the conntrack-purge addon (build/Release/conntrack_purge.node) is missing: ${BUILD_HINT}`);
  addon = loaded;
  return loaded;
}

function addressArray(addresses: readonly string[], what: string): Uint32Array {
  const numbers = new Uint32Array(addresses.length);
  addresses.forEach((text, index) => {
    const value = ipv4Number(text);
    if (value === null) throw new ConntrackError('address', `${what} ${JSON.stringify(text)} is not an IPv4 address like 100.64.0.1`);
    numbers[index] = value;
  });
  return numbers;
}

const CAP_HINT = 'does the agent have CAP_NET_ADMIN?';
const CTNETLINK_HINT = 'is nf_conntrack_netlink in the kernel (CONFIG_NF_CT_NETLINK)?';

/**
 * The error of a failed call. Opening the socket needs neither ctnetlink nor CAP_NET_ADMIN (it
 * only binds a NETLINK_NETFILTER socket): the kernel refuses the first request, the dump, with
 * EPERM without the capability (nfnetlink_rcv) and EINVAL without the ctnetlink subsystem. It
 * carries what the call deleted all the same (the entries a failed dump matched before it failed).
 */
function failure(error: string, phase: string | null, scanned: number, matched: number, deleted: number): ConntrackError {
  const counts = `${scanned} entries read, ${matched} matched, ${deleted} deleted`;
  const fail = (kind: ConntrackErrorKind, message: string): ConntrackError => new ConntrackError(kind, message, { deleted });
  if (phase === 'open') {
    return fail('unavailable', `cannot open a netfilter netlink socket (${error}): is nfnetlink in the kernel (CONFIG_NETFILTER_NETLINK)? Too many open files?`);
  }
  if (phase === 'dump' && (error === 'EPERM' || error === 'EACCES')) {
    return fail('unavailable', `the kernel refused to read the conntrack table (${error}): ${CAP_HINT}`);
  }
  if (phase === 'dump' && (error === 'EINVAL' || error === 'EOPNOTSUPP' || error === 'EPROTONOSUPPORT')) {
    return fail('unavailable', `the kernel cannot read the conntrack table (${error}): ${CTNETLINK_HINT}`);
  }
  if (error === 'EAGAIN' || error === 'EWOULDBLOCK') {
    return fail('timeout', `the kernel did not answer a conntrack request within 10 s (${error}; ${counts}): is the ctnetlink socket stuck? retrying`);
  }
  if (phase === 'delete') return fail('delete', `deleting a conntrack entry failed (${error}; ${counts}): see the kernel log; retrying`);
  return fail('dump', `reading the conntrack table failed (${error}; ${counts}): is the system short of memory? retrying`);
}

/**
 * Runs purges through the addon, one at a time. A call past its timeout goes on in its thread (a
 * netlink call cannot be stopped; the addon bounds each receive, see conntrack-purge.c): until it
 * ends, another call fails at once as 'busy' rather than queue a dump behind it on libuv's thread
 * pool, which the firewall's nft work shares. The caller retries later, as for any failure.
 * A reap has no timeout by default (see reap).
 */
export class ConntrackPurger {
  #inFlight: Promise<unknown> | null = null;

  constructor(private readonly lib: ConntrackAddon) {}

  /**
   * Delete the entries `filter` matches. Resolves once every matched entry is gone; rejects with a
   * ConntrackError otherwise (what it could delete is deleted).
   */
  async purge(filter: ConntrackFilter, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ConntrackPurgeResult> {
    if (isEmptyFilter(filter)) return { scanned: 0, deleted: 0 };
    const exact = addressArray(filter.addresses, 'address');
    const { sweep } = filter;
    const keep = addressArray(sweep?.keep ?? [], 'kept address');
    const network = sweep === null ? 0 : ipv4Number(sweep.network);
    if (network === null) throw new ConntrackError('address', `network ${JSON.stringify(sweep?.network)} is not an IPv4 address like 100.64.0.0`);
    const prefix = sweep === null ? -1 : sweep.prefixLength;
    if (!Number.isInteger(prefix) || prefix < -1 || prefix > 32) throw new ConntrackError('address', `prefix length ${prefix} is not from 0 to 32`);
    return this.#run((callback) => this.lib.purge(exact, network, prefix, keep, callback), timeoutMs, 'purge');
  }

  /**
   * Delete the TCP entries `filter` matches (closed flows, closed-flows.ts). Resolves with what it
   * did; rejects with a ConntrackError as purge does. With no timeout (null, the default) it waits
   * for the addon's own end: a reap of a huge table may take longer than any fixed bound and go on
   * deleting after a timeout, which would report a failure for a reap that works; the addon bounds
   * each receive (10 s) and ends at the first that times out, so a stuck socket still ends it
   * within some 10 s, and the reaper never starts two at once.
   */
  async reap(filter: ClosedFlowFilter, timeoutMs: number | null = null): Promise<ConntrackPurgeResult> {
    if (filter.sources?.length === 0 || filter.tcpStates.length === 0) return { scanned: 0, deleted: 0 };
    const sources = filter.sources === null ? null : sourceNumbers(filter.sources);
    if (filter.sources !== null && sources === null) throw new ConntrackError('address', `a source of ${JSON.stringify(filter.sources)} is not an IPv4 address like 100.64.0.1`);
    const states = tcpStateMask(filter.tcpStates);
    return this.#run((callback) => this.lib.reap(sources, states, callback), timeoutMs, 'reap');
  }

  async #run(start: (callback: PurgeCallback) => void, timeoutMs: number | null, what: 'purge' | 'reap'): Promise<ConntrackPurgeResult> {
    if (this.#inFlight !== null) {
      throw new ConntrackError('busy', `an earlier ${what} is still running (one that timed out: is the ctnetlink socket stuck?): not starting another; retrying`);
    }
    const call = new Promise<ConntrackPurgeResult>((resolve, reject) => {
      start((error, phase, scanned, matched, deleted) => {
        if (error === null) resolve({ scanned, deleted });
        else reject(failure(error, phase, scanned, matched, deleted));
      });
    });
    const settled = call.then(
      () => undefined,
      () => undefined,
    );
    this.#inFlight = settled;
    void settled.then(() => {
      if (this.#inFlight === settled) this.#inFlight = null;
    });
    if (timeoutMs === null) return call;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ConntrackError('timeout', `deleting conntrack entries did not finish within ${timeoutMs} ms: is the ctnetlink socket stuck? retrying`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([call, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

let purger: ConntrackPurger | undefined;

/** Delete the entries `filter` matches, through the addon (see ConntrackPurger). */
export async function purgeConntrack(filter: ConntrackFilter, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ConntrackPurgeResult> {
  if (isEmptyFilter(filter)) return { scanned: 0, deleted: 0 };
  purger ??= new ConntrackPurger(loadConntrackLibrary());
  return purger.purge(filter, timeoutMs);
}

/** The agent's conntrack port, in its own network namespace. */
export class KernelConntrack implements ConntrackPort {
  constructor(private readonly timeoutMs = DEFAULT_TIMEOUT_MS) {
    // A broken install (addon not built, library missing) fails when the agent starts.
    loadConntrackLibrary();
  }

  purge(filter: ConntrackFilter): Promise<ConntrackPurgeResult> {
    return purgeConntrack(filter, this.timeoutMs);
  }
}
