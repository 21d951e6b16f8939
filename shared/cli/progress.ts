// A one-line progress display for long commands, on a terminal only: redrawn in place on stderr
// (carriage return, erase line), at most every 100 ms, and erased when the command is done, so
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

export function terminalProgress(stream: ProgressStream = process.stderr, now: () => number = () => performance.now()): Progress {
  if (stream.isTTY !== true) return NO_PROGRESS;
  let drawnAt: number | undefined;
  let drawn = false;
  let finished = false;
  return {
    update(text) {
      if (finished) return;
      const time = now();
      if (drawnAt !== undefined && time - drawnAt < REDRAW_MS) return;
      drawnAt = time;
      drawn = true;
      // Control characters from names would move the cursor: shown as '?'.
      stream.write(`${ERASE_LINE}${text.replace(/[\u0000-\u001f\u007f]/g, '?')}`);
    },
    done() {
      if (finished) return;
      finished = true;
      if (drawn) stream.write(ERASE_LINE);
    },
  };
}
