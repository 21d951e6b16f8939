import { AddressError, quoteInput } from './address-error.js';
import { CLIENT_ID_MAX, CLIENT_ID_MIN } from './scheme.js';

/** A client's id: an integer in 1..65534, the last two octets of its IP and link MACs. */
export type ClientId = number & { readonly __brand: 'ClientId' };

export function isClientId(value: number): value is ClientId {
  return Number.isInteger(value) && value >= CLIENT_ID_MIN && value <= CLIENT_ID_MAX;
}

/** Accept a number as a client id, or explain why it is not one. */
export function clientId(value: number): ClientId {
  if (!isClientId(value)) {
    throw new AddressError(
      'id-range',
      `client id ${String(value)} is out of range: it must be an integer from ${CLIENT_ID_MIN} to ${CLIENT_ID_MAX}`,
    );
  }
  return value;
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;

/**
 * Parse a client id written in decimal. Signs, leading zeros, hex, exponents and fractions
 * are refused: an id is written one way only.
 */
export function parseClientId(text: string): ClientId {
  if (!DECIMAL.test(text)) {
    throw new AddressError(
      'id-syntax',
      `${quoteInput(text)} is not a client id: write it as a decimal number from ${CLIENT_ID_MIN} to ${CLIENT_ID_MAX}, without sign or leading zeros`,
    );
  }
  // Lengthy digit strings are out of range anyway; avoid converting huge numbers.
  if (text.length > 5) {
    throw new AddressError('id-range', `client id ${text} is out of range: it must be from ${CLIENT_ID_MIN} to ${CLIENT_ID_MAX}`);
  }
  return clientId(Number(text));
}

/** The two octets an id occupies in addresses: [high, low]. */
export function idOctets(id: ClientId): [number, number] {
  return [id >> 8, id & 0xff];
}
