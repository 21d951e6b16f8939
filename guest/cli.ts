#!/usr/bin/env node
// First: Node's inspector stays closed from here on (see the module).
import '../shared/cli/inspector-signal.js';
import { Command } from 'commander';
import { addrCommand } from '../shared/cli/addr-command.js';
import { EXIT, main } from '../shared/cli/run-cli.js';
import { clientCommand, runCommand, statusCommand } from './netd/commands.js';
import { NetdError } from './netd/netd-error.js';

const program = new Command('spectrum-netd')
  .description('Spectrum provider agent: configures client links, firewall, DHCP and DNS inside a provider VM')
  .version('0.1.0')
  .addCommand(addrCommand())
  .addCommand(runCommand())
  .addCommand(clientCommand())
  .addCommand(statusCommand());

// A bad option value is a usage error (exit 2); every other module error exits 1 (run-cli).
main(program, [[NetdError, EXIT.usage, ['allow-pair', 'control-socket-path']]]);
