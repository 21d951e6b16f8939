/**
 * What Linux takes for an interface's name: one place for the rule, which the DNS forwarder's
 * zones (fe80::1%eth0) and netd's --ignore follow alike.
 */

/** The longest interface name, in bytes (IFNAMSIZ, 16, with its NUL). */
export const INTERFACE_NAME_MAX_BYTES = 15;

/**
 * Bytes the kernel refuses in a name (net/core/dev.c, dev_valid_name): '/', ':', and those its
 * isspace() takes for blanks (lib/ctype.c): tab, newline, vertical tab, form feed, carriage
 * return, space, and 0xa0, which is also inside UTF-8 characters ("à" is c3 a0). NUL too: C reads
 * a name only up to it, so a name holding one is not the name the kernel sees.
 */
const REFUSED_BYTES: ReadonlySet<number> = new Set([0x00, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x2f, 0x3a, 0xa0]);

/**
 * Whether Linux takes `name` (sent as UTF-8) for an interface's name, as dev_valid_name does: 1 to
 * 15 bytes, not "." or "..", none of REFUSED_BYTES. Anything else (`+`, `@`, `%`, `]`, other
 * UTF-8) it takes: an interface may be so named, or carry such an alternative name (`ip link
 * property add altname`), which if_nametoindex finds as well.
 */
export function isInterfaceName(name: string): boolean {
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0 || bytes.length > INTERFACE_NAME_MAX_BYTES || name === '.' || name === '..') return false;
  return !bytes.some((byte) => REFUSED_BYTES.has(byte));
}
