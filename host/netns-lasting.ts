// Whether the VM namespaces `link` adds in netns mode outlive it. `ip netns add` keeps a namespace
// by bind-mounting it at /run/netns/NAME, in the mount namespace it runs in. Under `ip netns exec`
// (which unshares one and makes it a slave: mounts come in, none go out) that is a mount namespace
// of spectrum-link's own, which ends with it: the mounts go, leaving the files with nothing on
// them, and the links made through them broken. So a run that would add one is refused where its
// mounts under /run/netns would reach no mount namespace but its own: it is not PID 1's (the
// mount covering /run/netns is not one PID 1's mountinfo lists, mount ids being system-wide), and
// that mount is not shared with a peer group PID 1's namespace has (shared:N there, or a slave of
// it, master:N), as under `unshare -m --propagation shared`, where they do reach it. Where either
// mountinfo cannot be read, it cannot be told: not refused.
import { readFileSync } from 'node:fs';
import { type KeptAttach, linkAttachModes } from './kept-attach.js';
import type { LinkPair } from './link-state.js';
import { LinkerError } from './linker-error.js';
import { namespaceMounted } from './netlink-devices.js';

/** The directory `ip netns` keeps namespaces in. */
export const NETNS_RUN_DIR = '/run/netns';

/** One line of /proc/PID/mountinfo, as far as propagation goes. */
export interface MountEntry {
  readonly id: number;
  readonly mountPoint: string;
  /** Its peer group (`shared:N`): mounts under it propagate to the group's other mounts. */
  readonly shared?: number;
  /** The peer group it is a slave of (`master:N`): it receives that group's mounts, and sends none there. */
  readonly master?: number;
}

/** A mountinfo path with its octal escapes (\040 for a space) undone. */
const unescaped = (path: string): string => path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));

/** The mounts /proc/PID/mountinfo lists (a line it cannot read is passed over). */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    const id = Number(fields[0]);
    const mountPoint = fields[4];
    if (separator < 6 || !Number.isInteger(id) || mountPoint === undefined) continue;
    let shared: number | undefined;
    let master: number | undefined;
    for (const tag of fields.slice(6, separator)) {
      const [name, value] = tag.split(':');
      if (name === 'shared') shared = Number(value);
      if (name === 'master') master = Number(value);
    }
    entries.push({ id, mountPoint: unescaped(mountPoint), ...(shared !== undefined && { shared }), ...(master !== undefined && { master }) });
  }
  return entries;
}

const covers = (mountPoint: string, path: string): boolean => mountPoint === path || mountPoint === '/' || path.startsWith(`${mountPoint}/`);

/** The mount `path` is on: the one with the longest mount point over it, the last listed (the top one) of those. */
export function coveringMount(entries: readonly MountEntry[], path: string): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const entry of entries) if (covers(entry.mountPoint, path) && (best === undefined || entry.mountPoint.length >= best.mountPoint.length)) best = entry;
  return best;
}

export type MountsReach =
  /** Mounts under the path land in PID 1's mount namespace: it is ours, or they propagate there. */
  | 'lasting'
  /** They stay in a mount namespace of this process's own, which does not outlive it. */
  | 'own'
  /** It cannot be told (a mountinfo unread, or no mount found). */
  | 'unknown';

/** Where mounts made under `path` land, from our mountinfo and PID 1's (undefined: unread). */
export function mountsReach(own: readonly MountEntry[] | undefined, pid1: readonly MountEntry[] | undefined, path: string): MountsReach {
  if (own === undefined || pid1 === undefined) return 'unknown';
  const mount = coveringMount(own, path);
  if (mount === undefined) return 'unknown';
  if (pid1.some((entry) => entry.id === mount.id)) return 'lasting';
  const group = mount.shared;
  if (group !== undefined && pid1.some((entry) => entry.shared === group || entry.master === group)) return 'lasting';
  return 'own';
}

function readMountinfo(path: string): MountEntry[] | undefined {
  try {
    return parseMountinfo(readFileSync(path, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Refuse (LinkerError 'netns-not-lasting', bad usage: exit 2) a `link` that would add VM
 * namespaces `adding` (at least one) where they would not outlive it (mountsReach 'own').
 */
export function assertNamespacesLast(adding: readonly string[]): void {
  if (adding.length === 0) return;
  if (mountsReach(readMountinfo('/proc/self/mountinfo'), readMountinfo('/proc/1/mountinfo'), NETNS_RUN_DIR) !== 'own') return;
  const more = adding.length > 1 ? ` and ${adding.length - 1} more` : '';
  throw new LinkerError(
    'netns-not-lasting',
    `refusing to add network namespace ${adding[0]}${more}: spectrum-link runs in a mount namespace of its own (ip netns exec gives one), so the ${NETNS_RUN_DIR} mounts that keep them would vanish when it exits, breaking the links; run it as nsenter --net=${NETNS_RUN_DIR}/NS spectrum-link ..., not ip netns exec`,
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
