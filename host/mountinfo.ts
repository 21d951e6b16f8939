// /proc/PID/mountinfo read: the mounts of a mount namespace, their ids (system-wide) and peer
// groups (propagation), for netns-lasting.ts and for netlink-devices.ts's look at /run/netns files.
import { readFileSync } from 'node:fs';

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

/** The mounts of /proc/PID/mountinfo (`self` by default); undefined where it cannot be read. */
export function readMountinfo(pid: number | 'self' = 'self'): MountEntry[] | undefined {
  try {
    return parseMountinfo(readFileSync(`/proc/${pid}/mountinfo`, 'utf8'));
  } catch {
    return undefined;
  }
}
