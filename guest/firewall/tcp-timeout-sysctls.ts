/**
 * Adapter: the provider's conntrack TCP timeouts (its sysctls), which its clients' TCP flows
 * follow but for the closed states (client-tcp-timeouts.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KERNEL_TCP_TIMEOUTS, TCP_TIMEOUT_SYSCTLS, TCP_TIMEOUT_STATES, type TcpTimeoutState, type TcpTimeouts } from './client-tcp-timeouts.js';
import { FirewallError } from './firewall-error.js';

export const NETFILTER_SYSCTL_DIR = '/proc/sys/net/netfilter';

/** One sysctl's text as whole seconds, or a FirewallError naming it. */
export function parseTimeoutSysctl(name: string, text: string): number {
  const trimmed = text.trim();
  const value = /^[0-9]{1,10}$/.test(trimmed) ? Number(trimmed) : Number.NaN;
  if (!Number.isSafeInteger(value)) throw new FirewallError('tcp-timeouts', `${name} holds ${JSON.stringify(trimmed)}, not a number of seconds`);
  return value;
}

/**
 * The TCP timeouts the provider's own flows get, or undefined while the sysctls do not exist
 * (nf_conntrack not loaded yet: the firewall table's ct rules load it). States with no sysctl
 * keep the kernel's default.
 */
export function readTcpTimeouts(dir = NETFILTER_SYSCTL_DIR): TcpTimeouts | undefined {
  const timeouts: Record<TcpTimeoutState, number> = { ...KERNEL_TCP_TIMEOUTS };
  for (const state of TCP_TIMEOUT_STATES) {
    const name = TCP_TIMEOUT_SYSCTLS[state];
    if (name === undefined) continue;
    const path = join(dir, name);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (error) {
      if (error instanceof Error && 'code' in error && error.code === 'ENOENT') return undefined;
      throw new FirewallError('tcp-timeouts', `cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    timeouts[state] = parseTimeoutSysctl(path, text);
  }
  return timeouts;
}
