// Ending the process where its terminal may have hung up (an SSH session dropped, a terminal
// window closed). At exit Node puts each of fds 0-2 that was a terminal at start back into the
// mode it found it in (tcsetattr); on a terminal that hung up since, that fails with EIO, and
// Node 20 aborts on it (SIGABRT, a core: nodejs/node#51519, fixed in later Node): the exit code a
// signal's handler chose (129 after SIGHUP) is lost. Such a descriptor, closed first, is skipped.
import { closeSync } from 'node:fs';
import { isatty } from 'node:tty';

const STDIO = [0, 1, 2] as const;
/** Which of fds 0-2 were terminals as the process started (this module is loaded then). */
const startedOnTerminal: readonly boolean[] = STDIO.map((fd) => isatty(fd));

/**
 * Close each of fds 0-2 that was a terminal at start and is none now: one that hung up (its
 * ioctls fail with EIO). Nothing can be written to it any more; anything else is left as it is.
 */
export function releaseHungUpTerminal(): void {
  for (const fd of STDIO) {
    if (startedOnTerminal[fd] !== true || isatty(fd)) continue;
    try {
      closeSync(fd);
    } catch {
      // Closed already: nothing to skip.
    }
  }
}

/** What the command running says on stdout of a failure it exits on at once (runCli: --json's error object), if anything. */
let exitSaidOnStdout: ((line: string, code: number) => void) | undefined;

/** Set (or clear: undefined) what exitSaying also writes on stdout: runCli, for a command run with --json. */
export function sayExitOnStdout(say: ((line: string, code: number) => void) | undefined): void {
  exitSaidOnStdout = say;
}

/**
 * End the process at once (a signal: 128 + its number) after `line` (no newline, the bin's name
 * first) on `stderr`, and what the command running says of it on stdout (sayExitOnStdout).
 */
export function exitSaying(stderr: { write(text: string): unknown }, prefix: string, line: string, code: number): never {
  stderr.write(`${prefix}${line}\n`);
  exitSaidOnStdout?.(line, code);
  return exitProcess(code);
}

/** process.exit(code), after releaseHungUpTerminal. */
export function exitProcess(code: number): never {
  releaseHungUpTerminal();
  return process.exit(code);
}
