import { describe, expect, it } from 'vitest';
import { AGENT_CAPABILITIES, bindPrivilegeHint, holdsNetAdmin, holdsNetRaw, noNetAdminLine, noNetRawLine } from '../../guest/capabilities.js';

describe('what a refused privileged bind points at', () => {
  it.each([53, 67])('port %i: the capability the bind needs, and every other one the agent needs', (port) => {
    const hint = bindPrivilegeHint(port);
    expect(hint).toMatch(new RegExp(`^binding port ${port} needs CAP_NET_BIND_SERVICE, `));
    for (const capability of AGENT_CAPABILITIES) expect(hint).toContain(capability);
    expect(AGENT_CAPABILITIES).toEqual(['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_NET_BIND_SERVICE']);
  });
});

describe('whether the agent holds CAP_NET_ADMIN (its /proc/self/status)', () => {
  const status = (effective: string): string => `Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t${effective}\nCapEff:\t${effective}\nCapBnd:\t000001ffffffffff\n`;
  it.each([
    ['root', '000001ffffffffff', true],
    ['CAP_NET_ADMIN alone (bit 12)', '0000000000001000', true],
    ['CAP_NET_BIND_SERVICE alone (bit 10)', '0000000000000400', false],
    ['CAP_NET_RAW and CAP_NET_BIND_SERVICE', '0000000000002400', false],
    ['nothing', '0000000000000000', false],
  ])('%s: %s', (_case, effective, holds) => {
    expect(holdsNetAdmin(status(effective))).toBe(holds);
  });

  it('unknown where the status has no CapEff line', () => {
    expect(holdsNetAdmin('Name:\tnode\n')).toBeUndefined();
  });

  it('the line said names every capability the agent needs', () => {
    const line = noNetAdminLine();
    for (const capability of AGENT_CAPABILITIES) expect(line).toContain(capability);
  });
});

describe('whether the agent holds CAP_NET_RAW (its /proc/self/status)', () => {
  const status = (effective: string): string => `Name:\tnode\nCapEff:\t${effective}\n`;
  it.each([
    ['root', '000001ffffffffff', true],
    ['CAP_NET_RAW alone (bit 13)', '0000000000002000', true],
    ['CAP_NET_ADMIN and CAP_NET_BIND_SERVICE', '0000000000001400', false],
  ])('%s: %s', (_case, effective, holds) => {
    expect(holdsNetRaw(status(effective))).toBe(holds);
  });

  it('the line said names every capability the agent needs, and --no-dhcp', () => {
    const line = noNetRawLine();
    for (const capability of AGENT_CAPABILITIES) expect(line).toContain(capability);
    expect(line).toContain('--no-dhcp');
  });
});
