import { isIPv4 } from 'node:net';
import { inetAtonAddress, lacksItsZone, parseUpstream, sameUpstream, upstreamKey, writtenZone, zoneProblem, type Upstream } from './upstream.js';

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
   * IPv4 nameservers written in inet_aton's other forms than dotted decimal (`127.1`,
   * `010.0.0.1`), as written and as read (`127.0.0.1`, `8.0.0.1`: see inetAtonAddress), at most
   * MAX_UPSTREAMS, for the log: read as glibc reads them, which may not be the address meant
   * (a leading 0 is octal). Among `upstreams`.
   */
  readonly legacyIpv4: readonly { readonly written: string; readonly address: string }[];
  /**
   * Link-local nameservers without a zone (`fe80::1`), in file order, duplicates removed, at most
   * MAX_UPSTREAMS: not among `upstreams`. The kernel sends to such an address through no link
   * (EINVAL at every connect, glibc's resolver failing on it alike), so trying it again could
   * never help; the forwarder says once what to write instead. A zone glibc reads as none
   * (`fe80::1%`, `fe80::1%a/b`: see parseUpstream) is none here too: listed with it, and what is
   * wrong with it (see ZonelessNameserver).
   */
  readonly withoutZone: readonly ZonelessNameserver[];
  /**
   * nameserver lines with blanks before the keyword, as written (cut short), at most
   * MAX_UPSTREAMS, for the log: not read, as glibc does not read them (its keywords must start
   * the line, as resolv.conf(5) says).
   */
  readonly indented: readonly string[];
}

/**
 * A link-local nameserver read without a zone: `upstream` as read (without one); `zone`, where it
 * was written with one that can name no interface (`fe80::1%a/b`), as written (without its '%'),
 * and what is wrong with it (zoneProblem).
 */
export interface ZonelessNameserver {
  readonly upstream: Upstream;
  readonly zone: { readonly written: string; readonly problem: string } | undefined;
}

/** What is shown of a line or value that the log lists, at most. */
const SHOWN_LENGTH = 80;

/**
 * The nameserver lines of a resolv.conf, read as glibc's resolver reads them (resolv/res_init.c,
 * res_vinit_1): one keyword per line, at its start, then spaces or tabs (so that a line whose
 * first column is `#` or `;`, a comment, is none, nor is an indented one, listed apart: see
 * ResolvConf.indented); the value is the first word after the keyword (words part at spaces and
 * tabs); a line ends at its first NUL, the rest of it ignored, as glibc's string functions read
 * it; other keywords (search, domain, options, sortlist) are ignored. Beyond glibc, "ip:port"
 * and "[ipv6]:port" are accepted (test setups and some resolvers write them), and a line's
 * trailing blanks are no part of its value (a CRLF file's CR, which glibc keeps in the value,
 * reading no nameserver from such a line, or, where the CR ends a zone, the address without its
 * zone: a file saved on another system still names its servers). A bare IPv4 value is read as
 * glibc reads it, in inet_aton's forms too (see ResolvConf.legacyIpv4); with a port, only in
 * dotted decimal. A link-local nameserver without a zone is listed apart (see
 * ResolvConf.withoutZone).
 */
export function parseResolvConf(text: string): ResolvConf {
  const upstreams: Upstream[] = [];
  const upstreamKeys = new Set<string>();
  const skipped: string[] = [];
  const legacyIpv4: { written: string; address: string }[] = [];
  const withoutZone: ZonelessNameserver[] = [];
  const indented: string[] = [];
  for (const fileLine of text.slice(0, MAX_RESOLV_CONF_LENGTH).split('\n')) {
    // A line ends at its first NUL, as glibc reads it: getline takes the line up to its newline,
    // but the C string functions that read it stop at the NUL (the rest of that line ignored, the
    // next line read as ever).
    const nul = fileLine.indexOf('\0');
    const rawLine = nul === -1 ? fileLine : fileLine.slice(0, nul);
    // Trailing blanks to C (isspace) trimmed, a CRLF's CR among them: not what JavaScript's
    // trimEnd() also takes for blanks (U+3000, U+2000 to U+200A...), which a zone may end with.
    const line = rawLine.replace(/[ \t\r\v\f]+$/, '');
    const keyword = /^nameserver[ \t]+/.exec(line);
    if (keyword === null) {
      if (/^[ \t\r\v\f]+nameserver[ \t]/.test(line) && indented.length < MAX_UPSTREAMS) indented.push(line.trimStart().slice(0, SHOWN_LENGTH));
      continue;
    }
    // Words part at spaces and tabs alone, as glibc's: a zone may hold other blanks (U+3000)
    // that Linux takes in a name.
    const value = line.slice(keyword[0].length).split(/[ \t]/)[0] ?? '';
    let upstream: Upstream;
    try {
      upstream = parseUpstream(value);
    } catch {
      if (skipped.length < MAX_UPSTREAMS) skipped.push(value.slice(0, SHOWN_LENGTH));
      continue;
    }
    if (upstream.family === 4 && !isIPv4(value) && legacyIpv4.length < MAX_UPSTREAMS) {
      const address = inetAtonAddress(value);
      if (address !== undefined) legacyIpv4.push({ written: value, address });
    }
    if (lacksItsZone(upstream)) {
      const written = writtenZone(value);
      const zone = written === undefined ? undefined : { written, problem: zoneProblem(written) };
      const known = withoutZone.some((other) => sameUpstream(other.upstream, upstream) && other.zone?.written === written);
      if (withoutZone.length < MAX_UPSTREAMS && !known) withoutZone.push({ upstream, zone });
      continue;
    }
    const key = upstreamKey(upstream);
    if (upstreamKeys.has(key)) continue;
    upstreamKeys.add(key);
    upstreams.push(upstream);
  }
  return { upstreams, skipped, legacyIpv4, withoutZone, indented };
}
