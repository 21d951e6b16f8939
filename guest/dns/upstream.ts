import { isIPv4, isIPv6 } from 'node:net';
import { DnsError } from './dns-error.js';

export const DNS_PORT = 53;

/** An upstream resolver the forwarder sends queries to. */
export interface Upstream {
  /** Literal address; IPv6 may carry a zone ("fe80::1%eth0"). */
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

const MAX_UPSTREAM_TEXT = 80;

/** A text that is no upstream: `shown` as messages show it (quoted; a long one cut short), and why. */
export class UpstreamSyntaxError extends DnsError {
  constructor(
    readonly shown: string,
    readonly reason: string,
  ) {
    super('upstream-syntax', `upstream ${shown}: ${reason}`);
  }
}

function parsePort(text: string, whole: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) throw new UpstreamSyntaxError(JSON.stringify(whole), 'port must be 1..65535');
  const port = Number(text);
  if (port < 1 || port > 65_535) throw new UpstreamSyntaxError(JSON.stringify(whole), 'port must be 1..65535');
  return port;
}

function ipv6Of(text: string): boolean {
  const percent = text.indexOf('%');
  const bare = percent === -1 ? text : text.slice(0, percent);
  const zone = percent === -1 ? '' : text.slice(percent + 1);
  if (percent !== -1 && !/^[A-Za-z0-9_.-]{1,15}$/.test(zone)) return false;
  return isIPv6(bare);
}

/**
 * Parse "ip", "ip:port" (IPv4), "ipv6", "[ipv6]" or "[ipv6]:port". IPv6 may carry a zone.
 */
export function parseUpstream(text: string): Upstream {
  const shown = JSON.stringify(text.length > MAX_UPSTREAM_TEXT ? `${text.slice(0, MAX_UPSTREAM_TEXT)}…` : text);
  if (text.length === 0 || text.length > MAX_UPSTREAM_TEXT) {
    throw new UpstreamSyntaxError(shown, 'expected an IP address, optionally with :port');
  }
  if (isIPv4(text)) return { address: text, port: DNS_PORT, family: 4 };
  if (ipv6Of(text)) return { address: text, port: DNS_PORT, family: 6 };
  const bracketed = /^\[([^\]]+)\](?::([^:]*))?$/.exec(text);
  if (bracketed !== null) {
    const address = bracketed[1] ?? '';
    if (!ipv6Of(address)) throw new UpstreamSyntaxError(shown, 'not an IPv6 address in brackets');
    return { address, port: bracketed[2] === undefined ? DNS_PORT : parsePort(bracketed[2], text), family: 6 };
  }
  const colon = text.lastIndexOf(':');
  if (colon > 0 && isIPv4(text.slice(0, colon))) {
    return { address: text.slice(0, colon), port: parsePort(text.slice(colon + 1), text), family: 4 };
  }
  throw new UpstreamSyntaxError(shown, 'expected an IP address, optionally with :port (IPv6 as [addr]:port)');
}

export function upstreamText(upstream: Upstream): string {
  return upstream.family === 6 ? `[${upstream.address}]:${upstream.port}` : `${upstream.address}:${upstream.port}`;
}

export function sameUpstream(a: Upstream, b: Upstream): boolean {
  return a.address === b.address && a.port === b.port;
}
