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
 * Parse one option area into `into`, concatenating repeated codes (RFC 3396). Returns the value of
 * option 52 when it appears in the options field. Stops at End or at the end of the area: a
 * missing End is tolerated (some clients omit it), a length that runs past the area is not.
 */
export function parseOptionArea(
  bytes: Uint8Array,
  start: number,
  end: number,
  field: OptionField,
  into: Map<number, Uint8Array[]>,
): number | undefined {
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
    if (valueStart + length > end) {
      throw new DhcpError(
        'option-truncated',
        `option ${code} in the ${field} field at byte ${offset} claims ${length} bytes but only ${end - valueStart} remain`,
      );
    }
    const value = bytes.subarray(valueStart, valueStart + length);
    if (code === OPTION.overload) {
      if (field !== 'options') throw new DhcpError('bad-overload', `option 52 (overload) may only appear in the options field, found in ${field}`);
      if (length !== 1 || value[0] === undefined || value[0] < 1 || value[0] > 3) {
        throw new DhcpError('bad-overload', 'option 52 (overload) must be one byte of value 1, 2 or 3');
      }
      overload = value[0];
    } else {
      const parts = into.get(code);
      if (parts === undefined) into.set(code, [value]);
      else parts.push(value);
    }
    offset = valueStart + length;
  }
  return overload;
}

/** Join the collected instances of each code into single values (copies: input buffers get reused). */
export function joinOptionParts(parts: ReadonlyMap<number, readonly Uint8Array[]>): Map<number, Uint8Array> {
  const options = new Map<number, Uint8Array>();
  for (const [code, pieces] of parts) {
    const total = pieces.reduce((sum, piece) => sum + piece.length, 0);
    const value = new Uint8Array(total);
    let at = 0;
    for (const piece of pieces) {
      value.set(piece, at);
      at += piece.length;
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
