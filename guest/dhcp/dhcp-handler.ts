import type { DhcpRequest, DhcpResponse } from './dhcp-exchange.js';

/** What a handler hands on: the (possibly edited) response, and whether the chain stops here. */
export interface HandlerResult {
  readonly response: DhcpResponse;
  readonly stop: boolean;
}

/**
 * One step of the server, as in coredhcp: it reads the request and edits only the response. A
 * handler is made by a setup function that validates its configuration once.
 */
export type DhcpHandler = (request: DhcpRequest, response: DhcpResponse) => HandlerResult;

export function next(response: DhcpResponse): HandlerResult {
  return { response, stop: false };
}

export function stop(response: DhcpResponse): HandlerResult {
  return { response, stop: true };
}

/** Run the chain in order until a handler stops it or drops the response. */
export function runChain(chain: readonly DhcpHandler[], request: DhcpRequest, initial: DhcpResponse): DhcpResponse {
  let response = initial;
  for (const handler of chain) {
    const result = handler(request, response);
    response = result.response;
    if (result.stop || response.drop !== undefined) break;
  }
  return response;
}
