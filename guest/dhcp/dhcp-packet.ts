import { DhcpError } from './dhcp-error.js';
import { type DhcpOptions, type OptionParts, encodedOptionsLength, joinOptionParts, layOutOptions, parseOptionArea } from './dhcp-options.js';
import { type Ipv4Text, readIpv4, writeIpv4 } from './ipv4.js';
import { OPTION, OVERLOAD } from './option-code.js';

/** BOOTP op codes. */
export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
/** htype for Ethernet, with its hlen. */
export const HTYPE_ETHERNET = 1;
export const ETHERNET_HLEN = 6;
/** The BROADCAST bit of `flags` (RFC 2131 2). */
export const BROADCAST_FLAG = 0x8000;

export const MAGIC_COOKIE = [99, 130, 83, 99] as const;
/** Fixed part of a message: op .. file, then the magic cookie. */
export const FIXED_LENGTH = 236;
export const OPTIONS_OFFSET = FIXED_LENGTH + 4;
const SNAME_OFFSET = 44;
const FILE_OFFSET = 108;
export const SNAME_LENGTH = 64;
export const FILE_LENGTH = 128;
export const CHADDR_LENGTH = 16;
/** RFC 1542 2.1: BOOTP messages are at least 300 bytes; some relays and clients insist. */
export const MIN_MESSAGE_LENGTH = 300;
/** Every client accepts a 576-byte IP datagram (RFC 2131 2): 576 - 20 (IP) - 8 (UDP). */
export const DEFAULT_MAX_MESSAGE_LENGTH = 548;
/** Largest message this codec reads or writes: a whole UDP payload. */
export const MAX_MESSAGE_LENGTH = 65_507;

/**
 * A decoded DHCP message. When the message used option 52, the options that sname/file carried
 * are in `options` and those fields read as zeros: they held options, not names.
 */
export interface DhcpPacket {
  readonly op: number;
  readonly htype: number;
  readonly hlen: number;
  readonly hops: number;
  readonly xid: number;
  readonly secs: number;
  readonly flags: number;
  readonly ciaddr: Ipv4Text;
  readonly yiaddr: Ipv4Text;
  readonly siaddr: Ipv4Text;
  readonly giaddr: Ipv4Text;
  /** Always 16 bytes; the hardware address is the first `hlen` of them. */
  readonly chaddr: Uint8Array;
  /** Always 64 bytes. */
  readonly sname: Uint8Array;
  /** Always 128 bytes. */
  readonly file: Uint8Array;
  readonly options: DhcpOptions;
}

/** Parse a DHCP message (the UDP payload). Throws only DhcpError, whatever the bytes. */
export function parseDhcpPacket(bytes: Uint8Array): DhcpPacket {
  if (bytes.length < OPTIONS_OFFSET) {
    throw new DhcpError('too-short', `a DHCP message is at least ${OPTIONS_OFFSET} bytes (fixed fields and magic cookie); got ${bytes.length}`);
  }
  if (bytes.length > MAX_MESSAGE_LENGTH) throw new DhcpError('too-long', `${bytes.length} bytes is more than a UDP payload can hold`);
  if (MAGIC_COOKIE.some((value, index) => bytes[FIXED_LENGTH + index] !== value)) {
    throw new DhcpError('bad-cookie', 'the magic cookie 99.130.83.99 is missing: this is BOOTP or not DHCP at all');
  }
  const hlen = bytes[2] ?? 0;
  if (hlen > CHADDR_LENGTH) throw new DhcpError('bad-field', `hlen ${hlen} is longer than the 16-byte chaddr field`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const parts: OptionParts = new Map();
  const overload = parseOptionArea(bytes, OPTIONS_OFFSET, bytes.length, 'options', parts);
  const overloadsFile = overload === OVERLOAD.file || overload === OVERLOAD.both;
  const overloadsSname = overload === OVERLOAD.sname || overload === OVERLOAD.both;
  // RFC 2131 4.1: options, then file, then sname.
  if (overloadsFile) parseOptionArea(bytes, FILE_OFFSET, FILE_OFFSET + FILE_LENGTH, 'file', parts);
  if (overloadsSname) parseOptionArea(bytes, SNAME_OFFSET, SNAME_OFFSET + SNAME_LENGTH, 'sname', parts);
  return {
    op: bytes[0] ?? 0,
    htype: bytes[1] ?? 0,
    hlen,
    hops: bytes[3] ?? 0,
    xid: view.getUint32(4),
    secs: view.getUint16(8),
    flags: view.getUint16(10),
    ciaddr: readIpv4(bytes, 12),
    yiaddr: readIpv4(bytes, 16),
    siaddr: readIpv4(bytes, 20),
    giaddr: readIpv4(bytes, 24),
    chaddr: bytes.slice(28, 28 + CHADDR_LENGTH),
    sname: overloadsSname ? new Uint8Array(SNAME_LENGTH) : bytes.slice(SNAME_OFFSET, SNAME_OFFSET + SNAME_LENGTH),
    file: overloadsFile ? new Uint8Array(FILE_LENGTH) : bytes.slice(FILE_OFFSET, FILE_OFFSET + FILE_LENGTH),
    options: joinOptionParts(bytes, parts),
  };
}

function isZero(bytes: Uint8Array): boolean {
  return bytes.every((byte) => byte === 0);
}

function checkByteField(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) throw new DhcpError('bad-field', `${name} ${value} does not fit its field (0..${max})`);
}

