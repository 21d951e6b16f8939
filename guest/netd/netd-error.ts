/** Every way the agent can fail; the message says what to check. */
export type NetdErrorKind =
  | 'netlink'
  /** The kernel refused a dump request with an error that says the request itself is wrong (not one that may pass). */
  | 'dump-refused'
  /** A kernel message cut short, whose attributes cannot be split, or one of whose attributes the agent reads is malformed. */
  | 'undecodable'
  /** The kernel's sockets were closed under a request: the agent is stopping. */
  | 'closed'
  | 'apply'
  | 'sysctl'
  /**
   * A link's sysctl file is not there under the name the agent knew it by: the link was renamed
   * (udev renames a new link a moment after it comes) or deleted since, and its notification says
   * which. The kernel's own word for a change to a link gone is a KernelRefusal, ENODEV.
   */
  | 'link-gone'
  | 'control-socket'
  | 'control-socket-path'
  | 'already-running'
  | 'not-running'
  | 'not-ready'
  /** A start-up step cut short by a signal (never shown: the agent says it stopped). */
  | 'stopped'
  | 'notify-fd'
  /** run started without CAP_NET_ADMIN. */
  | 'privilege'
  | 'allow-pair';

export class NetdError extends Error {
  override readonly name = 'NetdError';
  constructor(
    readonly kind: NetdErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/**
 * What a request the kernel refused (its NLMSG_ERROR) fails with: its errno name as `code`, the
 * message "Request rejected: ENODEV"; what the kernel said besides (its extended ack) is `detail`.
 */
export class KernelRefusal extends Error {
  override readonly name = 'KernelRefusal';
  constructor(
    readonly code: string,
    readonly detail: string,
  ) {
    super(`Request rejected: ${code}`);
  }
}
