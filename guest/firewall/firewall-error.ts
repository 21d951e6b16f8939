/**
 * Every way configuring the provider firewall can fail. One kind per failure; the message says
 * what to check.
 */
export type FirewallErrorKind =
  | 'interface-name'
  | 'client-ip'
  | 'duplicate-link'
  | 'duplicate-client-ip'
  | 'interface-role'
  | 'netns-name'
  | 'listing'
  | 'nft-missing'
  | 'nft-library'
  | 'nft-failed'
  | 'nft-timeout'
  | 'table-missing'
  | 'table-changed'
  | 'flow-limit'
  | 'flow-rate'
  | 'tcp-timeouts';

export class FirewallError extends Error {
  override readonly name = 'FirewallError';
  constructor(
    readonly kind: FirewallErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
