// Where an option's value came from, for messages: a bad value from an environment variable is
// said to come from that variable, not from an option the user never gave.
import { isAbsolute } from 'node:path';
import { CliError, EXIT } from './run-cli.js';

type Env = Readonly<Record<string, string | undefined>>;

/** Typed as an option, taken from its environment variable (set and not empty), or the built-in default. */
export type OptionSource =
  | { readonly from: 'option'; readonly flag: string }
  | { readonly from: 'environment'; readonly variable: string }
  | { readonly from: 'default' };

/** The source of an option's value: the option where given, else its variable where set and not empty, else the default. */
export function optionSource(flag: string, given: boolean, variable: string | undefined, env: Env): OptionSource {
  if (given) return { from: 'option', flag };
  if (variable !== undefined && (env[variable] ?? '') !== '') return { from: 'environment', variable };
  return { from: 'default' };
}

/** What a message calls the source: `--state-dir`, `environment variable SPECTRUM_STATE_DIR`, `the default`. */
export function sourceName(source: OptionSource): string {
  if (source.from === 'option') return source.flag;
  return source.from === 'environment' ? `environment variable ${source.variable}` : 'the default';
}

/**
 * Where a path came from, as a message says it after the path: `from --state-dir`, `from
 * environment variable SPECTRUM_STATE_DIR`, `the default`.
 */
export function pathOrigin(source: OptionSource): string {
  return source.from === 'default' ? 'the default' : `from ${sourceName(source)}`;
}

/**
 * What a message about a path that will not do says to check, by where the path came from: the
 * option given; the variable set (or the option, which overrides it); where neither was given
 * (or where it is not known), either. `want`: what the path must be.
 */
export function pathFix(flag: string, variable: string, source: OptionSource | undefined, want: string): string {
  if (source?.from === 'option') return `check ${flag}: it must be ${want}`;
  if (source?.from === 'environment') return `check ${variable}: it must be ${want} (or pass ${flag}, which overrides it)`;
  return `pass ${flag} or set ${variable} to ${want}`;
}

/**
 * What a message says to check of a path, by where it came from: the option or variable that gave
 * it; where neither did (or where it is not known), `what`, and how to give it.
 */
export function pathCheck(what: string, flag: string, variable: string, source: OptionSource | undefined): string {
  if (source?.from === 'option') return flag;
  if (source?.from === 'environment') return variable;
  return `${what} (${flag} or ${variable})`;
}

/**
 * A path as a message names it: with where it came from where that is known (`config dir X (from
 * --config-dir)`), else alone. `what`: what the path is (`config dir`).
 */
export function shownOrigin(what: string, path: string, source: OptionSource | undefined): string {
  return source === undefined ? `${what} ${path}` : `${what} ${path} (${pathOrigin(source)})`;
}

/** Whether the working directory still exists: getcwd(2) says ENOENT once it has been deleted. */
function workingDirectoryExists(): boolean {
  try {
    process.cwd();
    return true;
  } catch {
    return false;
  }
}

/**
 * A path as given, where it can be used. A relative one is resolved against the working directory,
 * which can have been deleted (a shell left in a directory removed meanwhile): every call on the
 * path would then fail with an ENOENT that names no cause, or find nothing there (no state, no
 * VM), so it is refused, saying where the path came from. Exit 1: the path is fine, where it is
 * resolved from is not.
 */
export function usablePath(path: string, source: OptionSource): string {
  if (isAbsolute(path) || workingDirectoryExists()) return path;
  const fix = source.from === 'environment' ? 'set it to an absolute path' : 'give an absolute path';
  throw new CliError(`the working directory is gone, so ${sourceName(source)} ${JSON.stringify(path)}, a relative path, cannot be resolved: ${fix}`, EXIT.failure);
}
