import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CLIENT_FLOW_SHARE, MAX_CLIENT_FLOW_LIMIT, assertTableSettings, defaultClientFlowLimit } from '../../../guest/firewall/table-settings.js';

describe('defaultClientFlowLimit', () => {
  it('gives each client an eighth of the tables the kernel sizes by RAM', () => {
    // 256 MB, 512 MB, 1-4 GB, more than 4 GB (and the kernel's least, 1024).
    expect([1024, 2048, 4096, 65_536, 262_144].map(defaultClientFlowLimit)).toEqual([128, 256, 512, 8192, 32_768]);
  });

  it('never gives more than a share of the table, nor nothing: it takes CLIENT_FLOW_SHARE clients at the cap to fill it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 }), (conntrackMax) => {
        const limit = defaultClientFlowLimit(conntrackMax);
        expect(limit).toBeGreaterThanOrEqual(1);
        if (conntrackMax >= CLIENT_FLOW_SHARE) expect(limit * CLIENT_FLOW_SHARE).toBeLessThanOrEqual(conntrackMax);
        expect(() => assertTableSettings({ clientFlowLimit: limit })).not.toThrow();
      }),
    );
  });

  it('still caps a client when the table has no limit (0), and refuses what is no count', () => {
    expect(defaultClientFlowLimit(0)).toBe(32_768);
    for (const wrong of [-1, 1.5, Number.NaN]) expect(() => defaultClientFlowLimit(wrong)).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
  });
});

describe('assertTableSettings', () => {
  it('takes 0 (no cap) to what nft holds in 32 bits, whole numbers only', () => {
    for (const clientFlowLimit of [0, 1, MAX_CLIENT_FLOW_LIMIT]) expect(() => assertTableSettings({ clientFlowLimit })).not.toThrow();
    for (const clientFlowLimit of [-1, 0.5, MAX_CLIENT_FLOW_LIMIT + 1, Number.POSITIVE_INFINITY]) {
      expect(() => assertTableSettings({ clientFlowLimit })).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
    }
  });
});
