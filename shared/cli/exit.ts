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

/** process.exit(code), after releaseHungUpTerminal. */
export function exitProcess(code: number): never {
  releaseHungUpTerminal();
  return process.exit(code);
}
