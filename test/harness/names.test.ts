import { describe, expect, it } from 'vitest';
import { assertInterfaceName, assertTestCidr, checkRunPrefix, newRunPrefix, runPrefix } from './names.js';

describe('name and address rules (no root needed)', () => {
  it('gets a valid run prefix from the global setup', () => {
    expect(runPrefix()).toMatch(/^[a-z][a-z0-9]{2,15}-$/);
  });

  it('makes fresh prefixes of the documented form and refuses dangerous ones', () => {
    expect(newRunPrefix()).toMatch(/^snt[0-9a-f]{6}-$/);
    expect(() => checkRunPrefix('')).toThrow();
    expect(() => checkRunPrefix('snt')).toThrow(); // no trailing '-': could prefix other runs
    expect(() => checkRunPrefix('a-')).toThrow();
    expect(checkRunPrefix('sntabc123-')).toBe('sntabc123-');
  });

  it('checks interface names the way the kernel does', () => {
    expect(() => assertInterfaceName('abcdefghijklmno')).not.toThrow();
    expect(() => assertInterfaceName('abcdefghijklmnop')).toThrow(/16 bytes/);
    expect(() => assertInterfaceName('')).toThrow(/empty/);
    expect(() => assertInterfaceName('a/b')).toThrow(/invalid/);
    expect(() => assertInterfaceName('..')).toThrow(/invalid/);
  });

  it.each(['100.64.3.4/24', '169.254.1.1/16', '192.0.2.1/32', '198.51.100.7/25', '203.0.113.1/24'])(
    'accepts test address %s',
    (cidr) => {
      expect(() => assertTestCidr(cidr)).not.toThrow();
    },
  );

  it.each(['10.0.0.1/24', '100.65.0.1/24', '100.64.0.1/15', '192.0.3.1/24', '192.0.2.256/24', '2001:db8::1/64', 'x'])(
    'refuses %s',
    (cidr) => {
      expect(() => assertTestCidr(cidr)).toThrow();
    },
  );
});
