import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { terminalProgress } from '../../../shared/cli/progress.js';

const ERASE = '\r\x1b[2K';

/** A terminal stand-in, a clock the test moves, and the draws put off for later, run as the clock reaches them. */
function terminal(isTTY = true) {
  const written: string[] = [];
  let time = 0;
  let timers: { at: number; draw: () => void }[] = [];
  const later = (draw: () => void, ms: number): (() => void) => {
    const timer = { at: time + ms, draw };
    timers.push(timer);
    return () => void (timers = timers.filter((other) => other !== timer));
  };
  const progress = terminalProgress({ isTTY, write: (text: string) => written.push(text) }, () => time, later);
  const advance = (ms: number): void => {
    const until = time + ms;
    for (let next = timers.find((timer) => timer.at <= until); next !== undefined; next = timers.find((timer) => timer.at <= until)) {
      timers = timers.filter((timer) => timer !== next);
      time = next.at;
      next.draw();
    }
    time = until;
  };
  return { progress, written, advance, pending: () => timers.length };
}

describe('terminalProgress', () => {
  it('draws the first state at once, then at most every 100 ms, each over the last', () => {
    const { progress, written, advance } = terminal();
    progress.update('linking: 4 of 100');
    advance(50);
    progress.update('linking: 12 of 100');
    advance(60);
    // 12 came too soon: drawn at 100 ms; 28 came 10 ms after that draw: not yet drawn.
    progress.update('linking: 28 of 100');
    expect(written).toEqual([`${ERASE}linking: 4 of 100`, `${ERASE}linking: 12 of 100`]);
    advance(90);
    expect(written).toEqual([`${ERASE}linking: 4 of 100`, `${ERASE}linking: 12 of 100`, `${ERASE}linking: 28 of 100`]);
  });

  it('draws the last update that came too soon once its 100 ms are up: a phase ends on its final count, not a stale one', () => {
    const { progress, written, advance } = terminal();
    progress.update('linking: devices for 4 of 302 VMs');
    advance(30);
    progress.update('linking: devices for 124 of 302 VMs');
    advance(30);
    progress.update('linking: devices for 302 of 302 VMs');
    // Nothing more comes (VMMs slow to answer): the last count is drawn all the same, once.
    advance(10_000);
    expect(written).toEqual([`${ERASE}linking: devices for 4 of 302 VMs`, `${ERASE}linking: devices for 302 of 302 VMs`]);
  });

  it('draws nothing put off once done, nor once a later update was drawn in its place', () => {
    const { progress, written, advance, pending } = terminal();
    progress.update('linking: 1 of 3');
    advance(10);
    progress.update('linking: 2 of 3');
    progress.done();
    advance(1000);
    expect({ written, pending: pending() }).toEqual({ written: [`${ERASE}linking: 1 of 3`, ERASE], pending: 0 });
  });

  it('erases its line when done, and then draws nothing more', () => {
    const { progress, written, advance } = terminal();
    progress.update('linking: 4 of 100');
    progress.done();
    advance(500);
    progress.update('linking: 100 of 100');
    progress.done();
    expect(written).toEqual([`${ERASE}linking: 4 of 100`, ERASE]);
  });

  it('writes nothing where stderr is no terminal, nor when it never drew', () => {
    const piped = terminal(false);
    piped.progress.update('linking: 4 of 100');
    piped.progress.done();
    expect(piped.written).toEqual([]);
    const idle = terminal();
    idle.progress.done();
    expect(idle.written).toEqual([]);
  });

  it('never writes control characters of its own text (a name could move the cursor)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.string({ unit: 'binary' }), fc.nat(300))), (updates) => {
        const { progress, written, advance } = terminal();
        for (const [text, ms] of updates) {
          advance(ms);
          progress.update(text);
        }
        progress.done();
        for (const chunk of written) expect(chunk.startsWith(ERASE) && !/[\u0000-\u001f\u007f]/.test(chunk.slice(ERASE.length))).toBe(true);
        // Done leaves the line erased whenever something was drawn.
        if (written.length > 0) expect(written[written.length - 1]).toBe(ERASE);
      }),
    );
  });
});
