// spectrum-link's exit codes: one table (LINK_EXIT_CODES) decides both what its main exits with
// (run-cli.ts's exitCodeOf) and which failures a run that carries on (`link --keep-going`) says
// are bad input (isLinkUsageError), so that the two cannot drift apart.
import { describe, expect, it } from 'vitest';
import { AttachModeError } from '../../host/attach-mode.js';
import { ConfigError } from '../../host/config.js';
import { DeviceNameError } from '../../host/device-names.js';
import { LINK_EXIT_CODES, isLinkUsageError } from '../../host/exit-codes.js';
import { LinkerError } from '../../host/linker-error.js';
import { StateStoreError } from '../../host/state-store.js';
import { VmNameError } from '../../host/vm-name.js';
import { AddressError } from '../../shared/address-error.js';
import { CliError, EXIT, exitCodeOf } from '../../shared/cli/run-cli.js';

/** A module error of this class and kind (each takes its kind, then its message). */
const errorOf = (type: (typeof LINK_EXIT_CODES)[number][0], kind: string): Error => new (type as unknown as new (kind: string, message: string) => Error)(kind, 'a message');

describe('bad usage or input (exit 2)', () => {
  it('is, for a run that carries on, exactly what main exits 2 on: each class of the table, for each kind it lists (and not for another kind of it)', () => {
    for (const [type, code, kinds] of LINK_EXIT_CODES) {
      for (const kind of kinds ?? ['any-kind']) {
        const error = errorOf(type, kind);
        expect([type.name, kind, isLinkUsageError(error)]).toEqual([type.name, kind, code === EXIT.usage]);
        expect(exitCodeOf(error, LINK_EXIT_CODES)).toBe(code);
      }
      if (kinds !== undefined) expect([type.name, isLinkUsageError(errorOf(type, 'another-kind'))]).toEqual([type.name, false]);
    }
  });

  it('takes in the config dir named that does not exist and the state dir named so, a state dir that records none of the devices named with the prefix (gc, link), bad names, modes and addresses, and a CliError of exit 2; not other failures', () => {
    const usage = [
      new ConfigError('named-config-dir-missing', 'config dir /x (from --config-dir) does not exist'),
      new StateStoreError('state-dir-missing', 'state dir /x (from --state-dir) does not exist'),
      new VmNameError('bad-character', 'a bad name'),
      new DeviceNameError('prefix-syntax', 'a bad prefix'),
      new AttachModeError('unknown-mode', 'a bad mode'),
      new AddressError('unrecognised', 'a bad address'),
      new CliError('a socket path too long', EXIT.usage),
      new LinkerError('vmm-socket-unrecordable', 'a side would move to a socket path the state cannot record'),
      // A state dir given that does not record the devices gc or link would act on: another --state-dir is the fix.
      new LinkerError('unrecorded-devices', 'a state dir that records no link and no prefix, devices named with it there'),
      new LinkerError('no-state', 'gc: no state file'),
    ];
    const failures = [
      new ConfigError('config-dir-missing', 'the default config dir does not exist'),
      new ConfigError('invalid-vm', 'an invalid VM'),
      new StateStoreError('write-failed', 'a full disk'),
      new CliError('a failure', EXIT.failure),
      new LinkerError('vmm-detach-failed', 'a VMM refused'),
      new Error('a bug'),
    ];
    expect(usage.map(isLinkUsageError)).toEqual(usage.map(() => true));
    expect(failures.map(isLinkUsageError)).toEqual(failures.map(() => false));
  });
});
