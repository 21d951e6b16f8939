#!/usr/bin/env node
import { Command } from 'commander';
import { addrCommand } from '../shared/cli/addr-command.js';
import { main } from '../shared/cli/run-cli.js';

const program = new Command('spectrum-link')
  .description('Spectrum host linker: links client VMs to their network provider VMs')
  .version('0.1.0')
  .addCommand(addrCommand());

main(program);
