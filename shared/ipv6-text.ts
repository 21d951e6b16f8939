/**
 * An IPv6 address's 16 bytes as RFC 5952 text (`fe80::1`): lower-case hex, no leading zeros, the
 * longest run of two or more zero groups (the first of equals) as `::`. Node's WHATWG URL parser
 * serialises an IPv6 host exactly so; it is built in, where ip-num (which can collapse too) costs
 * ~130 ms to load on spectrum-link's start-up path. An IPv4-mapped address stays in hex
 * (`::ffff:c000:201`), as the URL parser and ip-num write it.
 */
export function ipv6Text(bytes: Uint8Array): string {
  if (bytes.length !== 16) throw new RangeError(`Unexpected length (got ${bytes.length}, expected 16)`);
  const groups = Array.from({ length: 8 }, (_, at) => (((bytes[2 * at] ?? 0) << 8) | (bytes[2 * at + 1] ?? 0)).toString(16));
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}
