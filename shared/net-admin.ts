// Whether a process holds CAP_NET_ADMIN, from its /proc/<pid>/status: what the kernel checks of
// a netlink change request (and of opening a tap), so what a refusal for want of privilege means.
import { readFileSync } from 'node:fs';

/** CAP_NET_ADMIN's bit in a capability set (linux/capability.h). */
const CAP_NET_ADMIN_BIT = 12n;

/**
 * Whether a process's effective set holds CAP_NET_ADMIN, from its /proc/<pid>/status text (its
 * CapEff line, in hex); undefined where the text has none (no such line: nothing is known).
 */
export function holdsNetAdmin(status: string): boolean | undefined {
  const effective = /^CapEff:\s*([0-9a-f]+)$/im.exec(status)?.[1];
  if (effective === undefined) return undefined;
  return ((BigInt(`0x${effective}`) >> CAP_NET_ADMIN_BIT) & 1n) === 1n;
}

/** Whether this process holds CAP_NET_ADMIN; undefined where /proc/self/status cannot say. */
export function selfHoldsNetAdmin(): boolean | undefined {
  try {
    return holdsNetAdmin(readFileSync('/proc/self/status', 'utf8'));
  } catch {
    return undefined;
  }
}
