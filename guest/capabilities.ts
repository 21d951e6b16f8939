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

export { holdsNetAdmin } from '../shared/net-admin.js';

/** What run says, and exits on, where it starts without CAP_NET_ADMIN: it could do nothing at all. */
export function noNetAdminLine(): string {
  return `the agent has no CAP_NET_ADMIN (links, addresses, routes, nftables, conntrack: it can do nothing without it): run it as root, or with ${AGENT_CAPABILITIES.slice(0, -1).join(', ')} and ${AGENT_CAPABILITIES.at(-1) ?? ''}`;
}
