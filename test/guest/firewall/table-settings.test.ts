import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CLIENT_UNCOUNTED_SECONDS, DEFAULT_CLIENT_TCP_TIMEOUTS, KERNEL_TCP_TIMEOUTS } from '../../../guest/firewall/client-tcp-timeouts.js';
import {
  CLIENT_FLOW_SHARE,
  MAX_CLIENT_FLOW_LIMIT,
  MAX_CLIENT_NEW_FLOW_RATE,
  MAX_DEFAULT_CLIENT_FLOW_LIMIT,
  MAX_DEFAULT_CLIENT_NEW_FLOW_RATE,
  assertTableSettings,
  clientNewFlowBurst,
  clientTcpTimeoutsOf,
  defaultClientFlowLimit,
  defaultClientNewFlowRate,
} from '../../../guest/firewall/table-settings.js';

const RATE = MAX_DEFAULT_CLIENT_NEW_FLOW_RATE;

describe('defaultClientFlowLimit', () => {
  it('gives each client an eighth of the tables the kernel sizes by RAM, at most 4096 (each new flow walks what its client holds)', () => {
    // 256 MB, 512 MB, 1-4 GB, more than 4 GB (and the kernel's least, 1024).
    expect([1024, 2048, 4096, 32_768, 65_536, 262_144].map(defaultClientFlowLimit)).toEqual([128, 256, 512, 4096, 4096, 4096]);
  });

  it('never gives more than a share of the table, nor nothing: it takes CLIENT_FLOW_SHARE clients at the cap to fill it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 }), (conntrackMax) => {
        const limit = defaultClientFlowLimit(conntrackMax);
        expect(limit).toBeGreaterThanOrEqual(1);
        expect(limit).toBeLessThanOrEqual(MAX_DEFAULT_CLIENT_FLOW_LIMIT);
        if (conntrackMax >= CLIENT_FLOW_SHARE) expect(limit * CLIENT_FLOW_SHARE).toBeLessThanOrEqual(conntrackMax);
        expect(() => assertTableSettings({ clientFlowLimit: limit, clientNewFlowRate: RATE })).not.toThrow();
      }),
    );
  });

  it('still caps a client when the table has no limit (0), and refuses what is no count', () => {
    expect(defaultClientFlowLimit(0)).toBe(4096);
    for (const wrong of [-1, 1.5, Number.NaN]) expect(() => defaultClientFlowLimit(wrong)).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
  });
});

describe('defaultClientNewFlowRate', () => {
  it('gives the rates the README gives: 1024 entries (128 MB), 512 MB, 1 GB, above 1 GB, above 4 GB, no limit', () => {
    expect([1024, 4096, 8192, 65_536, 262_144, 0].map(defaultClientNewFlowRate)).toEqual([5, 23, 46, 100, 100, 100]);
  });

  it('keeps a client with both defaults to a quarter of any table from 176 entries: cap + what it opens while its closed flows stay uncounted, burst included', () => {
    const withDefaults = (conntrackMax: number): { cap: number; rate: number; held: number } => {
      const cap = defaultClientFlowLimit(conntrackMax);
      const rate = defaultClientNewFlowRate(conntrackMax);
      const burst = clientNewFlowBurst({ clientFlowLimit: cap, clientNewFlowRate: rate });
      return { cap, rate, held: cap + rate * CLIENT_UNCOUNTED_SECONDS + burst };
    };
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 176, max: 70_000 }), fc.integer({ min: 176, max: 2 ** 32 })), (conntrackMax) => {
        const { rate, held } = withDefaults(conntrackMax);
        // In whole numbers: held <= conntrackMax / 4, so four such clients hold the table at most.
        expect(4 * held).toBeLessThanOrEqual(conntrackMax);
        expect(rate).toBeGreaterThanOrEqual(1);
        expect(rate).toBeLessThanOrEqual(MAX_DEFAULT_CLIENT_NEW_FLOW_RATE);
      }),
    );
    // The kernel's least table, and the two sizes the README names.
    expect(withDefaults(1024).held).toBe(128 + 5 * 22);
    expect(withDefaults(8192).held).toBe(1024 + 46 * 22);
    expect(withDefaults(65_536).held).toBe(4096 + 100 * 22);
  });

  it('never exceeds 100 a second nor gives none, grows with the table, and refuses what is no count', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 }), fc.integer({ min: 0, max: 2 ** 32 }), (one, other) => {
        const [small, large] = one <= other ? [one, other] : [other, one];
        for (const conntrackMax of [small, large]) {
          expect(defaultClientNewFlowRate(conntrackMax)).toBeGreaterThanOrEqual(1);
          expect(defaultClientNewFlowRate(conntrackMax)).toBeLessThanOrEqual(MAX_DEFAULT_CLIENT_NEW_FLOW_RATE);
        }
        if (small > 0) expect(defaultClientNewFlowRate(small)).toBeLessThanOrEqual(defaultClientNewFlowRate(large));
      }),
    );
    for (const wrong of [-1, 1.5, Number.NaN]) expect(() => defaultClientNewFlowRate(wrong)).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
  });

  it('assumes no longer a time uncounted than the TCP timeouts clients get: TIME_WAIT then CLOSE', () => {
    expect(DEFAULT_CLIENT_TCP_TIMEOUTS.time_wait + DEFAULT_CLIENT_TCP_TIMEOUTS.close).toBe(CLIENT_UNCOUNTED_SECONDS);
    expect(CLIENT_UNCOUNTED_SECONDS).toBe(20);
  });
});

