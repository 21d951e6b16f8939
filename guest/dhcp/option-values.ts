import { DhcpError } from './dhcp-error.js';
import type { DhcpOptions } from './dhcp-options.js';
import { type Ipv4Text, ipv4Octets, readIpv4 } from './ipv4.js';
import { OPTION } from './option-code.js';

// Typed readers and writers for the option values this server uses. Readers return undefined for
// an absent option and throw DhcpError('bad-option') for a malformed one.

function exactLength(options: DhcpOptions, code: number, length: number): Uint8Array | undefined {
  const value = options.get(code);
  if (value === undefined) return undefined;
  if (value.length !== length) throw new DhcpError('bad-option', `option ${code} must be ${length} bytes, got ${value.length}`);
  return value;
}

export function readMessageType(options: DhcpOptions): number | undefined {
  return exactLength(options, OPTION.messageType, 1)?.[0];
}

export function readIpv4Option(options: DhcpOptions, code: number): Ipv4Text | undefined {
  const value = exactLength(options, code, 4);
  return value === undefined ? undefined : readIpv4(value, 0);
}

export function readUint16Option(options: DhcpOptions, code: number): number | undefined {
  const value = exactLength(options, code, 2);
  return value === undefined ? undefined : ((value[0] ?? 0) << 8) | (value[1] ?? 0);
}

export function readUint32Option(options: DhcpOptions, code: number): number | undefined {
  const value = exactLength(options, code, 4);
  return value === undefined ? undefined : new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
}

/** Option 55 as a set of codes; undefined when the client sent none. */
export function readParameterRequestList(options: DhcpOptions): ReadonlySet<number> | undefined {
  const value = options.get(OPTION.parameterRequestList);
  return value === undefined ? undefined : new Set(value);
}

/** Printable text of a text option (hostname), control bytes replaced, at most `max` characters. */
export function readTextOption(options: DhcpOptions, code: number, max: number): string | undefined {
  const value = options.get(code);
  if (value === undefined) return undefined;
  let text = '';
  for (const byte of value.subarray(0, max)) {
    if (byte === 0) break; // some clients NUL-terminate
    text += byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : '?';
  }
  return text;
}

export function hexOf(value: Uint8Array, max: number): string {
  return Buffer.from(value.subarray(0, max)).toString('hex');
}

export function uint32Value(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value);
  return bytes;
}

export function ipv4ListValue(addresses: readonly Ipv4Text[]): Uint8Array {
  const bytes = new Uint8Array(4 * addresses.length);
  addresses.forEach((address, index) => bytes.set(ipv4Octets(address), 4 * index));
  return bytes;
}
