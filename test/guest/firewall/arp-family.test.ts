// Telling the arp family refused (a kernel without CONFIG_NF_TABLES_ARP) from every other nft
// failure, on output as nft 1.0.6 prints it (arp-family-netns.test.ts checks it on nft's live
// output, spawned and in-process).
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { arpFamilyRefused } from '../../../guest/firewall/arp-family.js';
import { validateFirewallModel } from '../../../guest/firewall/model.js';
import { desiredElements, elementCommands, emptyElements, replaceTableScript } from '../../../guest/firewall/ruleset.js';

const SETTINGS = { clientFlowLimit: 64, clientNewFlowRate: 10 };
const elements = desiredElements(validateFirewallModel({ providerLinks: [{ ifname: 'vm1', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] }));
const script = replaceTableScript(elements, SETTINGS);
const lines = script.split('\n');
/** 1-based line of the ARP guard's base chain, and of the inet table's chain of the same name. */
const arpChain = lines.findIndex((line, index) => line === '\tchain input {' && lines.slice(0, index).some((before) => before === 'table arp spectrum_netd {')) + 1;
const inetChain = lines.indexOf('\tchain input {') + 1;

/** One error as nft 1.0.6 prints it: location, message, the line, a caret under the chain's name. */
const error = (file: string, line: number, message: string): string => `${file}:${line}:8-12: Error: Could not process rule: ${message}\n${lines[line - 1] ?? ''}\n\t      ^^^^^\n`;
/** What nft printed for the ARP guard refused (recorded from nft 1.0.6): EOPNOTSUPP, then ENOENT for each of the chain's two rules. */
const refusal = (file: string, line = arpChain): string =>
  `${error(file, line, 'Operation not supported')}${error(file, line, 'No such file or directory')}${error(file, line, 'No such file or directory')}`;

it('finds the ARP guard refused as unsupported, spawned (`nft -f -`) or in-process', () => {
  expect(arpChain).toBeGreaterThan(inetChain);
  expect(inetChain).toBeGreaterThan(0);
  expect(arpFamilyRefused(script, refusal('/dev/stdin'))).toBe(true);
  expect(arpFamilyRefused(script, refusal('/proc/self/fd/19'))).toBe(true);
});

it('finds nothing of the kind in any other failure', () => {
  // The same errno on the inet table's chain of the same name.
  expect(arpFamilyRefused(script, refusal('/dev/stdin', inetChain))).toBe(false);
  // The ARP guard refused for another reason: its table owned by another process, a missing one.
  expect(arpFamilyRefused(script, error('/dev/stdin', arpChain, 'Operation not permitted'))).toBe(false);
  expect(arpFamilyRefused(script, error('/dev/stdin', arpChain, 'No such file or directory'))).toBe(false);
  expect(arpFamilyRefused(script, '')).toBe(false);
  expect(arpFamilyRefused(script, 'Error: Could not process rule: Operation not supported\n')).toBe(false);
  // A script without the ARP guard's table: element commands, whatever line they are refused at.
  const commands = elementCommands({ add: elements, delete: emptyElements() });
  expect(arpFamilyRefused(commands, error('/dev/stdin', 1, 'Operation not supported'))).toBe(false);
  // EOPNOTSUPP on any other line of the script.
  fc.assert(
    fc.property(fc.integer({ min: 1, max: lines.length + 5 }), (line) => {
      fc.pre(line !== arpChain);
      expect(arpFamilyRefused(script, refusal('/dev/stdin', line))).toBe(false);
    }),
  );
});
