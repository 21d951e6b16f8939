/**
 * Adapter: the kernel's conntrack table size, which the default client flow limit and new-flow
 * rate are derived from (table-settings.ts).
 */
import { readFileSync } from 'node:fs';
import { FirewallError } from './firewall-error.js';

export const CONNTRACK_MAX_PATH = '/proc/sys/net/netfilter/nf_conntrack_max';

/** The sysctl's text as a number, or a FirewallError. */
export function parseConntrackMax(text: string): number {
  const trimmed = text.trim();
  const value = /^[0-9]{1,10}$/.test(trimmed) ? Number(trimmed) : Number.NaN;
  if (!Number.isSafeInteger(value)) throw new FirewallError('flow-limit', `${CONNTRACK_MAX_PATH} holds ${JSON.stringify(trimmed)}, not a number of entries`);
  return value;
}

/**
 * nf_conntrack_max, or undefined while the sysctl does not exist: nf_conntrack (a module on most
 * kernels) is loaded by the first rule that needs it, such as the firewall table's. `remedy`: what
 * the error tells the user to do instead (the flow limits' options by default; the reaper names its own).
 */
export function readConntrackMax(path = CONNTRACK_MAX_PATH, remedy = 'give --client-flow-limit and --client-new-flow-rate numbers'): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (error instanceof Error && 'code' in error && error.code === 'ENOENT') return undefined;
    throw new FirewallError('flow-limit', `cannot read ${path}: ${error instanceof Error ? error.message : String(error)}: ${remedy}`, { cause: error });
  }
  return parseConntrackMax(text);
}
