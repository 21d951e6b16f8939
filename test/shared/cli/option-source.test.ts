import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type OptionSource, optionSource, sourceName, usablePath } from '../../../shared/cli/option-source.js';
import { CliError, EXIT } from '../../../shared/cli/run-cli.js';

const OPTION: OptionSource = { from: 'option', flag: '--state-dir' };
const VARIABLE: OptionSource = { from: 'environment', variable: 'SPECTRUM_STATE_DIR' };

describe('optionSource', () => {
  it('is the option where given, else the variable where set and not empty, else the default', () => {
    expect(optionSource('--state-dir', true, 'SPECTRUM_STATE_DIR', { SPECTRUM_STATE_DIR: '/env' })).toEqual(OPTION);
    expect(optionSource('--state-dir', false, 'SPECTRUM_STATE_DIR', { SPECTRUM_STATE_DIR: '/env' })).toEqual(VARIABLE);
    expect(optionSource('--state-dir', false, 'SPECTRUM_STATE_DIR', { SPECTRUM_STATE_DIR: '' })).toEqual({ from: 'default' });
    expect(optionSource('--state-dir', false, 'SPECTRUM_STATE_DIR', {})).toEqual({ from: 'default' });
  });

  it('is named as the option, or as the environment variable', () => {
    expect(sourceName(OPTION)).toBe('--state-dir');
    expect(sourceName(VARIABLE)).toBe('environment variable SPECTRUM_STATE_DIR');
  });
});

describe('usablePath', () => {
  /** Run `fn` from a working directory that has been deleted (vitest runs each file in a process of its own). */
  async function fromDeletedDirectory<T>(fn: () => T): Promise<T> {
    const back = process.cwd();
    const gone = await mkdtemp(join(tmpdir(), 'spectrum-cwd-'));
    process.chdir(gone);
    try {
      await rmdir(gone);
      return fn();
    } finally {
      process.chdir(back);
    }
  }

  it('takes any path while the working directory exists', () => {
    for (const path of ['/var/lib/spectrum-link', 'relative/dir', '.']) expect(usablePath(path, OPTION)).toBe(path);
  });

  it('takes an absolute path where the working directory is gone', async () => {
    expect(await fromDeletedDirectory(() => usablePath('/var/lib/spectrum-link', OPTION))).toBe('/var/lib/spectrum-link');
  });

  it.each([
    [OPTION, 'the working directory is gone, so --state-dir "state", a relative path, cannot be resolved: give an absolute path'],
    [VARIABLE, 'the working directory is gone, so environment variable SPECTRUM_STATE_DIR "state", a relative path, cannot be resolved: set it to an absolute path'],
  ])('refuses a relative path from %j where the working directory is gone: one line, exit 1', async (source, message) => {
    const error = await fromDeletedDirectory(() => {
      try {
        return usablePath('state', source);
      } catch (thrown) {
        return thrown;
      }
    });
    expect(error).toBeInstanceOf(CliError);
    expect(error).toMatchObject({ message, exitCode: EXIT.failure });
  });
});
