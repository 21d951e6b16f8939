import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { terminalProgress } from '../../../shared/cli/progress.js';

const ERASE = '\r\x1b[2K';

/** A terminal stand-in and a clock the test moves. */
function terminal(isTTY = true) {
  const written: string[] = [];
  let time = 0;
  const progress = terminalProgress({ isTTY, write: (text: string) => written.push(text) }, () => time);
  return { progress, written, advance: (ms: number) => (time += ms) };
}

describe('terminalProgress', () => {
  it('draws the first state at once, then at most every 100 ms, each over the last', () => {
    const { progress, written, advance } = terminal();
    progress.update('linking: 4 of 100');
    advance(50);
    progress.update('linking: 12 of 100');
    advance(60);
    progress.update('linking: 28 of 100');
    expect(written).toEqual([`${ERASE}linking: 4 of 100`, `${ERASE}linking: 28 of 100`]);
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
