// spectrum-link's module errors and the exit code each means (run-cli.ts's main): bad names and
// options are usage errors (exit 2), as are a state dir and a config dir named (by option or
// variable) that do not exist, a VMM socket option whose path the state cannot record for a side
// it would move (as one too long for a socket is), a device prefix given that is not the one
// the state records for its links, and a `link` into, or a `gc` of, a state that claims no prefix
// while devices named as links with the run's exist, or a `gc` of a state dir with no state file
// where they do (a state dir or prefix given that is not theirs: the fix is another --state-dir,
// or a state file written by hand); every other module error exits 1.
import { EXIT, type ErrorExitCodes, exitCodeOf } from '../shared/cli/run-cli.js';
import { AttachModeError } from './attach-mode.js';
import { ConfigError } from './config.js';
import { DeviceNameError } from './device-names.js';
import { LinkerError } from './linker-error.js';
import { StateStoreError } from './state-store.js';
import { VmNameError } from './vm-name.js';

export const LINK_EXIT_CODES: ErrorExitCodes = [
  [VmNameError, EXIT.usage],
  [DeviceNameError, EXIT.usage],
  [AttachModeError, EXIT.usage],
  [StateStoreError, EXIT.usage, ['state-dir-missing']],
  [ConfigError, EXIT.usage, ['named-config-dir-missing']],
  [LinkerError, EXIT.usage, ['vmm-socket-unrecordable', 'device-prefix-mismatch', 'netns-prefix-mismatch', 'netns-not-lasting', 'unrecorded-devices', 'no-state']],
];

/**
 * Whether spectrum-link exits 2 on this error (bad usage or input), as its main decides it from the
 * table above: for what a run says of a failure it carries on with (a VM `link --keep-going` did
 * not link is `badInput`), so that the two cannot drift apart.
 */
export function isLinkUsageError(error: unknown): boolean {
  return exitCodeOf(error, LINK_EXIT_CODES) === EXIT.usage;
}

/**
 * Whether spectrum-link's main says this error as a bug (exit 70, its line `internal error:`): an
 * error of no module's kind. For what a run says of a failure that a signal's exit code outranks,
 * or that it carries with what it had done, so that it is still said as one.
 */
export function isLinkBug(error: unknown): boolean {
  return exitCodeOf(error, LINK_EXIT_CODES) === EXIT.internal;
}
