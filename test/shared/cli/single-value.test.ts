// An option of one value given twice: two values refused, one directory twice (as two paths) taken.
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it, vi } from 'vitest';
import { EXIT, runCli } from '../../../shared/cli/run-cli.js';
import { refuseRepeatedValues, sameDirectory } from '../../../shared/cli/single-value.js';

/** Run `fn` from a working directory that has been deleted (vitest runs each file in a process of its own). */
async function fromDeletedDirectory<T>(fn: () => Promise<T> | T): Promise<T> {
  const back = process.cwd();
  const gone = await mkdtemp(join(tmpdir(), 'spectrum-cwd-'));
  process.chdir(gone);
  try {
    await rmdir(gone);
    return await fn();
  } finally {
    process.chdir(back);
  }
}

/** `cmd --state-dir A --state-dir B` parsed as the bin does: exit code, stderr, and the value taken. */
async function twice(first: string, second: string): Promise<{ code: number; err: string; taken?: string }> {
  let err = '';
  let taken: string | undefined;
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((err += String(chunk)), true));
  try {
    const command = new Command('cmd').option('--state-dir <dir>').action((options: { stateDir?: string }) => void (taken = options.stateDir));
    const program = new Command('spectrum-link').addCommand(refuseRepeatedValues(command, [], ['--state-dir']));
    const code = await runCli(program, ['cmd', '--state-dir', first, '--state-dir', second]);
    return { code, err, ...(taken === undefined ? {} : { taken }) };
  } finally {
    stderr.mockRestore();
  }
}

describe('sameDirectory', () => {
  it('takes two spellings of one directory, relative or absolute, as one; two directories as two', () => {
    expect(sameDirectory('/x', '/x/')).toBe(true);
    expect(sameDirectory('x', './x/')).toBe(true);
    expect(sameDirectory('x', join(process.cwd(), 'x'))).toBe(true);
    expect(sameDirectory('/x', '/x/y')).toBe(false);
    expect(sameDirectory('x', '../x')).toBe(false);
  });

  it('compares paths as written where the working directory is gone, not failing on getcwd', async () => {
    const said = await fromDeletedDirectory(() => ({
      relative: sameDirectory('x', './x/'),
      other: sameDirectory('x', 'y'),
      mixed: sameDirectory('/x', 'x'),
      absolute: sameDirectory('/x', '/x/.'),
    }));
    expect(said).toEqual({ relative: true, other: false, mixed: false, absolute: true });
  });

  it('given twice where the working directory is gone: one directory taken, two refused in one line (exit 2), never an internal error', async () => {
    expect(await fromDeletedDirectory(() => twice('state', './state/'))).toEqual({ code: EXIT.ok, err: '', taken: './state/' });
    expect(await fromDeletedDirectory(() => twice('state', 'other'))).toEqual({
      code: EXIT.usage,
      err: 'spectrum-link: --state-dir "state" and --state-dir "other" give two values: keep one\n',
    });
  });
});
