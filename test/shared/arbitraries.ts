import fc from 'fast-check';
import { type ClientId, clientId } from '../../shared/client-id.js';
import { CLIENT_ID_MAX, CLIENT_ID_MIN } from '../../shared/scheme.js';

export const anyClientId: fc.Arbitrary<ClientId> = fc.integer({ min: CLIENT_ID_MIN, max: CLIENT_ID_MAX }).map(clientId);

export const hexPair = (octet: number): string => octet.toString(16).padStart(2, '0');

/** Render MAC octets in any accepted spelling: either separator, each letter in either case. */
export const macSpelling = (octets: readonly number[]): fc.Arbitrary<string> =>
  fc
    .tuple(fc.constantFrom(':', '-'), fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }))
    .map(([separator, upper]) =>
      octets
        .map((octet, index) =>
          [...hexPair(octet)].map((digit, half) => (upper[index * 2 + half] === true ? digit.toUpperCase() : digit)).join(''),
        )
        .join(separator),
    );
