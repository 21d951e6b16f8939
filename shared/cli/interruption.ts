// SIGINT and SIGTERM (and, for a command run from a terminal, SIGHUP) for a one-shot command that
// can undo its own work: the first asks it to stop at its next safe point (an AbortSignal it
// checks) and undo what it did; a second, sent by an operator who will not wait for that, exits at
// once (128 + the signal's number), saying so.
import { constants } from 'node:os';
import { exitSaying } from './exit.js';

const ALL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
type StopSignal = (typeof ALL_SIGNALS)[number];

/**
 * Which signals stop the command. `hangup`: SIGHUP too, as SIGTERM (a terminal closed, an SSH
 * session dropped: the command is run from it); without it SIGHUP is left as it is (a daemon
 * handles it itself).
 */
export interface StopSignals {
  readonly hangup?: boolean;
  /**
   * For a command whose first signal has it undo its work: after the first signal only a SIGINT
   * exits at once (an operator pressing Ctrl-C again, who will not wait); a SIGTERM or SIGHUP,
   * repeated or mixed (logind's KillUserProcesses, a dropped SSH session, systemd send them close
   * together, from no operator at all), is said once (`goesOn`: what the run does instead) and the
   * run goes on to its end, its undo finished (SIGKILL forces it). Without it, any second signal
   * but a SIGHUP exits at once.
   */
  readonly goesOn?: string;
  /**
   * For a one-shot command: dispose() leaves the signals ignored until the process exits, not ended
   * by default. Its result is decided then (the run done or undone, its lines being written): a
   * signal in that window (a second SIGHUP as a terminal hangs up, logind's SIGTERM) would kill it
   * with its output cut short and no exit code of its own.
   */
  readonly untilExit?: boolean;
}

/** What a signal does once its command's result is decided (StopSignals.untilExit): nothing. */
const ignored = (): void => undefined;

/** Hand `signals` over to `ignored` (once each) as their handler goes, for the process's remaining life. */
function ignoreUntilExit(signals: readonly StopSignal[]): void {
  for (const signal of signals) if (!process.listeners(signal).includes(ignored)) process.on(signal, ignored);
}

const signalsOf = (options: StopSignals): readonly StopSignal[] => (options.hangup === true ? ALL_SIGNALS : ['SIGINT', 'SIGTERM']);

/** Where the line goes: stderr. A write that fails (a hung-up terminal: EIO; a closed pipe: EPIPE) is the stream's error event, never thrown. */
type LineSink = { readonly isTTY?: boolean; write(text: string): unknown };

/** Exit code of a process ended by `signal`, as shells report it: 128 + its number. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + constants.signals[signal];
}

export interface Interruption {
  /** Aborted (its reason the signal's name) at the first SIGINT or SIGTERM (or SIGHUP, where taken). */
  readonly signal: AbortSignal;
  /** The first signal received; undefined while none came. */
  readonly received: StopSignal | undefined;
  /** Restore the default handling (the process ends at the next signal), or with `untilExit` ignore the signals until exit. */
  dispose(): void;
}

/**
 * Take over SIGINT and SIGTERM (and SIGHUP with `hangup`) until dispose(). `onSecond` ends the line
 * written before a second signal exits at once (e.g. what the cut-off undo leaves). On a terminal
 * that line starts on a line of its own (after the echoed ^C, or a progress line); elsewhere no line
 * is left open before it (progress lines are drawn on terminals only). A SIGHUP after the first
 * signal is no second one: a hangup comes more than once (the shell sends it on to its jobs, then,
 * as it exits, the kernel sends it again to the terminal's foreground group), from no operator
 * who will not wait; the undo goes on. With `goesOn`, nor is a SIGTERM (StopSignals.goesOn).
 */
export function interruptOnSignals(program: string, onSecond: string, stderr: LineSink = process.stderr, options: StopSignals = {}): Interruption {
  const controller = new AbortController();
  let received: StopSignal | undefined;
  let noted = false;
  const handler = (signal: StopSignal): void => {
    if (received === undefined) {
      received = signal;
      controller.abort(signal);
      return;
    }
    if (options.goesOn !== undefined && signal !== 'SIGINT') {
      // Said once: a hangup and logind's SIGTERM may come again and again.
      if (!noted) stderr.write(`${stderr.isTTY === true ? '\n' : ''}${program}: ${signal} after ${received}: not exiting at once; ${options.goesOn} (a SIGINT, or SIGKILL, ends it at once)\n`);
      noted = true;
      return;
    }
    if (signal === 'SIGHUP') return;
    // `again` only where it is the first one's signal: a Ctrl-C after a SIGTERM or SIGHUP is the first SIGINT.
    const which = signal === received ? 'again' : `after ${received}`;
    exitSaying(stderr, `${stderr.isTTY === true ? '\n' : ''}${program}: `, `${signal} ${which}: exiting at once; ${onSecond}`, signalExitCode(received));
  };
  const signals = signalsOf(options);
  for (const signal of signals) process.on(signal, handler);
  return {
    signal: controller.signal,
    get received() {
      return received;
    },
    dispose: () => {
      if (options.untilExit === true) ignoreUntilExit(signals);
      for (const signal of signals) process.off(signal, handler);
    },
  };
}

/**
 * Until dispose(), end the process at the first SIGINT or SIGTERM (or SIGHUP with `hangup`; exit
 * 128 + the signal's number, as without a handler) after one line saying what that leaves (`line`,
 * given the signal): for a command whose work, once begun, it cannot stop at a safe point or undo.
 * The line starts on a line of its own on a terminal (after the echoed ^C). After dispose() the
 * default handling is back, or with `untilExit` the signals are ignored until exit.
 */
export function exitOnSignals(program: string, line: (signal: StopSignal) => string, stderr: LineSink = process.stderr, options: StopSignals = {}): { dispose(): void } {
  const handler = (signal: StopSignal): void => {
    exitSaying(stderr, `${stderr.isTTY === true ? '\n' : ''}${program}: `, line(signal), signalExitCode(signal));
  };
  const signals = signalsOf(options);
  for (const signal of signals) process.on(signal, handler);
  return {
    dispose: () => {
      if (options.untilExit === true) ignoreUntilExit(signals);
      for (const signal of signals) process.off(signal, handler);
    },
  };
}