/** Bytes `packet` takes encoded with no limit (no overloading): what it needs to go out whole. */
export function plainMessageLength(packet: DhcpPacket): number {
  return Math.max(OPTIONS_OFFSET + encodedOptionsLength(packet.options) + 1, MIN_MESSAGE_LENGTH);
}

/**
 * Encode a message of at most `maxLength` bytes (the receiver's limit: 548 unless it sent option
 * 57). Options that do not fit the options field continue in file and then sname, announced by
 * option 52, when those fields are empty (RFC 2131 4.1, RFC 3396).
 */
export function encodeDhcpPacket(packet: DhcpPacket, maxLength: number = DEFAULT_MAX_MESSAGE_LENGTH): Uint8Array {
  checkByteField('op', packet.op, 0xff);
  checkByteField('htype', packet.htype, 0xff);
  checkByteField('hlen', packet.hlen, CHADDR_LENGTH);
  checkByteField('hops', packet.hops, 0xff);
  checkByteField('xid', packet.xid, 0xffffffff);
  checkByteField('secs', packet.secs, 0xffff);
  checkByteField('flags', packet.flags, 0xffff);
  if (packet.chaddr.length > CHADDR_LENGTH) throw new DhcpError('bad-field', `chaddr is ${packet.chaddr.length} bytes; the field holds 16`);
  if (packet.sname.length > SNAME_LENGTH) throw new DhcpError('bad-field', `sname is ${packet.sname.length} bytes; the field holds 64`);
  if (packet.file.length > FILE_LENGTH) throw new DhcpError('bad-field', `file is ${packet.file.length} bytes; the field holds 128`);
  const limit = Math.min(Math.max(maxLength, MIN_MESSAGE_LENGTH), MAX_MESSAGE_LENGTH);

  const optionsLength = encodedOptionsLength(packet.options) + 1; // + End
  const plainLength = OPTIONS_OFFSET + optionsLength;
  const overloadable = isZero(packet.sname) && isZero(packet.file);
  const length = plainLength <= limit || !overloadable ? Math.max(plainLength, MIN_MESSAGE_LENGTH) : Math.max(limit, MIN_MESSAGE_LENGTH);
  if (plainLength > limit && !overloadable) {
    throw new DhcpError('too-long', `the options need ${plainLength} bytes, more than the ${limit} allowed, and sname/file are in use`);
  }
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  bytes[0] = packet.op;
  bytes[1] = packet.htype;
  bytes[2] = packet.hlen;
  bytes[3] = packet.hops;
  view.setUint32(4, packet.xid);
  view.setUint16(8, packet.secs);
  view.setUint16(10, packet.flags);
  writeIpv4(bytes, 12, packet.ciaddr);
  writeIpv4(bytes, 16, packet.yiaddr);
  writeIpv4(bytes, 20, packet.siaddr);
  writeIpv4(bytes, 24, packet.giaddr);
  bytes.set(packet.chaddr, 28);
  bytes.set(MAGIC_COOKIE, FIXED_LENGTH);

  if (plainLength <= limit) {
    bytes.set(packet.sname, SNAME_OFFSET);
    bytes.set(packet.file, FILE_OFFSET);
    layOutOptions(packet.options, [bytes.subarray(OPTIONS_OFFSET, OPTIONS_OFFSET + optionsLength)]);
    return bytes;
  }
  // Overload: option 52 first, then the options field, file and sname in parsing order.
  const optionsArea = bytes.subarray(OPTIONS_OFFSET + 3, limit);
  const areas = [optionsArea, bytes.subarray(FILE_OFFSET, FILE_OFFSET + FILE_LENGTH), bytes.subarray(SNAME_OFFSET, SNAME_OFFSET + SNAME_LENGTH)];
  const used = layOutOptions(packet.options, areas);
  if (used === undefined) {
    throw new DhcpError('too-long', `the options do not fit a ${limit}-byte message even with sname and file overloaded`);
  }
  bytes[OPTIONS_OFFSET] = OPTION.overload;
  bytes[OPTIONS_OFFSET + 1] = 1;
  bytes[OPTIONS_OFFSET + 2] = used >= 3 ? OVERLOAD.both : OVERLOAD.file;
  return bytes;
}
