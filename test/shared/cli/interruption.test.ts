import { afterEach, describe, expect, it, vi } from 'vitest';
import { interruptOnSignals, signalExitCode } from '../../../shared/cli/interruption.js';

describe('interruptOnSignals', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('aborts at the first SIGINT or SIGTERM, exits at once at a second (128 + the first), and restores the defaults on dispose', () => {
    const listeners = { SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') };
    let written = '';
    const interruption = interruptOnSignals('prog', 'run it again', { write: (text: string) => (written += text) });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    expect(interruption.signal.aborted).toBe(false);
    process.emit('SIGTERM', 'SIGTERM');
    expect([interruption.signal.aborted, interruption.signal.reason, interruption.received]).toEqual([true, 'SIGTERM', 'SIGTERM']);
    expect(exit).not.toHaveBeenCalled();
    process.emit('SIGINT', 'SIGINT');
    expect(exit).toHaveBeenCalledWith(143);
    expect(written).toBe('\nprog: SIGINT again: exiting at once; run it again\n');
    interruption.dispose();
    expect({ SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') }).toEqual(listeners);
  });

  it('gives the exit codes shells report for signals', () => {
    expect([signalExitCode('SIGINT'), signalExitCode('SIGTERM')]).toEqual([130, 143]);
  });
});
