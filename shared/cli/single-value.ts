// An option that takes one value, given twice with different values, is refused rather than the
// last one taken silently (`--mtu 1500 --mtu 9000`: which one was meant is not for the tool to
// guess), as two different `--attach` modes for one scope are; the same value twice is no conflict,
// nor, for a directory option, the same directory twice (`--state-dir /x --state-dir /x/`).
import { normalize, resolve } from 'node:path';
import type { Command } from 'commander';
import { quoteName } from '../shown-text.js';
import { CliError, EXIT } from './run-cli.js';

/**
 * Whether two paths typed name the same directory as written: each resolved against the working
 * directory, so that a trailing slash, `.` and `//` make no other one (`/x`, `/x/`, `/x/.`).
 * Symlinks are not followed: two paths to one directory through a link stay two values.
 */
export function sameDirectory(first: string, second: string): boolean {
  try {
    return resolve(first) === resolve(second);
  } catch {
    // The working directory is gone (getcwd fails): a relative path cannot be resolved, which the
    // command says once it uses it (usablePath); here they are compared as written, normalised.
    return asWritten(first) === asWritten(second);
  }
}

/** A path normalised without the working directory: `x/`, `./x` and `x//.` are `x`. */
const asWritten = (path: string): string => normalize(path).replace(/(?<=.)\/+$/, '');

/**
 * Make `command` refuse (exit 2) each of its options that take a value, but those named in
 * `repeatable` (collected), given twice with different values; those named in `directories`,
 * given twice with paths to different directories (sameDirectory). Checked as each value is
 * parsed, before commander stores it: the value given before is there, with its source 'cli',
 * only where typed (a default is no value given). Its own parser, where it has one, then parses it.
 */
export function refuseRepeatedValues(command: Command, repeatable: readonly string[] = [], directories: readonly string[] = []): Command {
  for (const option of command.options) {
    if (!(option.required || option.optional) || option.variadic || repeatable.includes(option.long ?? '')) continue;
    const key = option.attributeName();
    const flag = option.long ?? option.flags;
    const parse = option.parseArg;
    const same = directories.includes(option.long ?? '') ? sameDirectory : (a: string, b: string): boolean => a === b;
    option.argParser((value: string, previous: unknown): unknown => {
      if (command.getOptionValueSource(key) === 'cli' && typeof previous === 'string' && !same(previous, value)) {
        throw new CliError(`${flag} ${quoteName(previous)} and ${flag} ${quoteName(value)} give two values: keep one`, EXIT.usage);
      }
      return parse === undefined ? value : parse(value, previous);
    });
  }
  return command;
}
