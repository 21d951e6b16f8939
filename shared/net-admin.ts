// Whether a process holds a capability, from its /proc/<pid>/status: CAP_NET_ADMIN is what the
// kernel checks of a netlink change request (and of opening a tap), so what a refusal for want of
// privilege means; the agent checks CAP_NET_RAW (DHCP's link sockets) the same way.
import { readFileSync } from 'node:fs';

/** The bits of the capabilities asked about in a capability set (linux/capability.h). */
export const CAPABILITY_BIT = { CAP_NET_ADMIN: 12n, CAP_NET_RAW: 13n } as const;

/**
 * Whether a process's effective set holds `capability`, from its /proc/<pid>/status text (its
 * CapEff line, in hex); undefined where the text has none (no such line: nothing is known).
 */
export function holdsCapability(status: string, capability: keyof typeof CAPABILITY_BIT): boolean | undefined {
  const effective = /^CapEff:\s*([0-9a-f]+)$/im.exec(status)?.[1];
  if (effective === undefined) return undefined;
  return ((BigInt(`0x${effective}`) >> CAPABILITY_BIT[capability]) & 1n) === 1n;
}

/** Whether this process holds `capability`; undefined where /proc/self/status cannot say. */
export function selfHoldsCapability(capability: keyof typeof CAPABILITY_BIT): boolean | undefined {
  try {
    return holdsCapability(readFileSync('/proc/self/status', 'utf8'), capability);
  } catch {
    return undefined;
  }
}

/** holdsCapability of CAP_NET_ADMIN. */
export const holdsNetAdmin = (status: string): boolean | undefined => holdsCapability(status, 'CAP_NET_ADMIN');

/** selfHoldsCapability of CAP_NET_ADMIN. */
export const selfHoldsNetAdmin = (): boolean | undefined => selfHoldsCapability('CAP_NET_ADMIN');
