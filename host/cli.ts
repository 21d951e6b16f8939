#!/usr/bin/env node
import { Command } from 'commander';
import { addrCommand } from '../shared/cli/addr-command.js';
import { EXIT, main } from '../shared/cli/run-cli.js';
import { AttachModeError } from './attach-mode.js';
import { checkCommand } from './check-command.js';
import { ConfigError } from './config.js';
import { DeviceNameError } from './device-names.js';
import { DeviceError } from './ip-devices.js';
import { linkCommands } from './link-commands.js';
import { LinkerError } from './linker.js';
import { StateError } from './link-state.js';
import { StateStoreError } from './state-store.js';
import { VmNameError } from './vm-name.js';
import { vmmPort } from './vmm-port.js';
import { CloudHypervisorError } from './vmm/cloud-hypervisor.js';
import { VmmNicError } from './vmm/nic.js';
import { QmpError } from './vmm/qmp.js';

const program = new Command('spectrum-link')
  .description('Spectrum host linker: links client VMs to their network provider VMs')
  .version('0.1.0')
  .addCommand(addrCommand())
  .addCommand(checkCommand());
for (const command of linkCommands(process.env, vmmPort)) program.addCommand(command);

main(program, [
  [VmNameError, EXIT.usage],
  [DeviceNameError, EXIT.usage],
  [AttachModeError, EXIT.usage],
  [LinkerError, EXIT.failure],
  [ConfigError, EXIT.failure],
  [StateError, EXIT.failure],
  [StateStoreError, EXIT.failure],
  [DeviceError, EXIT.failure],
  [QmpError, EXIT.failure],
  [CloudHypervisorError, EXIT.failure],
  [VmmNicError, EXIT.failure],
]);
