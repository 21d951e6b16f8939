#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
// The bin drops NODE_EXTRA_CA_CERTS: spectrum-link makes no TLS connection, and where that variable
// is set Node reads and parses the CA bundle before any code runs (85 of 125 ms of start-up here).
// First: Node's inspector stays closed from here on (see the module).
import '../shared/cli/inspector-signal.js';
import { Command } from 'commander';
import { addrCommand } from '../shared/cli/addr-command.js';
import { main } from '../shared/cli/run-cli.js';
import { checkCommand } from './check-command.js';
import { LINK_EXIT_CODES } from './exit-codes.js';
import { linkCommands } from './link-commands.js';
import { vmmPort } from './vmm-port.js';

const program = new Command('spectrum-link')
  .description('Spectrum host linker: links client VMs to their network provider VMs')
  .version('0.1.0')
  .addCommand(addrCommand())
  .addCommand(checkCommand());
for (const command of linkCommands(process.env, vmmPort)) program.addCommand(command);

main(program, LINK_EXIT_CODES, { exitAtOnce: true });
