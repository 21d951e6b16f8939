import { DhcpError } from './dhcp-error.js';
import { OPTION } from './option-code.js';

/**
 * The options of a DHCP message: code -> value, in the order they first appeared. A value is the
 * concatenation of every instance of its code (RFC 3396), so it may exceed 255 bytes. Pad, End
 * and Overload (52) are framing, never values here.
 */
export type DhcpOptions = ReadonlyMap<number, Uint8Array>;

/** Where an option area lies, for error messages. */
export type OptionField = 'options' | 'file' | 'sname';

/**
 * Where each code's instances lie in the message: per code, start and end offsets in pairs
 * (zero-length instances leave no pair, only the code). Offsets, not views: a message of 64 KiB
 * holds 32,000 instances, and a view per instance cost 8 ms a message.
 */
export type OptionParts = Map<number, number[]>;

/**
 * Parse one option area into `into`: where each code's instances lie, for joinOptionParts to
 * concatenate (RFC 3396). Returns the value of option 52 when it appears in the options field.
 * Stops at End or at the end of the area: a missing End is tolerated (some clients omit it), a
 * length that runs past the area is not.
 */
export function parseOptionArea(bytes: Uint8Array, start: number, end: number, field: OptionField, into: OptionParts): number | undefined {
  let overload: number | undefined;
  let offset = start;
  while (offset < end) {
    const code = bytes[offset] ?? OPTION.end;
    if (code === OPTION.end) break;
    if (code === OPTION.pad) {
      offset += 1;
      continue;
    }
    if (offset + 1 >= end) {
      throw new DhcpError('option-truncated', `option ${code} in the ${field} field at byte ${offset} has no length byte`);
    }
    const length = bytes[offset + 1] ?? 0;
    const valueStart = offset + 2;
    const valueEnd = valueStart + length;
    if (valueEnd > end) {
      throw new DhcpError(
        'option-truncated',
        `option ${code} in the ${field} field at byte ${offset} claims ${length} bytes but only ${end - valueStart} remain`,
      );
    }
    if (code === OPTION.overload) {
      if (field !== 'options') throw new DhcpError('bad-overload', `option 52 (overload) may only appear in the options field, found in ${field}`);
      const value = bytes[valueStart];
      if (length !== 1 || value === undefined || value < 1 || value > 3) {
        throw new DhcpError('bad-overload', 'option 52 (overload) must be one byte of value 1, 2 or 3');
      }
      overload = value;
    } else {
      let pairs = into.get(code);
      if (pairs === undefined) {
        pairs = [];
        into.set(code, pairs);
      }
      if (length > 0) pairs.push(valueStart, valueEnd);
    }
    offset = valueEnd;
  }
  return overload;
}

/** Pieces shorter than this are copied byte by byte. */
const SHORT_PIECE = 32;

/** Join the collected instances of each code into single values (copies: input buffers get reused). */
export function joinOptionParts(bytes: Uint8Array, parts: ReadonlyMap<number, readonly number[]>): Map<number, Uint8Array> {
  const options = new Map<number, Uint8Array>();
  for (const [code, pairs] of parts) {
    let total = 0;
    for (let index = 0; index + 1 < pairs.length; index += 2) total += (pairs[index + 1] ?? 0) - (pairs[index] ?? 0);
    const value = new Uint8Array(total);
    let at = 0;
    for (let index = 0; index + 1 < pairs.length; index += 2) {
      const from = pairs[index] ?? 0;
      const to = pairs[index + 1] ?? 0;
      // A view per short piece costs more than copying its bytes one by one.
      if (to - from >= SHORT_PIECE) value.set(bytes.subarray(from, to), at);
      else for (let source = from; source < to; source++) value[at + source - from] = bytes[source] ?? 0;
      at += to - from;
    }
    options.set(code, value);
  }
  return options;
}

/** One option instance as written: code, then at most 255 bytes of value. */
interface OptionInstance {
  readonly code: number;
  readonly value: Uint8Array;
}

/** Bytes an option area needs for `options`, each long value split into 255-byte instances. */
export function encodedOptionsLength(options: DhcpOptions): number {
  let total = 0;
  for (const value of options.values()) total += 2 * Math.max(1, Math.ceil(value.length / 255)) + value.length;
  return total;
}

/**
 * Lay the options out over the given areas in order (RFC 3396 splitting: a value may be cut into
 * several instances, within one area or continuing in the next). Every area used ends with End.
 * Returns how many areas were used (at least one), or undefined if everything does not fit.
 */
export function layOutOptions(options: DhcpOptions, areas: readonly Uint8Array[]): number | undefined {
  const pending: OptionInstance[] = [];
  for (const [code, value] of options) {
    if (code === OPTION.pad || code === OPTION.end || code === OPTION.overload) {
      throw new DhcpError('bad-option', `option ${code} is framing and cannot be given as a value`);
    }
    if (!Number.isInteger(code) || code < 0 || code > 255) throw new DhcpError('bad-option', `option code ${code} is not a byte`);
    pending.push({ code, value });
  }
  let areaIndex = 0;
  let used = 0;
  let position = 0;
  let queue = 0;
  let valueOffset = 0;
  while (queue < pending.length) {
    const area = areas[areaIndex];
    if (area === undefined) return undefined;
    const instance = pending[queue];
    if (instance === undefined) break;
    // Keep one byte for End; an instance needs its two header bytes plus at least one value byte
    // (or none for an empty value).
    const room = area.length - 1 - position - 2;
    const remaining = instance.value.length - valueOffset;
    if (room < 0 || (room === 0 && remaining > 0)) {
      area[position] = OPTION.end;
      areaIndex += 1;
      position = 0;
      continue;
    }
    const take = Math.min(remaining, room, 255);
    area[position] = instance.code;
    area[position + 1] = take;
    area.set(instance.value.subarray(valueOffset, valueOffset + take), position + 2);
    position += 2 + take;
    used = areaIndex + 1;
    valueOffset += take;
    if (valueOffset >= instance.value.length) {
      queue += 1;
      valueOffset = 0;
    }
  }
  const last = areas[areaIndex];
  if (last !== undefined) last[position] = OPTION.end;
  return Math.max(used, 1);
}
