import type { ConntrackFilter } from './conntrack/conntrack-filter.js';

export type { ConntrackFilter };

/** What one purge did. */
export interface ConntrackPurgeResult {
  /** IPv4 entries read. */
  readonly scanned: number;
  /** Entries deleted (those gone meanwhile not counted). */
  readonly deleted: number;
}

/**
 * The agent's view of the kernel's connection tracking: delete the entries of client addresses
 * it no longer serves, before another VM is served under them. Rejects (a ConntrackError) when
 * the entries may not all be gone: the agent then retries, holding those addresses back.
 */
export interface ConntrackPort {
  purge(filter: ConntrackFilter): Promise<ConntrackPurgeResult>;
}
