#!/usr/bin/env node
import { Command } from 'commander';
import { addrCommand } from '../shared/cli/addr-command.js';
import { EXIT, main } from '../shared/cli/run-cli.js';
import { AttachModeError } from './attach-mode.js';
import { checkCommand } from './check-command.js';
import { DeviceNameError } from './device-names.js';
import { linkCommands } from './link-commands.js';
import { VmNameError } from './vm-name.js';
import { vmmPort } from './vmm-port.js';

const program = new Command('spectrum-link')
  .description('Spectrum host linker: links client VMs to their network provider VMs')
  .version('0.1.0')
  .addCommand(addrCommand())
  .addCommand(checkCommand());
for (const command of linkCommands(process.env, vmmPort)) program.addCommand(command);

// Bad names and options are usage errors (exit 2); every other module error exits 1 (run-cli).
main(program, [
  [VmNameError, EXIT.usage],
  [DeviceNameError, EXIT.usage],
  [AttachModeError, EXIT.usage],
]);
