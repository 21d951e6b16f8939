// The agent's firewall port against a simulated table (no kernel): how it settles the client flow
// cap, from --client-flow-limit or from nf_conntrack_max, before the table's first load.
import pino from 'pino';
import { beforeEach, expect, it, vi } from 'vitest';
import type { FirewallModel } from '../../../guest/firewall/model.js';
import type { NftResult } from '../../../guest/firewall/nft-library.js';
import { staticTableText } from '../../../guest/firewall/ruleset.js';
import { NftablesFirewall } from '../../../guest/netd/provider-ports.js';
import { type SimulatedTable, applyScript, renderListing } from '../firewall/simulated-table.js';

/** The one table, and the structures it was made with, in order. */
const nft = vi.hoisted(() => ({ table: undefined as SimulatedTable | undefined, made: [] as string[] }));

vi.mock('../../../guest/firewall/nft-library.js', () => ({
  loadNftLibrary: () => undefined,
  runNftInProcess: async (script: string): Promise<NftResult> => {
    if (script.startsWith('list table ')) {
      return nft.table === undefined ? { code: 1, stdout: '', stderr: 'Error: No such file or directory' } : { code: 0, stdout: renderListing(nft.table), stderr: '' };
    }
    const before = nft.table?.structure;
    nft.table = applyScript(nft.table, script);
    if (nft.table !== undefined && nft.table.structure !== before) nft.made.push(nft.table.structure);
    return { code: 0, stdout: '', stderr: '' };
  },
}));

const log = pino({ level: 'silent' });
const RATE = 500;
const table = (clientFlowLimit: number, clientNewFlowRate = RATE): string => staticTableText({ clientFlowLimit, clientNewFlowRate });
const model: FirewallModel = { providerLinks: [{ ifname: 'snp1', clientIp: '100.64.0.1' }], uplinks: ['eth0'], allowedPairs: [] };

beforeEach(() => {
  nft.table = undefined;
  nft.made = [];
});

it('derives the cap from nf_conntrack_max: an eighth of the table, at most 4096', async () => {
  const firewall = new NftablesFirewall('auto', RATE, log, () => 16_384);
  // What `status` shows: nothing until the table is made, then the cap it was made with.
  expect(firewall.flowLimits()).toBeNull();
  await firewall.reconcile(model);
  expect(nft.made).toEqual([table(2048)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 2048, clientNewFlowRate: RATE });
  nft.table = undefined;
  await new NftablesFirewall('auto', RATE, log, () => 262_144).reconcile(model);
  expect(nft.made).toEqual([table(2048), table(4096)]);
});

it('loads the table without the cap first when nf_conntrack is not loaded yet (its rules load it), then with it', async () => {
  // nf_conntrack_max exists once a table with ct rules is loaded.
  const firewall = new NftablesFirewall('auto', RATE, log, () => (nft.table === undefined ? undefined : 4096));
  await firewall.reconcile(model);
  expect(nft.made).toEqual([table(0), table(512)]);
  expect(firewall.flowLimits()).toEqual({ clientFlowLimit: 512, clientNewFlowRate: RATE });
  // Settled once: the next calls, audits included, keep it.
  expect(await firewall.verify(model)).toBe(false);
  await firewall.reconcile(model);
  expect(nft.made).toHaveLength(2);
});

it('fails, saying what to give, when nf_conntrack_max never appears', async () => {
  await expect(new NftablesFirewall('auto', RATE, log, () => undefined).reconcile(model)).rejects.toMatchObject({ kind: 'flow-limit', message: expect.stringMatching(/--client-flow-limit/) });
});

it('takes --client-flow-limit as it is, without reading nf_conntrack_max; refuses what nft cannot hold', async () => {
  const conntrackMax = vi.fn(() => 65_536);
  await new NftablesFirewall(100, RATE, log, conntrackMax).reconcile(model);
  await new NftablesFirewall(0, RATE, log, conntrackMax).reconcile(model);
  expect(nft.made).toEqual([table(100), table(0)]);
  expect(conntrackMax).not.toHaveBeenCalled();
  expect(() => new NftablesFirewall(2 ** 32, RATE, log)).toThrow(expect.objectContaining({ kind: 'flow-limit' }));
});

it('takes --client-new-flow-rate as it is, 0 for none, with the cap derived or given; refuses what nft cannot hold', async () => {
  await new NftablesFirewall('auto', 20, log, () => 65_536).reconcile(model);
  await new NftablesFirewall(100, 0, log).reconcile(model);
  expect(nft.made).toEqual([table(4096, 20), table(100, 0)]);
  for (const rate of [-1, 1_000_001]) {
    expect(() => new NftablesFirewall('auto', rate, log)).toThrow(expect.objectContaining({ kind: 'flow-rate' }));
    expect(() => new NftablesFirewall(100, rate, log)).toThrow(expect.objectContaining({ kind: 'flow-rate' }));
  }
});
