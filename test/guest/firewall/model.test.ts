import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FirewallError } from '../../../guest/firewall/firewall-error.js';
import { type FirewallModel, validateFirewallModel } from '../../../guest/firewall/model.js';
import { anyFirewallModel } from './arbitraries.js';

function kindOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    if (error instanceof FirewallError) return error.kind;
    throw error;
  }
  return undefined;
}

const model = (partial: Partial<FirewallModel>): FirewallModel => ({ providerLinks: [], uplinks: [], allowedPairs: [], ...partial });

describe('validateFirewallModel', () => {
  it('accepts every generated model and leaves it as it was (already canonical)', () => {
    fc.assert(
      fc.property(anyFirewallModel, (input) => {
        const valid = validateFirewallModel(input);
        expect(valid.providerLinks).toEqual(input.providerLinks);
      }),
    );
  });

  it.each([
    ['empty', ''],
    ['16 bytes', 'abcdefghijklmnop'],
    ['a space', 'eth 0'],
    ['a quote', 'eth"0'],
    ['a wildcard', 'eth*'],
    ['a slash', 'a/b'],
    ['a leading dot', '.eth'],
    ['a leading dash', '-eth'],
    ['a multibyte character making it too long', 'ééééééééx'],
    ['a brace', 'eth{'],
  ])('refuses an interface name with %s', (_what, name) => {
    expect(kindOf(() => validateFirewallModel(model({ providerLinks: [{ ifname: name, clientIp: '100.64.0.1' }] })))).toBe('interface-name');
    expect(kindOf(() => validateFirewallModel(model({ uplinks: [name] })))).toBe('interface-name');
  });

  it('accepts names Linux and Spectrum use', () => {
    for (const name of ['eth0', 'enp1s0', 'wlan0', 'eth0.10', 'snp65534', 'veth_a-b', 'abcdefghijklmno']) {
      expect(kindOf(() => validateFirewallModel(model({ uplinks: [name] })))).toBeUndefined();
    }
  });

  it.each(['100.65.0.1', '10.0.0.1', '100.64.0.0', '100.64.255.255', '100.64.1', '100.64.01.1', ' 100.64.0.1', 'x', '', '100.64.0.1/32'])(
    'refuses client address %j',
    (ip) => {
      expect(kindOf(() => validateFirewallModel(model({ providerLinks: [{ ifname: 'snp1', clientIp: ip }] })))).toBe('client-ip');
      expect(kindOf(() => validateFirewallModel(model({ allowedPairs: [{ from: '100.64.0.1', to: ip }] })))).toBe('client-ip');
      expect(kindOf(() => validateFirewallModel(model({ allowedPairs: [{ from: ip, to: '100.64.0.1' }] })))).toBe('client-ip');
    },
  );

  it('refuses a link listed twice, a client address on two links, and a link that is also an uplink', () => {
    const a = { ifname: 'snp1', clientIp: '100.64.0.1' };
    expect(kindOf(() => validateFirewallModel(model({ providerLinks: [a, { ...a, clientIp: '100.64.0.2' }] })))).toBe('duplicate-link');
    expect(kindOf(() => validateFirewallModel(model({ providerLinks: [a, { ...a, ifname: 'snp2' }] })))).toBe('duplicate-client-ip');
    expect(kindOf(() => validateFirewallModel(model({ providerLinks: [a], uplinks: ['snp1'] })))).toBe('interface-role');
  });

  it('takes isolated links apart from provider links and uplinks, with usable names', () => {
    const a = { ifname: 'snp1', clientIp: '100.64.0.1' };
    expect(kindOf(() => validateFirewallModel(model({ providerLinks: [a], isolatedLinks: ['snp1'] })))).toBe('interface-role');
    expect(kindOf(() => validateFirewallModel(model({ uplinks: ['eth0'], isolatedLinks: ['eth0'] })))).toBe('interface-role');
    expect(kindOf(() => validateFirewallModel(model({ isolatedLinks: ['a"b'] })))).toBe('interface-name');
    expect(validateFirewallModel(model({ providerLinks: [a], isolatedLinks: ['snp2', 'snp2'] })).isolatedLinks).toEqual(['snp2']);
    expect(validateFirewallModel(model({ providerLinks: [a] }))).not.toHaveProperty('isolatedLinks');
  });

  it('drops repeated uplinks and pairs', () => {
    const valid = validateFirewallModel(
      model({ uplinks: ['eth0', 'eth0'], allowedPairs: [{ from: '100.64.0.1', to: '100.64.0.2' }, { from: '100.64.0.1', to: '100.64.0.2' }] }),
    );
    expect(valid.uplinks).toEqual(['eth0']);
    expect(valid.allowedPairs).toHaveLength(1);
  });

  it('says what to check', () => {
    expect(() => validateFirewallModel(model({ uplinks: ['eth 0'] }))).toThrow(/1 to 15 bytes of letters, digits/);
    expect(() => validateFirewallModel(model({ providerLinks: [{ ifname: 'snp1', clientIp: '10.0.0.1' }] }))).toThrow(/100\.64\.0\.0\/16/);
  });
});
