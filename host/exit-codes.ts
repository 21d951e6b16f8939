// spectrum-link's module errors and the exit code each means (run-cli.ts's main): bad names and
// options are usage errors (exit 2), as are a state dir and a config dir named (by option or
// variable) that do not exist; every other module error exits 1.
import { EXIT, type ErrorExitCodes } from '../shared/cli/run-cli.js';
import { AttachModeError } from './attach-mode.js';
import { ConfigError } from './config.js';
import { DeviceNameError } from './device-names.js';
import { StateStoreError } from './state-store.js';
import { VmNameError } from './vm-name.js';

export const LINK_EXIT_CODES: ErrorExitCodes = [
  [VmNameError, EXIT.usage],
  [DeviceNameError, EXIT.usage],
  [AttachModeError, EXIT.usage],
  [StateStoreError, EXIT.usage, ['state-dir-missing']],
  [ConfigError, EXIT.usage, ['named-config-dir-missing']],
];
