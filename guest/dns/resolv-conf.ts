import { lacksItsZone, parseUpstream, sameUpstream, upstreamKey, type Upstream } from './upstream.js';

/**
 * The upstreams the forwarder uses at most (the first it can use of those it is given): more than
 * glibc's 3 (MAXNS), so nothing usable is lost; fewer than a hostile file could list.
 */
export const MAX_UPSTREAMS = 8;
/** Longer files are not resolv.conf files; only their start is read. */
export const MAX_RESOLV_CONF_LENGTH = 64 * 1024;

export interface ResolvConf {
  /**
   * Usable nameservers, in file order, duplicates removed. All of them (of the file's first
   * MAX_RESOLV_CONF_LENGTH bytes), not just the first MAX_UPSTREAMS: the forwarder takes those
   * of them it can use (not itself, not a link-local one again by its link's index, which only
   * the interfaces of the moment tell), and cut here, those would take the places of others.
   */
  readonly upstreams: readonly Upstream[];
  /** nameserver values that could not be used, for the log. */
  readonly skipped: readonly string[];
  /**
   * Link-local nameservers without a zone (`fe80::1`), in file order, duplicates removed, at most
   * MAX_UPSTREAMS: not among `upstreams`. The kernel sends to such an address through no link
   * (EINVAL at every connect, glibc's resolver failing on it alike), so trying it again could
   * never help; the forwarder says once what to write instead.
   */
  readonly withoutZone: readonly Upstream[];
}

/**
 * The nameserver lines of a resolv.conf. Like glibc: one keyword per line, `#` or `;` at the
 * start of a line begins a comment, the value is the first word after the keyword (words part at
 * spaces and tabs), other keywords (search, domain, options, sortlist) are ignored. Beyond glibc,
 * "ip:port" and "[ipv6]:port" are accepted (test setups and some resolvers write them). A
 * link-local nameserver without a zone is listed apart (see ResolvConf.withoutZone).
 */
export function parseResolvConf(text: string): ResolvConf {
  const upstreams: Upstream[] = [];
  const upstreamKeys = new Set<string>();
  const skipped: string[] = [];
  const withoutZone: Upstream[] = [];
  for (const rawLine of text.slice(0, MAX_RESOLV_CONF_LENGTH).split('\n')) {
    // Blanks to C (isspace) trimmed, a CRLF's CR among them: not what JavaScript's trim() also
    // takes for blanks (U+3000, U+2000 to U+200A...), which a zone may end with (see below).
    const line = rawLine.replace(/^[ \t\r\v\f]+|[ \t\r\v\f]+$/g, '');
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    // Words part at spaces and tabs alone, as glibc's: a zone may hold other blanks (U+3000)
    // that Linux takes in a name.
    const words = line.split(/[ \t]+/);
    if (words[0] !== 'nameserver') continue;
    const value = words[1];
    if (value === undefined) continue;
    let upstream: Upstream;
    try {
      upstream = parseUpstream(value);
    } catch {
      if (skipped.length < MAX_UPSTREAMS) skipped.push(value.slice(0, 80));
      continue;
    }
    if (lacksItsZone(upstream)) {
      if (withoutZone.length < MAX_UPSTREAMS && !withoutZone.some((known) => sameUpstream(known, upstream))) withoutZone.push(upstream);
      continue;
    }
    const key = upstreamKey(upstream);
    if (upstreamKeys.has(key)) continue;
    upstreamKeys.add(key);
    upstreams.push(upstream);
  }
  return { upstreams, skipped, withoutZone };
}
