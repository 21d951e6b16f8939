import { afterEach, describe, expect, it, vi } from 'vitest';
import { exitOnSignals, interruptOnSignals, signalExitCode } from '../../../shared/cli/interruption.js';

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
    // stderr no terminal: the line alone, no blank line before it.
    expect(written).toBe('prog: SIGINT again: exiting at once; run it again\n');
    interruption.dispose();
    expect({ SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') }).toEqual(listeners);
  });

  it('on a terminal, starts the line of a second signal on a line of its own (after the echoed ^C or a progress line)', () => {
    let written = '';
    const interruption = interruptOnSignals('prog', 'run it again', { isTTY: true, write: (text: string) => (written += text) });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    try {
      process.emit('SIGINT', 'SIGINT');
      process.emit('SIGINT', 'SIGINT');
      expect(exit).toHaveBeenCalledWith(130);
      expect(written).toBe('\nprog: SIGINT again: exiting at once; run it again\n');
    } finally {
      interruption.dispose();
    }
  });

  it('gives the exit codes shells report for signals', () => {
    expect([signalExitCode('SIGINT'), signalExitCode('SIGTERM')]).toEqual([130, 143]);
  });
});

describe('exitOnSignals', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("exits at the first SIGINT or SIGTERM (128 + its number) after the line given for it, on a line of its own on a terminal, and restores the defaults on dispose", () => {
    const listeners = { SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') };
    let written = '';
    const exiting = exitOnSignals('prog', (signal) => `interrupted by ${signal}: run it again`, { write: (text: string) => (written += text) });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    try {
      process.emit('SIGTERM', 'SIGTERM');
      expect(exit).toHaveBeenCalledWith(143);
      expect(written).toBe('prog: interrupted by SIGTERM: run it again\n');
    } finally {
      exiting.dispose();
    }
    expect({ SIGINT: process.listenerCount('SIGINT'), SIGTERM: process.listenerCount('SIGTERM') }).toEqual(listeners);
    written = '';
    const onTerminal = exitOnSignals('prog', (signal) => `interrupted by ${signal}`, { isTTY: true, write: (text: string) => (written += text) });
    try {
      process.emit('SIGINT', 'SIGINT');
      expect(exit).toHaveBeenLastCalledWith(130);
      expect(written).toBe('\nprog: interrupted by SIGINT\n');
    } finally {
      onTerminal.dispose();
    }
  });
});
