// SIGINT and SIGTERM for a one-shot command that can undo its own work: the first asks it to stop
// at its next safe point (an AbortSignal it checks) and undo what it did; a second, sent by an
// operator who will not wait for that, exits at once (128 + the signal's number), saying so.
import { constants } from 'node:os';

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;
type StopSignal = (typeof SIGNALS)[number];

/** Exit code of a process ended by `signal`, as shells report it: 128 + its number. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + constants.signals[signal];
}

export interface Interruption {
  /** Aborted (its reason the signal's name) at the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** The first signal received; undefined while none came. */
  readonly received: StopSignal | undefined;
  /** Restore the default handling (the process ends at the next signal). */
  dispose(): void;
}

/**
 * Take over SIGINT and SIGTERM until dispose(). `onSecond` ends the line written before a second
 * signal exits at once (e.g. what the cut-off undo leaves). On a terminal that line starts on a
 * line of its own (after the echoed ^C, or a progress line); elsewhere no line is left open before it
 * (progress lines are drawn on terminals only).
 */
export function interruptOnSignals(program: string, onSecond: string, stderr: { readonly isTTY?: boolean; write(text: string): unknown } = process.stderr): Interruption {
  const controller = new AbortController();
  let received: StopSignal | undefined;
  const handler = (signal: StopSignal): void => {
    if (received === undefined) {
      received = signal;
      controller.abort(signal);
      return;
    }
    stderr.write(`${stderr.isTTY === true ? '\n' : ''}${program}: ${signal} again: exiting at once; ${onSecond}\n`);
    process.exit(signalExitCode(received));
  };
  for (const signal of SIGNALS) process.on(signal, handler);
  return {
    signal: controller.signal,
    get received() {
      return received;
    },
    dispose: () => {
      for (const signal of SIGNALS) process.off(signal, handler);
    },
  };
}

/**
 * Until dispose(), end the process at the first SIGINT or SIGTERM (exit 128 + the signal's number,
 * as without a handler) after one line saying what that leaves (`line`, given the signal): for a
 * command whose work, once begun, it cannot stop at a safe point or undo. The line starts on a line
 * of its own on a terminal (after the echoed ^C).
 */
export function exitOnSignals(program: string, line: (signal: StopSignal) => string, stderr: { readonly isTTY?: boolean; write(text: string): unknown } = process.stderr): { dispose(): void } {
  const handler = (signal: StopSignal): void => {
    stderr.write(`${stderr.isTTY === true ? '\n' : ''}${program}: ${line(signal)}\n`);
    process.exit(signalExitCode(signal));
  };
  for (const signal of SIGNALS) process.on(signal, handler);
  return {
    dispose: () => {
      for (const signal of SIGNALS) process.off(signal, handler);
    },
  };
}
