import { afterEach, describe, expect, it, vi } from 'vitest';
import { exitOnSignals, interruptOnSignals, signalExitCode } from '../../../shared/cli/interruption.js';

describe('interruptOnSignals', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('aborts at the first SIGINT or SIGTERM, exits at once at a second (128 + the first, its line saying after which), and restores the defaults on dispose', () => {
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
    // Not `again`: no SIGINT came before it.
    expect(written).toBe('prog: SIGINT after SIGTERM: exiting at once; run it again\n');
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
    expect([signalExitCode('SIGINT'), signalExitCode('SIGTERM'), signalExitCode('SIGHUP')]).toEqual([130, 143, 129]);
  });

  it('with hangup, aborts at a first SIGHUP as at SIGTERM; a SIGHUP again is no second signal (a hangup comes twice), a SIGTERM after it exits at once with 129', () => {
    const listeners = process.listenerCount('SIGHUP');
    let written = '';
    const interruption = interruptOnSignals('prog', 'run it again', { write: (text: string) => (written += text) }, { hangup: true });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    try {
      expect(process.listenerCount('SIGHUP')).toBe(listeners + 1);
      process.emit('SIGHUP', 'SIGHUP');
      expect([interruption.signal.aborted, interruption.signal.reason, interruption.received]).toEqual([true, 'SIGHUP', 'SIGHUP']);
      process.emit('SIGHUP', 'SIGHUP');
      expect(exit).not.toHaveBeenCalled();
      expect(written).toBe('');
      process.emit('SIGTERM', 'SIGTERM');
      expect(exit).toHaveBeenCalledWith(129);
      expect(written).toBe('prog: SIGTERM after SIGHUP: exiting at once; run it again\n');
    } finally {
      interruption.dispose();
    }
    expect(process.listenerCount('SIGHUP')).toBe(listeners);
  });

  it('with hangup, a SIGHUP after a first SIGINT does not cut the undo short', () => {
    const interruption = interruptOnSignals('prog', 'run it again', { write: () => undefined }, { hangup: true });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    try {
      process.emit('SIGINT', 'SIGINT');
      process.emit('SIGHUP', 'SIGHUP');
      expect([interruption.received, exit.mock.calls]).toEqual(['SIGINT', []]);
      process.emit('SIGINT', 'SIGINT');
      expect(exit).toHaveBeenCalledWith(130);
    } finally {
      interruption.dispose();
    }
  });

  it('with goesOn, only a SIGINT after the first signal exits at once: a SIGTERM or SIGHUP, repeated or mixed, is said once and the undo goes on', () => {
    let written = '';
    const interruption = interruptOnSignals('prog', 'run it again', { write: (text: string) => (written += text) }, { hangup: true, goesOn: 'the undo goes on' });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    try {
      process.emit('SIGHUP', 'SIGHUP');
      process.emit('SIGTERM', 'SIGTERM');
      process.emit('SIGHUP', 'SIGHUP');
      process.emit('SIGTERM', 'SIGTERM');
      expect([interruption.received, exit.mock.calls]).toEqual(['SIGHUP', []]);
      expect(written).toBe('prog: SIGTERM after SIGHUP: not exiting at once; the undo goes on (a SIGINT, or SIGKILL, ends it at once)\n');
      process.emit('SIGINT', 'SIGINT');
      expect(exit).toHaveBeenCalledWith(129);
      expect(written).toMatch(/\nprog: SIGINT after SIGHUP: exiting at once; run it again\n$/);
    } finally {
      interruption.dispose();
    }
  });

  it('with untilExit, dispose() of either leaves the signals ignored until exit (the result decided), not ended by default', () => {
    const before = { SIGINT: process.listeners('SIGINT'), SIGTERM: process.listeners('SIGTERM'), SIGHUP: process.listeners('SIGHUP') };
    const interruption = interruptOnSignals('prog', 'run it again', { write: () => undefined }, { hangup: true, untilExit: true });
    const exiting = exitOnSignals('prog', () => 'stopped', { write: () => undefined }, { hangup: true, untilExit: true });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    try {
      interruption.dispose();
      exiting.dispose();
      // One listener each is left (the two share it), doing nothing.
      expect([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM'), process.listenerCount('SIGHUP')]).toEqual([before.SIGINT.length + 1, before.SIGTERM.length + 1, before.SIGHUP.length + 1]);
      process.emit('SIGHUP', 'SIGHUP');
      process.emit('SIGTERM', 'SIGTERM');
      process.emit('SIGINT', 'SIGINT');
      expect([interruption.signal.aborted, exit.mock.calls]).toEqual([false, []]);
    } finally {
      // Not left in the test worker: it is no one-shot command.
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) for (const listener of process.listeners(signal)) if (!before[signal].includes(listener)) process.off(signal, listener);
    }
  });

  it('without hangup, leaves SIGHUP alone (a daemon handles it itself)', () => {
    const listeners = process.listenerCount('SIGHUP');
    const interruption = interruptOnSignals('prog', 'run it again', { write: () => undefined });
    const exiting = exitOnSignals('prog', () => 'stopped', { write: () => undefined });
    try {
      expect(process.listenerCount('SIGHUP')).toBe(listeners);
    } finally {
      interruption.dispose();
      exiting.dispose();
    }
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

  it('with hangup, exits at a SIGHUP with 129 after its line, and restores the default on dispose', () => {
    const listeners = process.listenerCount('SIGHUP');
    let written = '';
    const exiting = exitOnSignals('prog', (signal) => `interrupted by ${signal}: run it again`, { isTTY: true, write: (text: string) => (written += text) }, { hangup: true });
    const exit = vi.spyOn(process, 'exit').mockImplementation(() => undefined as never);
    try {
      process.emit('SIGHUP', 'SIGHUP');
      expect(exit).toHaveBeenCalledWith(129);
      expect(written).toBe('\nprog: interrupted by SIGHUP: run it again\n');
    } finally {
      exiting.dispose();
    }
    expect(process.listenerCount('SIGHUP')).toBe(listeners);
  });
});
