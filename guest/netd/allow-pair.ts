import { AddressError } from '../../shared/address-error.js';
import { clientIpTextOf } from '../../shared/client-ip.js';
import { parseAddress } from '../../shared/link-address.js';
import { NetdError } from './netd-error.js';

export interface AllowedPair {
  readonly from: string;
  readonly to: string;
}

/** `A=B`, each side a client IP or id (or a link MAC): the pair as client IPs. */
export function parseAllowPair(text: string): AllowedPair {
  const parts = text.split('=');
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
    throw new NetdError('allow-pair', `--allow-pair ${JSON.stringify(text.slice(0, 64))}: expected A=B, each a client IP or id, like 100.64.0.5=7`);
  }
  const side = (value: string): string => {
    try {
      return clientIpTextOf(parseAddress(value).id);
    } catch (error) {
      const reason = error instanceof AddressError ? error.message : String(error);
      throw new NetdError('allow-pair', `--allow-pair ${JSON.stringify(text.slice(0, 64))}: ${reason}`);
    }
  };
  const from = side(parts[0] ?? '');
  const to = side(parts[1] ?? '');
  if (from === to) throw new NetdError('allow-pair', `--allow-pair ${text}: a client is always allowed to reach itself`);
  return { from, to };
}
