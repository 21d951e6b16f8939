// Whether the VM namespaces `link` adds in netns mode outlive it. `ip netns add` keeps a namespace
// by bind-mounting it at /run/netns/NAME, in the mount namespace it runs in. Under `ip netns exec`
// (which unshares one and makes it a slave: mounts come in, none go out) that is a mount namespace
// of spectrum-link's own, which ends with it: the mounts go, leaving the files with nothing on
// them, and the links made through them broken. So a run that would add one is refused where its
// mounts under /run/netns would reach no mount namespace but its own: it is not PID 1's (the
// mount covering /run/netns is not one PID 1's mountinfo lists, mount ids being system-wide), and
// that mount is not shared with a peer group PID 1's namespace has (shared:N there, or a slave of
// it, master:N), as under `unshare -m --propagation shared`, where they do reach it. Where it is
// PID 1 itself, that mount is in no peer group. Where either mountinfo cannot be read, it cannot
// be told: not refused.
import { readlinkSync } from 'node:fs';
import { type KeptAttach, linkAttachModes } from './kept-attach.js';
import type { LinkPair } from './link-state.js';
import { LinkerError } from './linker-error.js';
import { type MountEntry, coveringMount, readMountinfo } from './mountinfo.js';
import { NETNS_DIR, namespaceMounted } from './netlink-devices.js';

export type MountsReach =
  /** Mounts under the path land in PID 1's mount namespace: it is ours, or they propagate there. */
  | 'lasting'
  /** They stay in a mount namespace of this process's own, which does not outlive it. */
  | 'own'
  /** It cannot be told (a mountinfo unread, or no mount found). */
  | 'unknown';

/**
 * Where mounts made under `path` land, from our mountinfo and PID 1's (undefined: unread).
 * `selfIsPid1`: we are PID 1 (of a PID namespace of our own, as under `unshare -mpf --mount-proc`
 * or as a container's entry point): PID 1's mount namespace is ours, ending with us, so mounts
 * last only where they propagate out of it: never from a mount in no peer group; from one in a
 * peer group it cannot be told (its peers may all be ours).
 */
export function mountsReach(own: readonly MountEntry[] | undefined, pid1: readonly MountEntry[] | undefined, path: string, selfIsPid1 = false): MountsReach {
  if (own === undefined || pid1 === undefined) return 'unknown';
  const mount = coveringMount(own, path);
  if (mount === undefined) return 'unknown';
  if (selfIsPid1) return mount.shared === undefined ? 'own' : 'unknown';
  if (pid1.some((entry) => entry.id === mount.id)) return 'lasting';
  const group = mount.shared;
  if (group !== undefined && pid1.some((entry) => entry.shared === group || entry.master === group)) return 'lasting';
  return 'own';
}

/**
 * Whether /proc/1 is this process: it is PID 1 of the PID namespace /proc shows (process.pid is
 * 1 also under `unshare -pf` with the host's /proc, where /proc/1 is the host's init).
 */
export function procSelfIsPid1(): boolean {
  try {
    return readlinkSync('/proc/self') === '1';
  } catch {
    return false;
  }
}

let netnsReach: MountsReach | undefined;

/**
 * Where this process's mounts under /run/netns land: read the first time a run asks, not again
 * (a first run asked before the lock and under it). The same answer both times: a process keeps
 * its mount namespace (Node's threads keep it from setns into another), and what another run may
 * do meanwhile, `ip netns add` mounting /run/netns over itself, leaves it as it was (in PID 1's
 * namespace that mount is PID 1's; in one of our own it comes in as a slave copy, or as a peer of
 * PID 1's where ours shares with it).
 */
const netnsMountsReach = (): MountsReach => (netnsReach ??= mountsReach(readMountinfo(), readMountinfo(1), NETNS_DIR, procSelfIsPid1()));

/**
 * Refuse (LinkerError 'netns-not-lasting', bad usage: exit 2) a `link` that would add VM
 * namespaces `adding` (at least one) where they would not outlive it (mountsReach 'own').
 */
export function assertNamespacesLast(adding: readonly string[]): void {
  if (adding.length === 0) return;
  if (netnsMountsReach() !== 'own') return;
  const more = adding.length > 1 ? ` and ${adding.length - 1} more` : '';
  throw new LinkerError(
    'netns-not-lasting',
    `refusing to add network namespace ${adding[0]}${more}: in this mount namespace of its own (ip netns exec) they would vanish with it; run under nsenter --net=${NETNS_DIR}/NS (README: the --attach table, netns)`,
  );
}

/**
 * assertNamespacesLast for a `link` run: of the VM namespaces its links (`pairs`, in the modes
 * `kept` gives them) have a side in (netns mode, `<prefix><vm>`), those not there to be used
 * (none mounted at /run/netns/NAME: the plan adds them).
 */
export function assertRunNamespacesLast(pairs: readonly LinkPair[], kept: KeptAttach, netnsPrefix: string): void {
  const names = new Set<string>();
  for (const pair of pairs) {
    const modes = linkAttachModes(kept, pair);
    if (modes.client === 'netns') names.add(`${netnsPrefix}${pair.client}`);
    if (modes.provider === 'netns') names.add(`${netnsPrefix}${pair.provider}`);
  }
  assertNamespacesLast([...names].filter((name) => !namespaceMounted(name)));
}
