// The reaper's adapter over a fake kernel: what it reads, when it calls the addon, what it logs and
// reports. (The real kernel: client-tcp-timeout-netns.test.ts and conntrack-purge.test.ts.)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ClosedFlowFilter } from '../../../guest/conntrack/closed-flows.js';
import { ConntrackError } from '../../../guest/conntrack/conntrack-error.js';
import type { ConntrackAddon } from '../../../guest/conntrack/conntrack-purge.js';
import { ConntrackReaper, type ReaperKernel, kernelReaperParts, parseConntrackCount, readReapConntrackMax } from '../../../guest/conntrack/conntrack-reaper.js';

interface Line {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

function recordingLog(): { log: pino.Logger; lines: Line[] } {
  const lines: Line[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString().split('\n')) if (text !== '') lines.push(JSON.parse(text) as Line);
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines };
}

/** A table of `count` entries whose closed client flows a reap deletes (`closed` of them). */
class FakeTable implements ReaperKernel {
  count: number | undefined = 0;
  max: number | undefined = 1000;
  closed = 0;
  clock = 0;
  fail: Error | null = null;
  readonly reaps: ClosedFlowFilter[] = [];
  readCount(): number | undefined {
    return this.count;
  }
  readMax(): number | undefined {
    return this.max;
  }
  async reap(filter: ClosedFlowFilter): Promise<{ scanned: number; deleted: number }> {
    this.reaps.push(filter);
    if (this.fail !== null) throw this.fail;
    const deleted = this.closed;
    this.closed = 0;
    if (this.count !== undefined) this.count -= deleted;
    return { scanned: (this.count ?? 0) + deleted, deleted };
  }
  now(): number {
    return this.clock;
  }
}

type AddonCallback = Parameters<ConntrackAddon['reap']>[2];

/** A table whose reaps go through the real adapter (ConntrackPurger) to an addon that ends each call when the test says. */
function tableOverAddon(): { table: FakeTable; calls: AddonCallback[] } {
  const calls: AddonCallback[] = [];
  const addon: ConntrackAddon = {
    purge: () => {
      throw new Error('the reaper purges nothing');
    },
    reap: (_sources, _states, callback) => void calls.push(callback),
  };
  const table = new FakeTable();
  const { reap } = kernelReaperParts(addon);
  table.reap = (filter) => {
    table.reaps.push(filter);
    return reap(filter);
  };
  return { table, calls };
}

