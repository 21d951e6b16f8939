/**
 * Telling, from what nft printed, that the kernel refused the ARP guard because it has no arp
 * family (built without CONFIG_NF_TABLES_ARP), apart from every other failure. Pure.
 *
 * Such a kernel takes `table arp spectrum_netd`, its sets and its counter (a table's family is not
 * checked), but no base chain in it: nft_chain_parse_hook (net/netfilter/nf_tables_api.c) finds no
 * chain type registered for the family and returns EOPNOTSUPP, which nft 1.0.6 prints as
 *
 *     FILE:LINE:COL-COL: Error: Could not process rule: Operation not supported
 *     <the script's line LINE: the chain's `chain input {`>
 *
 * (FILE: /dev/stdin for `nft -f -`, /proc/self/fd/N in-process), then an ENOENT for each rule of
 * that chain, and the kernel aborts the whole transaction. So the refusal is that errno located on
 * the ARP guard's base chain: our script's only base chain of the arp family, whose hook (input)
 * the family's filter type always takes where it exists. Any other error, on any other line, is
 * another failure, and so is a refusal with no line to check.
 */
import { ARP_TABLE } from './ruleset.js';

const ERROR_HEADER = /:(\d+):\d+(?:-\d+)?: Error: (.*)$/;
const UNSUPPORTED = 'Could not process rule: Operation not supported';
const TABLE_BLOCK = /^table (\S+ \S+) \{$/;
const CHAIN_BLOCK = /^\tchain \S+ \{$/;
const BASE_CHAIN = /^\t\ttype \S+ hook \S+ /;

/** The line numbers (1-based) of the script's base chains in ARP_TABLE's blocks. */
function arpBaseChainLines(script: string): Set<number> {
  const lines = script.split('\n');
  const found = new Set<number>();
  let table: string | undefined;
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index] ?? '';
    const block = TABLE_BLOCK.exec(line);
    if (block !== null) table = block[1];
    else if (line === '}') table = undefined;
    else if (table === ARP_TABLE && CHAIN_BLOCK.test(line) && BASE_CHAIN.test(lines[index + 1] ?? '')) found.add(index + 1);
  }
  return found;
}

/**
 * Whether nft's error output `stderr`, for `script` (as run with `nft -f`), says the kernel has no
 * arp family: EOPNOTSUPP on a base chain of the ARP guard's table.
 */
export function arpFamilyRefused(script: string, stderr: string): boolean {
  const chains = arpBaseChainLines(script);
  if (chains.size === 0) return false;
  return stderr.split('\n').some((line) => {
    const header = ERROR_HEADER.exec(line);
    return header !== null && header[2] === UNSUPPORTED && chains.has(Number(header[1]));
  });
}
