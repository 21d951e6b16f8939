/** Every way the DNS forwarder's configuration or start-up can be wrong; messages say what to check. */
export type DnsErrorKind = 'upstream-syntax' | 'upstream-unusable' | 'option-range' | 'listen-address' | 'closed';

export class DnsError extends Error {
  override readonly name = 'DnsError';
  constructor(
    readonly kind: DnsErrorKind,
    message: string,
  ) {
    super(message);
  }
}
