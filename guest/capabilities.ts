// What spectrum-netd run needs of the kernel's privileges, said where one of them is found
// missing: the capability that call needs, and the others the agent needs as well, so that an
// operator who grants the one named does not find the next missing one at the next step.

/** Every capability the agent needs: links, addresses, routes, nftables and conntrack; DHCP's link sockets; ports 53 and 67. */
export const AGENT_CAPABILITIES = ['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_NET_BIND_SERVICE'] as const;

/** What to check when binding a port below 1024 is refused (EACCES, EPERM). */
export function bindPrivilegeHint(port: number): string {
  const others = AGENT_CAPABILITIES.filter((capability) => capability !== 'CAP_NET_BIND_SERVICE');
  return `binding port ${port} needs CAP_NET_BIND_SERVICE, and the agent needs ${others.join(' and ')} as well: run it as root, or with all three`;
}

import { holdsCapability, selfHoldsCapability } from '../shared/net-admin.js';

export { holdsNetAdmin } from '../shared/net-admin.js';

/** Whether a process's effective set holds CAP_NET_RAW, from its /proc/<pid>/status text; undefined where it has no CapEff line. */
export const holdsNetRaw = (status: string): boolean | undefined => holdsCapability(status, 'CAP_NET_RAW');

/** Whether this process holds CAP_NET_RAW; undefined where /proc/self/status cannot say. */
export const selfHoldsNetRaw = (): boolean | undefined => selfHoldsCapability('CAP_NET_RAW');

/** What run says, and exits on, where it starts without CAP_NET_ADMIN: it could do nothing at all. */
export function noNetAdminLine(): string {
  return `the agent has no CAP_NET_ADMIN (links, addresses, routes, nftables, conntrack: it can do nothing without it): run it as root, or with ${AGENT_CAPABILITIES.slice(0, -1).join(', ')} and ${AGENT_CAPABILITIES.at(-1) ?? ''}`;
}

/** What run says, and exits on, where it starts without CAP_NET_RAW and serves DHCP: no client would get an address. */
export function noNetRawLine(): string {
  return `the agent has no CAP_NET_RAW (DHCP's link sockets: it would serve no client an address; --no-dhcp needs none): run it as root, or with ${AGENT_CAPABILITIES.slice(0, -1).join(', ')} and ${AGENT_CAPABILITIES.at(-1) ?? ''}`;
}

/** What client says, and exits on, where it runs without CAP_NET_ADMIN: the kernel refuses every address and route it would give. */
export function clientNoNetAdminLine(): string {
  return 'client has no CAP_NET_ADMIN (addresses and routes of the client links: the kernel refuses every change without it): run it as root, or with CAP_NET_ADMIN';
}
