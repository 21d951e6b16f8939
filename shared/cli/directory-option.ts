import { CliError, EXIT } from './run-cli.js';

/**
 * A directory option as typed: not empty, which every path call would silently take as the
 * working directory (`--state-dir ""` would keep the state wherever the command was run from).
 */
export function directoryOption(flag: string): (text: string) => string {
  return (text) => {
    if (text === '') throw new CliError(`${flag} "" is not valid: give a directory (an empty path would mean the working directory)`, EXIT.usage);
    return text;
  };
}
