/**
 * Every way an address given to the codecs can be wrong. One kind per failure, so callers
 * (and tests) can tell them apart; the message says what to check.
 */
export type AddressErrorKind =
  | 'empty'
  | 'too-long'
  | 'unrecognised'
  | 'mac-syntax'
  | 'mac-oui'
  | 'mac-role'
  | 'id-syntax'
  | 'id-range'
  | 'ip-syntax'
  | 'ip-network';

export class AddressError extends Error {
  override readonly name = 'AddressError';
  constructor(
    readonly kind: AddressErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** Longest input any of the address forms can have; longer input is refused before parsing. */
export const MAX_ADDRESS_INPUT = 32;

/** Quote untrusted input for an error message: bounded, control characters escaped. */
export function quoteInput(input: string): string {
  const shown = input.length > MAX_ADDRESS_INPUT ? `${input.slice(0, MAX_ADDRESS_INPUT)}…` : input;
  return JSON.stringify(shown);
}
