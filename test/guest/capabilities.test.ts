import { describe, expect, it } from 'vitest';
import { AGENT_CAPABILITIES, bindPrivilegeHint } from '../../guest/capabilities.js';

describe('what a refused privileged bind points at', () => {
  it.each([53, 67])('port %i: the capability the bind needs, and every other one the agent needs', (port) => {
    const hint = bindPrivilegeHint(port);
    expect(hint).toMatch(new RegExp(`^binding port ${port} needs CAP_NET_BIND_SERVICE, `));
    for (const capability of AGENT_CAPABILITIES) expect(hint).toContain(capability);
    expect(AGENT_CAPABILITIES).toEqual(['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_NET_BIND_SERVICE']);
  });
});
