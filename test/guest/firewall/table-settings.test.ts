import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CLIENT_FLOW_SHARE,
  DEFAULT_CLIENT_NEW_FLOW_RATE,
  MAX_CLIENT_FLOW_LIMIT,
  MAX_CLIENT_NEW_FLOW_RATE,
  MAX_DEFAULT_CLIENT_FLOW_LIMIT,
  assertTableSettings,
  clientNewFlowBurst,
  defaultClientFlowLimit,
} from '../../../guest/firewall/table-settings.js';

const RATE = DEFAULT_CLIENT_NEW_FLOW_RATE;

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
});
