/**
 * Every way DHCP input or configuration can be wrong. Parsing hostile bytes throws only this
 * error, with one kind per failure; the message says what was wrong and where.
 */
export type DhcpErrorKind =
  | 'too-short'
  | 'bad-cookie'
  | 'bad-field'
  | 'option-truncated'
  | 'bad-option'
  | 'bad-overload'
  | 'too-long'
  | 'ip-header'
  | 'udp-header'
  | 'config'
  | 'socket'
  /** A link socket could not be bound: the kernel has no such interface (any more). */
  | 'no-device';

export class DhcpError extends Error {
  override readonly name = 'DhcpError';
  constructor(
    readonly kind: DhcpErrorKind,
    message: string,
  ) {
    super(message);
  }
}
