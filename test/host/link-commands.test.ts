// spectrum-link's linker commands as an operator meets them: --help texts and option parsing.
// (What the commands do is tested in link-netns.test.ts and link-vmm.test.ts.)
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { linkCommands } from '../../host/link-commands.js';
import type { VmmPort } from '../../host/linker.js';

const commands = (): Command[] => linkCommands({}, () => ({}) as VmmPort);
const named = (name: string): Command => {
  const command = commands().find((candidate) => candidate.name() === name);
  if (command === undefined) throw new Error(`no ${name} command`);
  return command;
};

describe('spectrum-link linker commands', () => {
  it.each(['link', 'unlink', 'list', 'show', 'gc'])('%s --help names the default attach mode, none, not an empty list', (name) => {
    const help = named(name).helpInformation();
    expect(help).not.toContain('[]');
    expect(help).toMatch(/--attach <mode> +attach mode: none\|cloud-hypervisor\|qemu\|netns, or\s+VM=MODE for one VM \(repeatable\) \(default: none\)/);
  });

  it('collects repeated --attach values in order, starting from nothing', () => {
    const parse = (args: readonly string[]): unknown => {
      let attach: unknown;
      named('link')
        .exitOverride()
        .action((_vms: string[], flags: { attach: unknown }) => void (attach = flags.attach))
        .parse([...args], { from: 'user' });
      return attach;
    };
    expect(parse(['appvm-lynx'])).toEqual([]);
    expect(parse(['appvm-lynx', '--attach', 'qemu', '--attach', 'netvm=netns'])).toEqual(['qemu', 'netvm=netns']);
  });
});
