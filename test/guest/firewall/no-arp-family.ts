// nft as it behaves on a kernel built without CONFIG_NF_TABLES_ARP: a wrapper named `nft`, to put
// first in PATH of whatever runs nft as a process (`ip netns exec NS nft`, or the agent with
// SPECTRUM_NETD_SPAWN_NFT=1).
//
// Why this is the one fake the ARP-guard-unavailable tests may use: the arp family cannot be taken
// away from a namespace (its chain types are registered once, for the whole kernel, at boot), and
// no kernel without it is at hand. The wrapper does not print a made-up message: it changes the
// hook of the ARP guard's base chain from `input` to `forward`, which the arp family's filter type
// does not take, and runs the real nft. Then the real kernel refuses that chain with the very errno
// a kernel without the family returns for it (EOPNOTSUPP from nft_chain_parse_hook, in
// net/netfilter/nf_tables_api.c: there because the family has no chain type, here because the type
// lacks the hook), the real nft prints it at the very line (the chain's), followed by the same
// ENOENT for each rule of that chain, and the whole transaction is aborted as there. Everything
// else (listings, element commands, every other table) goes to the real nft unchanged, and finds
// no arp spectrum_netd table, as on such a kernel.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

/**
 * Write the wrapper as `dir`/nft (`dir` then goes first in PATH); each call's arguments are
 * appended to `dir`/calls, one line each, so a test can count them.
 */
export function writeNoArpFamilyNft(dir: string): { readonly dir: string; readonly calls: string } {
  const real = execFileSync('sh', ['-c', 'command -v nft'], { encoding: 'utf8' }).trim();
  if (!real.startsWith('/')) throw new Error(`no nft found in PATH (${JSON.stringify(real)}): install nftables`);
  const calls = join(dir, 'calls');
  const wrapper = join(dir, 'nft');
  writeFileSync(
    wrapper,
    [
      '#!/bin/sh',
      '# nft on a kernel without CONFIG_NF_TABLES_ARP: see test/guest/firewall/no-arp-family.ts.',
      `echo "$*" >> '${calls}'`,
      'if [ "$#" -eq 2 ] && [ "$1" = -f ] && [ "$2" = - ]; then',
      `  sed '/^table arp /,/^}$/ s/^\\(\\t\\ttype filter hook\\) input /\\1 forward /' | '${real}' -f -`,
      '  exit $?',
      'fi',
      `exec '${real}' "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(wrapper, 0o755);
  return { dir, calls };
}