describe('ConntrackReaper', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('reaps at or over its threshold only, every closed TCP flow whatever its source, with one info line per reap', async () => {
    const table = new FakeTable();
    const { log, lines } = recordingLog();
    const reaper = new ConntrackReaper(100, log, table);
    reaper.start(3_600_000);
    table.count = 99;
    await reaper.tick();
    expect(table.reaps).toEqual([]);
    expect(reaper.status()).toMatchObject({ threshold: 100, count: 99, reaps: 0, reaped: 0 });
    table.count = 150;
    table.closed = 40;
    await reaper.tick();
    expect(table.reaps).toEqual([{ sources: null, tcpStates: ['TIME_WAIT', 'CLOSE'] }]);
    expect(reaper.status()).toMatchObject({ count: 110, reaps: 1, reaped: 40, lastReap: { deleted: 40, countBefore: 150, countAfter: 110 }, failures: 0, lastError: null });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 30, deleted: 40, countBefore: 150, countAfter: 110, threshold: 100 });
    // Still over, but within the second: no reap.
    table.clock = 999;
    await reaper.tick();
    expect(table.reaps).toHaveLength(1);
    table.clock = 1000;
    await reaper.tick();
    expect(table.reaps).toHaveLength(2);
    // That one deleted nothing (info lines only for reaps that delete): none until the count grows.
    expect(lines).toHaveLength(1);
    table.clock = 5000;
    await reaper.tick();
    expect(table.reaps).toHaveLength(2);
    table.count = 111;
    await reaper.tick();
    expect(table.reaps).toHaveLength(3);
    reaper.stop();
  });

  it('with auto, reaps at half of nf_conntrack_max as read at each check; unknown: never', async () => {
    const table = new FakeTable();
    const reaper = new ConntrackReaper('auto', pino({ level: 'silent' }), table);
    reaper.start(3_600_000);
    table.max = undefined;
    table.count = 10_000;
    await reaper.tick();
    expect(table.reaps).toHaveLength(0);
    expect(reaper.status()).toMatchObject({ threshold: null, thresholdOption: 'auto', count: 10_000 });
    table.max = 1000;
    table.count = 499;
    await reaper.tick();
    expect(table.reaps).toHaveLength(0);
    table.count = 500;
    await reaper.tick();
    expect(table.reaps).toHaveLength(1);
    expect(reaper.status().threshold).toBe(500);
    reaper.stop();
  });

  it('with auto, follows a change of nf_conntrack_max at the next check, and keeps the threshold it last gave while it cannot be read (warned once)', async () => {
    const table = new FakeTable();
    const { log, lines } = recordingLog();
    const reaper = new ConntrackReaper('auto', log, table);
    reaper.start(3_600_000);
    table.count = 400;
    await reaper.tick();
    expect(reaper.status().threshold).toBe(500);
    table.max = 600;
    table.closed = 50;
    await reaper.tick();
    expect(reaper.status()).toMatchObject({ threshold: 300, count: 350 });
    expect(table.reaps).toHaveLength(1);
    const unreadable = '/proc/sys/net/netfilter/nf_conntrack_max holds "many", not a number of entries';
    table.readMax = () => {
      throw new Error(unreadable);
    };
    table.closed = 10;
    table.count = 320;
    table.clock = 1000;
    // Still reaps, at the threshold it had; the read's failure is said once, and stays in status.
    await reaper.tick();
    expect(table.reaps).toHaveLength(2);
    expect(reaper.status()).toMatchObject({ threshold: 300, count: 310, lastError: unreadable });
    table.clock = 2000;
    table.count = 320;
    table.closed = 5;
    await reaper.tick();
    expect(table.reaps).toHaveLength(3);
    expect(lines.filter((line) => line.level === 40)).toEqual([expect.objectContaining({ err: unreadable, msg: expect.stringMatching(/keeps the threshold it last gave \(300\)/) })]);
    table.readMax = () => 2000;
    await reaper.tick();
    expect(reaper.status()).toMatchObject({ threshold: 1000, lastError: null });
    reaper.stop();
  });

  it('says an unreadable nf_conntrack_max once, also while the reaps between fail (each failure warned on its own)', async () => {
    const table = new FakeTable();
    const { log, lines } = recordingLog();
    const reaper = new ConntrackReaper('auto', log, table);
    reaper.start(3_600_000);
    table.count = 600;
    await reaper.tick();
    const unreadable = '/proc/sys/net/netfilter/nf_conntrack_max holds "many", not a number of entries';
    table.readMax = () => {
      throw new Error(unreadable);
    };
    table.fail = new Error('conntrack dump failed: ENOBUFS');
    // Each tick far enough apart that the backoff lets every one reap (and fail).
    for (let tick = 1; tick <= 4; tick++) {
      table.clock = tick * 3_600_000;
      table.count = 600 + tick;
      await reaper.tick();
    }
    expect(table.reaps.length).toBeGreaterThanOrEqual(3);
    const warnings = lines.filter((line) => line.level === 40);
    expect(warnings.filter((line) => line.err === unreadable)).toHaveLength(1);
    expect(warnings.filter((line) => line.err !== unreadable).length).toBe(table.reaps.length - 1);
    reaper.stop();
  });

  it('warns at a failed reap, says why in status, and backs off; a read that fails is said once', async () => {
    const table = new FakeTable();
    const { log, lines } = recordingLog();
    const reaper = new ConntrackReaper(10, log, table);
    reaper.start(3_600_000);
    table.count = 50;
    table.fail = new ConntrackError('dump', 'reading the conntrack table failed (ENOMEM)');
    await reaper.tick();
    expect(reaper.status()).toMatchObject({ failures: 1, lastError: 'reading the conntrack table failed (ENOMEM)', reaps: 0 });
    expect(lines.map((line) => line.level)).toEqual([40]);
    table.clock = 1000;
    await reaper.tick();
    expect(table.reaps).toHaveLength(2);
    // Second failure: the next waits 2 s.
    table.clock = 2999;
    await reaper.tick();
    expect(table.reaps).toHaveLength(2);
    table.fail = null;
    table.closed = 5;
    table.clock = 3000;
    await reaper.tick();
    expect(reaper.status()).toMatchObject({ failures: 2, lastError: null, reaps: 1, reaped: 5 });
    const reading = new FakeTable();
    reading.readCount = () => {
      throw new Error('/proc/sys/net/netfilter/nf_conntrack_count holds "x", not a number of entries');
    };
    const { log: readLog, lines: readLines } = recordingLog();
    const blind = new ConntrackReaper(10, readLog, reading);
    await blind.tick();
    await blind.tick();
    expect(readLines).toHaveLength(1);
    expect(blind.status().lastError).toMatch(/nf_conntrack_count/);
    reading.readCount = () => 3;
    await blind.tick();
    expect(blind.status()).toMatchObject({ lastError: null, count: 3 });
    reaper.stop();
  });

  it('never starts a reap while one runs', async () => {
    const table = new FakeTable();
    let finish: () => void = () => undefined;
    table.reap = (filter) => {
      table.reaps.push(filter);
      return new Promise((resolve) => (finish = () => resolve({ scanned: 1, deleted: 1 })));
    };
    const reaper = new ConntrackReaper(1, pino({ level: 'silent' }), table);
    table.count = 5;
    const first = reaper.tick();
    table.clock = 10_000;
    await reaper.tick();
    expect(table.reaps).toHaveLength(1);
    finish();
    await first;
    expect(reaper.status().reaps).toBe(1);
  });

  it('counts a reap of a huge table that outlives any JS timeout as the success it is (the addon cannot be stopped, and bounds each receive itself)', async () => {
    vi.useFakeTimers();
    const { table, calls } = tableOverAddon();
    const reaper = new ConntrackReaper(10, pino({ level: 'silent' }), table);
    table.count = 200_000;
    const reaping = reaper.tick();
    expect(calls).toHaveLength(1);
    // A minute of dumping and deleting: no failure meanwhile, and no second reap.
    await vi.advanceTimersByTimeAsync(60_000);
    table.clock = 60_000;
    await reaper.tick();
    expect(calls).toHaveLength(1);
    expect(reaper.status()).toMatchObject({ failures: 0, lastError: null, reaps: 0 });
    table.count = 50_000;
    calls[0]?.(null, null, 200_000, 150_000, 150_000);
    await reaping;
    expect(reaper.status()).toMatchObject({ failures: 0, lastError: null, reaps: 1, reaped: 150_000, count: 50_000 });
  });

  it('counts what a reap whose dump failed part way deleted all the same', async () => {
    const { table, calls } = tableOverAddon();
    const { log, lines } = recordingLog();
    const reaper = new ConntrackReaper(10, log, table);
    table.count = 100;
    const reaping = reaper.tick();
    table.count = 60;
    calls[0]?.('ENOMEM', 'dump', 70, 40, 40);
    await reaping;
    expect(reaper.status()).toMatchObject({ failures: 1, reaps: 0, reaped: 40, lastError: expect.stringMatching(/^reading the conntrack table failed \(ENOMEM; 70 entries read, 40 matched, 40 deleted\)/) });
    expect(lines).toMatchObject([{ level: 40, deleted: 40 }]);
  });

  it("says to give --conntrack-reap-threshold a number when nf_conntrack_max cannot be read (not the flow limits' options)", () => {
    const dir = mkdtempSync(join(tmpdir(), 'snt-reapmax-'));
    try {
      expect(readReapConntrackMax(join(dir, 'absent'))).toBeUndefined();
      // A directory: unreadable as a file.
      let message = '';
      try {
        readReapConntrackMax(dir);
      } catch (error) {
        message = error instanceof Error ? error.message : String(error);
      }
      expect(message).toMatch(/^cannot read .*: give --conntrack-reap-threshold a number of entries \(0: never reap\)$/);
      expect(message).not.toMatch(/--client-flow-limit|--client-new-flow-rate/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads the count file strictly', () => {
    expect(parseConntrackCount('8191\n')).toBe(8191);
    for (const text of ['', '-1', '0x10', '1e3', 'many']) expect(() => parseConntrackCount(text)).toThrow(/not a number of entries/);
  });
});
