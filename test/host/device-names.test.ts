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
});
