import { Command } from 'commander';
import { type LinkAddresses, linkAddressesOf, parseAddress } from '../link-address.js';

/** Readable form of the addr output: one labelled field per line. */
export function formatAddressesText(addresses: LinkAddresses): string {
  return [
    `client id     ${addresses.id}`,
    `client IP     ${addresses.clientIp}`,
    `client MAC    ${addresses.clientMac}`,
    `provider MAC  ${addresses.providerMac}`,
    `gateway       ${addresses.gateway}`,
    '',
  ].join('\n');
}

/** JSON form of the addr output: the contract scripts rely on (one object, these keys). */
export function formatAddressesJson(addresses: LinkAddresses): string {
  const { id, clientIp, clientMac, providerMac, gateway } = addresses;
  return `${JSON.stringify({ id, clientIp, clientMac, providerMac, gateway })}\n`;
}

/** `addr <MAC|IPv4|id>`: identical in both bins. */
export function addrCommand(): Command {
  return new Command('addr')
    .description('show the client id, client IP and both link MACs for a link MAC, client IPv4 address or client id')
    .argument('<address>', 'link MAC (0A:B3:EC:00:A5:46), client IPv4 address (100.64.165.70) or client id (42310)')
    .option('--json', 'print one JSON object')
    .action((address: string, options: { json?: boolean }) => {
      const addresses = linkAddressesOf(parseAddress(address).id);
      process.stdout.write(options.json === true ? formatAddressesJson(addresses) : formatAddressesText(addresses));
    });
}
