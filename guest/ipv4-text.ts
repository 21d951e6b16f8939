// Dotted-quad IPv4 text, as the guest's modules keep addresses (DHCP values, conntrack filters):
// one strict grammar for all of them (no leading zeros, no spaces, no prefix).

const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const DOTTED = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

/** The four octets of dotted-quad text, or null when `text` is none. */
export function dottedOctets(text: string): [number, number, number, number] | null {
  const match = DOTTED.exec(text);
  if (match === null) return null;
  return [Number(match[1]), Number(match[2]), Number(match[3]), Number(match[4])];
}
