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
  /** The call did not finish in time. */
  | 'timeout';

export class ConntrackError extends Error {
  override readonly name = 'ConntrackError';
  constructor(
    readonly kind: ConntrackErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
