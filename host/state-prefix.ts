// The device prefix a state's links carry (link-state.ts records it, one per state file): which
// one a command uses, and its refusal of another. A command given none (no --device-prefix, no
// $SPECTRUM_DEVICE_PREFIX) uses the one recorded, read by the CLI before the run (recordedPrefix),
// so that the commands its lines print carry it too; one given another is refused before anything
// is done (loadLinkState, on the state as the run reads it, under the lock where the command takes
// it): it would look for the links' devices under names that are not theirs, so that `unlink`
// would say it took down links that stay up, and delete whatever holds those names (another state
// dir's links, say), and gc would delete every device of the other prefix. The prefix stays
// recorded once every link is forgotten, so that the next command given none still uses it. A
// state that records none (never linked, or written before the prefix was recorded, or before it
// was kept without links) takes the prefix given or the default, and its next write records it.
import type { DevicePrefix } from './device-names.js';
import { type LinkState, conflictingDevicePrefix, withDevicePrefix } from './link-state.js';
import { LinkerError } from './linker-error.js';
import type { DevicePrefixSource, LinkerOptions } from './linker-types.js';
import { loadState, stateFilePath } from './state-store.js';

/**
 * The device prefix the state in `stateDir` records for its links, for a command given none (its
 * links all forgotten too); undefined where it records none (no state, or a file written before it
 * was recorded, or before it was kept without links).
 * Read without the lock: the run reads the state again (loadLinkState), which refuses a prefix
 * recorded meanwhile. A state that cannot be read is left to the run too, which says why where it
 * always has.
 */
export async function recordedPrefix(stateDir: string): Promise<DevicePrefix | undefined> {
  try {
    const state = await loadState(stateDir);
    return state.devicePrefix;
  } catch {
    return undefined;
  }
}

/** Where a run's prefix came from, as the refusal says it after the prefix. */
function originOf(source: DevicePrefixSource | undefined): string {
  switch (source?.from) {
    case 'option':
      return `from ${source.flag}`;
    case 'environment':
      return `from environment variable ${source.variable}`;
    case 'default':
      return 'the default';
    case 'state':
      return 'which the state file recorded when this run began';
    default:
      return 'given';
  }
}

/** What the refusal says to do, by where the run's prefix came from. */
function fixOf(source: DevicePrefixSource | undefined, recorded: DevicePrefix): string {
  switch (source?.from) {
    case 'option':
      // Left out, the option would give the variable's prefix where that is set: unset too, unless it gives the recorded one.
      if ('overrides' in source && source.overrides.value !== recorded) {
        return `leave ${source.flag} out and unset ${source.overrides.variable}, which gives another (the recorded prefix is then used), or give ${recorded}`;
      }
      return `leave ${source.flag} out (the recorded prefix is then used) or give ${recorded}`;
    case 'environment':
      return `unset ${source.variable} (the recorded prefix is then used) or set it to ${recorded}, or pass --device-prefix ${recorded}`;
    case 'default':
    case 'state':
      // Only where another run recorded it after this one looked (an empty state linked meanwhile).
      return 'another spectrum-link recorded it meanwhile: run this again, which uses it';
    default:
      return `use ${recorded}`;
  }
}

/**
 * Refuse `prefix` for a state that records another for its links (exit 2): one line naming both,
 * where each came from, and what to do.
 */
function prefixMismatch(stateDir: string, recorded: DevicePrefix, prefix: DevicePrefix, source: DevicePrefixSource | undefined): LinkerError {
  return new LinkerError(
    'device-prefix-mismatch',
    `device prefix ${prefix} (${originOf(source)}) is not the one state file ${stateFilePath(stateDir)} records for its links, ${recorded} ` +
      `(their devices are ${recorded}b<id>, ${recorded}c<id> and ${recorded}p<id>), so nothing was done: ${fixOf(source, recorded)}; ` +
      'the links of a state dir share one prefix, kept when they are all forgotten (another needs another state dir, or every link there forgotten and its state file removed)',
  );
}

/**
 * The state recorded in the run's state dir (loadState), refused where it records another device
 * prefix for its links than the run's (`devicePrefix`, from `devicePrefixSource`), and otherwise
 * recording the run's, so that the next write records it (a state that records none: no file, or
 * one written before the prefix was recorded, or before it was kept without links).
 */
export async function loadLinkState(options: Pick<LinkerOptions, 'stateDir' | 'stateDirSource' | 'devicePrefix' | 'devicePrefixSource'>): Promise<LinkState> {
  const state = await loadState(options.stateDir, options.stateDirSource);
  const recorded = conflictingDevicePrefix(state, options.devicePrefix);
  if (recorded !== undefined) throw prefixMismatch(options.stateDir, recorded, options.devicePrefix, options.devicePrefixSource);
  return withDevicePrefix(state, options.devicePrefix);
}
