import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientId } from '../../shared/client-id.js';
import { CLIENT_ID_MAX, CLIENT_ID_MIN } from '../../shared/scheme.js';
import {
  DEFAULT_DEVICE_PREFIX,
  DEVICE_PREFIX_MAX,
  type DeviceRole,
  IFNAME_MAX,
  devicePrefix,
  deviceName,
  linkDeviceNames,
  parseDeviceName,
} from '../../host/device-names.js';

const ids = fc.integer({ min: CLIENT_ID_MIN, max: CLIENT_ID_MAX }).map(clientId);
const prefixes = fc
  .tuple(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz'.split('')), fc.array(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789_-'.split('')), { maxLength: DEVICE_PREFIX_MAX - 1 }))
  .map(([first, rest]) => devicePrefix(first + rest.join('')));
const roles = fc.constantFrom<DeviceRole>('bridge', 'client', 'provider');
// What Linux's dev_valid_name accepts, with the 15-byte limit.
const LINUX_VALID = (name: string): boolean =>
  name.length > 0 && Buffer.byteLength(name) <= IFNAME_MAX && name !== '.' && name !== '..' && !/[/:\s]/.test(name);

describe('device names', () => {
  it('follows the documented scheme', () => {
    const names = linkDeviceNames(devicePrefix(DEFAULT_DEVICE_PREFIX), clientId(42310));
    expect(names).toEqual({ bridge: 'snb42310', client: 'snc42310', provider: 'snp42310' });
  });

  it('is always a valid Linux interface name of at most 15 bytes', () => {
    fc.assert(fc.property(prefixes, roles, ids, (prefix, role, id) => {
      expect(deviceName(prefix, role, id)).toSatisfy(LINUX_VALID);
    }));
  });

  it('the longest prefix with the longest id is exactly 15 bytes', () => {
    expect(deviceName(devicePrefix('a'.repeat(DEVICE_PREFIX_MAX)), 'bridge', clientId(CLIENT_ID_MAX))).toHaveLength(IFNAME_MAX);
  });

  it('parses back to role and id, so names never collide', () => {
    fc.assert(
      fc.property(prefixes, roles, ids, (prefix, role, id) => {
        expect(parseDeviceName(prefix, deviceName(prefix, role, id))).toEqual({ role, id });
      }),
    );
  });

  it('does not claim devices of other schemes', () => {
    const prefix = devicePrefix('sn');
    // snx42310: no role has the letter x (nothing makes such devices, so gc must not delete one).
    for (const name of ['eth0', 'sn', 'snb', 'snb0', 'snb65535', 'snb042310', 'snq1', 'snx42310', 'br42310', 'snb1x']) expect(parseDeviceName(prefix, name)).toBeUndefined();
  });

  it('refuses prefixes that could break the limit or the syntax', () => {
    expect(() => devicePrefix('')).toThrow(expect.objectContaining({ kind: 'prefix-empty' }));
    expect(() => devicePrefix('a'.repeat(DEVICE_PREFIX_MAX + 1))).toThrow(expect.objectContaining({ kind: 'prefix-too-long' }));
    for (const bad of ['Sn', '1sn', 's n', 's/n', 's:n', 'sñ', '-sn']) {
      expect(() => devicePrefix(bad)).toThrow(expect.objectContaining({ kind: 'prefix-syntax' }));
    }
    fc.assert(
      fc.property(fc.string({ minLength: DEVICE_PREFIX_MAX + 1 }), (text) => {
        expect(() => devicePrefix(text)).toThrow();
      }),
    );
  });

  it('counts a prefix in characters (code points), as a VM name is, and shows it cut as names are: 5 emoji are refused for the emoji, not as too long; one cut is never cut within an emoji', () => {
    const emoji = '\u{1F600}';
    const errorOf = (text: string): unknown => {
      try {
        devicePrefix(text);
      } catch (error) {
        return error;
      }
      return undefined;
    };
    // 5 characters (10 UTF-16 units): within the bound, refused for what they are.
    expect(errorOf(emoji.repeat(5))).toMatchObject({ kind: 'prefix-syntax', message: expect.stringMatching(new RegExp(`^device prefix "${emoji.repeat(5)}" is not valid: `, 'u')) });
    // Cut after 32 characters, as before, but whole: no lone surrogate ("\ud83d") shown.
    expect(errorOf(`${'a'.repeat(31)}${emoji.repeat(2)}`)).toMatchObject({ kind: 'prefix-too-long', message: expect.stringMatching(new RegExp(`^device prefix "${'a'.repeat(31)}${emoji}…" is too long: `, 'u')) });
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', emoji), minLength: 1, maxLength: 3 * DEVICE_PREFIX_MAX }), (text) => {
        const kind = [...text].length > DEVICE_PREFIX_MAX ? 'prefix-too-long' : text.includes(emoji) ? 'prefix-syntax' : undefined;
        expect((errorOf(text) as { kind?: string } | undefined)?.kind).toBe(kind);
        expect((errorOf(text) as Error | undefined)?.message ?? '').not.toMatch(/\\ud83d/);
      }),
    );
  });
});