describe('clientTcpTimeoutsOf', () => {
  it('is the default policy unless the settings give one', () => {
    expect(clientTcpTimeoutsOf({ clientFlowLimit: 1, clientNewFlowRate: 1 })).toBe(DEFAULT_CLIENT_TCP_TIMEOUTS);
    const given = { ...DEFAULT_CLIENT_TCP_TIMEOUTS, established: 3600 };
    expect(clientTcpTimeoutsOf({ clientFlowLimit: 1, clientNewFlowRate: 1, clientTcpTimeouts: given })).toBe(given);
  });
});

describe('assertTableSettings', () => {
  it('takes 0 (no cap) to what nft holds in 32 bits, whole numbers only', () => {
    for (const clientFlowLimit of [0, 1, MAX_CLIENT_FLOW_LIMIT]) expect(() => assertTableSettings({ clientFlowLimit, clientNewFlowRate: RATE })).not.toThrow();
    for (const clientFlowLimit of [-1, 0.5, MAX_CLIENT_FLOW_LIMIT + 1, Number.POSITIVE_INFINITY]) {
      expect(() => assertTableSettings({ clientFlowLimit, clientNewFlowRate: RATE })).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
    }
  });

  it('takes a new-flow rate from 0 (none) to MAX_CLIENT_NEW_FLOW_RATE, whose burst nft still holds in 32 bits', () => {
    for (const clientNewFlowRate of [0, 1, RATE, MAX_CLIENT_NEW_FLOW_RATE]) expect(() => assertTableSettings({ clientFlowLimit: 1, clientNewFlowRate })).not.toThrow();
    for (const clientNewFlowRate of [-1, 0.5, MAX_CLIENT_NEW_FLOW_RATE + 1, Number.NaN]) {
      expect(() => assertTableSettings({ clientFlowLimit: 1, clientNewFlowRate })).toThrow(expect.objectContaining({ kind: 'flow-rate' }));
    }
    expect(clientNewFlowBurst({ clientFlowLimit: 1, clientNewFlowRate: MAX_CLIENT_NEW_FLOW_RATE })).toBeLessThanOrEqual(0xffff_ffff);
    // A browser opening a hundred connections at once (and their lookups) fits the default burst.
    expect(clientNewFlowBurst({ clientFlowLimit: 1, clientNewFlowRate: RATE })).toBe(200);
  });

  it("refuses clients' TCP timeouts that keep closed flows longer than the limits assume", () => {
    expect(() => assertTableSettings({ clientFlowLimit: 1, clientNewFlowRate: 1, clientTcpTimeouts: DEFAULT_CLIENT_TCP_TIMEOUTS })).not.toThrow();
    expect(() => assertTableSettings({ clientFlowLimit: 1, clientNewFlowRate: 1, clientTcpTimeouts: KERNEL_TCP_TIMEOUTS })).toThrow(expect.objectContaining({ kind: 'tcp-timeouts' }));
  });
});
