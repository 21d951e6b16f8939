// An option that takes one value, given twice with different values, is refused rather than the
// last one taken silently (`--mtu 1500 --mtu 9000`: which one was meant is not for the tool to
// guess), as two different `--attach` modes for one scope are; the same value twice is no conflict.
import type { Command } from 'commander';
import { quoteName } from '../shown-text.js';
import { CliError, EXIT } from './run-cli.js';

/**
 * Make `command` refuse (exit 2) each of its options that take a value, but those named in
 * `repeatable` (collected), given twice with different values. Checked as each value is parsed,
 * before commander stores it: the value given before is there, with its source 'cli', only where
 * typed (a default is no value given). Its own parser, where it has one, then parses it.
 */
export function refuseRepeatedValues(command: Command, repeatable: readonly string[] = []): Command {
  for (const option of command.options) {
    if (!(option.required || option.optional) || option.variadic || repeatable.includes(option.long ?? '')) continue;
    const key = option.attributeName();
    const flag = option.long ?? option.flags;
    const parse = option.parseArg;
    option.argParser((value: string, previous: unknown): unknown => {
      if (command.getOptionValueSource(key) === 'cli' && typeof previous === 'string' && previous !== value) {
        throw new CliError(`${flag} ${quoteName(previous)} and ${flag} ${quoteName(value)} give two values: keep one`, EXIT.usage);
      }
      return parse === undefined ? value : parse(value, previous);
    });
  }
  return command;
}
