// A one-line progress display for long commands, on a terminal only: redrawn in place on stderr
// (carriage return, erase line), at most every 100 ms (an update that comes sooner is drawn when
// those 100 ms are up, unless another replaced it: the last state of a phase is drawn even where
// the next update is long to come), and erased when the command is done, so
// that what the command prints afterwards, and any error, starts on a clean line. Where stderr
// is no terminal (scripts, logs, CI) nothing is written.

export interface Progress {
  /** Show this text as the current state (drawn now, or with a later update). */
  update(text: string): void;
  /** Erase the line, if anything was drawn; later updates are ignored. */
  done(): void;
}

/** What a Progress draws on: stderr, or a stand-in in tests. */
export interface ProgressStream {
  readonly isTTY?: boolean;
  write(text: string): unknown;
}

const REDRAW_MS = 100;
const ERASE_LINE = '\r\x1b[2K';

export const NO_PROGRESS: Progress = { update: () => undefined, done: () => undefined };

/** Run `draw` in `ms` (a timer that keeps no process alive); returns what cancels it. */
export type Later = (draw: () => void, ms: number) => () => void;

const timerLater: Later = (draw, ms) => {
  const timer = setTimeout(draw, ms);
  timer.unref();
  return () => clearTimeout(timer);
};

export function terminalProgress(stream: ProgressStream = process.stderr, now: () => number = () => performance.now(), later: Later = timerLater): Progress {
  if (stream.isTTY !== true) return NO_PROGRESS;
  let drawnAt: number | undefined;
  let drawn = false;
  let finished = false;
  // The text of an update that came too soon after a draw, and what cancels its later draw.
  let pending: string | undefined;
  let cancel: (() => void) | undefined;
  const draw = (text: string): void => {
    drawnAt = now();
    drawn = true;
    // Control characters from names would move the cursor: shown as '?'.
    stream.write(`${ERASE_LINE}${text.replace(/[\u0000-\u001f\u007f]/g, '?')}`);
  };
  const drawPending = (): void => {
    cancel = undefined;
    const text = pending;
    pending = undefined;
    if (!finished && text !== undefined) draw(text);
  };
  return {
    update(text) {
      if (finished) return;
      const time = now();
      if (drawnAt !== undefined && time - drawnAt < REDRAW_MS) {
        pending = text;
        cancel ??= later(drawPending, drawnAt + REDRAW_MS - time);
        return;
      }
      pending = undefined;
      cancel?.();
      cancel = undefined;
      draw(text);
    },
    done() {
      if (finished) return;
      finished = true;
      cancel?.();
      cancel = undefined;
      pending = undefined;
      if (drawn) stream.write(ERASE_LINE);
    },
  };
}
