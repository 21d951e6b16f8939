/**
 * Every way deleting conntrack entries can fail. One kind per failure; the message says what to
 * check.
 */
export type ConntrackErrorKind =
  /** The addon is not built, or libnetfilter_conntrack is not installed. */
  | 'library'
  /** A filter address is no IPv4 address. */
  | 'address'
  /** No ctnetlink: no nfnetlink or nf_conntrack_netlink in the kernel, or no CAP_NET_ADMIN (the kernel refuses the dump). */
  | 'unavailable'
  /** Reading the table failed part way. */
  | 'dump'
  /** The kernel refused to delete a matched entry. */
  | 'delete'
  /** The call did not finish in time (or the kernel did not answer a receive in time). */
  | 'timeout'
  /** An earlier call that timed out is still running: none is started meanwhile. */
  | 'busy';

export class ConntrackError extends Error {
  override readonly name = 'ConntrackError';
  /** Entries the failed call deleted all the same (what a dump matched before it failed goes). */
  readonly deleted: number;
  constructor(
    readonly kind: ConntrackErrorKind,
    message: string,
    options?: { cause?: unknown; deleted?: number },
  ) {
    super(message, options);
    this.deleted = options?.deleted ?? 0;
  }
}
